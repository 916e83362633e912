#!/usr/bin/env bash
# Blank-PT step 2 on the DARTS space / S1-S4: projection of a supernet trained with fixed alpha
# (blank-sota.sh); alpha stays fixed while tuning (darts-pt's exp_scripts/blank-proj-sota.sh):
#   bash exp_scripts/blank-proj-sota.sh --space [s1..s5] --dataset [cifar10|cifar100|svhn] \
#       --resume_expid search-blank-sota-[s1..s5]-2
# (the paper's README points this step at blank-proj-201.sh: a typo.)
# Defaults: s5, cifar10, seed 2, resume_epoch 50, resume_expid search-blank-sota-s5-2 (the folder
# blank-sota.sh makes with its defaults), crit acc, --proj_intv 5, --edge_decision random.
# Logs to log_resume-50_dev-proj_intv-5_ED-random_PCN-acc_PCR-acc_seed-2.txt in that folder and
# keeps genotype.json in the folder of that name; ends with a `genotype = ...` line.
# A supernet trained with other --epochs/--init_channels/--layers/--batch_size needs the same
# values here (with a larger --epochs the rest of the supernet training runs first).
# Fix: the original ran `--method blank-next --dev next`, neither of which train_search.py
# knows, so it stopped at once; this runs `--method blank-proj --dev proj`.
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
resume_expid=${resume_expid:-search-blank-sota-s5-2}
crit=${crit:-acc}
proj_intv=${proj_intv:-5}

METHOD=(--method blank-proj)
BENCH=sota
source "$EXP_SCRIPTS/_proj.sh" "$@"
