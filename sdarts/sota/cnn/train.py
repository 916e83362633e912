"""Train a genotype from scratch on CIFAR-10/100 or SVHN (SmoothDARTS sota/cnn/train.py).

    cd sdarts/sota/cnn && python train.py --arch c10_s3_pgd --auxiliary --cutout
    python train.py --arch ../../../experiments/sota/cifar10/search-.../genotype.json
    torchrun --nproc_per_node 4 train.py --arch DARTS_V2 --auxiliary --cutout   # data parallel

Flags and defaults are the original's (DARTS cnn/train.py plus SDARTS' --dataset and
--cutout_prob), plus ``--dataset digits`` (embedded data, no download), ``--resume [RUN_DIR]``
and the runtime switches. The test split is evaluated after every epoch and the last epoch's
accuracy is the result; no epoch is chosen by its test accuracy.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli import ArgumentParser, add_runtime_flags, explicit_flags  # noqa: E402
from shared.errors import cli_entry  # noqa: E402
from shared.evaluation import (EvalConfig, eval_run_dir, eval_run_pattern,  # noqa: E402
                               resolve_genotype, resolve_run, run_evaluation)

DATASETS = ("cifar10", "cifar100", "svhn", "digits")
# Flags that may change when a run is resumed: where and how fast it runs, not what it computes.
FREE_ON_RESUME = {"resume", "gpu", "num_workers", "data", "report_freq", "progress", "save",
                  "experiments", "model_path"}


def build_parser() -> ArgumentParser:
    p = ArgumentParser("cifar")
    p.add_argument("--data", type=str, default="../../data", help="location of the data corpus")
    p.add_argument("--dataset", type=str, default="cifar10", choices=DATASETS)
    p.add_argument("--batch_size", type=int, default=96,
                   help="batch size (global: split across torchrun processes)")
    p.add_argument("--learning_rate", type=float, default=0.025, help="init learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum")
    p.add_argument("--weight_decay", type=float, default=3e-4, help="weight decay")
    p.add_argument("--report_freq", type=int, default=50, help="report frequency (steps)")
    p.add_argument("--gpu", type=int, default=0, help="gpu device id (-1: CPU)")
    p.add_argument("--epochs", type=int, default=600, help="num of training epochs")
    p.add_argument("--init_channels", type=int, default=36, help="num of init channels")
    p.add_argument("--layers", type=int, default=20, help="total number of layers")
    p.add_argument("--model_path", type=str, default="saved_models",
                   help="unused by the original either; kept so its commands still parse")
    p.add_argument("--auxiliary", action="store_true", default=False, help="use auxiliary tower")
    p.add_argument("--auxiliary_weight", type=float, default=0.4, help="weight for auxiliary loss")
    p.add_argument("--cutout", action="store_true", default=False, help="use cutout")
    p.add_argument("--cutout_length", type=int, default=16, help="cutout length")
    p.add_argument("--cutout_prob", type=float, default=1.0, help="cutout probability")
    p.add_argument("--drop_path_prob", type=float, default=0.2, help="drop path probability")
    p.add_argument("--save", type=str, default="exp", help="experiment name")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--arch", type=str, default="c100_s4_pgd",
                   help="registered genotype name or a genotype .json written by a search")
    p.add_argument("--grad_clip", type=float, default=5, help="gradient clipping")
    # Additions of this repository.
    add_runtime_flags(p, "--save/--arch/--seed/--dataset", num_workers=2)
    return p


def run_dir(args) -> str:
    """eval-{save}-{arch}-{seed}-{time}[-cutout-{len}-{prob}][-auxiliary-{weight}]."""
    suffix = ""
    if args.cutout:
        suffix += f"-cutout-{args.cutout_length}-{args.cutout_prob}"
    if args.auxiliary:
        suffix += f"-auxiliary-{args.auxiliary_weight}"
    return eval_run_dir(args.experiments, args.dataset, args.save, args.arch, args.seed, suffix)


def to_config(args) -> EvalConfig:
    return EvalConfig(
        data=args.data, dataset=args.dataset, batch_size=args.batch_size,
        learning_rate=args.learning_rate, momentum=args.momentum,
        weight_decay=args.weight_decay, report_freq=args.report_freq, gpu=args.gpu,
        epochs=args.epochs, init_channels=args.init_channels, layers=args.layers,
        auxiliary=args.auxiliary, auxiliary_weight=args.auxiliary_weight, cutout=args.cutout,
        cutout_length=args.cutout_length, cutout_prob=args.cutout_prob,
        drop_path_prob=args.drop_path_prob, seed=args.seed, arch=args.arch,
        grad_clip=args.grad_clip, lr_scheduler="cosine", num_workers=args.num_workers,
        amp=args.amp, channels_last=args.channels_last, progress=args.progress,
        extra={"flags": {k: v for k, v in vars(args).items() if k != "resume"}})


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    typed = explicit_flags(parser, argv if argv is not None else sys.argv[1:])
    pattern = eval_run_pattern(args.experiments, args.dataset, args.save, args.arch, args.seed)
    save_dir, saved = resolve_run(args, typed, FREE_ON_RESUME, pattern, lambda: run_dir(args))
    genotype = resolve_genotype(args.arch, saved)
    run_evaluation(to_config(args), genotype, save_dir, resume=saved is not None)


if __name__ == "__main__":
    main()
