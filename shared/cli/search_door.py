"""What the DARTS-space search doors share: SmoothDARTS' two CNN search doors
(``sota/cnn/train_search.py``, DARTS space and S1-S4; ``optimizers/darts/train_search.py``,
NAS-Bench-1Shot1) and Λ-DARTS' (``lambda_darts/sota/cnn/train_search.py``). The originals
declare the same argparse flags again and again with different defaults (batch 64 vs 96, 50 vs
100 epochs, 8 vs 9 layers); here each door passes its defaults to the one declaration of DARTS'
search flags (``shared.cli.flags``), and gets its run folder, resume and config the same way.
"""
from __future__ import annotations

import argparse
import glob
import os
import time
from typing import Any, Callable, Sequence

from shared.cli.checks import check_flags, check_supernet_layers
from shared.cli.config import config_from_args
from shared.cli.flags import (
    add_compile_flag,
    add_darts_search_flags,
    add_data_on_device_flag,
    add_grouped_edges_flag,
    add_perturbation_flags,
    add_plots_flag,
    add_runtime_flags,
    add_step_capture_flag,
    settings_suffix,
)
from shared.cli.parser import ArgumentParser, parse
from shared.cli.resume import FREE_ON_RESUME, resolve_run

DATASETS = ("cifar10", "cifar100", "svhn", "digits")
IDENTITY = ("save", "search_space", "seed", "dataset")  # what a bare --resume matches


def build_search_parser(prog: str, *, batch_size: int, epochs: int, layers: int,
                        spaces: Sequence[str], default_space: str,
                        grouped_edges: bool = True) -> ArgumentParser:
    """The original flags with a door's defaults, plus ``--dataset digits`` (embedded data, no
    download) and the runtime switches (``grouped_edges``: with ``--grouped_edges``, for a
    DARTS-space supernet)."""
    p = ArgumentParser(prog)
    add_darts_search_flags(p, datasets=DATASETS, batch_size=batch_size, epochs=epochs,
                           layers=layers, save_help="experiment name ('debug' in it: one step "
                                                    "per epoch, as the original)")
    p.add_argument("--model_path", type=str, default="saved_models",
                   help="unused by the original either; kept so its commands still parse")
    p.add_argument("--search_space", type=str, default=default_space, choices=list(spaces))
    add_perturbation_flags(p)
    add_runtime_flags(p, "/".join(f"--{k}" for k in IDENTITY), num_workers=0)
    add_plots_flag(p)
    add_data_on_device_flag(p)
    add_step_capture_flag(p)
    add_compile_flag(p)
    if grouped_edges:
        add_grouped_edges_flag(p)
    return p


def run_name_suffix(args: argparse.Namespace) -> str:
    """The original's folder-name suffixes, in its order, then its random number."""
    name = settings_suffix(args)
    if args.perturb_alpha != "none":
        name += f"-alpha-{args.perturb_alpha}-{args.epsilon_alpha}"
    return name + "-" + str(int.from_bytes(os.urandom(2), "little") % 10000)


def sota_run_dir(args: argparse.Namespace) -> str:
    """The DARTS-space search folder of SmoothDARTS' and Λ-DARTS' ``sota/cnn``:
    ``sota/{dataset}/search-{save}-{time}-{space}-{seed}[-suffixes]-{random}``."""
    name = "search-{}-{}-{}-{}".format(args.save, time.strftime("%Y%m%d-%H%M%S"),
                                       args.search_space, args.seed)
    return os.path.join(args.experiments, "sota", args.dataset, name + run_name_suffix(args))


def sota_resume_pattern(args: argparse.Namespace) -> str:
    """Where a bare ``--resume`` looks for ``sota_run_dir``'s folders (then matches flags)."""
    return os.path.join(args.experiments, "sota", args.dataset,
                        f"search-{glob.escape(args.save)}-*")


def parse_search(parser: ArgumentParser, argv: Sequence[str] | None, *, min_layers: int,
                 pattern: Callable[[argparse.Namespace], str], new_dir: Callable[
                     [argparse.Namespace], str], free: frozenset[str] = FREE_ON_RESUME
                 ) -> tuple[argparse.Namespace, str, bool]:
    """Parse and check the flags, settle the run folder (``--resume`` takes the run's saved
    flags): (flags, run folder, resumed?)."""
    args, typed = parse(parser, argv)
    check_search_flags(args, min_layers)
    save_dir, saved = resolve_run(args, typed, pattern=pattern(args),
                                  new_dir=lambda: new_dir(args), free=free, match=IDENTITY)
    return args, save_dir, saved is not None


def check_search_flags(args: argparse.Namespace, min_layers: int) -> None:
    check_flags(args)
    check_supernet_layers(args.layers, min_layers)


def search_config(args: argparse.Namespace, supernet: str, **extra: Any):
    """The engine's config from the parsed flags; every flag is saved for ``--resume``."""
    from shared.search.cnn_search import CNNSearchConfig

    return config_from_args(CNNSearchConfig, args, supernet=supernet,
                            debug="debug" in args.save, extra=extra)
