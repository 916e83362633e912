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
from typing import Any, Callable, Sequence

from shared.cli.door import current_door
from shared.errors import UserError

CHECKPOINT = "checkpoint.pth.tar"
# The flags a resumed run may change: where and how fast it runs, not what it computes. A door
# adds its own (a benchmark file's path) or removes one (the recurrent searches: --data names
# the corpus, which is what the run computes).
FREE_ON_RESUME = frozenset({"resume", "gpu", "num_workers", "data", "report_freq", "progress",
                            "plots", "experiments", "step_capture", "compile"})


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


def saved_door(state: dict[str, Any]) -> str | None:
    """The door that wrote a checkpoint (None: written before doors were recorded, or by the
    engine called as a library)."""
    return state.get("config", {}).get("extra", {}).get("door")


def check_door(state: dict[str, Any], path: str) -> None:
    """Refuse a checkpoint another door wrote, by name."""
    door, here = saved_door(state), current_door()
    if door is not None and here is not None and door != here:
        raise UserError(f"{path} was written by {door}, not by {here}: continue that run with "
                        f"{door} --resume {os.path.dirname(path) or '.'}")


def read_run_flags(folder: str) -> dict[str, Any] | None:
    """The saved flags and door of a run folder's checkpoint, read without loading its tensors
    (memory-mapped); None when it cannot be read."""
    import torch

    try:
        state = torch.load(os.path.join(folder, CHECKPOINT), map_location="cpu",
                           weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable candidate is simply not a match
        return None
    if not isinstance(state, dict):
        return None
    return {"flags": saved_flags(state), "door": saved_door(state)}


def find_run(pattern: str, match: dict[str, Any]) -> str:
    """The one run folder under ``pattern`` (a glob that only narrows the search) whose saved
    flags equal ``match`` exactly and that this door wrote, for ``--resume`` without a path.
    None or several: refused, the candidates listed."""
    wanted = " ".join(f"--{k} {v}" for k, v in match.items())
    hits, unreadable = [], []
    for folder in sorted(glob.glob(pattern)):
        if not os.path.isfile(os.path.join(folder, CHECKPOINT)):
            continue
        found = read_run_flags(folder)
        if found is None:
            unreadable.append(folder)
            continue
        door, here = found["door"], current_door()
        if door is not None and here is not None and door != here:
            continue
        if all(k in found["flags"] and found["flags"][k] == v for k, v in match.items()):
            hits.append(folder)
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UserError(f"--resume: {len(hits)} runs have {wanted}: {', '.join(hits)}; pass "
                        "the one to continue (--resume RUN_DIR)")
    skipped = f" ({len(unreadable)} unreadable checkpoint(s) skipped)" if unreadable else ""
    raise UserError(f"--resume: no run with {wanted} has a checkpoint in "
                    f"{os.path.dirname(pattern)}{skipped}; pass the run folder (--resume "
                    "RUN_DIR)")


def identity(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The flags that name a run (``save``, ``seed``, the space, the data set, ...), as typed."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def load_resumed(args: argparse.Namespace, typed: set[str], path: str, *,
                 free: set[str] | frozenset[str] = FREE_ON_RESUME, kind: str | None = None,
                 what: str = "") -> dict[str, Any]:
    """Load the checkpoint ``path`` (of a run of ``kind``, ``what`` in words, when given) and
    continue with the flags it was started with. Returns the checkpoint."""
    from shared.checkpoint import load_checkpoint

    saved = load_checkpoint(path)
    check_door(saved, path)
    if kind is not None and saved.get("kind") != kind:
        raise UserError(f"{path} is not a checkpoint of {what or kind}; pass such a run folder")
    apply_resumed_config(args, saved_flags(saved), typed, free)
    return saved


def resolve_run(args: argparse.Namespace, typed: set[str], *, pattern: str,
                new_dir: Callable[[], str], match: Sequence[str],
                free: set[str] | frozenset[str] = FREE_ON_RESUME, kind: str | None = None,
                what: str = "") -> tuple[str, dict[str, Any] | None]:
    """(run folder, the checkpoint being resumed or None): ``new_dir()`` for a new run, else
    ``--resume``'s folder with its flags applied. Bare ``--resume``: the one run under
    ``pattern`` whose flags ``match`` names equal this command's (``find_run``)."""
    if args.resume is None:
        return new_dir(), None
    save_dir = args.resume or find_run(pattern, identity(args, match))
    saved = load_resumed(args, typed, os.path.join(save_dir, CHECKPOINT), free=free, kind=kind,
                         what=what)
    return save_dir, saved
