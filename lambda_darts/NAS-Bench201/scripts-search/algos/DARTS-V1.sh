#!/usr/bin/env bash
# Λ-DARTS on NAS-Bench-201 (Lambda-DARTS NAS-Bench201/scripts-search/algos/DARTS-V1.sh), a
# working door:
#   bash lambda_darts/NAS-Bench201/scripts-search/algos/DARTS-V1.sh DATASET SEED [--NAME VALUE]...
#   e.g. ... DARTS-V1.sh cifar10 0      ... DARTS-V1.sh digits 0 --epochs 2 --workers 0
# The released settings: channel=16 num_cells=5 max_nodes=4 space=nas-bench-102, the regulariser
# on (corr) with lambda_=0.25 epsilon_0=0.0001, arch lr 0.0001 and wd 0.001, 4 workers,
# print_freq 200, the benchmark file ${data_path}/NAS-Bench-201-v1_0-e61699.pth (passed when it
# exists; without it the search runs without benchmark numbers and says so).
# Fixed against the released script: one run, in the foreground, with the given SEED (the
# released one started 8 background runs on GPUs 0-7 with seed = GPU id, ignoring SEED) and the
# given DATASET (it repeated --dataset cifar10 last, forcing CIFAR-10); data_path is a setting
# (default ../../data from lambda_darts/NAS-Bench201, i.e. the repository's data/; the released
# one was hard-coded to its author's disk); --lambda_ is spelled out (the released --lambda
# worked only through argparse's prefix matching). SEED -1 draws one, as released. Other names:
# epochs batch_size split_path save_dir gpu arch_nas_dataset corr_regularization; switches
# --resume 1, --no_progress 1. --help lists them; the convention is exp_scripts/_args.sh's.
set -euo pipefail
SCRIPT_PATH=lambda_darts/NAS-Bench201/scripts-search/algos/DARTS-V1.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../../exp_scripts/_args.sh"

names="data_path channel num_cells max_nodes space lambda_ epsilon_0 arch_learning_rate
       arch_weight_decay workers print_freq corr_regularization epochs batch_size split_path
       save_dir gpu arch_nas_dataset resume no_progress"
if [[ "${1-}" == "-h" || "${1-}" == "--help" ]]; then
    parse_args "$names" -- --help
fi
if (($# < 2)) || [[ "$1" == --* || "$2" == --* ]]; then
    die "Need 2 parameters for dataset and seed (DARTS-V1.sh DATASET SEED [--NAME VALUE]...)"
fi
dataset=$1
seed=$2
shift 2

data_path=${data_path:-../../data}
channel=${channel:-16}
num_cells=${num_cells:-5}
max_nodes=${max_nodes:-4}
space=${space:-nas-bench-102}
lambda_=${lambda_:-0.25}
epsilon_0=${epsilon_0:-0.0001}
arch_learning_rate=${arch_learning_rate:-0.0001}
arch_weight_decay=${arch_weight_decay:-0.001}
workers=${workers:-4}
print_freq=${print_freq:-200}
corr_regularization=${corr_regularization:-corr}

parse_args "$names" -- "$@"
save_dir=${save_dir:-./output/search-cell-${space}/DARTS-V1-${dataset}}
benchmark="$data_path/NAS-Bench-201-v1_0-e61699.pth"
if [[ -z "${arch_nas_dataset-}" ]]; then
    if (cd "$REPO_ROOT/lambda_darts/NAS-Bench201" && [[ -f "$benchmark" ]]); then
        arch_nas_dataset=$benchmark
    else
        echo "no NAS-Bench-201 file at $benchmark: no benchmark numbers (download" \
            "NAS-Bench-201-v1_0-e61699.pth, see the README, or pass --arch_nas_dataset)"
    fi
fi
show_vars dataset seed data_path save_dir lambda_ epsilon_0 arch_learning_rate
add_flags epochs batch_size split_path gpu arch_nas_dataset
add_switches resume no_progress
run_door lambda_darts/NAS-Bench201 exps/algos/DARTS-V1.py --save_dir "$save_dir" \
    --max_nodes "$max_nodes" --channel "$channel" --num_cells "$num_cells" \
    --dataset "$dataset" --data_path "$data_path" --search_space_name "$space" \
    --corr_regularization "$corr_regularization" --lambda_ "$lambda_" \
    --epsilon_0 "$epsilon_0" --arch_learning_rate "$arch_learning_rate" \
    --arch_weight_decay "$arch_weight_decay" --workers "$workers" --print_freq "$print_freq" \
    --rand_seed "$seed"
