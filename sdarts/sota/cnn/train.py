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
from shared.evaluation import (EvalConfig, build_cifar_train_parser, eval_run_dir,  # noqa: E402
                               eval_run_pattern, resolve_genotype, resolve_run,
                               run_evaluation)

DATASETS = ("cifar10", "cifar100", "svhn", "digits")
# Flags that may change when a run is resumed: where and how fast it runs, not what it computes.
FREE_ON_RESUME = {"resume", "gpu", "num_workers", "data", "report_freq", "progress", "save",
                  "experiments", "model_path"}


def build_parser() -> ArgumentParser:
    p = build_cifar_train_parser(DATASETS)
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
