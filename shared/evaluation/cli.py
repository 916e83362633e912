"""DARTS ``cnn/train.py``'s flags, which SDARTS' and DARTS-PT's evaluation doors keep, and the
folders their runs go to (no torch: ``--help`` and a bad flag cost no engine import)."""
from __future__ import annotations

import glob
import os
import time
from typing import Any, Callable, Sequence

from shared.cli.flags import (
    add_compile_flag,
    add_data_on_device_flag,
    add_gpu_flag,
    add_grouped_ops_flag,
    add_runtime_flags,
    add_step_capture_flag,
)
from shared.cli.parser import ArgumentParser
from shared.cli.resume import FREE_ON_RESUME
from shared.genotypes import Genotype, PerCellGenotype, genotype_from_dict, load_genotype, published


def arch_label(arch: str) -> str:
    """Registry name as is; a genotype file by its stem (``cells/mine.json`` -> mine), except
    the ``genotype.json`` every search writes, which is named by the search folder it lies in
    (``.../search-darts-sota-s2-2/genotype.json`` -> search-darts-sota-s2-2; a DARTS-PT
    projection's, in ``log_resume-...`` inside it, -> search-darts-sota-s2-2-proj), so that
    evaluations of different searches get different folders."""
    if arch in published():
        return arch
    path = os.path.normpath(arch.rstrip("/\\"))
    stem = os.path.splitext(os.path.basename(path))[0] or "arch"
    if stem == "genotype":
        parts = path.split(os.sep)[:-1]
        searches = [p for p in parts if p.startswith("search-")]
        if searches:
            return searches[-1] + ("-proj" if parts[-1].startswith("log_resume") else "")
        if parts and parts[-1] not in ("", ".", ".."):
            return parts[-1]
    return stem


def eval_run_dir(experiments: str, dataset: str, save: str, arch: str, seed: int,
                 suffix: str = "") -> str:
    name = f"eval-{save}-{arch_label(arch)}-{seed}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"
    return os.path.join(experiments, "sota", dataset, "eval", name)


def eval_run_pattern(experiments: str, dataset: str, save: str, arch: str, seed: int) -> str:
    """Glob narrowing the folders ``eval_run_dir`` makes (bare ``--resume`` then matches the
    saved flags exactly: ``shared.cli.resume.find_run``)."""
    return os.path.join(experiments, "sota", dataset, "eval", f"eval-{glob.escape(save)}-*")


def resolve_genotype(arch: str, saved: dict[str, Any] | None) -> Genotype | PerCellGenotype:
    """The genotype a resumed run was started with (its .json may have moved since), else
    ``--arch`` resolved now, before any data or folder, so a typo fails at once."""
    if saved is not None and saved.get("genotype"):
        return genotype_from_dict(saved["genotype"])
    return load_genotype(arch)


def build_cifar_train_parser(datasets: Sequence[str], gpu: int | str = 0) -> ArgumentParser:
    """DARTS ``cnn/train.py``'s flags and defaults, which SDARTS' and DARTS-PT's copies keep
    (plus SDARTS' ``--dataset`` and ``--cutout_prob``); ``gpu``: the default of ``--gpu``
    (DARTS-PT's is 'auto'). The doors add their own flags after these."""
    p = ArgumentParser("train.py")
    p.add_argument("--data", type=str, default="../../data", help="location of the data corpus")
    p.add_argument("--dataset", type=str, default="cifar10", choices=datasets)
    p.add_argument("--batch_size", type=int, default=96,
                   help="batch size (global: split across torchrun processes)")
    p.add_argument("--learning_rate", type=float, default=0.025, help="init learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum")
    p.add_argument("--weight_decay", type=float, default=3e-4, help="weight decay")
    p.add_argument("--report_freq", type=int, default=50, help="report frequency (steps)")
    add_gpu_flag(p, gpu)
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
    # The original's default; it is SDARTS-ADV's S4/CIFAR-100 cell in our registry.
    p.add_argument("--arch", type=str, default="c100_s4_pgd",
                   help="registered genotype name or a genotype .json written by a search")
    p.add_argument("--grad_clip", type=float, default=5, help="gradient clipping")
    return p


def cifar_run_suffix(args: Any) -> str:
    """[-cutout-{len}-{prob}][-auxiliary-{weight}]: the family's evaluation folder suffixes."""
    suffix = ""
    if args.cutout:
        suffix += f"-cutout-{args.cutout_length}-{args.cutout_prob}"
    if args.auxiliary:
        suffix += f"-auxiliary-{args.auxiliary_weight}"
    return suffix


