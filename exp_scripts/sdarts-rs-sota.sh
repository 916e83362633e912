#!/usr/bin/env bash
# SDARTS-RS supernet for DARTS-PT on the DARTS space / S1-S4: DARTS with random smoothing of
# alpha (--method sdarts --perturb_alpha random; darts-pt's exp_scripts/sdarts-rs-sota.sh):
#   bash exp_scripts/sdarts-rs-sota.sh [--space s5] [--dataset cifar10] [--seed 2]
# Defaults: s5, cifar10, seed 2, 50 epochs (train_search.py's). Folder:
#   darts_pt/experiments/sota/{dataset}/search-sdarts-rs-sota-{space}-{seed}
# Next: bash exp_scripts/sdarts-rs-proj-sota.sh (its default --resume_expid is this folder).
# Fix: the original passed an active `--expid_tag debug`, which named the folder
# search-sdarts-rs-sota-debug-s5-2 (sdarts-rs-proj-sota.sh looks for search-sdarts-rs-sota-s5-2)
# and made train_search.py restart it silently; the tag is gone (`--expid_tag debug` still
# gives the original's folder).
# Original names: dataset seed gpu space.
# Additions, passed to train_search.py only when given (for small/CPU runs): epochs
# init_channels layers batch_size data experiments num_workers ckpt_interval expid_tag, and the
# switches --fast 1, --no_progress 1, --resume 1 (continue this run). --help lists the names.
# Fixes (all scripts, _args.sh): runs from any folder; an unknown --NAME stops it (exit 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_args.sh"

dataset=${dataset:-cifar10}
seed=${seed:-2}
gpu=${gpu:-auto}
space=${space:-s5}

METHOD=(--method sdarts --perturb_alpha random)
BENCH=sota
source "$EXP_SCRIPTS/_supernet.sh" "$@"
