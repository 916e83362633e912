"""A cell's kernels of several sizes embedded in the widest: every stage of its groups at once.

Where a group of a cell's edges takes every kernel size of its kind (on CUDA,
``fast_mixed.EMBED``), each of its depthwise stages is one conv by its members' kernels side
by side, each 3x3 kernel embedded with zeros in the middle of a 5x5 one
(``grouped_edges.kernels``). Built from autograd's operations stage by stage, that is a pad
and a concatenation forward and the pad's backward for every stage: a DARTS cell has 12 such
stages (four sets of states, each with a separable group of two depthwise stages and a dilated
group of one), 288 of the 4,164 launches of a first-order search step as on CUDA (s5, 8 cells,
``bench/kernel_count.py``).

:func:`embedded` builds all the stages of a cell at once: one pad of the cell's smaller kernels
(one per smaller size; they lie back to back, ``fast_mixed.join_group_weights``) and one
concatenation of the pieces in the stages' order, each stage's kernels a view of it. Its
backward hands every kernel its gradient with one concatenation per size: the centres of the
stages' gradients for the smaller ones, their whole rows for the widest. Under autocast the
whole is cast once, and the gradients back once per size, where autocast cast each stage's
kernels (``kernel_reuse``). :class:`CellKernels` builds them on the first stage a cell's
forward asks for, and inside a search step keeps them for the step's later forwards.

These are the copies autograd's pad and concatenation make, so the kernels and the gradients
are the same bit for bit. A stage that took no gradient (a forward that did not run it) hands
its kernels none, as autograd's own operations would (an optimiser skips a weight without a
gradient: neither weight decay nor momentum moves it).
"""
from __future__ import annotations

import itertools
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.models import kernel_reuse
from shared.models.joined_weights import joined_view

# One depthwise stage of a group: its members' kernels in the group's order (by size)
Stage = Sequence[torch.Tensor]


class _Run(NamedTuple):
    """Consecutive kernels of one size in a stage."""
    stage: int
    first_row: int  # in the stage's kernels
    size: int
    kernels: tuple[int, ...]  # their indices among all the stages' kernels, in order


class _Layout(NamedTuple):
    widest: int
    stage_rows: tuple[int, ...]
    runs: tuple[_Run, ...]
    rows: tuple[int, ...]  # each kernel's, in order

    def run_rows(self, run: _Run) -> int:
        return sum(self.rows[t] for t in run.kernels)

    def sizes(self) -> list[int]:
        return sorted({run.size for run in self.runs})


def _layout(stages: Sequence[Stage]) -> _Layout:
    widest = max(w.shape[-1] for stage in stages for w in stage)
    runs, stage_rows, rows = [], [], []
    for i, stage in enumerate(stages):
        at = 0
        for size, run in itertools.groupby(stage, key=lambda w: w.shape[-1]):
            run = list(run)
            runs.append(_Run(i, at, size, tuple(range(len(rows), len(rows) + len(run)))))
            rows += [w.shape[0] for w in run]
            at += sum(w.shape[0] for w in run)
        stage_rows.append(at)
    return _Layout(widest, tuple(stage_rows), tuple(runs), tuple(rows))


def _ring(layout: _Layout, size: int) -> int:
    """The zeros around a kernel of ``size`` embedded in the widest (sizes are odd: 'same'
    padding, ``candidate.kind``)."""
    return (layout.widest - size) // 2


class _Embedded(torch.autograd.Function):
    """Each stage's kernels side by side, the smaller embedded in the widest; one output per
    stage, views of one tensor (of ``dtype`` where one is given: autocast's)."""

    @staticmethod
    def forward(ctx, layout: _Layout, dtype: torch.dtype | None,
                *kernels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.layout, ctx.dtype = layout, kernels[0].dtype
        ctx.set_materialize_grads(False)  # a stage not run: no gradient for its kernels
        stacks, taken = {}, {}
        for size in layout.sizes():  # each size's kernels, all stages', padded in one call
            ts = [kernels[t] for run in layout.runs if run.size == size for t in run.kernels]
            stack = joined_view(ts) if len(ts) > 1 else ts[0]
            stack = torch.cat(ts) if stack is None else stack
            ring = _ring(layout, size)
            stacks[size], taken[size] = F.pad(stack, (ring,) * 4) if ring else stack, 0
        pieces = []
        for run in layout.runs:
            rows = layout.run_rows(run)
            pieces.append(stacks[run.size][taken[run.size]:taken[run.size] + rows])
            taken[run.size] += rows
        out = torch.cat(pieces)
        out = out if dtype is None else out.to(dtype)
        return out.split(layout.stage_rows)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        layout = ctx.layout
        out: list[torch.Tensor | None] = [None] * len(layout.rows)
        for size in layout.sizes():
            ring, end = _ring(layout, size), layout.widest - _ring(layout, size)
            parts, taken = [], []
            for run in layout.runs:
                grad = grads[run.stage]
                if run.size != size or grad is None:
                    continue
                grad = grad[run.first_row:run.first_row + layout.run_rows(run)]
                parts.append(grad[..., ring:end, ring:end] if ring else grad)
                taken += run.kernels
            if not parts:
                continue
            flat = torch.cat(parts)
            flat = flat if flat.dtype == ctx.dtype else flat.to(ctx.dtype)
            for t, grad in zip(taken, flat.split([layout.rows[t] for t in taken])):
                out[t] = grad
        return (None, None, *out)


def embedded(stages: Sequence[Stage], dtype: torch.dtype | None = None
             ) -> tuple[torch.Tensor, ...]:
    """Each stage's kernels side by side (dim 0, in order), each smaller one embedded with
    zeros in the middle of the widest size of all the stages (every conv is square with
    'same' padding: at the widest's padding an embedded kernel reads the pixels its own
    read, by the same weights), in ``dtype`` if given; built at once (see the module's
    text)."""
    kernels = [w for stage in stages for w in stage]
    return _Embedded.apply(_layout(stages), dtype, *kernels)


class CellKernels:
    """The embedded kernels of a cell's group stages of several kernel sizes (``stages``: each
    stage's convs, in the group's order), for one forward of the cell: the first stage asked
    for builds them all (:func:`embedded`); inside a search step they are kept for the step's
    later forwards while the weights stay (``kernel_reuse.reused_together``)."""

    def __init__(self, stages: Sequence[Sequence[nn.Conv2d]]) -> None:
        self._stages = stages
        self._index = {tuple(map(id, convs)): i for i, convs in enumerate(stages)}
        self._weights: list[list[torch.Tensor]] | None = None  # read once per forward
        self._built: dict[torch.dtype | None, tuple[torch.Tensor, ...]] = {}

    def __call__(self, convs: Sequence[nn.Conv2d]) -> torch.Tensor | None:
        """The kernels of the stage of ``convs``, side by side, as the conv runs them (cast
        to autocast's dtype where autocast is on); None if it is not one of the cell's."""
        i = self._index.get(tuple(map(id, convs)))
        if i is None:
            return None
        if self._weights is None:  # a module's attribute costs host time: ~100 a cell
            self._weights = [[conv.weight for conv in stage] for stage in self._stages]
        weights = self._weights
        dtype = kernel_reuse.autocast_dtype(weights[0][0])
        kept = kernel_reuse.reused_together(weights, i, dtype, lambda: embedded(weights, dtype))
        if kept is not None:
            return kept
        if dtype not in self._built:
            self._built[dtype] = embedded(weights, dtype)
        return self._built[dtype][i]
