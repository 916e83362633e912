#!/usr/bin/env bash
# DARTS-PT projection of an SDARTS-RS supernet (sdarts-rs-sota.sh) on the DARTS space / S1-S4;
# the tuning keeps the random smoothing of alpha (--method sdarts-proj --perturb_alpha random;
# darts-pt's exp_scripts/sdarts-rs-proj-sota.sh):
#   bash exp_scripts/sdarts-rs-proj-sota.sh [--space s5] [--dataset cifar10] \
#       [--resume_expid search-sdarts-rs-sota-s5-2]
# Defaults: s5, cifar10, seed 2, resume_epoch 50, resume_expid search-sdarts-rs-sota-s5-2 (the
# folder sdarts-rs-sota.sh makes with its defaults), crit acc, --proj_intv 5,
# --edge_decision random. Logs to log_resume-50_dev-proj_intv-5_ED-random_PCN-acc_PCR-acc_seed-2.txt
# in that folder, keeps genotype.json in the folder of that name, ends with `genotype = ...`.
# A supernet trained with other --epochs/--init_channels/--layers/--batch_size needs the same
# values here (with a larger --epochs the rest of the supernet training runs first).
# Fixes: the original passed an active `--fast` (one batch per loop: a debugging run, not the
# paper's projection); it is gone (`--fast 1` still gives it). Its default resume_expid
# search-sdarts-rs-sota-s5-2 never existed, since sdarts-rs-sota.sh made
# search-sdarts-rs-sota-debug-s5-2; that script no longer adds the debug tag, so they match.
# Original names: dataset seed gpu space resume_epoch resume_expid.
# Additions, passed to train_search.py only when given (for small/CPU runs): epochs
# init_channels layers batch_size data experiments num_workers log_tag, crit (default acc, the
# original's fixed value for all three --proj_crit_*), proj_intv (always passed, default 5 as
# the original), and the switches --fast 1, --no_progress 1, --resume 1 (continue this
# projection). --help lists the names.
# Fixes (all scripts, _args.sh): runs from any folder; an unknown --NAME stops it (exit 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_args.sh"

dataset=${dataset:-cifar10}
seed=${seed:-2}
gpu=${gpu:-auto}
space=${space:-s5}
resume_epoch=${resume_epoch:-50}
resume_expid=${resume_expid:-search-sdarts-rs-sota-s5-2}
crit=${crit:-acc}
proj_intv=${proj_intv:-5}

METHOD=(--method sdarts-proj --perturb_alpha random)
BENCH=sota
source "$EXP_SCRIPTS/_proj.sh" "$@"
