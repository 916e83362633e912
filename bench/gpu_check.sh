#!/usr/bin/env bash
# The GPU checks of the engine, one short script (run on a CUDA machine from the repo root).
set -uo pipefail
export PYTHONPATH="$PWD"
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
echo "== bench fp32 (plain vs fast) =="
timeout 150 python bench/supernet_step.py --device cuda --repeats 5 --warmup 2 | tee "$OUT/bench_fp32.md"
echo "== bench amp + channels_last =="
timeout 120 python bench/supernet_step.py --device cuda --repeats 5 --warmup 2 --amp --channels_last --rows 64:1 | tee "$OUT/bench_amp_cl.md"
echo "== SDARTS-ADV search on digits, GPU, amp + channels_last =="
cd sdarts/sota/cnn
timeout 120 python train_search.py --dataset digits --search_space s5 --perturb_alpha pgd_linf \
    --epochs 2 --layers 5 --init_channels 8 --batch_size 96 --gpu 0 --amp --channels_last \
    --no_progress --experiments "$OUT/exp" --save gpu 2>&1 | grep -E "device|epoch|acc|final" | tail -12
