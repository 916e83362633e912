"""StacNAS' ``test.py``: the top-1 / top-5 test accuracy of a network ``augment.py`` trained
(Li et al., "StacNAS", arXiv 1909.11926).

    cd stacnas
    python test.py --name cifar10 --seed 1 --stage test --batch_size 96 \\
        --init_channels 36 --num_cells 20 --alpha_share

The weights are ``{save_dir}/augment/weights.pt`` (or ``--load_model_dir``: a ``weights.pt``,
``best_weights.pt`` or ``checkpoint.pth.tar`` of an augment run), the cell the
``genotype.json`` next to them (or ``--genotype``). The release pickled whole modules, which
tie a file to the source tree that wrote it; its released ``cifar10.pth.tar`` is such a pickle
and is not read here (weights are loaded with ``weights_only=True``).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.errors import UserError, cli_entry  # noqa: E402
from stacnas.config import base_parser, parse_flags, stage_dir  # noqa: E402


def build_parser():
    p = base_parser("test.py", stage="test")
    p.add_argument("--load_model_dir", default=None,
                   help="weights of an augment run (default {save_dir}/augment/weights.pt)")
    p.add_argument("--genotype", default=None,
                   help="the cell: a genotype .json or a registered name (default: the "
                        "genotype.json next to the weights)")
    return p


def network_of_the_run(args, typed: set[str], folder: str) -> None:
    """The network flags the augment run in ``folder`` trained with (its checkpoint's
    config), for those not typed: the release's whole-module pickle carried them itself."""
    checkpoint = os.path.join(folder, "checkpoint.pth.tar")
    if not os.path.isfile(checkpoint):
        return
    from shared.cli.resume import read_run_flags

    flags = (read_run_flags(folder) or {}).get("flags", {})
    for key in ("init_channels", "num_cells", "dataset"):
        if key not in typed and key in flags:
            setattr(args, key, flags[key])


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, typed = parse_flags(build_parser(), argv)
    from shared.distributed import refuse_more_processes

    refuse_more_processes("test")  # one process: N would each do all of it
    weights = args.load_model_dir or os.path.join(stage_dir(args.save_dir, "augment"),
                                                  "weights.pt")
    if not os.path.isfile(weights):
        raise UserError(f"no weights {weights}: train them with augment.py first, or pass "
                        "--load_model_dir")
    arch = args.genotype or os.path.join(os.path.dirname(weights), "genotype.json")
    if args.genotype is None and not os.path.isfile(arch):
        raise UserError(f"no {arch} next to the weights: pass the cell with --genotype")
    from shared.cli.config import config_from_args
    from shared.evaluation.config import TestConfig
    from shared.evaluation.test import run_test
    from shared.genotypes import load_genotype
    from stacnas.augment import check_sharing

    network_of_the_run(args, typed, os.path.dirname(weights))

    cfg = config_from_args(TestConfig, args, data=args.data_dir, layers=args.num_cells,
                           arch=arch, model_path=weights)
    genotype = load_genotype(arch)
    check_sharing(genotype, args.alpha_share, arch)
    run_test(cfg, genotype)


if __name__ == "__main__":
    main()
