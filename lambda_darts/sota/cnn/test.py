"""Test accuracy of trained weights (Lambda-DARTS ``sota/cnn/test.py``, DARTS ``cnn/test.py``).

    cd lambda_darts/sota/cnn && python test.py --arch lambdadarts_corr_0 --auxiliary \\
        --model_path ../../experiments/sota/cifar10/eval-.../weights.pt

The released defaults ``--arch DARTS_MINUS_CIFAR10_S5_Best`` and ``--model_path EXP/model.pt``
name nothing that exists; here ``--arch`` defaults to DARTS' ``DARTS`` (as DARTS' test.py) and
a missing ``--model_path`` is one clear message. ``--model_path`` takes the ``weights.pt`` or
``checkpoint.pth.tar`` of a ``train.py`` run.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.errors import cli_entry  # noqa: E402
from shared.evaluation.cli import build_test_parser, run_test_door  # noqa: E402

DATASETS = ("cifar10", "cifar100", "svhn", "digits")


def build_parser():
    return build_test_parser(DATASETS)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    run_test_door(argv, build_parser())


if __name__ == "__main__":
    main()
