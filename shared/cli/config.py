"""A config dataclass from the parsed flags, with the command saved for ``--resume``."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

from shared.cli.door import current_door

T = TypeVar("T")


def command_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Every flag of the command, as ``--resume`` restores them (``--resume`` itself aside)."""
    return {k: v for k, v in vars(args).items() if k != "resume"}


def config_from_args(cls: type[T], args: argparse.Namespace, *,
                     extra: dict[str, Any] | None = None, **overrides: Any) -> T:
    """``cls(...)`` with every field named like a flag taken from it, ``overrides`` for the
    fields a door computes (a flag of another meaning, a derived value), and
    ``extra = {**extra, "flags": <every flag>, "door": <the running door>}`` (saved in
    checkpoints: ``--resume`` restores the flags, and another door refuses the checkpoint)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    values = {name: getattr(args, name) for name in names
              if name != "extra" and name not in overrides and hasattr(args, name)}
    values.update(overrides)
    if "extra" in names:
        values["extra"] = {**(extra or {}), "flags": command_flags(args)}
        if current_door() is not None:
            values["extra"]["door"] = current_door()
    return cls(**values)
