#!/usr/bin/env bash
# Blank-PT step 2 on NAS-Bench-201: perturbation-based projection (operation selection on
# the 6 edges) of the supernet blank-201.sh trained (darts-pt's exp_scripts/blank-proj-201.sh).
# The paper's README:
#   bash exp_scripts/blank-proj-201.sh --resume_expid search-blank-201-1
# (the README's -1 is from before the scripts' default seed became 0: use search-blank-201-0,
# now the default, or search-blank-201-{seed} for another --seed of blank-201.sh.)
# Defaults: cifar10, seed 0, resume_epoch 100, resume_expid search-blank-201-0, crit acc,
# --proj_intv 5, --edge_decision random. It loads checkpoint_{resume_epoch}.pth.tar of that
# folder and logs to log_resume-100_dev-proj_seed-0_intv-5.txt there.
# A supernet trained with other --epochs/--init_channels/--batch_size needs the same values
# here (with a larger --epochs the rest of the supernet training runs first).
# Fix: the original's default resume_expid was search-blank-201-1, a folder blank-201.sh makes only
# with --seed 1 since its default seed became 0 (darts-pt 88f1d76); it is search-blank-201-0.
# Original names: dataset seed gpu resume_epoch resume_expid.
# Additions, passed to train_search.py only when given (for small/CPU runs): epochs
# init_channels batch_size data experiments num_workers log_tag api_path (the NAS-Bench-201
# file), crit (--proj_crit, default acc as the original's fixed value), proj_intv (always passed,
# default 5 as the original), and the switches --fast 1, --no_progress 1, --resume 1 (continue
# this projection). --help lists the names.
# Fixes (all scripts, _args.sh): runs from any folder; an unknown --NAME stops it (exit 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_args.sh"

dataset=${dataset:-cifar10}
seed=${seed:-0}
gpu=${gpu:-auto}
resume_epoch=${resume_epoch:-100}
resume_expid=${resume_expid:-search-blank-201-0}
crit=${crit:-acc}
proj_intv=${proj_intv:-5}

METHOD=(--method blank-proj)
BENCH=201
source "$EXP_SCRIPTS/_proj.sh" "$@"
