"""A step's ATen operations recorded once and replayed without Python: the CPU's model of a
CUDA graph (``shared.capture``'s ``emulate`` backend).

A CUDA graph keeps the kernels one call launched and, on every replay, runs them again on the
same memory; the Python that launched them does not run again (PyTorch, "CUDA Graphs"). So a
replayed step sees only what its kernels compute: a Python number it read while it was recorded
(a learning rate, a step count on the host, a branch taken on ``if state`` or on a tensor's
value), a list it appended to, a tensor it created or rebound, all stay as the recording left
them. Calling the step's Python again, as an emulation might, would redo all of that and hide
exactly the mistakes a graph makes silently.

``OpRecording`` runs a call once under a ``TorchDispatchMode`` that keeps every operation that
reaches the dispatcher below autograd, the forward's and the backward's alike, with its
arguments (the tensors themselves, and the Python numbers as they were) and its outputs.
``replay()`` runs the operations again in order, with the same argument objects, and writes each
new result into the tensor the recording produced (the graph's fixed memory), so a later
operation, ``p.grad``, an optimiser's state or a caller holding an output sees it; results that
alias an argument (views, in-place and ``out=`` operations) are already there. Random
operations draw again, as a graph's philox offsets advance on every replay. A read of a
tensor's value on the host (``.item()``, ``bool(t)``: ``aten._local_scalar_dense``) is refused
while recording, as ``torch.cuda.graph`` refuses it.

What it does not model: memory a graph's pool reuses (every recorded tensor is kept alive
instead, which computes the same values), streams, and host-device copies (everything is on
one device).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

HOST_READ = torch.ops.aten._local_scalar_dense.default


class HostReadError(RuntimeError):
    """A recorded call read a tensor's value on the host."""


class OpRecording(TorchDispatchMode):
    """``OpRecording.record(fn, *args)``: ``fn(*args)`` run once (its result returned with
    the recording), its operations kept; ``replay()`` runs them again without ``fn``."""

    def __init__(self) -> None:
        super().__init__()
        # (operation, args, kwargs, where its results go: None, a tensor, or a list of
        # tensors and Nones in the order of its output's leaves)
        self.ops: list[tuple[Any, tuple, dict, Any]] = []

    @classmethod
    def record(cls, fn: Callable[..., Any], *args: Any) -> tuple["OpRecording", Any]:
        recording = cls()
        with recording:
            out = fn(*args)
        return recording, out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is HOST_READ:
            raise HostReadError("the step reads a tensor's value on the host "
                                "(.item(), bool(tensor), float(tensor), ...)")
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, _targets(out, args, kwargs)))
        return out

    def replay(self) -> None:
        """Every recorded operation again, its results written where the recording's were."""
        # the recorded backward is among the operations, and the recorded casts: neither
        # autograd nor an autocast around the replay may add to them
        with torch.no_grad(), torch._C._DisableAutocast():
            for func, args, kwargs, target in self.ops:
                fresh = func(*args, **kwargs)
                if target is None:
                    continue
                if isinstance(target, torch.Tensor):
                    target.copy_(fresh)
                    continue
                for old, new in zip(target, tree_leaves(fresh)):
                    if old is not None:
                        old.copy_(new)

    def __len__(self) -> int:
        return len(self.ops)


def _targets(out: Any, args: tuple, kwargs: dict) -> Any:
    """Where a replay writes an operation's results: its output tensors that are new memory
    (None for one that aliases an argument: a view, an in-place or ``out=`` result, which the
    replay's own operation refreshes); decided once, while recording (a replay aliases as its
    recording did). None: nothing to write; a tensor: the one output; else a list."""
    leaves = tree_leaves(out)
    if not any(isinstance(t, torch.Tensor) for t in leaves):
        return None
    memory = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
              if isinstance(t, torch.Tensor)}
    targets = [t if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in memory
               else None for t in leaves]
    if isinstance(out, torch.Tensor):
        return targets[0]
    return targets if any(t is not None for t in targets) else None
