#!/usr/bin/env bash
# DARTS-PT step 1 on NAS-Bench-201: train the supernet with DARTS (first order)
# (darts-pt's exp_scripts/darts-201.sh). The paper's README:
#   bash exp_scripts/darts-201.sh [--dataset cifar10|cifar100|imagenet16-120] [--seed 0]
# Defaults: cifar10, seed 0, 100 epochs, checkpoint_{20,40,..,100} (train_search.py's). Folder:
#   darts_pt/experiments/nasbench201/search-darts-201-{seed}[-{dataset} unless cifar10]
# Next: bash exp_scripts/darts-proj-201.sh (its default --resume_expid search-darts-201-0 is this
# folder with the default seed 0).
# Original names: dataset seed gpu.
# Additions, passed to train_search.py only when given (for small/CPU runs): epochs
# init_channels batch_size data experiments num_workers ckpt_interval expid_tag api_path (the
# NAS-Bench-201 file), and the switches --fast 1, --no_progress 1, --resume 1 (continue this
# run). --help lists the names.
# Fixes (all scripts, _args.sh): runs from any folder; an unknown --NAME stops it (exit 2; the
# original ignored it, e.g. --space did nothing here).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_args.sh"

dataset=${dataset:-cifar10}
seed=${seed:-0}
gpu=${gpu:-auto}

METHOD=(--method darts)
BENCH=201
source "$EXP_SCRIPTS/_supernet.sh" "$@"
