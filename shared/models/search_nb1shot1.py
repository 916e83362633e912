"""The NAS-Bench-1Shot1 one-shot model (nasbench-1shot1 / SmoothDARTS
``optimizers/darts/model_search.py``).

Stem ConvBnRelu(3x3), L = 9 cells in three stacks; before cells L//3 and 2L//3 the channels
double and a ``MaxPool2d(2, 2, padding=1)`` halves the resolution (32 -> 17 -> 9, as released,
not 32 -> 16 -> 8). A cell has one choice block per graph node 1..steps:

* block b gets ``[proj_b(s0), state_0, ..., state_{b-1}]`` (graph nodes 0..b, s0 through its
  own 1x1 ConvBnRelu), scales each input by its input weight when node b+1 chooses its parents
  (otherwise sums them all), and mixes the sum through the three NB-101 ops;
* the cell output is ``w_out[0] * proj_out(s0) + concat_b(w_out[b+1] * state_b)``.

Then ReLUConvBN(1x1), global average pooling and a linear classifier. The architecture
parameters are shared by all cells: ``alphas_mixed_op`` (steps x 3), ``alphas_output``
(1 x steps+1) and one ``alphas_inputs`` (1 x node) per node with a choice of parents.

The interface is the supernet contract (``shared.models.supernet``), so the same Architect (first
and second order), search loop and SDARTS perturbations drive it: ``mixing_weights()`` is the
tuple ``(softmax(mixed_op), softmax(output), *softmax(inputs))`` in that order, ``forward(x,
weights)`` takes such a tuple, ``genotype()`` discretises it. Every cell reads the whole tuple,
so one cell's entry of ``cell_weights`` is such a tuple too.

BatchNorm keeps the released ``momentum=0.997``: copied from TensorFlow's *decay*, it means the
opposite in PyTorch, so the running statistics are almost those of the last batch. Kept because
eval-mode passes (validation, the SDARTS-ADV attack) see those statistics.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from shared.models.supernet import CellWeights, Supernet, draws_in_modules
from shared.nb1shot1_arch import NB1Shot1Arch
from shared.ops import ReLUConvBN
from shared.spaces import NB1Shot1Space, get_nb1shot1_space

BN_MOMENTUM, BN_EPSILON = 0.997, 1e-5


class ConvBnRelu(nn.Sequential):
    """NB-101's conv-bn-relu (stride 1, 'same' padding)."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int = 1) -> None:
        super().__init__(
            nn.Conv2d(C_in, C_out, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(C_out, affine=True, momentum=BN_MOMENTUM, eps=BN_EPSILON),
            nn.ReLU(inplace=False))


def make_nb101_op(name: str, C: int) -> nn.Module:
    if name == "maxpool3x3":  # no BN after pooling, as NB-101
        return nn.MaxPool2d(3, stride=1, padding=1)
    if name == "conv3x3-bn-relu":
        return ConvBnRelu(C, C, 3)
    if name == "conv1x1-bn-relu":
        return ConvBnRelu(C, C, 1)
    raise ValueError(f"unknown NAS-Bench-101 op {name!r}")


class ChoiceBlock(nn.Module):
    """sum_k w_k op_k(x) over the space's ops."""

    def __init__(self, C: int, ops: Sequence[str]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(make_nb101_op(name, C) for name in ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class NB1Shot1Cell(nn.Module):
    def __init__(self, C_in: int, C: int, space: NB1Shot1Space) -> None:
        super().__init__()
        self.space = space
        self.input_projections = nn.ModuleList(ConvBnRelu(C_in, C, 1) for _ in range(space.steps))
        self.output_projection = ConvBnRelu(C_in, C * space.steps, 1)
        self.choice_blocks = nn.ModuleList(ChoiceBlock(C, space.ops) for _ in range(space.steps))

    def forward(self, s0: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        mixed, output = weights[0], weights[1][0]
        inputs = {node: w[0] for node, w in zip(self.space.input_choice_nodes, weights[2:])}
        states: list[torch.Tensor] = []
        for b, block in enumerate(self.choice_blocks):
            candidates = [self.input_projections[b](s0), *states]  # graph nodes 0..b
            w_in = inputs.get(b + 1)
            if w_in is None:  # no choice of parents: all of them, unweighted
                s = sum(candidates)
            else:
                s = sum(w * x for w, x in zip(w_in, candidates))
            states.append(block(s, mixed[b]))
        out = torch.cat([output[b + 1] * st for b, st in enumerate(states)], dim=1)
        return out + output[0] * self.output_projection(s0)


class NB1Shot1Network(Supernet):
    """The one-shot model of an NB-1Shot1 space (C = 16, 9 cells in the papers)."""

    def __init__(self, C: int = 16, num_classes: int = 10, layers: int = 9,
                 space: NB1Shot1Space | str = "1", in_channels: int = 3) -> None:
        super().__init__()
        self.space = get_nb1shot1_space(space) if isinstance(space, str) else space
        self._C, self._layers, self._num_classes = C, layers, num_classes
        steps = self.space.steps
        self.stem = ConvBnRelu(in_channels, C, 3)
        self.cells = nn.ModuleList()
        C_curr, C_in = C, C
        for i in range(layers):
            if i in (layers // 3, 2 * layers // 3):
                C_curr *= 2
                self.cells.append(nn.MaxPool2d(2, stride=2, padding=1))
            self.cells.append(NB1Shot1Cell(C_in, C_curr, self.space))
            C_in = C_curr * steps
        self.postprocess = ReLUConvBN(C_in, C_curr, 1, 1, 0, affine=False)
        self.classifier = nn.Linear(C_curr, num_classes)

        self.alphas_mixed_op = nn.Parameter(1e-3 * torch.randn(steps, len(self.space.ops)))
        self.alphas_output = nn.Parameter(1e-3 * torch.randn(1, steps + 1))
        self.alphas_inputs = nn.ParameterList(
            nn.Parameter(1e-3 * torch.randn(1, node)) for node in self.space.input_choice_nodes)

    @property
    def cell_types(self) -> tuple[str, ...]:
        """Names of the mixing-weight tensors, in ``mixing_weights()`` order."""
        return ("mixed_op", "output", *(f"inputs_node{n}" for n in self.space.input_choice_nodes))

    # -- parameters -------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_mixed_op, self.alphas_output, *self.alphas_inputs]

    def cell_kinds(self) -> tuple[str, ...]:
        return tuple("cell" for c in self.cells if isinstance(c, NB1Shot1Cell))

    def forward_draws_random(self) -> bool:
        return draws_in_modules(self)

    def expand_weights(self, weights: Sequence[torch.Tensor]) -> list[CellWeights]:
        """Every cell reads all alpha tensors: the whole tuple, once per cell."""
        if len(weights) != len(self.cell_types):
            raise ValueError(f"{len(weights)} mixing-weight tensors for the "
                             f"{len(self.cell_types)} of this space ({', '.join(self.cell_types)})")
        whole = tuple(weights)
        return [whole for _ in self.cell_kinds()]

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, weights: Sequence[torch.Tensor] | None = None,
                cell_weights: Sequence[CellWeights] | None = None) -> torch.Tensor:
        per_cell = iter(self.per_cell_weights(weights, cell_weights))
        s = self.stem(x)
        for cell in self.cells:
            s = cell(s, next(per_cell)) if isinstance(cell, NB1Shot1Cell) else cell(s)
        out = self.postprocess(s).mean(dim=(2, 3))
        return self.classifier(out)

    def genotype(self) -> NB1Shot1Arch:
        return NB1Shot1Arch.from_weights(self.space, [w.detach() for w in self.mixing_weights()])
