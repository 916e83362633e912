#!/usr/bin/env bash
# Λ-DARTS' evaluation launcher (Lambda-DARTS run_eval_cifar.sh), a working door:
#   bash lambda_darts/run_eval_cifar.sh [--arch svhn_s3_lambdadarts_corr] [--dataset svhn] ...
# Original names and defaults: gpu=0 drop_path=0.2 dataset=svhn seed=0; C=16, 8 cells
# (RobustDARTS' SVHN/CIFAR-100 network), --auxiliary --cutout always.
# Fixed against the original: its default arch svhn_s3_corrdarts_corr_ exists nowhere (the
# genotypes were renamed *_lambdadarts_*): the default is svhn_s3_lambdadarts_corr; the
# training runs in the foreground with its exit status (the original nohup'ed it into the
# background); an unknown --NAME is refused. Passed to train.py only when given: epochs
# batch_size init_channels layers data experiments num_workers; switches --no_progress 1,
# --resume 1. --help lists the names.
set -euo pipefail
SCRIPT_PATH=lambda_darts/run_eval_cifar.sh
source "$(dirname "${BASH_SOURCE[0]}")/../exp_scripts/_args.sh"

gpu=${gpu:-0}
drop_path=${drop_path:-0.2}
arch=${arch:-svhn_s3_lambdadarts_corr}
dataset=${dataset:-svhn}
seed=${seed:-0}
init_channels=${init_channels:-16}
layers=${layers:-8}

parse_args "gpu drop_path arch dataset seed epochs batch_size init_channels layers data
            experiments num_workers no_progress resume" -- "$@"
show_vars gpu drop_path arch dataset seed
add_flags epochs batch_size data experiments num_workers
add_switches no_progress resume
run_door lambda_darts/sota/cnn train.py --init_channels "$init_channels" --layers "$layers" \
    --dataset "$dataset" --drop_path_prob "$drop_path" --auxiliary --cutout --arch "$arch" \
    --gpu "$gpu" --seed "$seed"
