#!/usr/bin/env bash
# The GPU checks that decide what is still open (issue "GPU speed"), in order of importance, in
# one call of at most ~10 minutes (run on a CUDA machine from the repo root; results in $OUT).
# Each step has its own timeout so one slow step cannot eat the others' time. The checks
# measured in earlier sessions are in bench/gpu_check_more.sh.
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
# Each timed epoch is split into its steady ms/step and its fixed cost (bench/epoch_clock.py),
# so a few steps per path suffice: the fixed cost is paid once per real epoch.
# matmul-sums: the per-channel node sums (SDARTS-ADV's attack) and every scale's gradient as
# batched matrix products (node_sum.MATMUL), against eager's products and reductions
echo "== 1. the step as a CUDA graph vs eager, and node sums as matrix products: agreement and speed (s5, C=16, 8 cells, batch 64) =="
timeout 150 $PY bench/capture_check.py --device cuda --steps 8 \
    --kinds first_order,second_order,pgd_linf --paths graph,matmul-sums | tee "$OUT/capture_check.md"
echo "== 2. epochs per hour at the paper's search settings, first order =="
timeout 80 $PY bench/search_epoch.py --device cuda --steps 12 --warmup 5 \
    --paths device,graph --eval_batches 10 --order 1 | tee "$OUT/search_epoch.md"
echo "== 3. epochs per hour of DARTS_V2's evaluation training (600 epochs, C=36, 20 cells; grouped ops recorded, fp32 and bf16) =="
timeout 150 $PY bench/eval_epoch.py --device cuda --steps 12 --warmup 5 --eval_batches 8 \
    --paths dataloader,device,graph,bf16,graph+bf16,graph+grouped,graph+bf16+grouped | tee "$OUT/eval_epoch.md"
echo "== 4. grouped edges (the wide kernels), eager and in the graph, and a group per kernel size; node sums term by term (and no fan_out); dilated convs rewritten as on the CPU =="
timeout 120 $PY bench/capture_check.py --device cuda --steps 8 --kinds first_order \
    --paths grouped,graph,graph+grouped,grouped-by-size,term-sums,undilated | tee "$OUT/grouped_check.md"
# Tracing the 8-cell supernet took 325 s per graph on the 2-core CPU (aot_eager), and a
# first-order step has two graphs: at 3 cells the comparison fits this call.
echo "== 5. torch.compile against the graph (3 cells): compile time (first s) and speed =="
timeout 100 $PY bench/capture_check.py --device cuda --steps 8 --kinds first_order \
    --layers 3 --paths graph,reduce-overhead,compile+graph | tee "$OUT/compile_check.md"
