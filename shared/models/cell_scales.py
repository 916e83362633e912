"""A search cell's mixing weights as per-channel scales, made once per forward for the whole cell.

DARTS' mixed edge is ``sum_k w_k * op_k(x)`` (Liu et al. 2019, eq. 2). The fast path
(``fast_mixed``) multiplies each candidate's weight into its last BN as that BN's per-channel
scale, or into its term of the node sum (``node_sum``), so it needs each weight as C equal
values. Expanded per candidate, each one an index and an expansion made contiguous, that was
~80 launches a cell each way; here a cell's weights are expanded at once and split into rows.
With grouped edges (``grouped_edges``) a group's members' scales are one block of the table
(a view), laid out once per cell (``ScaleLayout``), not concatenated per group on every
forward.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import torch

from shared.models.grouped_edges import Member, Scale


def scales(weights: torch.Tensor, channels: int) -> list[list[Scale]]:
    """Each candidate's mixing weight ``[edge][k]`` as C equal values, for the whole cell at
    once: one expansion made contiguous and one unbind, whose backward is one stack and one
    sum. One unbind, of one table, so that its backward fills zeros only for the candidates
    that took no part ('none'), not for every candidate that took its weight in the other
    form."""
    edges, ops = weights.shape
    table = weights.reshape(-1, 1).expand(edges * ops, channels).contiguous()
    rows = table.unbind(0)  # real (C,) tensors, not stride-0 views: no kernel has to handle those
    return [list(rows[e * ops:(e + 1) * ops]) for e in range(edges)]


class CellScales(NamedTuple):
    """A cell's mixing weights as per-channel scales: ``rows[edge][k]`` (C,) for a candidate
    that runs alone (None for one in a group), ``groups[(edge, k)]`` (m*C,) for the group
    whose first member is (edge, k): its members' scales back to back."""
    rows: list[list[Scale | None]]
    groups: dict[tuple[int, int], Scale]


class ScaleLayout(NamedTuple):
    """Where each candidate's scale goes in a grouped cell's table: the rows of the weights
    (``e * ops + k``) group by group (``heads``: each group's first member, ``sizes``: its
    length), then every other candidate (``alone``) in order; ``order`` and its inverse, per
    device (made once: a host-to-device copy, so never while a CUDA graph records)."""
    order: list[int]
    sizes: list[int]
    heads: list[tuple[int, int]]
    alone: list[tuple[int, int]]
    on_device: dict


def scale_layout(groups: Iterable[Sequence[Member]], edges: int, ops: int) -> ScaleLayout:
    """The :class:`ScaleLayout` of a cell of ``edges`` x ``ops`` candidates whose convs run in
    ``groups`` (each group's members in its order)."""
    order, sizes, heads = [], [], []
    for members in groups:
        order += [e * ops + k for e, k, _ in members]
        sizes.append(len(members))
        heads.append(tuple(members[0][:2]))
    grouped = set(order)
    alone = [divmod(i, ops) for i in range(edges * ops) if i not in grouped]
    return ScaleLayout(order + [e * ops + k for e, k in alone], sizes + [1] * len(alone),
                       heads, alone, {})


class _ScaleTable(torch.autograd.Function):
    """The rows ``order`` of ``weights.reshape(-1)``, each as C equal values: one gather; the
    backward sums each row's gradient over its C values and puts it back in place with the
    inverse permutation, one reduction and one gather."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor,
                channels: int) -> torch.Tensor:
        ctx.inverse, ctx.shape = inverse, weights.shape
        return weights.reshape(-1, 1).expand(-1, channels)[order]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.sum(1)[ctx.inverse].reshape(ctx.shape), None, None, None


def grouped_scales(weights: torch.Tensor, channels: int, layout: ScaleLayout) -> CellScales:
    """:func:`scales` laid out so that each group's scales are one block of the table (a
    view): the table's rows are the weights' in ``layout``'s order, split once into the
    groups' blocks and the other candidates' rows."""
    index = layout.on_device.get(weights.device)
    if index is None:
        order = torch.tensor(layout.order, device=weights.device)
        index = layout.on_device[weights.device] = (order, torch.argsort(order))
    table = _ScaleTable.apply(weights, *index, channels)
    pieces = table.reshape(-1).split([n * channels for n in layout.sizes])
    groups = dict(zip(layout.heads, pieces))
    edges, ops = weights.shape
    rows: list[list[Scale | None]] = [[None] * ops for _ in range(edges)]
    for (e, k), row in zip(layout.alone, pieces[len(layout.heads):]):
        rows[e][k] = row
    return CellScales(rows, groups)
