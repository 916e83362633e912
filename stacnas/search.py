"""StacNAS search, stage 1 (operation groups) and stage 2 (operations) — the released
``search.py`` (Li et al., "StacNAS", arXiv 1909.11926, sec. 3).

    cd stacnas
    python search.py --name cifar10 --seed 6 --stage search1 --batch_size 64 \\
        --init_channels 16 --num_cells 14 --epochs 80 --alpha_share
    python search.py --name cifar10 --seed 6 --stage search2 --batch_size 64 \\
        --init_channels 16 --num_cells 20 --epochs 80 --alpha_share

Stage 1 searches, on every edge, one representative per group (``max_pool_3x3,
skip_connect, sep_conv_3x3, dil_conv_3x3, none``; ``--ops all``: the 7 DARTS ops, for the
feature analysis only). Stage 2 reads stage 1's best α from ``{save_dir}/search1`` (or
``--stage1_dir``) and searches inside the group each edge chose, on a supernet as deep as the
final network. Both are one-level (``stacnas.search_stage``). Outputs: ``{save_dir}/{stage}``.

Differences from the release, on purpose: unknown flags are refused (it ignored them);
``--gpu -1`` runs on the CPU; the learning rate of epoch e is the closed-form cosine (the
release stepped its scheduler before each epoch, which on PyTorch >= 1.1 shifts it by one);
``--aux_weight`` > 0 (an auxiliary head in search, 0 in every released command) is refused;
search data has no cutout, as released. Without ``--alpha_share`` every cell has its own α
and its own genotype (``genotype_best.json`` then lists one cell per cell); stage 2 must then be
as deep as stage 1 (the release crashed there with an IndexError).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.cli.flags import add_grouped_edges_flag, add_plots_flag  # noqa: E402
from shared.cli.resume import FREE_ON_RESUME, load_resumed  # noqa: E402
from shared.cli.run_folder import claim_run, main_process  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402
from stacnas.config import (  # noqa: E402
    SEARCH_STAGES,
    add_training_flags,
    base_parser,
    parse_flags,
    stage_dir,
)

# what a resumed stage may change: where and how it runs, not what it computes
FREE = FREE_ON_RESUME | {"data_dir", "stage1_dir"}
OPS = ("groups", "all")


def build_parser():
    p = base_parser("search.py", stage=SEARCH_STAGES)
    add_training_flags(p)
    add_grouped_edges_flag(p)
    add_plots_flag(p)
    p.add_argument("--train_ratio", type=float, default=1.0,
                   help="fraction of the training set that trains α and the weights; the "
                        "rest only picks the best epoch (1: no validation split)")
    p.add_argument("--learning_rate_min", type=float, default=1e-3)
    p.add_argument("--alpha_learning_rate", type=float, default=3e-4)
    p.add_argument("--alpha_weight_decay", type=float, default=1e-3)
    p.add_argument("--aux_weight", type=float, default=0.0,
                   help="auxiliary head in search: 0 only (as every released command)")
    p.add_argument("--ops", default="groups", choices=OPS,
                   help="stage 1's candidates: the group representatives (groups), or all 7 "
                        "DARTS ops (all: for feature.py's grouping evidence; no stage 2)")
    p.add_argument("--stage1_dir", default=None,
                   help="stage 2: the stage-1 folder to read (default {save_dir}/search1)")
    return p


def check_search(args) -> None:
    if args.aux_weight != 0:
        raise UserError("--aux_weight: an auxiliary head in search is not implemented (every "
                        "released search command uses 0)")
    if args.stage == "search2" and args.ops != "groups":
        raise UserError("--ops is stage 1's choice; stage 2 searches the groups stage 1 chose")


def search_config(args, space, device_flags):
    from shared.cli.config import config_from_args
    from shared.search.cnn_search import CNNSearchConfig

    return config_from_args(
        CNNSearchConfig, args, data=args.data_dir, layers=args.num_cells,
        train_portion=args.train_ratio, arch_learning_rate=args.alpha_learning_rate,
        arch_weight_decay=args.alpha_weight_decay,
        lr_schedule="cosine_power" if args.power_lr else "cosine",
        search_space=space.name, space_data=space.to_dict(), alpha_update="one_level",
        auto_augment=args.auto_aug,
        cutout=False, supernet="darts", **device_flags)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, typed = parse_flags(build_parser(), argv)
    check_search(args)
    out_dir = stage_dir(args.save_dir, args.stage)
    if args.resume:
        checkpoint = os.path.join(out_dir, "checkpoint.pth.tar")
        if not os.path.isfile(checkpoint):
            raise UserError(f"--resume: no checkpoint {checkpoint} (start the stage without "
                            "--resume)")
        saved = load_resumed(args, typed, checkpoint, free=FREE)
        space_data = saved["config"]["space_data"]
    else:
        space_data = None
    from shared.spaces import space_from_dict
    from stacnas.search_stage import read_stage1, run_stage, stage2_from
    from stacnas.spaces import stage1_space

    if space_data is not None:
        space = space_from_dict(space_data)
    elif args.stage == "search2":
        stage1, alphas = read_stage1(args.stage1_dir or stage_dir(args.save_dir, "search1"))
        space = stage2_from(stage1, alphas, alpha_share=args.alpha_share,
                            layers=args.num_cells)
    else:
        space = stage1_space(args.ops, None if args.alpha_share else args.num_cells)
    cfg = search_config(args, space, {})
    taken = (f"{out_dir} already exists: continue that stage with --resume, or pass another "
             "--name or --save_dir")
    # under torchrun: a data-parallel search (shared.search.data_parallel), rank 0 owns the folder
    with claim_run(out_dir, root=args.save_dir, new=not args.resume, unique=False,
                   taken=taken, data_parallel=True) as out_dir:
        if main_process():
            print(f"stage folder: {out_dir}")
        genotype = run_stage(cfg, out_dir, resume=args.resume)
    if main_process():
        print(f"genotype = {genotype}")


if __name__ == "__main__":
    main()
