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

from shared.cli.checks import check_flags  # noqa: E402
from shared.cli.config import config_from_args  # noqa: E402
from shared.cli.flags import add_gpu_flag  # noqa: E402
from shared.cli.parser import ArgumentParser  # noqa: E402
from shared.errors import cli_entry  # noqa: E402
from shared.evaluation.config import TestConfig  # noqa: E402
from shared.genotypes import load_genotype  # noqa: E402

DATASETS = ("cifar10", "cifar100", "svhn", "digits", "imagenet")


def build_parser() -> ArgumentParser:
    p = ArgumentParser("test.py")
    p.add_argument("--data", type=str, default="../../data", help="location of the data corpus")
    p.add_argument("--dataset", type=str, default="cifar10", choices=DATASETS)
    p.add_argument("--batch_size", type=int, default=96, help="batch size")
    p.add_argument("--report_freq", type=int, default=50, help="report frequency (steps)")
    add_gpu_flag(p)
    p.add_argument("--init_channels", type=int, default=36, help="num of init channels")
    p.add_argument("--layers", type=int, default=20, help="total number of layers")
    p.add_argument("--model_path", type=str, default="EXP/model.pt",
                   help="weights.pt or checkpoint.pth.tar of a train.py run")
    p.add_argument("--auxiliary", action="store_true", default=False,
                   help="the weights have an auxiliary tower (checked; the head is built "
                        "whenever the weights have one and is unused at test time)")
    p.add_argument("--cutout", action="store_true", default=False,
                   help="unused at test time; kept so the original commands parse")
    p.add_argument("--drop_path_prob", type=float, default=0.2, help="drop path probability")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--arch", type=str, default="DARTS",
                   help="registered genotype name or a genotype .json")
    p.add_argument("--num_workers", type=int, default=2, help="DataLoader workers")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_flags(args)
    genotype = load_genotype(args.arch)
    from shared.evaluation.test import run_test

    run_test(config_from_args(TestConfig, args), genotype)

if __name__ == "__main__":
    main()
