"""SDARTS search on the DARTS space and RobustDARTS S1-S4 (SmoothDARTS sota/cnn/train_search.py).

    cd sdarts/sota/cnn && python train_search.py --perturb_alpha=pgd_linf

Flags and defaults are the original's (reference sdarts.md §2.2), plus ``--dataset digits``
(embedded data, no download), ``--resume [RUN_DIR]`` and the runtime switches.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli import (ArgumentParser, add_runtime_flags, apply_resumed_config,  # noqa: E402
                        explicit_flags, newest_run)
from shared.errors import UserError, cli_entry  # noqa: E402
from shared.search.cnn_search import CNNSearchConfig, run_cnn_search  # noqa: E402
from shared.spaces import SPACES  # noqa: E402
from sdarts.perturb import PERTURBATIONS, make_perturbation  # noqa: E402

DATASETS = ("cifar10", "cifar100", "svhn", "digits")
# Flags that may change when a run is resumed: where and how fast it runs, not what it computes.
FREE_ON_RESUME = {"resume", "gpu", "num_workers", "data", "report_freq", "progress", "save"}


def build_parser() -> ArgumentParser:
    p = ArgumentParser("sota")
    p.add_argument("--data", type=str, default="../../data", help="location of the data corpus")
    p.add_argument("--dataset", type=str, default="cifar10", choices=DATASETS)
    p.add_argument("--batch_size", type=int, default=64, help="batch size")
    p.add_argument("--learning_rate", type=float, default=0.025, help="init learning rate")
    p.add_argument("--learning_rate_min", type=float, default=0.001, help="min learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum")
    p.add_argument("--weight_decay", type=float, default=3e-4, help="weight decay")
    p.add_argument("--report_freq", type=int, default=50, help="report frequency (steps)")
    p.add_argument("--gpu", type=int, default=0, help="gpu device id (-1: CPU)")
    p.add_argument("--epochs", type=int, default=50, help="num of training epochs")
    p.add_argument("--init_channels", type=int, default=16, help="num of init channels")
    p.add_argument("--layers", type=int, default=8, help="total number of layers")
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
    p.add_argument("--search_space", type=str, default="s1", choices=sorted(SPACES))
    p.add_argument("--perturb_alpha", type=str, default="none", choices=list(PERTURBATIONS))
    p.add_argument("--epsilon_alpha", type=float, default=0.3, help="max epsilon for alpha")
    # Additions of this repository.
    add_runtime_flags(p, "--save/--search_space/--seed/--dataset", num_workers=0)
    return p


def run_dir(args) -> str:
    """The original's folder name: search-{save}-{time}-{space}-{seed}[-suffixes]-{random}."""
    name = "search-{}-{}-{}-{}".format(args.save, time.strftime("%Y%m%d-%H%M%S"),
                                       args.search_space, args.seed)
    if args.unrolled:
        name += "-unrolled"
    if args.weight_decay != 3e-4:
        name += f"-weight_l2-{args.weight_decay}"
    if args.arch_weight_decay != 1e-3:
        name += f"-alpha_l2-{args.arch_weight_decay}"
    if args.cutout:
        name += f"-cutout-{args.cutout_length}-{args.cutout_prob}"
    if args.perturb_alpha != "none":
        name += f"-alpha-{args.perturb_alpha}-{args.epsilon_alpha}"
    name += "-" + str(int.from_bytes(os.urandom(2), "little") % 10000)
    return os.path.join(args.experiments, "sota", args.dataset, name)


def validate(args) -> None:
    for flag in ("batch_size", "epochs", "init_channels", "layers"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1")
    if args.layers < 3:
        raise UserError("--layers must be >= 3 (two reduction cells at L//3 and 2L//3)")
    if not 0.0 < args.train_portion < 1.0:
        raise UserError("--train_portion must be in (0, 1)")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    typed = explicit_flags(parser, argv if argv is not None else sys.argv[1:])
    if args.resume is not None:
        save_dir = args.resume or newest_run(os.path.join(
            args.experiments, "sota", args.dataset,
            f"search-{args.save}-*-{args.search_space}-{args.seed}*"))
        from shared.checkpoint import load_checkpoint

        saved = load_checkpoint(os.path.join(save_dir, "checkpoint.pth.tar"))
        flags = saved.get("config", {}).get("extra", {}).get("flags", {})
        apply_resumed_config(args, flags, typed, FREE_ON_RESUME)
    else:
        save_dir = run_dir(args)
    validate(args)
    perturbation = make_perturbation(args.perturb_alpha, args.epsilon_alpha, args.epochs)
    cfg = CNNSearchConfig(
        data=args.data, dataset=args.dataset, batch_size=args.batch_size,
        learning_rate=args.learning_rate, learning_rate_min=args.learning_rate_min,
        momentum=args.momentum, weight_decay=args.weight_decay, report_freq=args.report_freq,
        gpu=args.gpu, epochs=args.epochs, init_channels=args.init_channels, layers=args.layers,
        cutout=args.cutout, cutout_length=args.cutout_length, cutout_prob=args.cutout_prob,
        seed=args.seed, grad_clip=args.grad_clip, train_portion=args.train_portion,
        unrolled=args.unrolled, arch_learning_rate=args.arch_learning_rate,
        arch_weight_decay=args.arch_weight_decay, search_space=args.search_space,
        num_workers=args.num_workers, amp=args.amp, channels_last=args.channels_last,
        debug="debug" in args.save, progress=args.progress,
        extra={"perturb_alpha": args.perturb_alpha, "epsilon_alpha": args.epsilon_alpha,
               "flags": {k: v for k, v in vars(args).items() if k != "resume"}})
    print(f"experiment folder: {save_dir}")
    genotype = run_cnn_search(cfg, save_dir, resume=args.resume is not None,
                              perturbation=perturbation)
    print(f"genotype = {genotype}")


if __name__ == "__main__":
    main()
