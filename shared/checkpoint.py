"""Atomic checkpoints: written to a temp file then ``os.replace``d, so a kill mid-write leaves
the previous checkpoint intact. Loaded with ``weights_only=True`` (no pickled code)."""
from __future__ import annotations

import json
import os
from typing import Any

import torch

from shared.errors import UserError


def save_checkpoint(state: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(state, tmp)
    with open(tmp, "rb") as f:  # make the bytes durable before the rename publishes them
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise UserError(f"checkpoint {path!r} is corrupt or not a checkpoint of this project "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); delete it "
                        f"or point --resume elsewhere") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path!r} does not hold a state dictionary")
    return state


def write_json(path: str, obj: Any, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON, atomically (a reader never sees half a file)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp, path)
