#!/usr/bin/env bash
# Train a genotype from scratch on SVHN (DARTS-PT's exp_scripts/eval-svhn.sh):
#   bash exp_scripts/eval-svhn.sh --arch darts_pt_s1_svhn_1 [--seed 2] [--gpu 0]
#   bash exp_scripts/eval-svhn.sh --arch darts_pt_s1_svhn_1 --resume_epoch 50 \
#       --resume_expid eval-svhn-darts_pt_s1_svhn_1-2-cutout-16-1.0-auxiliary-0.4
# Original names: dataset seed gpu arch batch_size learning_rate resume_expid resume_epoch.
# Additions for small/CPU runs, passed to train.py only when given: epochs init_channels
# layers data cutout_length num_workers experiments, and the switches --fast 1, --no_progress 1.
# C=16, 8 cells (--init_channels 16 --layers 8, as the original; overridable);
# --auxiliary --cutout always. --help lists the names.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_args.sh"

dataset=${dataset:-svhn}
seed=${seed:-2}
gpu=${gpu:-auto}
arch=${arch:-none}
batch_size=${batch_size:-96}
learning_rate=${learning_rate:-0.025}
resume_expid=${resume_expid:-none}
resume_epoch=${resume_epoch:-0}
init_channels=${init_channels:-16}
layers=${layers:-8}

source "$EXP_SCRIPTS/_eval.sh" "$@"
