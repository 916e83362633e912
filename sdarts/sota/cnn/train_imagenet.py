"""Train a genotype from scratch on ImageNet (DARTS cnn/train_imagenet.py, with SDARTS'
cosine/linear schedules and large-batch warm-up).

    cd sdarts/sota/cnn && torchrun --nproc_per_node 8 train_imagenet.py --arch c10_s3_pgd \
        --auxiliary --batch_size 1024 --learning_rate 0.5 --lr_scheduler linear

``--data`` holds ILSVRC2012 as ImageFolder ``train/`` and ``val/`` (no auto-download).
Label-smoothed cross-entropy for training, plain cross-entropy for validation, top-1 and
top-5 on ``val/`` after every epoch; the last epoch is the result (no best-on-val pick).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli.checks import check_flags  # noqa: E402
from shared.cli.config import config_from_args  # noqa: E402
from shared.cli.flags import add_gpu_flag, add_grouped_ops_flag, add_runtime_flags  # noqa: E402
from shared.cli.parser import ArgumentParser, parse  # noqa: E402
from shared.cli.resume import FREE_ON_RESUME, resolve_run  # noqa: E402
from shared.cli.run_folder import claim_run  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402
from shared.evaluation.cli import eval_run_dir, eval_run_pattern, resolve_genotype  # noqa: E402
from shared.evaluation.config import KIND, KIND_WHAT, LR_SCHEDULERS, EvalConfig  # noqa: E402

FREE = FREE_ON_RESUME | {"save", "parallel"}
IDENTITY = ("save", "arch", "seed")  # what a bare --resume matches
# SDARTS warms up only large-batch runs (the linear-scaling recipe of Goyal et al.).
WARMUP_MIN_BATCH = 256


def build_parser() -> ArgumentParser:
    p = ArgumentParser("train_imagenet.py")
    p.add_argument("--data", type=str, default="../../data/imagenet",
                   help="folder with ImageNet train/ and val/ (ImageFolder layout)")
    p.add_argument("--batch_size", type=int, default=128,
                   help="batch size (global: split across torchrun processes)")
    p.add_argument("--learning_rate", type=float, default=0.1, help="init learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum")
    p.add_argument("--weight_decay", type=float, default=3e-5, help="weight decay")
    p.add_argument("--report_freq", type=int, default=100, help="report frequency (steps)")
    add_gpu_flag(p)
    p.add_argument("--epochs", type=int, default=250, help="num of training epochs")
    p.add_argument("--init_channels", type=int, default=48, help="num of init channels")
    p.add_argument("--layers", type=int, default=14, help="total number of layers")
    p.add_argument("--auxiliary", action="store_true", default=False, help="use auxiliary tower")
    p.add_argument("--auxiliary_weight", type=float, default=0.4, help="weight for auxiliary loss")
    p.add_argument("--drop_path_prob", type=float, default=0, help="drop path probability")
    p.add_argument("--save", type=str, default="EXP", help="experiment name")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--arch", type=str, default="DARTS",
                   help="registered genotype name or a genotype .json written by a search")
    p.add_argument("--grad_clip", type=float, default=5., help="gradient clipping")
    p.add_argument("--label_smooth", type=float, default=0.1, help="label smoothing")
    p.add_argument("--gamma", type=float, default=0.97, help="learning rate decay (step)")
    p.add_argument("--decay_period", type=int, default=1,
                   help="epochs between two learning rate decays (step)")
    p.add_argument("--parallel", action="store_true", default=False,
                   help="data parallelism: only valid under torchrun (DDP replaces DataParallel)")
    p.add_argument("--lr_scheduler", type=str, default="step", choices=LR_SCHEDULERS,
                   help="step (DARTS), cosine or linear (PC-DARTS/SDARTS)")
    p.add_argument("--warmup_epochs", type=int, default=5,
                   help=f"linear warm-up epochs, applied when --batch_size > {WARMUP_MIN_BATCH}")
    # Additions of this repository.
    add_runtime_flags(p, "/".join(f"--{k}" for k in IDENTITY), num_workers=4)
    add_grouped_ops_flag(p)
    return p


def run_dir(args) -> str:
    suffix = f"-auxiliary-{args.auxiliary_weight}" if args.auxiliary else ""
    return eval_run_dir(args.experiments, "imagenet", args.save, args.arch, args.seed, suffix)


def to_config(args) -> EvalConfig:
    warmup = args.warmup_epochs if args.batch_size > WARMUP_MIN_BATCH else 0
    return config_from_args(EvalConfig, args, dataset="imagenet", warmup_epochs=warmup,
                            top5=True)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, typed = parse(build_parser(), argv)
    check_flags(args)
    pattern = eval_run_pattern(args.experiments, "imagenet", args.save, args.arch, args.seed)
    save_dir, saved = resolve_run(args, typed, pattern=pattern, new_dir=lambda: run_dir(args),
                                  match=IDENTITY, free=FREE, kind=KIND, what=KIND_WHAT)
    from shared.distributed import env_world_size
    from shared.evaluation.run import run_evaluation

    if args.parallel and env_world_size() == 1:
        raise UserError("--parallel (DataParallel) is replaced by DDP here: launch "
                        "`torchrun --nproc_per_node N train_imagenet.py ...` instead")
    genotype = resolve_genotype(args.arch, saved)
    with claim_run(save_dir, root=args.experiments, new=saved is None,
                   data_parallel=True) as save_dir:
        run_evaluation(to_config(args), genotype, save_dir, resume=saved is not None)


if __name__ == "__main__":
    main()
