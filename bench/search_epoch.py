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
cuda_graph``: the step recorded once per epoch and replayed; CUDA only). Each path runs
``--warmup`` untimed steps, then ``--steps`` timed ones and ``--eval_batches`` batches of the
end-of-epoch accuracy; an epoch is extrapolated as (ms per step x weight steps) + (ms per
accuracy batch x accuracy batches).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torchvision.datasets as tvd  # noqa: E402

from bench.data_pipeline import write_cifar  # noqa: E402
from shared.search.cnn_search import CNNSearchConfig, build_cnn_search  # noqa: E402

PATHS = ("dataloader", "device", "graph")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_path(cfg: CNNSearchConfig, steps: int, warmup: int, eval_batches: int,
              folder: str) -> dict:
    logger = logging.getLogger("bench")
    search = build_cnn_search(cfg, folder, logger, max_batches=warmup)
    loop = search.loop
    train_steps, valid_batches = len(loop.train_queue), len(loop.valid_eval_queue)
    loop.train_epoch(0, cfg.learning_rate)  # warm-up
    loop.max_batches = steps
    synchronize(search.device)
    start = time.perf_counter()
    loop.train_epoch(0, cfg.learning_rate)
    synchronize(search.device)
    step_ms = (time.perf_counter() - start) * 1000 / steps
    loop.max_batches = eval_batches
    start = time.perf_counter()
    loop.infer()
    synchronize(search.device)
    eval_ms = (time.perf_counter() - start) * 1000 / eval_batches
    epoch_s = (step_ms * train_steps + eval_ms * valid_batches) / 1000
    return {"step_ms": step_ms, "eval_ms": eval_ms, "epoch_s": epoch_s,
            "train_steps": train_steps}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--order", type=int, default=1, choices=(1, 2))
    p.add_argument("--perturb", default="none", choices=("none", "random", "pgd_linf"))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--eval_batches", type=int, default=3)
    p.add_argument("--paths", default="dataloader,device",
                   help="comma-separated: dataloader, device, graph (CUDA only)")
    p.add_argument("--data", default=None, help="a folder holding cifar-10-batches-py")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        data = args.data
        if data is None:
            write_cifar(root, 50000)
            data = root
            for name in ("train_list", "test_list"):  # made-up files: no md5 to match
                setattr(tvd.CIFAR10, name, [[f, None] for f, _ in getattr(tvd.CIFAR10, name)])
            tvd.CIFAR10.meta = {**tvd.CIFAR10.meta, "md5": None}
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
    print(f"{'data path':<12} {'ms/step':>9} {'ms/acc batch':>13} {'s/epoch':>9} "
          f"{'epochs/hour':>12} {'50 epochs':>10} {'vs first':>9}")
    for name, r in rows:
        print(f"{name:<12} {r['step_ms']:>9.1f} {r['eval_ms']:>13.1f} {r['epoch_s']:>9.1f} "
              f"{3600 / r['epoch_s']:>12.2f} {50 * r['epoch_s'] / 3600:>9.2f}h "
              f"{base / r['epoch_s']:>8.2f}x")


if __name__ == "__main__":
    main()
