"""Which door (paper script) this process runs, so that a checkpoint records the door that
wrote it and another door refuses it by name (an RNN search must not continue a CNN search's
folder, nor DARTS-PT's ``train.py`` an SDARTS evaluation).

``shared.errors.cli_entry`` sets it when a door's ``main`` starts; it stays None when the engine
is called as a library. No import from ``shared`` here: ``shared.errors`` imports this module.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_door: str | None = None


def door_of(main: Callable[..., Any]) -> str:
    """The door file of ``main``, relative to the repository (``sdarts/sota/cnn/train.py``)."""
    path = os.path.abspath(inspect.getfile(main))
    rel = os.path.relpath(path, REPO)
    return path if rel.startswith("..") else rel.replace(os.sep, "/")


def enter(main: Callable[..., Any]) -> None:
    global _door
    _door = door_of(main)


def current_door() -> str | None:
    """The running door (None outside one)."""
    return _door
