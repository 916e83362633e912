#!/usr/bin/env bash
# DARTS-PT step 2 on the DARTS space / S1-S4: perturbation-based projection of a DARTS
# supernet (operations, then topology; darts-pt's exp_scripts/darts-proj-sota.sh). The paper's
# README:
#   bash exp_scripts/darts-proj-sota.sh --space [s1..s5] --dataset [cifar10|cifar100|svhn] \
#       --resume_expid search-darts-sota-[s1..s5]-2
# Defaults: s5, cifar10, seed 2, resume_epoch 50, resume_expid search-darts-sota-s5-2 (the folder
# darts-sota.sh makes with its defaults), crit acc, --proj_intv 5, --edge_decision random.
# It loads checkpoint_{resume_epoch}.pth.tar of that folder, logs to
#   log_resume-50_dev-proj_intv-5_ED-random_PCN-acc_PCR-acc_seed-2.txt there, keeps its
# checkpoints and genotype.json in the folder of that name, and ends with a `genotype = ...`
# line. Then: bash exp_scripts/eval.sh --arch <that folder>/genotype.json
# A supernet trained with other --epochs/--init_channels/--layers/--batch_size needs the same
# values here (with a larger --epochs the rest of the supernet training runs first).
# Original names: dataset seed gpu space resume_epoch resume_expid crit (--proj_crit_normal,
# _reduce and _edge).
# Additions, passed to train_search.py only when given (for small/CPU runs): epochs
# init_channels layers batch_size data experiments num_workers log_tag, proj_intv (always
# passed, default 5 as the original), and the switches --fast 1, --no_progress 1, --resume 1
# (continue this projection). --help lists the names.
# Fixes (all scripts, _args.sh): runs from any folder; an unknown --NAME stops it (exit 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_args.sh"

dataset=${dataset:-cifar10}
seed=${seed:-2}
gpu=${gpu:-auto}
space=${space:-s5}
resume_epoch=${resume_epoch:-50}
resume_expid=${resume_expid:-search-darts-sota-s5-2}
crit=${crit:-acc}
proj_intv=${proj_intv:-5}

METHOD=(--method darts-proj)
BENCH=sota
source "$EXP_SCRIPTS/_proj.sh" "$@"
