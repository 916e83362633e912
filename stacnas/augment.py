"""StacNAS final training: the cell stage 2 found, trained from scratch — the released
``augment.py`` (Li et al., "StacNAS", arXiv 1909.11926, sec. 4), on the evaluation engine of
the whole repository (``shared.evaluation``: DARTS' ``train.py`` protocol).

    cd stacnas
    python augment.py --name cifar10 --seed 6 --stage augment --batch_size 96 \\
        --init_channels 36 --num_cells 20 --grad_clip 5 --aux_weight 0.4 --epochs 600 \\
        --alpha_share

The cell is ``{save_dir}/search2/genotype_best.json`` (or ``--genotype``: a file or a
registered name such as ``StacNAS_cifar10``). As released: cutout ``--cutout_length`` (16, on
by default; 0 turns it off), drop-path ``--drop_path_prob`` ramped linearly, an auxiliary head
when ``--aux_weight`` > 0, cosine to 0 (``--power_lr``: cosine-power), ``--label_smooth``
(``CrossEntropyLoss(label_smoothing=)``), ``--auto_aug`` (torchvision's AutoAugment CIFAR-10
policy). Outputs: ``{save_dir}/augment``.

**Model selection.** The release kept the epoch with the best *test* accuracy
(``best.pth.tar``), an optimistic estimate. Here the last epoch is reported; ``--train_ratio``
< 1 holds out the end of the training set and keeps the weights of the best held-out epoch;
``--select_on_test`` reproduces the release's choice on the test set, only when asked, and the
log says so.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.cli.flags import add_grouped_ops_flag  # noqa: E402
from shared.cli.resume import FREE_ON_RESUME, load_resumed  # noqa: E402
from shared.cli.run_folder import claim_run, main_process  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402
from stacnas.config import add_training_flags, base_parser, parse_flags, stage_dir  # noqa: E402

FREE = FREE_ON_RESUME | {"data_dir"}


def build_parser():
    p = base_parser("augment.py", stage="augment")
    add_training_flags(p)
    p.add_argument("--aux_weight", type=float, default=0.0,
                   help="weight of the auxiliary head's loss (0: no head)")
    p.add_argument("--cutout_length", type=int, default=16, help="cutout length (0: off)")
    p.add_argument("--drop_path_prob", type=float, default=0.2)
    p.add_argument("--label_smooth", type=float, default=0.0)
    p.add_argument("--train_ratio", type=float, default=1.0,
                   help="< 1: train on this fraction of the training set and keep the weights "
                        "of the best epoch on the rest (best_weights.pt)")
    p.add_argument("--select_on_test", action="store_true", default=False,
                   help="the release's model selection: best_weights.pt = the best epoch on "
                        "the TEST set (an optimistic estimate; off by default)")
    p.add_argument("--keep_zero", action="store_true", default=False,
                   help="'zero as attention' (the release README's option): not implemented, "
                        "refused")
    p.add_argument("--genotype", default=None,
                   help="the cell: a genotype .json or a registered name (default "
                        "{save_dir}/search2/genotype_best.json)")
    add_grouped_ops_flag(p)
    return p


def check_sharing(genotype, alpha_share: bool, path: str) -> None:
    """``--alpha_share`` says which genotype the cell is: one normal and one reduce cell, or
    one cell per cell of the network (a search without ``--alpha_share``)."""
    from shared.genotypes import PerCellGenotype

    per_cell = isinstance(genotype, PerCellGenotype)
    if per_cell == alpha_share:
        raise UserError(f"{path} holds " + (
            f"one cell per cell ({genotype.layers}; a search without --alpha_share): drop "
            "--alpha_share" if per_cell else
            "a shared normal and reduce cell (a search with --alpha_share): pass --alpha_share"))


def genotype_path(args) -> str:
    return args.genotype or os.path.join(stage_dir(args.save_dir, "search2"),
                                         "genotype_best.json")


def eval_config(args):
    from shared.cli.config import config_from_args
    from shared.evaluation.config import EvalConfig

    return config_from_args(
        EvalConfig, args, data=args.data_dir, layers=args.num_cells,
        auxiliary=args.aux_weight > 0, auxiliary_weight=args.aux_weight,
        cutout=args.cutout_length > 0, cutout_length=max(args.cutout_length, 1),
        arch=genotype_path(args), lr_scheduler="cosine_power" if args.power_lr else "cosine")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, typed = parse_flags(build_parser(), argv)
    if args.keep_zero:
        raise UserError("--keep_zero: keeping the search's 'none' in the final cell as an "
                        "attention on each edge (the release README's option) is not in the "
                        "released code (its genotype drops 'none', its cells sum plain ops) and "
                        "is not implemented here")
    out_dir = stage_dir(args.save_dir, "augment")
    from shared.evaluation.config import KIND, KIND_WHAT
    from shared.genotypes import genotype_from_dict, load_genotype

    if args.resume:
        checkpoint = os.path.join(out_dir, "checkpoint.pth.tar")
        if not os.path.isfile(checkpoint):
            raise UserError(f"--resume: no checkpoint {checkpoint} (start without --resume)")
        saved = load_resumed(args, typed, checkpoint, free=FREE, kind=KIND, what=KIND_WHAT)
        genotype = genotype_from_dict(saved["genotype"])
    else:
        path = genotype_path(args)
        if args.genotype is None and not os.path.isfile(path):
            raise UserError(f"no stage-2 result {path}: run search.py --stage search2 first "
                            "with the same --name/--save_dir, or pass --genotype")
        genotype = load_genotype(path)
        check_sharing(genotype, args.alpha_share, path)
    cfg = eval_config(args)
    from shared.evaluation.config import validate_config
    from shared.evaluation.run import run_evaluation

    validate_config(cfg)
    taken = (f"{out_dir} already exists: continue it with --resume, or pass another --name or "
             "--save_dir")
    with claim_run(out_dir, root=args.save_dir, new=not args.resume, unique=False,
                   data_parallel=True,
                   taken=taken) as out_dir:
        if main_process():
            print(f"stage folder: {out_dir}")
        run_evaluation(cfg, genotype, out_dir, resume=args.resume)


if __name__ == "__main__":
    main()
