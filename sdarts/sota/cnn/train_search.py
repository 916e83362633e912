"""SDARTS search on the DARTS space and RobustDARTS S1-S4 (SmoothDARTS sota/cnn/train_search.py).

    cd sdarts/sota/cnn && python train_search.py --perturb_alpha=pgd_linf

Flags and defaults are the original's, declared once for both SDARTS search doors in
``shared/cli/search_door.py``, plus ``--dataset digits`` (embedded data, no download),
``--resume [RUN_DIR]`` and the runtime switches.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli.run_folder import claim_run, main_process  # noqa: E402
from shared.cli.search_door import (  # noqa: E402
    build_search_parser,
    parse_search,
    search_config,
    sota_resume_pattern,
    sota_run_dir,
)
from shared.errors import cli_entry  # noqa: E402
from shared.spaces import SPACES  # noqa: E402


def build_parser():
    return build_search_parser("train_search.py", batch_size=64, epochs=50, layers=8,
                               spaces=sorted(SPACES), default_space="s1")


run_dir = sota_run_dir  # the original's folder: search-{save}-{time}-{space}-{seed}...


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, save_dir, resumed = parse_search(build_parser(), argv, min_layers=3,
                                           pattern=sota_resume_pattern, new_dir=run_dir)
    from shared.search.cnn_search import run_cnn_search

    # under torchrun: a data-parallel search, rank 0 owns the folder (shared.search.data_parallel)
    with claim_run(save_dir, root=args.experiments, new=not resumed,
                   data_parallel=True) as save_dir:
        if main_process():
            print(f"experiment folder: {save_dir}")
        genotype = run_cnn_search(search_config(args, "darts"), save_dir, resume=resumed)
    if main_process():
        print(f"genotype = {genotype}")


if __name__ == "__main__":
    main()
