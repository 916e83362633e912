"""Epochs per hour of evaluation training at the paper's settings: the engine's real epoch
(``EvalTrainer.train_epoch`` and ``infer``: data queue, forward with the auxiliary head and
drop-path, backward, clipping, SGD, meters) on CIFAR-10-sized data, timed over a few steps and
extrapolated to an epoch and to 600 epochs, per path, in one run.

    python bench/eval_epoch.py [--device cpu|cuda] [--arch DARTS_V2] [--steps N]
                               [--paths dataloader,device,graph,bf16,graph+bf16] [--data DIR]

The training is DARTS' ``train.py --auxiliary --cutout`` (``sdarts/sota/cnn/train.py``
defaults: 20 cells, C=36, batch 96, drop-path 0.2, 600 epochs, so 521 training steps (520 with
the data on the device, which serves full batches only) and 105 test batches per epoch).
Without ``--data`` the images are random uint8 arrays in CIFAR-10's files and format, read by
torchvision's CIFAR10 class with its md5 check switched off (no download here). The paths:
``dataloader`` (torchvision transforms in ``--workers`` DataLoader workers, fp32), ``device``
(``--data_on_device``, fp32), ``graph`` (data on the device and ``--step_capture cuda_graph``;
on the CPU the ``emulate`` backend runs its bookkeeping without a graph, a check that the path
runs, whose times say nothing), ``bf16`` (data on the device, ``--amp --channels_last``: bf16
autocast, eager) and ``graph+bf16`` (both). Each path trains an untimed epoch of ``--warmup``
steps, then a timed one of ``--steps`` steps and ``--eval_batches`` test batches, split
(``bench/epoch_clock.py``) into the steady cost per step and the epoch's fixed cost (the
recording, the workers' start), which a real epoch pays once. Both epochs are at the middle of
the run (drop-path at half its final rate).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.data_pipeline import made_up_cifar10  # noqa: E402
from bench.epoch_clock import time_epoch  # noqa: E402
from shared import distributed as dist_utils  # noqa: E402
from shared.evaluation.config import EvalConfig, validate_config  # noqa: E402
from shared.evaluation.run import make_trainer  # noqa: E402
from shared.evaluation.trainer import load_datasets  # noqa: E402
from shared.genotypes import load_genotype  # noqa: E402

# path -> (data on the device, step capture, bf16 autocast + channels-last)
PATHS = {"dataloader": (False, "off", False), "device": (True, "off", False),
         "graph": (True, "cuda_graph", False), "bf16": (True, "off", True),
         "graph+bf16": (True, "cuda_graph", True)}


def time_path(cfg: EvalConfig, steps: int, warmup: int, eval_batches: int,
              folder: str) -> dict:
    validate_config(cfg)
    with dist_utils.process_group(cfg.gpu) as (ctx, device):
        trainer = make_trainer(cfg, load_genotype(cfg.arch), folder, device, ctx,
                               logging.getLogger("bench"), load_datasets(cfg))
        train_steps, test_batches = len(trainer.train_queue), len(trainer.valid_queue)
        middle = cfg.epochs // 2
        time_epoch(trainer, "train_queue", lambda: trainer.train_epoch(middle - 1), device,
                   warmup)
        train = time_epoch(trainer, "train_queue", lambda: trainer.train_epoch(middle), device,
                           steps)
        infer = time_epoch(trainer, "valid_queue", trainer.infer, device, eval_batches, mark=1)
    return {"step_ms": train.steady_ms, "fixed_s": train.fixed_s + infer.fixed_s,
            "eval_ms": infer.steady_ms, "train_steps": train_steps,
            "epoch_s": train.epoch_s(train_steps) + infer.epoch_s(test_batches),
            "reason": trainer.capture.reason if trainer.capture is not None else None}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--arch", default="DARTS_V2")
    p.add_argument("--steps", type=int, default=4,
                   help="steps of the timed epoch (at least 3: the first 2 are its fixed cost)")
    p.add_argument("--warmup", type=int, default=4,
                   help="steps of the untimed epoch before (at least 4: on the graph paths a "
                        "run's first recording follows 3 eager steps)")
    p.add_argument("--eval_batches", type=int, default=3, help="at least 2")
    p.add_argument("--paths", default="dataloader,device",
                   help=f"comma-separated: {', '.join(PATHS)}")
    p.add_argument("--data", default=None, help="a folder holding cifar-10-batches-py")
    p.add_argument("--batch_size", type=int, default=96)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--init_channels", type=int, default=36)
    p.add_argument("--epochs", type=int, default=600)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (train.py: 2)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.steps < 3 or args.warmup < 4 or args.eval_batches < 2:
        p.error("--steps must be at least 3, --warmup at least 4, --eval_batches at least 2")
    paths = args.paths.split(",")
    unknown = [q for q in paths if q not in PATHS]
    if unknown:
        p.error(f"--paths: unknown {', '.join(unknown)}; one of {', '.join(PATHS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        data = args.data
        if data is None:
            made_up_cifar10(root)
            data = root
        for path in paths:
            on_device, capture, bf16 = PATHS[path]
            if capture == "cuda_graph" and args.device != "cuda":
                capture = "emulate"  # the recording's bookkeeping without a graph: a check
            cfg = EvalConfig(data=data, dataset="cifar10", arch=args.arch,
                             batch_size=args.batch_size, layers=args.layers,
                             init_channels=args.init_channels, epochs=args.epochs,
                             auxiliary=True, cutout=True, num_workers=args.workers,
                             gpu=0 if args.device == "cuda" else -1, report_freq=10**6,
                             progress=False, data_on_device=on_device, step_capture=capture,
                             amp=bf16, channels_last=bf16)
            folder = os.path.join(root, path)
            os.makedirs(folder)
            rows.append((path, time_path(cfg, args.steps, args.warmup, args.eval_batches,
                                         folder)))
    base = rows[0][1]["epoch_s"]
    print(f"evaluation training, {args.arch}, {args.layers} cells, C={args.init_channels}, "
          f"batch {args.batch_size}, auxiliary + Cutout + drop-path, device {args.device}, "
          f"{torch.get_num_threads()} threads; {rows[0][1]['train_steps']} steps/epoch, "
          f"{args.steps} timed")
    print(f"{'path':<12} {'ms/step':>9} {'fixed s':>8} {'ms/test batch':>14} {'s/epoch':>9} "
          f"{'epochs/hour':>12} {f'{args.epochs} epochs':>11} {'vs first':>9}  note")
    for name, r in rows:
        note = f"eager: {r['reason']}" if r["reason"] else ""
        print(f"{name:<12} {r['step_ms']:>9.1f} {r['fixed_s']:>8.2f} {r['eval_ms']:>14.1f} "
              f"{r['epoch_s']:>9.1f} {3600 / r['epoch_s']:>12.2f} "
              f"{args.epochs * r['epoch_s'] / 3600:>10.2f}h {base / r['epoch_s']:>8.2f}x  {note}",
              flush=True)


if __name__ == "__main__":
    main()
