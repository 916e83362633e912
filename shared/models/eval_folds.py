"""A DARTS cell's evaluation-mode BNs folded into its node sums (the fast path, on CUDA).

In evaluation mode an affine-free BN reads its running statistics, so it is an affine map:
for a candidate's output y before its last BN (a pooling's p, shared by every edge; a
separable or dilated conv's; a FactorizedReduce's two 1x1 convs side by side) and the
candidate's mixing weight ``scale`` (DARTS, Liu et al. 2019, eq. 1),

    scale * (y - mean) / sqrt(var + eps) = a * y - a * mean,   a = scale / sqrt(var + eps).

Each ``a * y`` is then one more term of its node's weighted sum (``node_sum``, batched with the
node's other such terms) and each node's ``-sum a * mean`` one more term, so the BNs cost a
few kernels a cell, not two (forward and backward) each. SDARTS-ADV (Chen & Hsieh 2020, §3.2;
the released ``perturb.py`` runs its attack with ``model.eval()``) makes 9 forwards and 7
backwards a step in evaluation mode, where every edge's BN reads its own statistics. Counted
as on CUDA (``bench/kernel_count.py``, s5, 8 cells), an SDARTS-ADV step: the poolings' 28 BNs
a cell, 23,184 -> 21,536 launches grouped and 58,808 -> 57,160 on the fast path (then each
node's offset as a term of its sum, not subtracted and cast node by node: 20,192 -> 19,680 and
55,816 -> 55,304); the convs' last BNs, one per group or per conv, 19,424 -> 18,386 and
55,304 -> 48,136; the reduction cells' FactorizedReduce BNs, 18,386 -> 18,130 and 48,136 ->
47,880.

Where the node sums run term by term (the CPU, ``node_sum.BATCHED``) a folded term would cost
what its BN did, so there nothing folds (``fast_mixed`` decides, and where dilated convs run
in the polyphase layout, ``fast_mixed.UNDILATE``, the convs keep their BNs).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from shared.models import candidate
from shared.models.cell_scales import CellScales
from shared.ops import FactorizedReduce

# The candidate kinds whose BNs fold, most first (the first tier whose BNs all can fold is
# used): the convs' last BNs only where the device runs dilated convs as they are (their
# terms are then never polyphase), then the poolings' and FactorizedReduce's, then the
# poolings' alone
FOLD_TIERS = (frozenset({"pool", "fr", "sep", "dil"}), frozenset({"pool", "fr"}),
              frozenset({"pool"}))


class EvalFolds:
    """A cell's folded BNs for one forward: ``a[(edge, k)]``, candidate k's (C,) factor on
    ``edge``; ``offsets``: (steps, C), node i's ``-sum a * mean`` in row i where a folded
    candidate feeds it (``fed``); ``kinds``: the candidate kinds folded (one of
    ``FOLD_TIERS``)."""

    def __init__(self, a: dict[tuple[int, int], torch.Tensor], offsets: torch.Tensor,
                 fed: set[int], kinds: frozenset[str]) -> None:
        self.a, self.offsets, self.fed, self.kinds = a, offsets, fed, kinds
        self._in: dict[torch.dtype, tuple[torch.Tensor, ...]] = {}

    def offset(self, node: int, dtype: torch.dtype) -> torch.Tensor:
        """Node ``node``'s (C,) offset (a node in ``fed``) in ``dtype`` (the cell's offsets
        cast once a dtype, for a node sum under autocast)."""
        if dtype not in self._in:
            self._in[dtype] = self.offsets.to(dtype).unbind(0)
        return self._in[dtype][node]


def last_bn(op: nn.Module) -> nn.BatchNorm2d:
    """The BN a candidate ends in (a pooling, FactorizedReduce, separable or dilated conv)."""
    return op.bn if isinstance(op, FactorizedReduce) else candidate.layers(op)[-1]


def folded_candidates(cell, live: list[list[bool]] | None, kinds: frozenset[str]
                      ) -> list[tuple[int, int, int, nn.BatchNorm2d]]:
    """(edge, candidate, node, last BN) of each candidate of ``cell`` that runs (``live``:
    ``shared.models.live.live_candidates``' rows, None for all) and is of one of ``kinds``."""
    found, offset = [], 0
    for node in range(cell._steps):
        for edge in range(offset, offset + 2 + node):
            for k, op in enumerate(cell._ops[edge]._ops):
                if live is not None and not live[edge][k]:
                    continue
                if candidate.kind(op) in kinds:
                    found.append((edge, k, node, last_bn(op)))
        offset += 2 + node
    return found


def foldable(bns: Sequence[nn.BatchNorm2d]) -> bool:
    """BNs in evaluation mode, affine-free, with running statistics and one eps."""
    return bool(bns) and len({m.eps for m in bns}) == 1 and not any(
        m.training or not m.track_running_stats or m.running_var is None
        or m.weight is not None or m.bias is not None for m in bns)


class FoldPlan:
    """A cell's candidates of ``kinds`` (``folded_candidates``): their (edge, candidate)
    ``keys``, ``bns``, where each one's scale is (its row, or its block of its group's vector:
    ``groups``, each group's member keys in its order, the groups its convs run in), the nodes
    they feed, and the (steps, P, 1) matrix with -1 where candidate p feeds node i, made on a
    device and in a dtype once (a host-to-device copy: never while a CUDA graph records)."""

    def __init__(self, cell, live: list[list[bool]] | None, kinds: frozenset[str],
                 groups: Sequence[Sequence[tuple[int, int]]] = ()) -> None:
        found = {(e, k): (node, bn) for e, k, node, bn in folded_candidates(cell, live, kinds)}
        # the scales as they lie: a group's members together, in its order (its vector, one
        # piece: a slice per member would cost a backward each), else a candidate's own row
        groups = [list(g) for g in groups if g[0] in found]  # convs folded: every member is
        in_group = {key for g in groups for key in g}
        self._pieces = [(g[0], len(g)) for g in groups] + [
            (key, 1) for key in found if key not in in_group]
        self.keys = [key for g in groups for key in g] + [
            key for key in found if key not in in_group]
        self.bns = [found[key][1] for key in self.keys]
        self._of = [found[key][0] for key in self.keys]
        self.kinds, self.fed, self._steps, self._on = kinds, set(self._of), cell._steps, {}

    def rows(self, scales: CellScales) -> torch.Tensor:
        """Each candidate's (C,) scale, (P, C) in ``keys``' order: one concatenation of the
        groups' vectors and the other candidates' rows."""
        pieces = [scales.rows[e][k] if m == 1 and scales.rows[e][k] is not None
                  else scales.groups[e, k] for (e, k), m in self._pieces]
        c = pieces[-1].numel() // self._pieces[-1][1]
        return torch.cat([p.view(-1, c) for p in pieces])

    def minus_nodes(self, ref: torch.Tensor) -> torch.Tensor:
        key = (ref.device, ref.dtype)
        if key not in self._on:
            m = torch.zeros(self._steps, len(self._of), 1, dtype=ref.dtype)
            m[self._of, range(len(self._of)), 0] = -1
            self._on[key] = m.to(ref.device)
        return self._on[key]

    def folds(self, scales: CellScales, ref: torch.Tensor) -> EvalFolds:
        """This forward's :class:`EvalFolds` (the BNs :func:`foldable`): the factors are one
        concatenation of the scales times one ``rsqrt`` of the stacked variances."""
        bns = self.bns
        a = self.rows(scales) * torch.rsqrt(
            torch.stack([m.running_var for m in bns]) + bns[0].eps)
        mean = torch.stack([m.running_mean for m in bns])
        # each node's -sum a * mean: a product with the 0/-1 matrix of who feeds which node
        # and a reduction (not a matrix product, which autocast would run in low precision)
        offsets = ((a * mean).unsqueeze(0) * self.minus_nodes(ref)).sum(1)  # (steps, C)
        return EvalFolds(dict(zip(self.keys, a.unbind(0))), offsets, self.fed, self.kinds)
