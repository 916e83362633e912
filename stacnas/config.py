"""StacNAS' command line (the released ``config.py``), declared once for every StacNAS door.

The release parses one ``SearchConfig`` in every script with ``parse_known_args``, so a typo
passed silently, and creates ``{save_dir}/{stage}`` at import. Here each door
(``search.py``, ``augment.py``, ``test.py``, ``feature.py``) takes the released flags that
mean something to it, with the released defaults, and refuses any other flag; nothing is
created before the flags are checked. Added: ``--dataset digits`` (embedded, no download),
``--resume``, ``--no_progress`` (and ``search.py``'s ``--no_plots``).

Paths: the release's defaults were ``/home/user/datasets/`` and ``/home/user/results/``; here
``--data_dir`` defaults to ``../data`` and ``--save_dir`` to ``../experiments/stacnas/{name}``
(from ``stacnas/``). A stage's outputs go to ``{save_dir}/{stage}`` as released.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from shared.cli.checks import RULES, Rule, between, check_flags
from shared.cli.flags import add_compile_flag, add_data_on_device_flag, add_step_capture_flag
from shared.cli.parser import ArgumentParser, parse
from shared.errors import UserError

DATASETS = ("cifar10", "cifar100", "mnist", "fashionmnist", "digits")
SEARCH_STAGES = ("search1", "search2")
CELL_NODES = 4  # the DARTS cell: 4 intermediate nodes, 14 edges

# the range rules this family adds to the shared ones (shared.cli.checks.RULES)
STACNAS_RULES: dict[str, Rule] = {
    "train_ratio": ((lambda x: isinstance(x, float) and 0 < x <= 1), "in (0, 1]"),
    "num_cells": RULES["layers"],
    "aux_weight": RULES["auxiliary_weight"],
    "alpha_learning_rate": RULES["arch_learning_rate"],
    "alpha_weight_decay": RULES["arch_weight_decay"],
    "label_smooth": between(0, 1, closed_high=False),
    "total_samples": RULES["batch_size"],
    "cutout_length": RULES["num_workers"],  # >= 0: 0 turns cutout off, as released
}


def dataset_name(value: str) -> str:
    """``--dataset``: lower-cased, as released (``CIFAR10`` is its default spelling)."""
    name = value.lower()
    if name not in DATASETS:
        raise argparse.ArgumentTypeError(f"{value!r}: one of {', '.join(DATASETS)}")
    return name


def gpu_index(value: str) -> int:
    """``--gpu``: the release took a comma list or ``all`` and used only the first GPU; one
    index here (``all``: GPU 0), -1 for the CPU. A list of several is refused, not cut."""
    if value == "all":
        return 0
    parts = [p for p in value.split(",") if p.strip()]
    if len(parts) != 1:
        raise argparse.ArgumentTypeError(f"{value!r}: StacNAS runs on one GPU; pass one index "
                                         "(or -1 for the CPU)")
    try:
        return int(parts[0])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a GPU index or -1") from None


def base_parser(prog: str, *, stage: str | Sequence[str]) -> ArgumentParser:
    """The flags every StacNAS door has; ``stage``: the stage(s) ``--stage`` accepts."""
    stages = (stage,) if isinstance(stage, str) else tuple(stage)
    p = ArgumentParser(prog, allow_abbrev=False)
    p.add_argument("--name", required=True, help="job name")
    p.add_argument("--dataset", type=dataset_name, default="cifar10",
                   help=f"{', '.join(DATASETS)} (case-insensitive)")
    p.add_argument("--data_dir", default="../data", help="where the data set lies (no download)")
    p.add_argument("--save_dir", default=None,
                   help="root of all stages' outputs (default ../experiments/stacnas/{name})")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--gpu", type=gpu_index, default=0, help="GPU index, -1 for the CPU")
    p.add_argument("--num_workers", type=int, default=4, help="DataLoader workers")
    p.add_argument("--stage", default=stages[0], choices=stages)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--num_cells", type=int, default=8)
    p.add_argument("--num_nodes", type=int, default=CELL_NODES,
                   help="intermediate nodes per cell (the DARTS cell: 4)")
    p.add_argument("--alpha_share", action="store_true", default=False,
                   help="one α per cell type (normal, reduce) shared by all cells; without it "
                        "every cell has its own α and its own genotype")
    p.add_argument("--report_freq", type=int, default=50)
    p.add_argument("--no_progress", dest="progress", action="store_false",
                   help="no tqdm progress bars")
    return p


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """The optimiser flags search and augment share (released defaults)."""
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--learning_rate", type=float, default=0.025)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight_decay", type=float, default=3e-4)
    p.add_argument("--grad_clip", type=float, default=3)
    p.add_argument("--power_lr", action="store_true", default=False,
                   help="cosine-power annealing (p = 2) instead of cosine")
    p.add_argument("--auto_aug", action="store_true", default=False,
                   help="AutoAugment's CIFAR-10 policy (torchvision's)")
    p.add_argument("--resume", action="store_true", default=False,
                   help="continue this stage's run in {save_dir}/{stage} from its checkpoint")
    add_data_on_device_flag(p)
    add_step_capture_flag(p)
    add_compile_flag(p)


def parse_flags(parser: ArgumentParser, argv: Sequence[str] | None
                ) -> tuple[argparse.Namespace, set[str]]:
    """Parse (unknown flags refused), check ranges, fill ``save_dir``: (flags, typed names)."""
    args, typed = parse(parser, argv)
    check_flags(args, STACNAS_RULES)
    if args.num_nodes != CELL_NODES:
        raise UserError(f"--num_nodes {args.num_nodes}: the DARTS cell space has "
                        f"{CELL_NODES} intermediate nodes (14 edges)")
    if args.save_dir is None:
        args.save_dir = os.path.join("..", "experiments", "stacnas", args.name)
    return args, typed


def stage_dir(save_dir: str, stage: str) -> str:
    """Where a stage's outputs go: ``{save_dir}/{stage}``, as released."""
    return os.path.join(save_dir, stage)
