"""Train a genotype from scratch on CIFAR-10/100 or SVHN (Lambda-DARTS ``sota/cnn/train.py``).

    cd lambda_darts/sota/cnn && python train.py --arch c10_s3_lambdadarts_corr --auxiliary --cutout
    python train.py --arch ../../experiments/sota/cifar10/search-.../genotype.json

Flags and defaults are the released script's (DARTS ``cnn/train.py``: 600 epochs, C=36, 20
cells, batch 96, cutout 16, drop-path 0.2, auxiliary 0.4; ``--dataset``, ``--cutout_prob``), and
its folder: ``../../experiments/sota/{dataset}/eval-{save}-{time}-{arch}-{seed}[-cutout-{len}
-{prob}][-auxiliary-{weight}]-{random}``. The engine (``shared/evaluation``) does the work, so
the run checkpoints every epoch and continues with ``--resume [RUN_DIR]``.

Differences from the released script: the result is the LAST epoch's test accuracy; the
original also kept ``best_weights.pt`` at the best test accuracy, i.e. chose an epoch on the
test set, which is not done here. ``weights.pt`` is written at the end (the engine's
checkpoint holds every epoch's). Additions: ``--dataset digits`` (embedded data), ``--resume``,
``--experiments``, ``--num_workers``, ``--amp``, ``--channels_last``, ``--no_progress``.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.errors import cli_entry  # noqa: E402
from shared.evaluation.cli import (  # noqa: E402
    arch_label,
    build_train_door_parser,
    cifar_run_suffix,
    train_from_scratch,
)

build_parser = build_train_door_parser  # DARTS' flags and the runtime switches


def run_dir(args) -> str:
    """The released name: eval-{save}-{time}-{arch}-{seed}[-cutout-..][-auxiliary-..]-{rand}."""
    rand = int.from_bytes(os.urandom(2), "little") % 10000
    name = (f"eval-{args.save}-{time.strftime('%Y%m%d-%H%M%S')}-{arch_label(args.arch)}-"
            f"{args.seed}{cifar_run_suffix(args)}-{rand}")
    return os.path.join(args.experiments, "sota", args.dataset, name)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train_from_scratch(argv, build_parser(), run_dir=run_dir)


if __name__ == "__main__":
    main()
