"""Epochs per hour of evaluation training at the paper's settings: the engine's real epoch
(``EvalTrainer.train_epoch`` and ``infer``: data queue, forward with the auxiliary head and
drop-path, backward, clipping, SGD, meters) on CIFAR-10-sized data, timed over a few steps and
extrapolated to an epoch and to 600 epochs, per path, in one run.

    python bench/eval_epoch.py [--device cpu|cuda] [--arch DARTS_V2] [--steps N]
                               [--paths dataloader,device,graph,bf16,graph+bf16,grouped,
                                        graph+grouped,graph+bf16+grouped] [--data DIR]

The training is DARTS' ``train.py --auxiliary --cutout`` (``sdarts/sota/cnn/train.py`` defaults:
20 cells, C=36, batch 96, drop-path 0.2, 600 epochs, so 521 training steps (520 with the data on
the device, which serves full batches only) and 105 test batches per epoch). Without ``--data``
the images are random uint8 arrays in CIFAR-10's files and format, read by torchvision's CIFAR10
class with its md5 check switched off (no download here). The paths: ``dataloader``
(torchvision transforms in ``--workers`` DataLoader workers, fp32), ``device``
(``--data_on_device``, fp32), ``graph`` (data on the device and ``--step_capture cuda_graph``;
on the CPU the ``emulate`` backend runs its bookkeeping and replays the step's operations
without a graph, ``shared.op_replay``: a check that the path runs, whose times say nothing),
``bf16`` (data on the device, ``--amp --channels_last``: bf16 autocast, eager) and
``graph+bf16`` (both); ``+grouped``: with ``--grouped_ops`` (each cell's same-shaped separable
convs together, ``shared.models.grouped_cell``). Each path trains an untimed epoch of
``--warmup`` steps, then a timed one of ``--steps`` steps and ``--eval_batches`` test batches,
split (``bench/epoch_clock.py``) into the steady cost per step and the epoch's fixed cost (the
recording, the workers' start), which a real epoch pays once. Both epochs are at the middle of
the run (drop-path at half its final rate).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.epoch_clock import (  # noqa: E402
    add_epoch_arguments,
    parse_epoch_arguments,
    print_epoch_table,
    time_epoch,
    time_paths,
)
from shared import distributed as dist_utils  # noqa: E402
from shared.evaluation.config import EvalConfig, validate_config  # noqa: E402
from shared.evaluation.run import make_trainer  # noqa: E402
from shared.evaluation.trainer import load_datasets  # noqa: E402
from shared.genotypes import load_genotype  # noqa: E402

# path -> (data on the device, step capture, bf16 autocast + channels-last, grouped ops)
PATHS = {"dataloader": (False, "off", False, False), "device": (True, "off", False, False),
         "graph": (True, "cuda_graph", False, False), "bf16": (True, "off", True, False),
         "graph+bf16": (True, "cuda_graph", True, False),
         "grouped": (True, "off", False, True), "graph+grouped": (True, "cuda_graph", False, True),
         "graph+bf16+grouped": (True, "cuda_graph", True, True)}


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
    add_epoch_arguments(p)
    p.add_argument("--paths", default="dataloader,device",
                   help=f"comma-separated: {', '.join(PATHS)}")
    p.add_argument("--batch_size", type=int, default=96)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--init_channels", type=int, default=36)
    p.add_argument("--epochs", type=int, default=600)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (train.py: 2)")
    args = parse_epoch_arguments(p, argv)
    paths = args.paths.split(",")
    unknown = [q for q in paths if q not in PATHS]
    if unknown:
        p.error(f"--paths: unknown {', '.join(unknown)}; one of {', '.join(PATHS)}")

    def config(path: str, data: str) -> EvalConfig:
        on_device, capture, bf16, grouped = PATHS[path]
        if capture == "cuda_graph" and args.device != "cuda":
            capture = "emulate"  # the recording's model without a graph: a check
        return EvalConfig(data=data, dataset="cifar10", arch=args.arch,
                          batch_size=args.batch_size, layers=args.layers,
                          init_channels=args.init_channels, epochs=args.epochs, auxiliary=True,
                          cutout=True, num_workers=args.workers,
                          gpu=0 if args.device == "cuda" else -1, report_freq=10**6,
                          progress=False, data_on_device=on_device, step_capture=capture,
                          amp=bf16, channels_last=bf16, grouped_ops=grouped)

    rows = time_paths(args, paths, config, time_path)
    print(f"evaluation training, {args.arch}, {args.layers} cells, C={args.init_channels}, "
          f"batch {args.batch_size}, auxiliary + Cutout + drop-path, device {args.device}, "
          f"{torch.get_num_threads()} threads; {rows[0][1]['train_steps']} steps/epoch, "
          f"{args.steps} timed")
    print_epoch_table(rows, args.epochs, "ms/test batch")


if __name__ == "__main__":  # bad input: one line, no traceback
    from shared.errors import cli_entry

    cli_entry(main)()
