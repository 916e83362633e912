"""Runtime choices made in one place: device, seeding, RNG state, AMP and memory format.

No other module calls ``.cuda()``: everything moves with ``.to(runtime.device)``.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from shared.errors import UserError


def choose_device(gpu: int | str | None = 0) -> torch.device:
    """CUDA device ``gpu`` when CUDA is present, the CPU otherwise (or when gpu is 'cpu'/-1)."""
    if gpu in ("cpu", -1, "-1") or not torch.cuda.is_available():
        return torch.device("cpu")
    index = int(gpu or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"--gpu {index}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device("cuda", index)


def cpu_threads() -> int:
    """Set and return the intra-op threads of this process: ``OMP_NUM_THREADS`` if it is set,
    else half the cores (at least one), so a second run, a test suite or the data loaders
    beside it do not make the two spin against each other.

    PyTorch takes every core by default. Measured on 2 cores, the demo's search took 146.8 s
    with 2 threads beside one busy process and 52.7 s with one; alone, 49.3 s vs 48.1 s. The
    rule depends on the machine only, not on its load, so a resumed run computes with the
    threads the run it continues had."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // 2)
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        # cudnn.benchmark picks kernels by timing, which breaks run-to-run equality.
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator of its own (data order, window lengths): saved in checkpoints with the
    global RNGs, so a resumed run draws what an uninterrupted one would."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def rng_state(*generators: torch.Generator) -> dict[str, Any]:
    """Every RNG a run draws from, as tensors/ints (loadable with weights_only=True)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_tensors(np.random.get_state()),
        "python": _python_state_to_tensors(random.getstate()),
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], *generators: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_state_from_tensors(state["numpy"]))
    random.setstate(_python_state_from_tensors(state["python"]))
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state_to_tensors(s: tuple) -> dict[str, Any]:
    return {"keys": torch.from_numpy(s[1].astype(np.int64)), "pos": int(s[2]),
            "has_gauss": int(s[3]), "gauss": float(s[4])}


def _numpy_state_from_tensors(d: dict[str, Any]) -> tuple:
    return ("MT19937", d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["gauss"])


def _python_state_to_tensors(s: tuple) -> dict[str, Any]:
    return {"version": s[0], "state": torch.tensor(s[1], dtype=torch.int64),
            "gauss": s[2] if s[2] is not None else float("nan")}


def _python_state_from_tensors(d: dict[str, Any]) -> tuple:
    gauss = None if d["gauss"] != d["gauss"] else d["gauss"]
    return (d["version"], tuple(int(v) for v in d["state"].tolist()), gauss)


@dataclass(frozen=True)
class Precision:
    """AMP and memory-format switches. Off by default: the fp32 path is the reference."""

    amp: bool = False
    channels_last: bool = False
    # autocast's cache of cast weights: off inside a recorded CUDA graph (PyTorch requires it)
    autocast_cache: bool = True

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() \
            else torch.float16
        return torch.autocast(device.type, dtype=dtype, cache_enabled=self.autocast_cache)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def to_device(batch: tuple[torch.Tensor, ...], device: torch.device,
              precision: Precision | None = None) -> Iterator[torch.Tensor]:
    for t in batch:
        t = t.to(device, non_blocking=True)
        if precision is not None and t.dim() == 4:
            t = precision.prepare(t)
        yield t
