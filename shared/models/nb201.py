"""The NAS-Bench-201 final network of one cell: AutoDL's ``TinyNetwork`` with ``InferCell``.

Same skeleton as the supernet (stem, 3 stages of N cells, two ResNetBasicblocks, BN + ReLU,
pooling, classifier) with every cell the given ``NB201Arch`` and affine BN everywhere. The
benchmark trained exactly this network (C=16, N=5), so ``count_parameters`` reproduces its
"params" column.

AutoDL's InferCell builds a parameter-free ``Zero`` module for a 'none' edge and adds its
zeros. Here the module is kept too (``layers[e]`` is edge e, so AutoDL's ``layers.{e}.op.1.weight``
keys line up), but a 'none' edge is skipped in forward; a node whose inputs are all 'none' is
zeros, which is what the Zero sum gives.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from shared.nb201_arch import NB201Arch
from shared.ops import ResNetBasicblock, make_op
from shared.spaces import NB201_EDGES, NB201_MAX_NODES


class NB201InferCell(nn.Module):
    """One fixed NB201 cell: node j = sum over i < j of op(edge j<-i)(node i), 'none' dropped."""

    def __init__(self, arch: NB201Arch, C: int) -> None:
        super().__init__()
        self.arch = arch
        self.in_dim = self.out_dim = C
        self.layers = nn.ModuleList(make_op(op, C, 1, True) for op in arch.ops)
        self._node_edges = [[(e, frm) for e, (to, frm) in enumerate(NB201_EDGES)
                             if to == node and arch.ops[e] != "none"]
                            for node in range(1, NB201_MAX_NODES)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for edges in self._node_edges:
            if edges:
                nodes.append(sum(self.layers[e](nodes[frm]) for e, frm in edges))
            else:
                nodes.append(torch.zeros_like(x))
        return nodes[-1]

    def extra_repr(self) -> str:
        return f"C={self.out_dim}, arch={self.arch}"


def build_skeleton(net: nn.Module, C: int, N: int, num_classes: int, in_channels: int,
                   make_cell: Callable[[int], nn.Module]) -> None:
    """AutoDL's TinyNetwork skeleton, on ``net``: ``stem`` (Conv3x3 + BN), ``cells`` (N cells
    ``make_cell(C)``, ResNetBasicblock(C, 2C, stride 2), N cells at 2C, ResNetBasicblock(2C,
    4C, 2), N cells at 4C), ``lastact`` (BN + ReLU), ``global_pooling`` and ``classifier``,
    made in this order (the order of the parameters' random initialisation)."""
    net.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False),
                             nn.BatchNorm2d(C))
    net.cells = nn.ModuleList()
    C_prev = C
    for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
        if stage > 0:
            net.cells.append(ResNetBasicblock(C_prev, C_curr, 2))
        for _ in range(N):
            net.cells.append(make_cell(C_curr))
        C_prev = C_curr
    net.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
    net.global_pooling = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Linear(C_prev, num_classes)


class TinyNetwork(nn.Module):
    """NB201 evaluation network; ``forward`` returns the logits (AutoDL's: (features, logits))."""

    def __init__(self, arch: NB201Arch, C: int = 16, N: int = 5, num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.arch = arch
        build_skeleton(self, C, N, num_classes, in_channels, lambda C_cell: NB201InferCell(arch,
                                                                                         C_cell))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature = self.stem(x)
        for cell in self.cells:
            feature = cell(feature)
        return self.classifier(self.global_pooling(self.lastact(feature)).flatten(1))


def count_parameters(model: nn.Module) -> int:
    """All parameters, as NAS-Bench-201 counts them (its "Params" is this / 1e6, in "MB")."""
    return sum(p.numel() for p in model.parameters())
