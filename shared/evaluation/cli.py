"""DARTS ``cnn/train.py``'s flags, which SDARTS' and DARTS-PT's evaluation doors keep, and the
folders their runs go to (no torch: ``--help`` and a bad flag cost no engine import)."""
from __future__ import annotations

import glob
import os
import time
from typing import Any, Sequence

from shared.cli.flags import add_gpu_flag
from shared.cli.parser import ArgumentParser
from shared.genotypes import Genotype, load_genotype, published


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


def resolve_genotype(arch: str, saved: dict[str, Any] | None) -> Genotype:
    """The genotype a resumed run was started with (its .json may have moved since), else
    ``--arch`` resolved now, before any data or folder, so a typo fails at once."""
    if saved is not None and saved.get("genotype"):
        return Genotype.from_dict(saved["genotype"])
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
