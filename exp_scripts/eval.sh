#!/usr/bin/env bash
# Train a genotype from scratch on CIFAR-10 (DARTS-PT's exp_scripts/eval.sh):
#   bash exp_scripts/eval.sh --arch darts_pt_s5_0 [--seed 2] [--gpu 0]
#   bash exp_scripts/eval.sh --arch darts_pt_s5_0 --resume_epoch 50 \
#       --resume_expid eval-darts_pt_s5_0-2-cutout-16-1.0-auxiliary-0.4
# Original names: dataset seed gpu arch batch_size learning_rate resume_expid resume_epoch.
# Additions for small/CPU runs, passed to train.py only when given: epochs init_channels
# layers data cutout_length num_workers experiments, and the switches --fast 1, --no_progress 1.
# C=36, 20 cells (train.py's defaults); --auxiliary --cutout always. --help lists the names.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_args.sh"

dataset=${dataset:-cifar10}
seed=${seed:-2}
gpu=${gpu:-auto}
arch=${arch:-none}
batch_size=${batch_size:-96}
learning_rate=${learning_rate:-0.025}
resume_expid=${resume_expid:-none}
resume_epoch=${resume_epoch:-0}

source "$EXP_SCRIPTS/_eval.sh" "$@"
