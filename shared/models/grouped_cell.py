"""The final network's separable (and dilated) convs that read the same cell states, computed
together: one kernel per stage for all of them, where the cell launches one per op.

DARTS_V2's normal cell (Liu et al. 2019, fig. 4) holds five ``sep_conv_3x3``, all reading the
cell's two inputs (two c_{k-2}, three c_{k-1}); each is ReLU -> depthwise -> 1x1 -> BN -> ReLU
-> depthwise -> 1x1 -> BN. In a training step of the 20-cell network those are 360 of its 888
forward convolutions and 180 of its BNs (``bench/kernel_count.py --eval``), and on a GPU the
step is bound by launching them. Here the same-shaped separable convs (``grouped_edges.
group_key``) of a cell that read its inputs, or one node, run as the search's grouped edges do
(``shared.models.grouped_edges``): the states' ReLUs side by side once per op (``copies``), one
depthwise conv (``groups=m*C``), one grouped 1x1 conv, one BN over the stacked channels, whose
batch statistics are each op's own, and again for a separable conv's second half; the
same-shaped dilated convs (depthwise at dilation 2, 1x1, BN) likewise. The final network's BNs
are affine and keep running statistics: their weights and biases are joined like the kernels,
and so are their running statistics (``join_cell_groups``), so that the one ``batch_norm`` call
updates each op's statistics in place; where they are not laid out so, it updates copies and
writes them back. The BN counters are the network's (``batch_counters``), advanced for every BN
already.

Equal in exact arithmetic to the per-op cell (two float64 training steps agree to 1e-12,
``tests/test_grouped_cell.py``); 2,128 launches of a DARTS_V2 step become 1,102 (drop-path's
products of a group's ops one product, ``run_group``'s ``drop_factors``).
``Cell.grouped`` (set by the network's ``grouped_ops``); off by default.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.models.candidate import kind, layers
from shared.models.grouped_edges import copies, group_key, state_runs
from shared.models.joined_weights import join, joined, joined_view


class CellGroup(NamedTuple):
    """Ops of a cell that run together: their indices in ``cell._ops`` (by state, then
    index) and the runs of them that read each state, ((state, m), ...)."""
    ops: tuple[int, ...]
    blocks: tuple[tuple[int, int], ...]


def _groupable(op: nn.Module) -> bool:
    """A DARTS separable or dilated conv whose BNs are affine and keep running statistics
    with a momentum (every op of the final networks)."""
    if kind(op) not in ("sep", "dil"):
        return False
    parts = layers(op)
    bns = [m for m in parts if isinstance(m, nn.BatchNorm2d)]
    if any(isinstance(m, nn.Conv2d) and m.bias is not None for m in parts):
        return False
    return all(bn.affine and bn.track_running_stats and bn.momentum is not None for bn in bns)


def cell_groups(cell) -> list[CellGroup]:
    """The groups of two or more same-shaped separable convs, or dilated convs, of ``cell``
    (a final network's ``Cell``) that read its two inputs, or one of its nodes."""
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for k, (op, j) in enumerate(zip(cell._ops, cell._indices)):
        if _groupable(op):
            groups.setdefault(("inputs" if j < 2 else j, group_key(op)), []).append((j, k))
    out = []
    for members in groups.values():
        if len(members) > 1:
            members.sort()
            states = [j for j, _ in members]
            out.append(CellGroup(tuple(k for _, k in members), state_runs(states)))
    return out


def _stages(cell, group: CellGroup) -> list[tuple[nn.Module, ...]]:
    """The group's layers stage by stage, one module per op: (depthwise, 1x1, BN) twice for
    separable convs, once for dilated ones."""
    return list(zip(*(layers(cell._ops[k]) for k in group.ops)))


def join_cell_groups(cell) -> None:
    """Lay each group's kernels, BN weights and biases and running statistics back to back
    in memory, stage by stage (``joined_weights.join``)."""
    for group in cell_groups(cell):
        for stage in _stages(cell, group):
            if isinstance(stage[0], nn.Conv2d):
                join([m.weight for m in stage])
            else:
                for name in ("weight", "bias", "running_mean", "running_var"):
                    join([getattr(m, name) for m in stage])


def _stacked_bn(y: torch.Tensor, bns: Sequence[nn.BatchNorm2d]) -> torch.Tensor:
    """Each BN of its block of ``y``'s channels, in one call; in training each one's running
    statistics updated as its own call would."""
    first = bns[0]
    weight, bias = joined([b.weight for b in bns]), joined([b.bias for b in bns])
    means, variances = [b.running_mean for b in bns], [b.running_var for b in bns]
    # views of each BN's buffers where laid out together (training updates them in place)
    mean, var = joined_view(means), joined_view(variances)
    laid_out = mean is not None and var is not None
    if not laid_out:
        mean, var = torch.cat(means), torch.cat(variances)
    if not first.training:
        return F.batch_norm(y, mean, var, weight, bias, False, 0.0, first.eps)
    out = F.batch_norm(y, mean, var, weight, bias, True, first.momentum, first.eps)
    if not laid_out:
        with torch.no_grad():  # the updated copies written back
            c = first.num_features
            for b, m, v in zip(bns, mean.split(c), var.split(c)):
                b.running_mean.copy_(m)
                b.running_var.copy_(v)
    return out


def run_group(cell, group: CellGroup, relu_of: Callable[[int], torch.Tensor],
              drop_factors: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """Each op of ``group`` applied to its state (``relu_of(j)``: state j's ReLU, with which
    every separable and dilated conv begins), by op index; times its drop-path factors where
    given (``drop_factors``: (m, N, 1, 1, 1), the ops' rows of ``cnn.drop_path_scales`` in
    ``group.ops``' order), all ops in one product and one backward, not one each."""
    stages = _stages(cell, group)
    m = len(group.ops)
    y = copies([(relu_of(j), n) for j, n in group.blocks])
    for at in range(0, len(stages), 3):  # (depthwise, 1x1, BN), once or twice
        dw, pw, bn = stages[at:at + 3]
        if at:
            y = F.relu_(y)  # in place: BN's backward needs not its output
        a = dw[0]
        y = F.conv2d(y, joined([c.weight for c in dw]), None, a.stride, a.padding, a.dilation,
                     y.shape[1])
        y = F.conv2d(y, joined([c.weight for c in pw]), None, 1, 0, 1, m)
        y = _stacked_bn(y, bn)
    if drop_factors is not None:  # (N, m, C, H, W) times each sample's factor per op
        y = (y.unflatten(1, (m, -1)) * drop_factors.transpose(0, 1)).flatten(1, 2)
    return dict(zip(group.ops, y.split(y.shape[1] // m, dim=1)))
