#!/usr/bin/env bash
# Blank-PT step 1 on the DARTS space / S1-S4: train the supernet with alpha fixed at its
# initial value ("DARTS-PT (fix alpha)"; darts-pt's exp_scripts/blank-sota.sh). Usage:
#   bash exp_scripts/blank-sota.sh --space [s1|s2|s3|s4|s5] --dataset [cifar10|cifar100|svhn]
# Defaults: s5, cifar10, seed 2, 50 epochs (train_search.py's). Folder:
#   darts_pt/experiments/sota/{dataset}/search-blank-sota-{space}-{seed}
# Next: bash exp_scripts/blank-proj-sota.sh --space s5 --resume_expid search-blank-sota-s5-2
# (the paper's README names blank-proj-201.sh for this step: a typo).
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

METHOD=(--method blank)
BENCH=sota
source "$EXP_SCRIPTS/_supernet.sh" "$@"
