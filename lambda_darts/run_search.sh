#!/usr/bin/env bash
# Λ-DARTS' search launcher (Lambda-DARTS run_search.sh), a working door:
#   bash lambda_darts/run_search.sh [--dataset svhn] [--search_space s4] [--reg_type corr] ...
# Original names and defaults: gpu=0 dataset=svhn epochs=50 search_space=s4 lambda_=0.25
# epsilon_0=0.001 reg_type=corr arch_learning_rate=0.0003 seed=0, batch 96 (batch_size).
# Fixed against the original: the search runs in the foreground and the script exits with its
# status (the original nohup'ed it into the background, its output in
# ../../search-{space}-{dataset}-seed-{seed}-...log; the run's log.txt holds it all here); an
# unknown --NAME is refused. Passed to train_search.py only when given: layers init_channels data
# experiments num_workers perturb_alpha lambda_cells; switches --fresh_noise 1, --no_progress 1,
# --resume 1. --help lists the names; the command-line convention is exp_scripts/_args.sh's.
set -euo pipefail
SCRIPT_PATH=lambda_darts/run_search.sh
source "$(dirname "${BASH_SOURCE[0]}")/../exp_scripts/_args.sh"

gpu=${gpu:-0}
dataset=${dataset:-svhn}
epochs=${epochs:-50}
search_space=${search_space:-s4}
lambda_=${lambda_:-0.25}
epsilon_0=${epsilon_0:-0.001}
reg_type=${reg_type:-corr}
arch_learning_rate=${arch_learning_rate:-0.0003}
seed=${seed:-0}
batch_size=${batch_size:-96}

parse_args "gpu dataset epochs search_space lambda_ epsilon_0 reg_type arch_learning_rate seed
            batch_size layers init_channels data experiments num_workers perturb_alpha
            lambda_cells fresh_noise no_progress resume" -- "$@"
show_vars gpu dataset epochs search_space lambda_ epsilon_0 reg_type arch_learning_rate seed
add_flags layers init_channels data experiments num_workers perturb_alpha lambda_cells
add_switches fresh_noise no_progress resume
run_door lambda_darts/sota/cnn train_search.py --batch_size "$batch_size" --dataset "$dataset" \
    --corr_regularization "$reg_type" --lambda_ "$lambda_" --epsilon_0 "$epsilon_0" \
    --epochs "$epochs" --arch_learning_rate "$arch_learning_rate" --gpu "$gpu" --seed "$seed" \
    --search_space "$search_space"