TRAIN_DATASETS = ("cifar10", "cifar100", "svhn", "digits")
TRAIN_IDENTITY = ("save", "arch", "seed", "dataset")  # what a bare --resume matches
TRAIN_FREE = FREE_ON_RESUME | {"save", "model_path"}  # may change on --resume


def build_train_door_parser(datasets: Sequence[str] = TRAIN_DATASETS) -> ArgumentParser:
    """An evaluation door's flags: DARTS ``cnn/train.py``'s, then this repository's runtime
    switches (``--resume``, ``--experiments``, ...)."""
    p = build_cifar_train_parser(datasets)
    add_runtime_flags(p, "/".join(f"--{k}" for k in TRAIN_IDENTITY), num_workers=2)
    add_data_on_device_flag(p)
    add_step_capture_flag(p)
    add_compile_flag(p)
    add_grouped_ops_flag(p)
    return p


def train_from_scratch(argv: Sequence[str] | None, parser: ArgumentParser, *,
                       run_dir: Callable[[Any], str],
                       identity: Sequence[str] = TRAIN_IDENTITY,
                       free: frozenset[str] | set[str] = TRAIN_FREE) -> None:
    """A CIFAR/SVHN evaluation door's body (DARTS ``cnn/train.py`` and its copies): parse and
    check, settle the run (``--resume``), claim its folder, train with the engine."""
    from shared.cli.checks import check_flags
    from shared.cli.config import config_from_args
    from shared.cli.parser import parse
    from shared.cli.resume import resolve_run
    from shared.cli.run_folder import claim_run
    from shared.evaluation.config import KIND, KIND_WHAT, EvalConfig

    args, typed = parse(parser, argv)
    check_flags(args)
    pattern = os.path.join(os.path.dirname(run_dir(args)), f"eval-{glob.escape(args.save)}-*")
    save_dir, saved = resolve_run(args, typed, pattern=pattern, new_dir=lambda: run_dir(args),
                                  match=identity, free=free, kind=KIND, what=KIND_WHAT)
    genotype = resolve_genotype(args.arch, saved)
    from shared.evaluation.run import run_evaluation

    with claim_run(save_dir, root=args.experiments, new=saved is None,
                   data_parallel=True) as save_dir:
        run_evaluation(config_from_args(EvalConfig, args, lr_scheduler="cosine"), genotype,
                       save_dir, resume=saved is not None)


def build_test_parser(datasets: Sequence[str]) -> ArgumentParser:
    """DARTS ``cnn/test.py``'s flags and defaults, which its copies keep."""
    p = ArgumentParser("test.py")
    p.add_argument("--data", type=str, default="../../data", help="location of the data corpus")
    p.add_argument("--dataset", type=str, default="cifar10", choices=datasets)
    p.add_argument("--batch_size", type=int, default=96, help="batch size")
    p.add_argument("--report_freq", type=int, default=50, help="report frequency (steps)")
    add_gpu_flag(p)
    p.add_argument("--init_channels", type=int, default=36, help="num of init channels")
    p.add_argument("--layers", type=int, default=20, help="total number of layers")
    p.add_argument("--model_path", type=str, default="EXP/model.pt",
                   help="weights.pt or checkpoint.pth.tar of a train.py run")
    p.add_argument("--auxiliary", action="store_true", default=False,
                   help="the weights have an auxiliary tower (checked; the head is built "
                        "whenever the weights have one and is unused at test time)")
    p.add_argument("--cutout", action="store_true", default=False,
                   help="unused at test time; kept so the original commands parse")
    p.add_argument("--drop_path_prob", type=float, default=0.2, help="drop path probability")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--arch", type=str, default="DARTS",
                   help="registered genotype name or a genotype .json")
    p.add_argument("--num_workers", type=int, default=2, help="DataLoader workers")
    return p


def run_test_door(argv: Sequence[str] | None, parser: ArgumentParser) -> None:
    """A test door's body (DARTS ``cnn/test.py``): the test accuracy of trained weights."""
    from shared.cli.checks import check_flags
    from shared.cli.config import config_from_args
    from shared.evaluation.config import TestConfig

    args = parser.parse_args(argv)
    from shared.distributed import refuse_more_processes

    refuse_more_processes("test")  # one process: N would each do all of it
    check_flags(args)
    genotype = load_genotype(args.arch)
    from shared.evaluation.test import run_test

    run_test(config_from_args(TestConfig, args), genotype)
