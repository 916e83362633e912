"""Train a genotype from scratch on CIFAR-10/100 or SVHN (SmoothDARTS sota/cnn/train.py).

    cd sdarts/sota/cnn && python train.py --arch c10_s3_pgd --auxiliary --cutout
    python train.py --arch ../../../experiments/sota/cifar10/search-.../genotype.json
    torchrun --nproc_per_node 4 train.py --arch DARTS_V2 --auxiliary --cutout   # data parallel

Flags and defaults are the original's (DARTS cnn/train.py plus SDARTS' --dataset and
--cutout_prob), plus ``--dataset digits`` (embedded data, no download), ``--resume [RUN_DIR]``
and the runtime switches. The test split is evaluated after every epoch and the last epoch's
accuracy is the result; no epoch is chosen by its test accuracy.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.errors import cli_entry  # noqa: E402
from shared.evaluation.cli import (  # noqa: E402
    build_train_door_parser,
    cifar_run_suffix,
    eval_run_dir,
    train_from_scratch,
)

build_parser = build_train_door_parser  # DARTS' flags and the runtime switches


def run_dir(args) -> str:
    """eval-{save}-{arch}-{seed}-{time}[-cutout-{len}-{prob}][-auxiliary-{weight}]."""
    return eval_run_dir(args.experiments, args.dataset, args.save, args.arch, args.seed,
                        cifar_run_suffix(args))


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train_from_scratch(argv, build_parser(), run_dir=run_dir)


if __name__ == "__main__":
    main()
