"""Command-line helpers shared by the paper doors (train_search.py, train.py, ...)."""
from __future__ import annotations

import argparse
import glob
import os
from typing import Any, Sequence

from shared.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags through UserError (one line, exit 2, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """Names of the flags the user actually typed (defaults excluded)."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:  # same flags, every default suppressed
        if action.option_strings and action.dest != "help":
            kwargs: dict[str, Any] = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs is not None or isinstance(action, argparse._StoreAction):
                kwargs["nargs"] = action.nargs
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                kwargs["action"] = "store_const"
                kwargs["const"] = True
                kwargs.pop("nargs", None)
            probe.add_argument(*action.option_strings, **kwargs)
    ns, _ = probe.parse_known_args(argv)
    return set(vars(ns))


def apply_resumed_config(args: argparse.Namespace, saved: dict[str, Any], typed: set[str],
                         free: set[str]) -> None:
    """Continue a run with the flags it was started with.

    A flag typed now that changes a saved setting is refused (it would silently break the
    'resume = never stopped' promise); flags in ``free`` (device, workers, paths) may change.
    """
    for key in sorted(typed - free):
        if key in saved and getattr(args, key) != saved[key]:
            raise UserError(f"--{key} {getattr(args, key)!r} differs from the run being resumed "
                            f"({saved[key]!r}); drop the flag to continue that run")
    for key, value in saved.items():
        if key not in free and hasattr(args, key):
            setattr(args, key, value)


def newest_run(pattern: str) -> str:
    """The most recently modified run folder matching a glob, for ``--resume`` with no path."""
    runs = [p for p in glob.glob(pattern) if os.path.isfile(os.path.join(p, "checkpoint.pth.tar"))]
    if not runs:
        raise UserError(f"--resume: no run with a checkpoint matches {pattern!r}; pass the run "
                        f"folder explicitly (--resume PATH)")
    return max(runs, key=os.path.getmtime)


def add_runtime_flags(parser: argparse.ArgumentParser, resume_default_run: str,
                      num_workers: int) -> None:
    """The flags every long-running door adds to its paper's: resume, outputs, speed switches."""
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                        help="continue a run from its last checkpoint (default: the newest run "
                             f"with the same {resume_default_run})")
    parser.add_argument("--experiments", type=str, default="../../experiments",
                        help="root of the output folders")
    parser.add_argument("--num_workers", type=int, default=num_workers, help="DataLoader workers")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU)")
    parser.add_argument("--channels_last", action="store_true",
                        help="channels-last memory format")
    parser.add_argument("--no_progress", dest="progress", action="store_false",
                        help="no tqdm progress bars")


def settings_suffix(args: argparse.Namespace) -> str:
    """The folder-name suffixes the DARTS family's search scripts append for non-default
    settings, in their order: -unrolled, -weight_l2-X, -alpha_l2-X, -cutout-L-P."""
    name = ""
    if args.unrolled:
        name += "-unrolled"
    if args.weight_decay != 3e-4:
        name += f"-weight_l2-{args.weight_decay}"
    if args.arch_weight_decay != 1e-3:
        name += f"-alpha_l2-{args.arch_weight_decay}"
    if args.cutout:
        name += f"-cutout-{args.cutout_length}-{args.cutout_prob}"
    return name
