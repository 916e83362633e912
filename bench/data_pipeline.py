"""Time the search's data: DataLoader batches (torchvision's per-image PIL pipeline, copied to
the device) against batches of the data set held on the device (``shared.data.on_device``).

    python bench/data_pipeline.py [--device cpu|cuda] [--images N] [--batches N]
                                  [--workers 0,2] [--threads N]

Both paths serve what a DARTS search on CIFAR-10 with Cutout reads per step: one augmented
training batch (random crop with 4 pixels of padding, horizontal flip, Normalize, Cutout 16)
and one augmented random batch of the architecture half, ``--batch`` images each, on
``--device``. The images are random uint8 CIFAR-shaped arrays read through torchvision's real
CIFAR10 class (files written in its format to a temporary folder). The table prints ms per
step (the median of three passes of ``--batches`` steps each, after one untimed pass) and the
speed-up of every row against the DataLoader with 0 workers, measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.datasets as tvd  # noqa: E402

from shared import data as D  # noqa: E402
from shared.data.on_device import (  # noqa: E402
    batch_augment,
    device_generator,
    device_search_queues,
    to_device_images,
)
from shared.runtime import seeded_generator  # noqa: E402


class UncheckedCIFAR10(tvd.CIFAR10):
    """torchvision's CIFAR10 reader with its md5 checks off (the files here are made up)."""

    train_list = [[f, None] for f, _ in tvd.CIFAR10.train_list]
    test_list = [[f, None] for f, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


def made_up_cifar10(root: str, images: int = 50000) -> None:
    """CIFAR-10's files under ``root`` with random pixels (``images`` training images, a fifth
    as many test images), and torchvision's CIFAR10 class, which every loader of this process
    reads through, with its md5 checks off: a whole door or loop can then run at CIFAR-10's
    size here, where the data set cannot be downloaded; the speed does not depend on the
    pixels."""
    write_cifar(root, images)
    for name in ("train_list", "test_list", "meta"):
        setattr(tvd.CIFAR10, name, getattr(UncheckedCIFAR10, name))


def write_cifar(root: str, images: int) -> None:
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    rng = np.random.RandomState(0)
    per = images // 5
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"data": rng.randint(0, 256, (per, 3072)).astype(np.uint8),
                         "labels": rng.randint(0, 10, per).tolist()}, f, protocol=2)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)


def time_steps(train, valid, device: torch.device, batches: int) -> float:
    """ms per step: one training and one alpha batch, on the device, synchronised at the end."""
    def one_pass() -> float:
        start = time.perf_counter()
        for _, (x, y), (xv, yv) in zip(range(batches), train, valid):
            x, y, xv, yv = (t.to(device, non_blocking=True) for t in (x, y, xv, yv))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1000 / batches

    one_pass()
    return statistics.median(one_pass() for _ in range(3))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--images", type=int, default=10000, help="training images (CIFAR: 50000)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=20, help="steps per timed pass")
    p.add_argument("--workers", default="0,2", help="DataLoader workers, one row each")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as root:
        write_cifar(root, args.images)
        host = D.get_dataset("cifar10", root, True, D.train_transform("cifar10", cutout=True),
                             download=False, dataset_cls=UncheckedCIFAR10)
        rows = []
        for workers in (int(w) for w in args.workers.split(",")):
            train, valid, _ = D.search_loaders(host, 0.5, args.batch, workers,
                                               seeded_generator(0), seeded_generator(1),
                                               pin_memory=device.type == "cuda")
            rows.append((f"DataLoader, {workers} workers", time_steps(train, valid, device,
                                                                       args.batches)))
        images = to_device_images(host, "cifar10", device)
        train, valid, _ = device_search_queues(images, 0.5, args.batch,
                                               batch_augment("cifar10", cutout=True),
                                               device_generator(0, device),
                                               device_generator(1, device))
        rows.append(("data on the device", time_steps(train, valid, device, args.batches)))
    base = rows[0][1]
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.images} CIFAR-shaped training images, crop + flip + Cutout 16")
    print(f"{'path':<26} {'ms/step':>9} {'speed-up':>9}")
    for name, ms in rows:
        print(f"{name:<26} {ms:>9.2f} {base / ms:>8.1f}x")


if __name__ == "__main__":  # bad input: one line, no traceback
    from shared.errors import cli_entry

    cli_entry(main)()
