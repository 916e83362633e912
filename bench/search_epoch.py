"""Epochs per hour of a search at the paper's settings: the engine's real epoch (data queue,
alpha step, weight step, meters; ``SearchLoop.train_epoch`` and ``infer``) on CIFAR-10-sized
data, timed over a few steps and extrapolated to a whole epoch, per data path, in one run.

    python bench/search_epoch.py [--device cpu|cuda] [--order 1|2] [--perturb none|pgd_linf]
                                 [--steps N] [--paths dataloader,device,graph] [--data DIR]

The search is DARTS' (``sdarts/sota/cnn/train_search.py`` defaults: s5, 8 cells, C=16,
batch 64, train_portion 0.5, so 391 weight steps and 25,000 validation images per epoch).
Without ``--data`` the images are random uint8 arrays in CIFAR-10's files and format, read by
torchvision's CIFAR10 class with its md5 check switched off (no download here); the speed does
not depend on the pixels. The paths: ``dataloader`` (torchvision transforms in DataLoaders),
``device`` (``--data_on_device``), ``graph`` (data on the device and ``--step_capture
cuda_graph``: the step recorded once per epoch and replayed; CUDA only), ``grouped`` and
``graph+grouped`` (those two with ``--grouped_edges``: the wide kernels). Each path runs an
untimed epoch of ``--warmup`` steps, then a timed epoch of ``--steps`` steps and
``--eval_batches`` batches of the end-of-epoch accuracy. The timed epoch is split
(``bench/epoch_clock.py``) into its steady cost per step (from its third step on) and its
fixed cost (the first steps: an eager step and the recording on the graph path, the workers'
start on the DataLoader path), which a real epoch pays once; an epoch is extrapolated as fixed
cost + (ms per step x weight steps) + (ms per accuracy batch x accuracy batches).
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
from shared.cli.checks import check_supernet_layers  # noqa: E402
from shared.search.cnn_search import CNNSearchConfig, build_cnn_search  # noqa: E402

PATHS = ("dataloader", "device", "graph", "grouped", "graph+grouped")


def time_path(cfg: CNNSearchConfig, steps: int, warmup: int, eval_batches: int,
              folder: str) -> dict:
    search = build_cnn_search(cfg, folder, logging.getLogger("bench"))
    loop, device = search.loop, search.device
    train_steps, valid_batches = len(loop.train_queue), len(loop.valid_eval_queue)
    lr = cfg.learning_rate
    time_epoch(loop, "train_queue", lambda: loop.train_epoch(0, lr), device, warmup)  # warm-up
    train = time_epoch(loop, "train_queue", lambda: loop.train_epoch(1, lr), device, steps)
    infer = time_epoch(loop, "valid_eval_queue", loop.infer, device, eval_batches, mark=1)
    epoch_s = train.epoch_s(train_steps) + infer.epoch_s(valid_batches)
    return {"step_ms": train.steady_ms, "fixed_s": train.fixed_s + infer.fixed_s,
            "eval_ms": infer.steady_ms, "epoch_s": epoch_s, "train_steps": train_steps}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--order", type=int, default=1, choices=(1, 2))
    p.add_argument("--perturb", default="none", choices=("none", "random", "pgd_linf"))
    add_epoch_arguments(p)
    p.add_argument("--paths", default="dataloader,device",
                   help="comma-separated: dataloader, device, graph (CUDA only), grouped, "
                        "graph+grouped (CUDA only)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--init_channels", type=int, default=16)
    args = parse_epoch_arguments(p, argv)
    check_supernet_layers(args.layers)
    paths = args.paths.split(",")
    unknown = [q for q in paths if q not in PATHS]
    if unknown:
        p.error(f"--paths: unknown {', '.join(unknown)}; one of {', '.join(PATHS)}")

    def config(path: str, data: str) -> CNNSearchConfig:
        return CNNSearchConfig(data=data, dataset="cifar10", batch_size=args.batch_size,
                               layers=args.layers, init_channels=args.init_channels,
                               search_space="s5", unrolled=args.order == 2,
                               perturb_alpha=args.perturb, epochs=50, progress=False,
                               gpu=0 if args.device == "cuda" else -1, report_freq=10**6,
                               data_on_device=path != "dataloader",
                               step_capture="cuda_graph" if path.startswith("graph") else "off",
                               grouped_edges=path.endswith("grouped"))

    rows = time_paths(args, paths, config, time_path)
    print(f"DARTS search, s5, {args.layers} cells, C={args.init_channels}, batch "
          f"{args.batch_size}, order {args.order}, perturb {args.perturb}, device "
          f"{args.device}, {torch.get_num_threads()} threads; {rows[0][1]['train_steps']} "
          f"steps/epoch, {args.steps} timed")
    print_epoch_table(rows, 50, "ms/acc batch")


if __name__ == "__main__":  # bad input: one line, no traceback
    from shared.errors import cli_entry

    cli_entry(main)()
