"""``--resume [RUN_DIR]``: which run a command continues, and with which flags.

A resumed run continues with the flags it was started with (saved in its checkpoint's
``config.extra.flags``): a typed flag that would change what it computes is refused, flags in
``free`` (where and how fast it runs, how it reports) may change, and untyped free flags keep
the run's values too (e.g. the number of DataLoader workers decides how augmentation draws are
seeded, so only an explicit change may break the bit-identical continuation).
"""
from __future__ import annotations

import argparse
import glob
import os
from typing import Any, Callable

from shared.errors import UserError

CHECKPOINT = "checkpoint.pth.tar"
# The flags a resumed run may change: where and how fast it runs, not what it computes. A door
# adds its own (a benchmark file's path) or removes one (the recurrent searches: --data names
# the corpus, which is what the run computes).
FREE_ON_RESUME = frozenset({"resume", "gpu", "num_workers", "data", "report_freq", "progress",
                            "experiments"})


def saved_flags(state: dict[str, Any]) -> dict[str, Any]:
    """The command-line flags a checkpoint's run was started with."""
    return state.get("config", {}).get("extra", {}).get("flags", {})


def apply_resumed_config(args: argparse.Namespace, saved: dict[str, Any], typed: set[str],
                         free: set[str] | frozenset[str]) -> None:
    """Continue a run with the flags it was started with (see the module docstring)."""
    for key in sorted(typed - free):
        if key in saved and getattr(args, key) != saved[key]:
            raise UserError(f"--{key} {getattr(args, key)!r} differs from the run being resumed "
                            f"({saved[key]!r}); drop the flag to continue that run")
    for key, value in saved.items():
        if key in typed & free or not hasattr(args, key) or key == "resume":
            continue
        setattr(args, key, value)


def newest_run(pattern: str) -> str:
    """The most recently modified run folder matching a glob, for ``--resume`` with no path."""
    runs = [p for p in glob.glob(pattern) if os.path.isfile(os.path.join(p, CHECKPOINT))]
    if not runs:
        raise UserError(f"--resume: no run with a checkpoint matches {pattern!r}; pass the run "
                        f"folder explicitly (--resume PATH)")
    return max(runs, key=os.path.getmtime)


def load_resumed(args: argparse.Namespace, typed: set[str], path: str, *,
                 free: set[str] | frozenset[str] = FREE_ON_RESUME, kind: str | None = None,
                 what: str = "") -> dict[str, Any]:
    """Load the checkpoint ``path`` (of a run of ``kind``, ``what`` in words, when given) and
    continue with the flags it was started with. Returns the checkpoint."""
    from shared.checkpoint import load_checkpoint

    saved = load_checkpoint(path)
    if kind is not None and saved.get("kind") != kind:
        raise UserError(f"{path} is not a checkpoint of {what or kind}; pass such a run folder")
    apply_resumed_config(args, saved_flags(saved), typed, free)
    return saved


def resolve_run(args: argparse.Namespace, typed: set[str], *, pattern: str,
                new_dir: Callable[[], str], free: set[str] | frozenset[str] = FREE_ON_RESUME,
                kind: str | None = None, what: str = ""
                ) -> tuple[str, dict[str, Any] | None]:
    """(run folder, the checkpoint being resumed or None): ``new_dir()`` for a new run, else
    ``--resume``'s folder (bare: the newest run matching ``pattern``) with its flags applied."""
    if args.resume is None:
        return new_dir(), None
    save_dir = args.resume or newest_run(pattern)
    saved = load_resumed(args, typed, os.path.join(save_dir, CHECKPOINT), free=free, kind=kind,
                         what=what)
    return save_dir, saved
