"""SDARTS search on the DARTS space and RobustDARTS S1-S4 (SmoothDARTS sota/cnn/train_search.py).

    cd sdarts/sota/cnn && python train_search.py --perturb_alpha=pgd_linf

Flags and defaults are the original's (reference sdarts.md §2.2), declared once for both SDARTS
search doors in ``sdarts/search_flags.py``, plus ``--dataset digits`` (embedded data, no
download), ``--resume [RUN_DIR]`` and the runtime switches.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from sdarts.search_flags import (build_search_parser, parse_or_resume,  # noqa: E402
                                 run_name_suffix, search_config, validate_search_args)
from shared.errors import cli_entry  # noqa: E402
from shared.search.cnn_search import run_cnn_search  # noqa: E402
from shared.spaces import SPACES  # noqa: E402


def build_parser():
    return build_search_parser("sota", batch_size=64, epochs=50, layers=8,
                               spaces=sorted(SPACES), default_space="s1")


def run_dir(args) -> str:
    """The original's folder name: search-{save}-{time}-{space}-{seed}[-suffixes]-{random}."""
    name = "search-{}-{}-{}-{}".format(args.save, time.strftime("%Y%m%d-%H%M%S"),
                                       args.search_space, args.seed)
    return os.path.join(args.experiments, "sota", args.dataset, name + run_name_suffix(args))


def _resume_pattern(args) -> str:
    return os.path.join(args.experiments, "sota", args.dataset,
                        f"search-{args.save}-*-{args.search_space}-{args.seed}*")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, resumed = parse_or_resume(build_parser(), argv, _resume_pattern)
    save_dir = resumed or run_dir(args)
    validate_search_args(args, min_layers=3)
    cfg = search_config(args, "darts")
    print(f"experiment folder: {save_dir}")
    genotype = run_cnn_search(cfg, save_dir, resume=resumed is not None)
    print(f"genotype = {genotype}")


if __name__ == "__main__":
    main()
