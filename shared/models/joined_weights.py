"""Weights that lie back to back in one buffer, so that their concatenation is a view.

The grouped edges (``grouped_edges``) run one conv for the m same-shaped convs of the edges
leaving a cell state, with the m kernels concatenated: ``torch.cat`` copies them on every
forward, 768 launches of a first-order DARTS search step (s5, 8 cells; two forwards), about a
tenth of the step's. :func:`join` moves the m parameters into consecutive regions of one new
buffer (each keeps its shape, its strides and its identity: the optimiser, the state_dict and
the checkpoints see the same parameters), and :func:`joined` then hands the conv a view of
that region, with a backward that hands each parameter its block of the gradient, as
``torch.cat``'s does. Where the tensors do not lie so (weights substituted by
``torch.func.functional_call``, a group left
with some of its members, a model moved and not joined again) or inside ``torch.compile``
(whose tracing treats parameters that share a buffer as aliases), it is ``torch.cat``.
"""
from __future__ import annotations

from typing import Sequence

import torch

CL = torch.channels_last


class _Joined(torch.autograd.Function):
    """The tensors' concatenation on dim 0 as a view of the buffer they lie in (checked by
    :func:`_lie_back_to_back`); the backward splits the gradient into their blocks."""

    @staticmethod
    def forward(ctx, *tensors: torch.Tensor) -> torch.Tensor:
        first = tensors[0]
        ctx.rows = [t.shape[0] for t in tensors]
        return first.as_strided((sum(ctx.rows),) + tuple(first.shape[1:]), first.stride(),
                                first.storage_offset())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return grad.split(ctx.rows)


def _layout(t: torch.Tensor) -> tuple | None:
    """``t``'s strides, shape but for dim 0, dtype and device, if it fills its memory densely
    with dim 0 outermost (contiguous or channels-last); else None."""
    dense = t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=CL))
    if t.dim() == 0 or not dense or t.stride(0) * t.shape[0] != t.numel():
        return None
    return t.stride(), t.shape[1:], t.dtype, t.device


def _lie_back_to_back(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether the tensors are laid out alike (:func:`_layout`), in one buffer, each
    beginning where the one before ends."""
    first = tensors[0]
    layout = _layout(first)
    if layout is None:
        return False
    storage, at = first.untyped_storage().data_ptr(), first.storage_offset()
    for t in tensors:
        if (t.storage_offset() != at or t.untyped_storage().data_ptr() != storage
                or _layout(t) != layout):
            return False
        at += t.numel()
    return True


def _known_back_to_back(tensors: Sequence[torch.Tensor]) -> bool:
    """:func:`_lie_back_to_back`, remembered on the first tensor with the tensors and their
    addresses it held for (a GPU step asks ~800 times: the full check is ~7 µs of host time,
    the remembered answer ~2 µs)."""
    key = tuple((id(t), t.data_ptr()) for t in tensors)
    if getattr(tensors[0], "_back_to_back", None) == key:
        return True
    if not _lie_back_to_back(tensors):
        return False
    tensors[0]._back_to_back = key
    return True


def joined(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors)`` (dim 0), without a copy where they lie back to back in one
    buffer (:func:`join`); one tensor as it is."""
    if len(tensors) == 1:
        return tensors[0]
    if not torch.compiler.is_compiling() and _known_back_to_back(tensors):
        return _Joined.apply(*tensors)
    return torch.cat(list(tensors))


def joined_view(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The tensors' concatenation as a view of the buffer they lie in back to back (writes to
    it write them: a BN's running statistics), None where they do not lie so; no autograd."""
    if not tensors or torch.compiler.is_compiling() or not _known_back_to_back(tensors):
        return None
    first = tensors[0]
    rows = sum(t.shape[0] for t in tensors)
    return first.as_strided((rows,) + tuple(first.shape[1:]), first.stride(),
                            first.storage_offset())


def join(params: Sequence[torch.nn.Parameter]) -> None:
    """Move ``params`` into consecutive regions of one new buffer, in order, values and
    strides kept; nothing if they lie so already or are not laid out alike (:func:`_layout`:
    then :func:`joined` concatenates them)."""
    layouts = {_layout(p) for p in params}
    if len(params) < 2 or None in layouts or len(layouts) > 1 or _lie_back_to_back(params):
        return  # nothing to join, or tensors no one buffer can hold as views
    first = params[0]
    buffer = torch.empty(sum(p.numel() for p in params), dtype=first.dtype,
                         device=first.device)
    at = 0
    with torch.no_grad():
        for p in params:
            view = buffer.as_strided(p.shape, p.stride(), at)
            view.copy_(p)
            p.data = view
            at += p.numel()
