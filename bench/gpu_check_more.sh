#!/usr/bin/env bash
# The GPU checks measured in earlier sessions (agreement per space, fp32/amp benches, door runs,
# data pipeline), re-run when a GPU session has time after bench/gpu_check.sh, the decisions
# still open. Each step has its own timeout so one slow step cannot eat the others' time.
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
OUT=${OUT:-/tmp/gpu_check_more}
mkdir -p "$OUT"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
echo "== plain vs fast agreement per space, on CUDA =="
timeout 60 $PY bench/supernet_step.py --device cuda --check --rows '' | tee "$OUT/check.md"
echo "== bench fp32 (plain vs fast), first and second order =="
timeout 120 $PY bench/supernet_step.py --device cuda --repeats 10 --warmup 3 \
    --rows 16:1,64:1,16:2,64:2 | tee "$OUT/bench_fp32.md"
echo "== grouped edges against the fast path, first and second order =="
timeout 150 $PY bench/supernet_step.py --device cuda --repeats 10 --warmup 3 --grouped \
    --rows 64:1,64:2 | tee "$OUT/bench_grouped.md"
echo "== CUDA kernels of one fast first-order step (bench/kernel_count.py counts a lower bound) =="
timeout 90 $PY bench/supernet_step.py --device cuda --rows 64:1:1 --warmup 1 --profile 8 \
    | tee "$OUT/profile.md"
echo "== bench amp + channels_last (both paths) =="
timeout 90 $PY bench/supernet_step.py --device cuda --repeats 10 --warmup 3 --amp --channels_last \
    --rows 64:1,64:2 | tee "$OUT/bench_amp_cl.md"
cd sdarts/sota/cnn
COMMON=(--dataset digits --search_space s5 --perturb_alpha pgd_linf --epochs 2 --layers 5
        --init_channels 8 --batch_size 96 --gpu 0 --no_progress)
echo "== SDARTS-ADV search on digits, GPU fp32 =="
timeout 90 $PY train_search.py "${COMMON[@]}" --experiments "$OUT/exp" --save fp32 2>&1 \
    | grep -E "device|epoch|acc|genotype|error" | tail -8
echo "== same, amp + channels_last =="
timeout 90 $PY train_search.py "${COMMON[@]}" --amp --channels_last --experiments "$OUT/exp" \
    --save amp 2>&1 | grep -E "device|epoch|acc|genotype|error" | tail -8
echo "== evaluation training under torchrun (NCCL, 1 process), amp + channels_last =="
timeout 90 $PY -m torch.distributed.run --standalone --nproc_per_node 1 train.py \
    --dataset digits --layers 6 --init_channels 8 --batch_size 128 --arch DARTS_V2 --epochs 2 \
    --auxiliary --cutout --cutout_length 4 --amp --channels_last --no_progress \
    --experiments "$OUT/exp" 2>&1 | grep -E "device|process|epoch|acc|error" | tail -8
cd ../../..
echo "== epochs per hour of the search with the wide kernels (--grouped_edges), first order =="
timeout 100 $PY bench/search_epoch.py --device cuda --steps 12 --warmup 5 \
    --paths graph,grouped,graph+grouped --eval_batches 10 --order 1 | tee "$OUT/search_epoch_grouped.md"
echo "== second order and SDARTS-ADV with the wide kernels in the recorded step (their 50 epochs in <= 1 h?) =="
timeout 240 $PY bench/capture_check.py --device cuda --steps 8 --kinds second_order,pgd_linf \
    --paths graph,graph+grouped | tee "$OUT/capture_grouped_second_adv.md"
echo "== Λ-DARTS' regulariser in the recorded step (alone and with SDARTS-ADV), fast and grouped =="
timeout 240 $PY bench/capture_check.py --device cuda --steps 8 --kinds lambda,lambda+adv \
    --paths graph,graph+grouped | tee "$OUT/capture_lambda.md"
echo "== DARTS-PT's tuning step recorded (its zeros held per epoch), fast and grouped =="
timeout 150 $PY bench/capture_check.py --device cuda --steps 8 --kinds darts_pt \
    --paths graph,graph+grouped | tee "$OUT/capture_darts_pt.md"
echo "== data pipeline: DataLoader vs data on the device (CIFAR-10 size) =="
timeout 120 $PY bench/data_pipeline.py --device cuda --images 50000 --workers 0,4 \
    | tee "$OUT/data_pipeline.md"
cd sdarts/sota/cnn
echo "== SDARTS-ADV search on digits, data on the device vs DataLoader =="
for flag in --data_on_device --no-data_on_device; do
    timeout 90 $PY train_search.py "${COMMON[@]}" "$flag" --experiments "$OUT/exp" \
        --save "dod$flag" 2>&1 | grep -E "data on device|epoch|acc|error" | tail -5
done
cd ../../..
