"""Atomic checkpoints: written to a temp file then ``os.replace``d, so a kill mid-write leaves
the previous checkpoint intact. Loaded with ``weights_only=True`` (no pickled code)."""
from __future__ import annotations

import errno
import json
import math
import numbers
import os
import pickle
import re
import shutil
import warnings
from typing import Any

import torch

from shared.errors import UserError


def save_checkpoint(state: dict[str, Any], path: str) -> None:
    """Write ``state`` to ``path`` atomically; a failed write (disk full, no permission) leaves
    the previous file and no temp file, and is one UserError."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:  # make the bytes durable before the rename publishes them
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
        _discard_temp(tmp)
        raise UserError(write_failure(path, exc)) from None


def copy_file(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` atomically (a numbered checkpoint), as ``save_checkpoint``."""
    tmp = f"{dst}.tmp.{os.getpid()}"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        _discard_temp(tmp)
        raise UserError(write_failure(dst, exc)) from None


def _discard_temp(tmp: str) -> None:
    try:
        os.remove(tmp)
    except OSError:
        pass


def write_failure(path: str, exc: BaseException) -> str:
    """One line: which file could not be written, why (disk full, permission), what now."""
    folder = os.path.dirname(os.path.abspath(path))
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"no permission to write in {folder} ({exc.strerror})"
    else:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = -1
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "write failed"
        why = (f"the disk is full ({free // 2**20} MiB free)" if 0 <= free < 2**26 else
               f"{reason} (a full disk or a file-size limit, ulimit -f)")
    return (f"cannot write {path}: {why}; the previous file is intact: make room, then "
            "continue the run with --resume")


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state dictionary in ``path``, loaded with ``weights_only=True``: tensors and plain
    values only, no pickled code is ever run.

    A file it cannot load is a one-line UserError that says what was expected and what was
    found, in words of its own: PyTorch's text is never quoted, as it advises loading the
    file again with the unsafe loader, which an untrusted file must never be."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path!r} does not exist")
    expected = f"expected a checkpoint written by this project, but {path!r}"
    todo = "delete it or pass another run"
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol notice: not one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                    category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler refused a global (class or function) before building
        # it: "Unsupported global: GLOBAL x.y ..." or "... unsupported GLOBAL x.y whose ...".
        found = re.search(r"GLOBAL\s+([A-Za-z_][\w.]*)", str(exc))
        if found:
            raise UserError(f"{expected} holds the Python object {found.group(1).rstrip('.')}, "
                            f"which is never unpickled (nothing in it was run); it was not "
                            f"written by this project: {todo}") from None
        if "Weights only load failed" in str(exc):
            raise UserError(f"{expected} holds Python objects other than tensors and plain "
                            f"values, which are never unpickled (nothing in it was run); it was "
                            f"not written by this project: {todo}") from None
        raise UserError(f"{expected} is not a complete PyTorch file (truncated or corrupt): "
                        f"{todo}") from None
    except PermissionError as exc:
        raise UserError(f"{expected} cannot be read ({exc.strerror or type(exc).__name__}): "
                        f"fix its permissions, or pass another run") from None
    except Exception:  # noqa: BLE001 - RuntimeError (zip), EOFError, IndexError, ...
        raise UserError(f"{expected} is not a complete PyTorch file (truncated or corrupt): "
                        f"{todo}") from None
    if not isinstance(state, dict):
        raise UserError(f"{expected} holds a {type(state).__name__}, not the dictionary a "
                        f"checkpoint of this project holds: {todo}")
    return state


def write_json(path: str, obj: Any, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON, atomically (a reader never sees half a file), and always valid
    JSON (RFC 8259 has no NaN or Infinity): non-finite numbers are written as ``null``
    (``finite_json``). A failed dump or write leaves no temp file behind."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(finite_json(obj), f, indent=indent, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (nan, inf, -inf; NumPy's too) replaced by None,
    inside dicts, lists and tuples (tuples become lists, NumPy integers ints), so that
    ``json.dump(..., allow_nan=False)`` writes valid JSON: Python's default writes bare
    ``NaN``, which strict readers (``JSON.parse``, jq) reject."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj
