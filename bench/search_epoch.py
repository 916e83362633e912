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
cuda_graph``: the step recorded once per epoch and replayed; CUDA only). Each path runs an
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
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.data_pipeline import made_up_cifar10  # noqa: E402
from bench.epoch_clock import time_epoch  # noqa: E402
from shared.search.cnn_search import CNNSearchConfig, build_cnn_search  # noqa: E402

PATHS = ("dataloader", "device", "graph")


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
    p.add_argument("--steps", type=int, default=4,
                   help="steps of the timed epoch (at least 3: the first 2 are its fixed cost)")
    p.add_argument("--warmup", type=int, default=4,
                   help="steps of the untimed epoch before (at least 4: on the graph path a "
                        "run's first recording follows 3 eager steps)")
    p.add_argument("--eval_batches", type=int, default=3, help="at least 2")
    p.add_argument("--paths", default="dataloader,device",
                   help="comma-separated: dataloader, device, graph (CUDA only)")
    p.add_argument("--data", default=None, help="a folder holding cifar-10-batches-py")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.steps < 3 or args.warmup < 4 or args.eval_batches < 2:
        p.error("--steps must be at least 3, --warmup at least 4, --eval_batches at least 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        data = args.data
        if data is None:
            made_up_cifar10(root)
            data = root
        for path in args.paths.split(","):
            if path not in PATHS:
                sys.exit(f"--paths: {path!r} is not one of {', '.join(PATHS)}")
            cfg = CNNSearchConfig(data=data, dataset="cifar10", batch_size=args.batch_size,
                                  layers=args.layers, init_channels=args.init_channels,
                                  search_space="s5", unrolled=args.order == 2,
                                  perturb_alpha=args.perturb, epochs=50, progress=False,
                                  gpu=0 if args.device == "cuda" else -1, report_freq=10**6,
                                  data_on_device=path != "dataloader",
                                  step_capture="cuda_graph" if path == "graph" else "off")
            folder = os.path.join(root, path)
            os.makedirs(folder)
            rows.append((path, time_path(cfg, args.steps, args.warmup, args.eval_batches,
                                         folder)))
    base = rows[0][1]["epoch_s"]
    print(f"DARTS search, s5, {args.layers} cells, C={args.init_channels}, batch "
          f"{args.batch_size}, order {args.order}, perturb {args.perturb}, device "
          f"{args.device}, {torch.get_num_threads()} threads; {rows[0][1]['train_steps']} "
          f"steps/epoch, {args.steps} timed")
    print(f"{'data path':<12} {'ms/step':>9} {'fixed s':>8} {'ms/acc batch':>13} "
          f"{'s/epoch':>9} {'epochs/hour':>12} {'50 epochs':>10} {'vs first':>9}")
    for name, r in rows:
        print(f"{name:<12} {r['step_ms']:>9.1f} {r['fixed_s']:>8.2f} {r['eval_ms']:>13.1f} "
              f"{r['epoch_s']:>9.1f} "
              f"{3600 / r['epoch_s']:>12.2f} {50 * r['epoch_s'] / 3600:>9.2f}h "
              f"{base / r['epoch_s']:>8.2f}x")


if __name__ == "__main__":
    main()
