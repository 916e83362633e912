#!/usr/bin/env bash
# Set up (idempotent) and run the demo: a short real SDARTS-ADV search on the embedded
# scikit-learn digits, then a 10-epoch evaluation training of the genotype it found (95-98% valid accuracy).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
PY="$PWD/.venv/bin/python"
cd sdarts/sota/cnn
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
"$PY" train_search.py --dataset digits --search_space s5 --perturb_alpha pgd_linf \
    --epochs 3 --layers 5 --init_channels 8 --batch_size 96 --gpu -1 --save demo | tee "$LOG"
RUN=$(realpath "$(sed -n 's/^experiment folder: //p' "$LOG" | head -1)")
"$PY" train.py --dataset digits --arch "$RUN/genotype.json" --epochs 10 --layers 6 \
    --init_channels 8 --batch_size 64 --auxiliary --cutout --cutout_length 4 --gpu -1 --save demo
echo
echo "Search outputs in $RUN:"
ls -p "$RUN" | sed 's/^/  /'  # every file the search wrote (runs/: TensorBoard events)
echo "TensorBoard: $(dirname "$PY")/tensorboard --logdir $(realpath ../../experiments)"
