"""The flags, folder names and resume rule SmoothDARTS' two CNN search doors share:
``sota/cnn/train_search.py`` (DARTS space, S1-S4) and ``optimizers/darts/train_search.py``
(NAS-Bench-1Shot1). The originals declare the same argparse flags twice with different
defaults (batch 64 vs 96, 50 vs 100 epochs, 8 vs 9 layers); here they are declared once and
each door passes its defaults.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from shared.checkpoint import load_checkpoint
from shared.cli import ArgumentParser, add_runtime_flags, apply_resumed_config, explicit_flags
from shared.cli import newest_run, settings_suffix
from shared.errors import UserError
from shared.search.cnn_search import CNNSearchConfig
from shared.search.perturbation import PERTURBATIONS

DATASETS = ("cifar10", "cifar100", "svhn", "digits")
# Flags that may change when a run is resumed: where and how fast it runs, not what it computes.
# (--save is not one: it names the run, and 'debug' in it changes the steps per epoch.)
FREE_ON_RESUME = {"resume", "gpu", "num_workers", "data", "report_freq", "progress"}


def build_search_parser(prog: str, *, batch_size: int, epochs: int, layers: int,
                        spaces: Sequence[str], default_space: str) -> ArgumentParser:
    """The original flags (reference sdarts.md §2.1/§2.2) with a door's defaults, plus
    ``--dataset`` (``digits``: embedded data, no download) and the runtime switches."""
    p = ArgumentParser(prog)
    p.add_argument("--data", type=str, default="../../data", help="location of the data corpus")
    p.add_argument("--dataset", type=str, default="cifar10", choices=DATASETS)
    p.add_argument("--batch_size", type=int, default=batch_size, help="batch size")
    p.add_argument("--learning_rate", type=float, default=0.025, help="init learning rate")
    p.add_argument("--learning_rate_min", type=float, default=0.001, help="min learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum")
    p.add_argument("--weight_decay", type=float, default=3e-4, help="weight decay")
    p.add_argument("--report_freq", type=int, default=50, help="report frequency (steps)")
    p.add_argument("--gpu", type=int, default=0, help="gpu device id (-1: CPU)")
    p.add_argument("--epochs", type=int, default=epochs, help="num of training epochs")
    p.add_argument("--init_channels", type=int, default=16, help="num of init channels")
    p.add_argument("--layers", type=int, default=layers, help="total number of layers")
    p.add_argument("--model_path", type=str, default="saved_models",
                   help="unused by the original either; kept so its commands still parse")
    p.add_argument("--cutout", action="store_true", default=False, help="use cutout")
    p.add_argument("--cutout_length", type=int, default=16, help="cutout length")
    p.add_argument("--cutout_prob", type=float, default=1.0, help="cutout probability")
    p.add_argument("--save", type=str, default="exp",
                   help="experiment name ('debug' in it: one step per epoch, as the original)")
    p.add_argument("--seed", type=int, default=2, help="random seed")
    p.add_argument("--grad_clip", type=float, default=5, help="gradient clipping")
    p.add_argument("--train_portion", type=float, default=0.5, help="portion of training data")
    p.add_argument("--unrolled", action="store_true", default=False,
                   help="second order: one-step unrolled validation loss")
    p.add_argument("--arch_learning_rate", type=float, default=3e-4)
    p.add_argument("--arch_weight_decay", type=float, default=1e-3)
    p.add_argument("--search_space", type=str, default=default_space, choices=list(spaces))
    p.add_argument("--perturb_alpha", type=str, default="none", choices=list(PERTURBATIONS))
    p.add_argument("--epsilon_alpha", type=float, default=0.3, help="max epsilon for alpha")
    add_runtime_flags(p, "--save/--search_space/--seed/--dataset", num_workers=0)
    return p


def run_name_suffix(args: argparse.Namespace) -> str:
    """The original's folder-name suffixes, in its order, then its random number."""
    name = settings_suffix(args)
    if args.perturb_alpha != "none":
        name += f"-alpha-{args.perturb_alpha}-{args.epsilon_alpha}"
    return name + "-" + str(int.from_bytes(os.urandom(2), "little") % 10000)


def validate_search_args(args: argparse.Namespace, min_layers: int) -> None:
    for flag in ("batch_size", "epochs", "init_channels", "layers"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1")
    if args.layers < min_layers:
        raise UserError(f"--layers must be >= {min_layers} (down-sampling at L//3 and 2L//3)")
    if not 0.0 < args.train_portion < 1.0:
        raise UserError("--train_portion must be in (0, 1)")
    if getattr(args, "warm_start_epochs", 0) < 0:
        raise UserError("--warm_start_epochs must be >= 0")


def parse_or_resume(parser: ArgumentParser, argv: Sequence[str] | None, resume_pattern,
                    free: set[str] = FREE_ON_RESUME) -> tuple[argparse.Namespace, str | None]:
    """Parse; with ``--resume`` take the run's saved flags (typed changes to what it computes
    are refused). Returns (args, the resumed run folder or None). ``resume_pattern(args)``
    gives the glob of this door's run folders for ``--resume`` without a path."""
    args = parser.parse_args(argv)
    typed = explicit_flags(parser, argv if argv is not None else sys.argv[1:])
    if args.resume is None:
        return args, None
    save_dir = args.resume or newest_run(resume_pattern(args))
    saved = load_checkpoint(os.path.join(save_dir, "checkpoint.pth.tar"))
    flags = saved.get("config", {}).get("extra", {}).get("flags", {})
    apply_resumed_config(args, flags, typed, free)
    return args, save_dir


def search_config(args: argparse.Namespace, supernet: str, **extra: Any) -> CNNSearchConfig:
    """The engine's config from the parsed flags; every flag is saved for ``--resume``."""
    return CNNSearchConfig(
        data=args.data, dataset=args.dataset, batch_size=args.batch_size,
        learning_rate=args.learning_rate, learning_rate_min=args.learning_rate_min,
        momentum=args.momentum, weight_decay=args.weight_decay, report_freq=args.report_freq,
        gpu=args.gpu, epochs=args.epochs, init_channels=args.init_channels, layers=args.layers,
        cutout=args.cutout, cutout_length=args.cutout_length, cutout_prob=args.cutout_prob,
        seed=args.seed, grad_clip=args.grad_clip, train_portion=args.train_portion,
        unrolled=args.unrolled, arch_learning_rate=args.arch_learning_rate,
        arch_weight_decay=args.arch_weight_decay, search_space=args.search_space,
        warm_start_epochs=getattr(args, "warm_start_epochs", 0),
        num_workers=args.num_workers, amp=args.amp, channels_last=args.channels_last,
        debug="debug" in args.save, progress=args.progress, supernet=supernet,
        perturb_alpha=args.perturb_alpha, epsilon_alpha=args.epsilon_alpha,
        extra={**extra, "flags": {k: v for k, v in vars(args).items() if k != "resume"}})
