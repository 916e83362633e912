"""The DARTS-space supernet, for any cell space of ``shared.spaces``: a ``CellSpace`` (alpha
shared by all cells of a kind, DARTS) or a ``PerCellSpace`` (one alpha per cell, StacNAS
without ``--alpha_share``).

The forward takes the mixing weights as an argument instead of reading alpha itself: SDARTS
perturbs softmax(alpha) for the weight step, Lambda-DARTS needs one weight tensor per cell,
Blank-PT keeps alpha fixed. ``mixing_weights()`` gives the plain softmax(alpha). The interface
is the supernet contract of ``shared.models.supernet``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from shared.genotypes import (
    Genotype,
    PerCellGenotype,
    genotype_from_alpha,
    per_cell_genotype_from_alpha,
)
from shared.models import fast_mixed
from shared.models.live import HeldLive, forward_rows
from shared.models.supernet import Supernet, draws_in_modules
from shared.ops import FactorizedReduce, ReLUConvBN, make_op
from shared.spaces import STEPS, CellSpace, PerCellSpace, kinds_of_cells

# One (edges, ops) tensor per ``cell_types`` entry: (normal, reduce), or one per cell.
MixingWeights = tuple[torch.Tensor, ...]


class MixedOp(nn.Module):
    """Weighted sum of the candidate ops of one edge: sum_k w_k * op_k(x)."""

    def __init__(self, C: int, stride: int, op_names: Sequence[str]) -> None:
        super().__init__()
        self.stride = stride
        self.op_names = tuple(op_names)
        ops = []
        for name in op_names:
            op = make_op(name, C, stride, False)
            if "pool" in name:  # DARTS normalises pooling outputs in search (affine-free BN)
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            ops.append(op)
        self._ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, skip_zero: bool = False,
                live: Sequence[bool] | None = None) -> torch.Tensor:
        """``skip_zero``: candidates whose weight is exactly 0 do not run (darts-pt's
        ``MixedOp``: no output, no gradient, no BN statistics update); ``live`` says which
        run without reading the weights (``shared.models.live``)."""
        if live is None:
            live = [not (skip_zero and w == 0) for w in weights]
        terms = [w * op(x) for w, op, run in zip(weights, self._ops, live) if run]
        if not terms:  # every candidate masked: the edge is removed
            return torch.zeros_like(x[:, :, ::self.stride, ::self.stride])
        return sum(terms)


class SearchCell(nn.Module):
    """One search cell; ``edge_ops`` its candidate ops per edge (a ``CellSpace`` stands for
    the rows of this cell's kind)."""

    def __init__(self, edge_ops: CellSpace | Sequence[Sequence[str]], steps: int,
                 multiplier: int, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        if isinstance(edge_ops, CellSpace):
            edge_ops = edge_ops.ops(reduction)
        self._ops = nn.ModuleList()
        e = 0
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(C, stride, edge_ops[e]))
                e += 1

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                live: Sequence[Sequence[bool]] | None = None) -> torch.Tensor:
        """``live``: per edge, which candidates run (else all; ``Network.forward`` decides it
        once for every cell, ``shared.models.live.forward_rows``)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j],
                                          live=None if live is None else live[offset + j])
                    for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(Supernet):
    """DARTS supernet: stem, ``layers`` search cells (reduction at L//3 and 2L//3), classifier.

    alpha lives here as two ``nn.Parameter`` (so it is saved with the weights, unlike the
    original), but ``weight_parameters()`` excludes it: the weight optimiser, its weight decay
    and gradient clipping never touch alpha.

    A ``PerCellSpace`` (as many cells as ``layers``) gives every cell its own candidates and
    its own alpha, as StacNAS' supernet without ``--alpha_share`` (susan0199/StacNAS
    ``search_cnn.py``, ``SearchCNN``: alpha types "cell_0", "cell_1", ..., each cell's alpha
    in ``cells.py``): here ``alphas_cells[i]`` (an ``nn.ParameterList``), ``cell_types`` =
    ("cell0", "cell1", ...) on the instance, and ``genotype()`` a ``PerCellGenotype``.

    ``fast`` (default) evaluates the cells with ``shared.models.fast_mixed``: the same modules
    and parameters (one state_dict layout for both), fewer and cheaper kernels, equal results
    to rounding. ``fast=False`` runs ``SearchCell.forward``, the per-candidate reference.

    ``grouped_edges`` (fast path only): the same-shaped separable convs, and the same-shaped dilated
    convs, on the edges leaving a cell state (or either of the cell's inputs) run as one kernel per
    stage (``shared.models.grouped_edges``); equal to rounding, off by default until measured on a
    GPU. Turned on (here or later) it lays each group's kernels back to back in memory, and again
    whenever the network is moved or cast (``fast_mixed.join_group_weights``).

    ``skip_zero_weights``: a candidate whose mixing weight is exactly 0 is not run, as in
    darts-pt's supernet (``sota/cnn/model_search.py``, ``if w != 0``): an op DARTS-PT masks or
    projects away then updates no BN running statistics, and an SDARTS attack cannot move a
    weight clamped to 0 (it gets no gradient). SmoothDARTS' supernet runs every candidate.
    Each forward reads which weights are 0 on the host, once for all cells, unless an epoch of
    recorded steps holds them (``held_live``, ``shared.models.live``).
    """

    cell_types = ("normal", "reduce")

    def __init__(self, C: int, num_classes: int, layers: int,
                 space: CellSpace | PerCellSpace, steps: int = STEPS, multiplier: int = 4,
                 stem_multiplier: int = 3, in_channels: int = 3, fast: bool = True,
                 skip_zero_weights: bool = False, grouped_edges: bool = False) -> None:
        super().__init__()
        per_cell = isinstance(space, PerCellSpace)
        if per_cell and space.layers != layers:
            raise ValueError(f"space {space.name} has {space.layers} cells, the network "
                             f"{layers}")
        self.space = space
        self.fast = fast
        self.grouped_edges = grouped_edges
        self.skip_zero_weights = skip_zero_weights
        self.held_live: HeldLive | None = None  # set for an epoch of recorded steps
        self._C, self._num_classes, self._layers = C, num_classes, layers
        self._steps, self._multiplier = steps, multiplier
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i, kind in enumerate(kinds_of_cells(layers)):
            reduction = kind == "reduce"
            if reduction:
                C_curr *= 2
            edge_ops = space.ops_of(i) if per_cell else space.ops(reduction)
            self.cells.append(SearchCell(edge_ops, steps, multiplier, C_prev_prev, C_prev,
                                         C_curr, reduction, reduction_prev))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        num_edges = sum(2 + i for i in range(steps))
        if per_cell:
            # Drawn after the cells' weights, cell by cell, as the shared pair is.
            self.cell_types = tuple(f"cell{i}" for i in range(layers))
            self.alphas_cells = nn.ParameterList(
                nn.Parameter(1e-3 * torch.randn(num_edges, space.num_ops(i)))
                for i in range(layers))
        else:
            self.alphas_normal = nn.Parameter(1e-3 * torch.randn(num_edges,
                                                                 space.num_ops(False)))
            self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(num_edges,
                                                                 space.num_ops(True)))
        if grouped_edges:
            fast_mixed.join_group_weights(self)

    @property
    def grouped_edges(self) -> bool:
        return self._grouped_edges

    @grouped_edges.setter
    def grouped_edges(self, on: bool) -> None:
        self._grouped_edges = bool(on)
        if on and hasattr(self, "cells"):
            fast_mixed.join_group_weights(self)

    def _apply(self, fn, recurse: bool = True):
        """``to``, ``double``, ``cuda``, ...: each parameter gets its own new tensor, so the
        grouped edges' kernels are laid back to back again."""
        super()._apply(fn, recurse)
        if self.grouped_edges:
            fast_mixed.join_group_weights(self)
        return self

    @property
    def per_cell(self) -> bool:
        """Whether every cell has its own alpha (a ``PerCellSpace``)."""
        return isinstance(self.space, PerCellSpace)

    def arch_parameters(self) -> list[nn.Parameter]:
        if self.per_cell:
            return list(self.alphas_cells)
        return [self.alphas_normal, self.alphas_reduce]

    def cell_kinds(self) -> tuple[str, ...]:
        if self.per_cell:
            return self.cell_types
        return tuple("reduce" if c.reduction else "normal" for c in self.cells)

    def forward_draws_random(self) -> bool:
        return draws_in_modules(self)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, weights: MixingWeights | None = None,
                cell_weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits. ``weights`` = one mixing-weight tensor per ``cell_types`` entry ((normal,
        reduce) shared by all cells of a kind, or one per cell of a per-cell space; default
        softmax(alpha)); ``cell_weights`` = one tensor per cell instead."""
        cell_weights = self.per_cell_weights(weights, cell_weights)
        if self.fast:
            return fast_mixed.network_forward(self, x, cell_weights)
        lives = forward_rows(self, cell_weights)  # DARTS-PT's skip: one read, or held rows
        s0 = s1 = self.stem(x)
        for cell, w, live in zip(self.cells, cell_weights, lives):
            s0, s1 = s1, cell(s0, s1, w, live=live)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def genotype(self) -> Genotype | PerCellGenotype:
        if self.per_cell:
            return per_cell_genotype_from_alpha(self.mixing_weights(), self.space, self._steps,
                                                self._multiplier)
        w_normal, w_reduce = self.mixing_weights()
        return genotype_from_alpha(w_normal, w_reduce, self.space, self._steps, self._multiplier)
