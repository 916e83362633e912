"""A model's many small tensors handled in a few kernels.

The DARTS supernet has ~1,400 weight tensors and ~2,400 BN buffers (s5, 8 cells). A Python
loop that copies or updates them one by one launches a kernel per tensor and operation:
~18,000 launches in the second-order alpha step alone, where a GPU step is bound by launches
(README, Speed). The same element-wise arithmetic over whole lists is ``torch._foreach_*``
(one kernel per chunk of the list on CUDA, PyTorch's multi-tensor apply, which its optimisers
use), for tensors of one dtype and device.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch


def same_kind(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    """The indices of ``tensors`` grouped by dtype and device, in order: what one multi-tensor
    operation (or one concatenation) can take together."""
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.dtype, t.device), []).append(i)
    return list(groups.values())


def copies(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of ``tensors``, bit for bit (x * 1 is x in IEEE arithmetic, and in
    integers), as one multi-tensor multiplication per dtype and device. Each copy has storage
    of its own: autograd tracks in-place changes per storage, so copies sharing one (slices of
    a concatenation) would all read as modified when one is (a BN buffer's running update)."""
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for index in same_kind(tensors):
        for i, c in zip(index, torch._foreach_mul([tensors[i].detach() for i in index], 1)):
            out[i] = c
    return out  # type: ignore[return-value]


def copy_back(targets: Sequence[torch.Tensor], sources: Sequence[torch.Tensor]) -> None:
    """``targets[i].copy_(sources[i])`` for all, as one multi-tensor copy per dtype and device
    (a list of mixed dtypes, as a model's float statistics and integer counters, would take
    the multi-tensor operation's slow path: one copy per tensor)."""
    for index in same_kind(targets):
        torch._foreach_copy_([targets[i] for i in index], [sources[i] for i in index])


@contextlib.contextmanager
def restored(tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    """While inside, ``tensors`` may change in place (a training forward's BN running
    statistics and counters); after, also on an exception, each is as it was, bit for bit."""
    tensors = list(tensors)
    kept = copies(tensors)
    try:
        yield
    finally:
        with torch.no_grad():
            copy_back(tensors, kept)


def mirrored(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Uninitialised tensors laid out as ``tensors`` are: each in a new storage of its own
    storage's size, at its offset with its strides, so that tensors sharing a storage (weights
    laid back to back, ``joined_weights.join``) share one here too, in the same places."""
    storages: dict[tuple[int, torch.device], torch.Tensor] = {}
    out = []
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in storages:
            storages[key] = torch.empty(t.untyped_storage().nbytes() // t.element_size(),
                                        dtype=t.dtype, device=t.device)
        out.append(storages[key].as_strided(t.shape, t.stride(), t.storage_offset()))
    return out


def assign_where(flag: torch.Tensor, targets: Sequence[torch.Tensor],
                 values: Sequence[torch.Tensor]) -> None:
    """``targets[i] = values[i]`` where the 0-d bool ``flag`` is true, else each target kept,
    bit for bit either way and without reading ``flag`` on the host: per dtype, one
    ``torch.where`` over the concatenations and one multi-tensor copy back (each target keeps
    its layout), where a ``torch.where`` per tensor would be two launches each."""
    for index in same_kind(targets):
        ts = [targets[i] for i in index]
        old = torch.cat([t.reshape(-1) for t in ts])
        new = torch.cat([values[i].reshape(-1) for i in index])
        chosen = torch.where(flag, new, old).split([t.numel() for t in ts])
        torch._foreach_copy_(ts, [c.view_as(t) for c, t in zip(chosen, ts)])
