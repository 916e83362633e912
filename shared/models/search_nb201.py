"""The NAS-Bench-201 supernet, darts-pt's ``TinyNetworkDarts`` (AutoDL's ``TinyNetwork`` search).

Stem (Conv3x3 + BN), N search cells at C, ResNetBasicblock(C, 2C, stride 2), N cells at 2C,
ResNetBasicblock(2C, 4C, 2), N cells at 4C, BN + ReLU, global average pooling, linear
classifier. Each search cell is the complete 4-node DAG; node j = sum over i < j of the mixed
op of edge j<-i. ONE alpha (6 x ops), 1e-3 * N(0, 1), is shared by all 3N cells.

The interface is the supernet contract (``shared.models.supernet``), so the Architect, the search
loop and its hooks drive it as they drive the DARTS supernet: ``mixing_weights()`` is the 1-tuple
(softmax(alpha),) (or what DARTS-PT's ``mixing_transform`` makes of it), ``genotype()`` an
``NB201Arch``. ``cell_weights`` gives each of the 3N search cells its own (6 x ops) weights
although alpha is shared (Lambda-DARTS perturbs every cell on its own).

Every candidate is evaluated even at weight 0, as in darts-pt: a masked op in train-mode BN
still updates its running statistics, which the projection's later evaluations see.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from shared.models.nb201 import build_skeleton
from shared.models.supernet import Supernet, draws_in_modules
from shared.nb201_arch import NB201Arch
from shared.ops import make_op
from shared.spaces import NB201Space, get_nb201_space, nb201_edge_key

NB201MixingWeights = tuple[torch.Tensor]  # (weights,), weights: (6 edges, ops)


class NB201SearchCell(nn.Module):
    """darts-pt's NAS201SearchCell: every edge holds every candidate op, mixed by weights.

    ``edges`` is a ModuleDict keyed '1<-0', '2<-0', ... of ModuleLists (one op per candidate),
    the layout of darts-pt / AutoDL checkpoints.
    """

    def __init__(self, C: int, space: NB201Space, affine: bool = False) -> None:
        super().__init__()
        self.space = space
        self.in_dim = self.out_dim = C
        # NB201 search ops: BN affine-free but tracking running stats, and no extra BN after
        # pooling (unlike the DARTS supernet's MixedOp).
        self.edges = nn.ModuleDict({
            key: nn.ModuleList(make_op(name, C, 1, affine) for name in space.ops)
            for key in space.edge_keys
        })

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for to in range(1, self.space.max_nodes):
            terms = []
            for e, (edge_to, frm) in enumerate(self.space.edges):
                if edge_to != to:
                    continue
                ops = self.edges[nb201_edge_key((edge_to, frm))]
                terms.append(sum(op(nodes[frm]) * w for op, w in zip(ops, weights[e])))
            nodes.append(sum(terms))
        return nodes[-1]


class TinyNetworkDarts(Supernet):
    """The NB201 supernet (C=16, N=5 in DARTS-PT) with one shared (6 x ops) alpha."""

    cell_types = ("cell",)  # names of the mixing-weight tensors (DARTS: normal, reduce)

    def __init__(self, C: int = 16, num_classes: int = 10, N: int = 5,
                 space: NB201Space | None = None, in_channels: int = 3) -> None:
        super().__init__()
        self.space = space if space is not None else get_nb201_space()
        self._C, self._N, self._num_classes = C, N, num_classes
        build_skeleton(self, C, N, num_classes, in_channels,
                       lambda C_cell: NB201SearchCell(C_cell, self.space))
        self.alpha = nn.Parameter(1e-3 * torch.randn(self.space.num_edges, self.space.num_ops))

    # -- parameters -------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def cell_kinds(self) -> tuple[str, ...]:
        return tuple("cell" for c in self.cells if isinstance(c, NB201SearchCell))

    def forward_draws_random(self) -> bool:
        return draws_in_modules(self)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, weights: Sequence[torch.Tensor] | None = None,
                cell_weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits; ``weights`` = the 1-tuple of (6 x ops) mixing weights shared by all cells,
        ``cell_weights`` = one (6 x ops) tensor per search cell instead."""
        per_cell = iter(self.per_cell_weights(weights, cell_weights))
        feature = self.stem(x)
        for cell in self.cells:
            if isinstance(cell, NB201SearchCell):
                feature = cell(feature, next(per_cell))
            else:
                feature = cell(feature)
        out = self.global_pooling(self.lastact(feature)).flatten(1)
        return self.classifier(out)

    def genotype(self) -> NB201Arch:
        """Argmax op per edge of the current mixing weights ('none' included)."""
        return NB201Arch.from_weights(self.mixing_weights()[0], self.space.ops)
