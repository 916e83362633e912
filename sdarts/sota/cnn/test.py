"""Test accuracy of trained weights on a test split (DARTS cnn/test.py).

    cd sdarts/sota/cnn && python test.py --arch DARTS_V2 --auxiliary \
        --model_path ../../experiments/sota/cifar10/eval/eval-exp-DARTS_V2-0-.../weights.pt

``--model_path`` takes the ``weights.pt`` a train.py run writes at its end, or its
``checkpoint.pth.tar`` (weights of the last finished epoch). The network flags must be the
ones it was trained with; a mismatch is reported, not loaded.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.errors import cli_entry  # noqa: E402
from shared.evaluation.cli import build_test_parser, run_test_door  # noqa: E402

DATASETS = ("cifar10", "cifar100", "svhn", "digits", "imagenet")


def build_parser():
    return build_test_parser(DATASETS)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    run_test_door(argv, build_parser())


if __name__ == "__main__":
    main()
