"""The DARTS recurrent search model (DARTS ``rnn/model_search.py``).

The search cell is the evaluation cell (``shared.models.rnn.DARTSCell``) with every node mixing
ALL its predecessors and ALL activations: s_i = sum_j sum_{k != none} p[(i, j), k] *
(s_j + c_j * (f_k(h_j) - s_j)), with [c_j | h_j] = (s_j * m_h) W_i (one W_i per node, shared
by its predecessors). ``none`` takes probability mass and contributes nothing. A BatchNorm1d
without affine parameters normalises s0 and every node, as released (one module reused; its
running statistics do not matter in search). The output is the mean of the 8 nodes.

One alpha (36 x 5, 1e-3 * N(0, 1)) is shared by the layers: ``nlayers`` stacked search cells
(1, as DARTS; 2 in Λ-DARTS' search, Lambda-DARTS ``sota/rnn/model_search.py``), each with its
own weights, BatchNorm and hidden state (``shared.models.rnn.RNNModel``). The interface is the
supernet contract (``shared.models.supernet``): ``mixing_weights()`` -> (softmax(alpha),),
``cell_kinds()`` one "recurrent" per layer, ``forward(input, hidden, weights=...,
cell_weights=...)`` (``cell_weights``: one (36 x 5) tensor per layer, used at every time step,
so the gradient a per-layer leaf collects is the sum over the window's steps), ``loss`` with
x = (words, hidden), ``genotype()``; plus the language-model pieces ``init_hidden`` and
``_loss``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.models.rnn import ACTIVATION, DARTSCell, RNNModel
from shared.models.supernet import Supernet
from shared.rnn_genotype import RNNGenotype
from shared.spaces import RNNSpace


class DARTSCellSearch(DARTSCell):
    def __init__(self, ninp: int, nhid: int, dropouth: float, dropoutx: float,
                 genotype: RNNGenotype | None = None, steps: int | None = None) -> None:
        self.space = RNNSpace()
        super().__init__(ninp, nhid, dropouth, dropoutx, None, self.space.steps)
        self.bn = nn.BatchNorm1d(nhid, affine=False)

    def cell(self, x: torch.Tensor, h_prev: torch.Tensor, x_mask: torch.Tensor | None,
             h_mask: torch.Tensor | None, weights: torch.Tensor | None = None) -> torch.Tensor:
        s0 = self.bn(self.initial_state(x, h_prev, x_mask, h_mask))
        states = s0.unsqueeze(0)  # (nodes so far, B, nhid)
        offset = 0
        for i in range(self.space.steps):
            inp = states * h_mask.unsqueeze(0) if h_mask is not None else states
            ch = inp.reshape(-1, self.nhid).mm(self._Ws[i]).view(i + 1, -1, 2 * self.nhid)
            c, h = torch.split(ch, self.nhid, dim=-1)
            c = c.sigmoid()
            s = torch.zeros_like(s0)
            for k, name in enumerate(self.space.ops):
                if name == "none":
                    continue
                candidate = states + c * (ACTIVATION[name](h) - states)
                s = s + (weights[offset:offset + i + 1, k].view(-1, 1, 1) * candidate).sum(0)
            states = torch.cat([states, self.bn(s).unsqueeze(0)], dim=0)
            offset += i + 1
        return states[-self.space.steps:].mean(dim=0)


class RNNModelSearch(RNNModel, Supernet):
    cell_class = DARTSCellSearch
    cell_types = ("recurrent",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        space = self.rnns[0].space
        self.space = space
        self.weights = nn.Parameter(1e-3 * torch.randn(space.num_edges, len(space.ops)))

    # -- parameters -------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.weights]

    def cell_kinds(self) -> tuple[str, ...]:
        return tuple("recurrent" for _ in self.rnns)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, input: torch.Tensor, hidden: Sequence[torch.Tensor],
                return_h: bool = False, weights: Sequence[torch.Tensor] | None = None,
                cell_weights: Sequence[torch.Tensor] | None = None):
        """``weights``: the 1-tuple of (36 x 5) mixing weights (default softmax(alpha); the
        SDARTS weight step passes perturbed probabilities); ``cell_weights``: one (36 x 5)
        tensor per layer instead."""
        return super().forward(input, hidden, return_h=return_h,
                               layer_weights=self.per_cell_weights(weights, cell_weights))

    def _loss(self, hidden: Sequence[torch.Tensor], input: torch.Tensor, target: torch.Tensor,
              weights: Sequence[torch.Tensor] | None = None,
              cell_weights: Sequence[torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean NLL of ``target`` (T*B,) and the next hidden state, as DARTS' ``_loss``."""
        log_prob, hidden_next = self(input, hidden, weights=weights, cell_weights=cell_weights)
        loss = F.nll_loss(log_prob.view(-1, log_prob.size(2)), target)
        return loss, hidden_next

    def loss(self, x: tuple[torch.Tensor, Sequence[torch.Tensor]], y: torch.Tensor,
             weights: Sequence[torch.Tensor] | None = None,
             cell_weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The supernets' common ``loss(x, y, weights)``: x = (words, hidden), the NLL only
        (what the Architect's Hessian-vector product and SDARTS' attack differentiate)."""
        words, hidden = x
        return self._loss(hidden, words, y, weights, cell_weights)[0]

    def genotype(self) -> RNNGenotype:
        return RNNGenotype.from_weights(self.mixing_weights()[0].detach(), self.space)
