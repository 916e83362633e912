"""Which candidates of a DARTS supernet run: DARTS-PT's skip of zero weights, read every forward
or held for an epoch of recorded steps.

DARTS-PT's supernet does not run a candidate whose mixing weight is exactly 0 (darts-pt
``sota/cnn/model_search.py``, ``MixedOp``: ``if w != 0``), so each of its forwards reads the
weights on the host (``live_candidates``). A recorded step (a CUDA graph) cannot: a graph
replays the candidates its recording ran. Without an SDARTS perturbation those zeros do not
change within an epoch: they are the projection's (a projected edge's one-hot row, a dropped
edge's zero row, decided on the host at an epoch's start: darts-pt ``sota/cnn/projection.py``),
and softmax(alpha) is nowhere 0 in float32 unless a row of alpha spans more than ~104 (alpha's
Adam moves an entry by about its lr, 3e-4, in a typical step: ~6 over a 50-epoch search of 391
steps an epoch); should it happen, the check below stops the run.

So a recorded epoch reads the pattern once, before its first step (``HeldLive``), and every
forward of the epoch runs the candidates it names. Each forward also compares, on the device,
its weights' zeros with the held pattern and ORs any difference into a flag, which the epoch's
end reads once (``HeldLive.broken``): a difference means that the epoch's steps were not the
eager ones, and the run stops before that epoch is checkpointed. SDARTS' perturbations clamp
weights to 0 at random, step by step: with them the step stays eager
(``shared.search.step_capture``).
"""
from __future__ import annotations

from typing import Sequence

import torch

Rows = list[list[list[bool]]]  # [cell][edge][op]: does the candidate run


def live_candidates(cell_weights: Sequence[torch.Tensor]) -> Rows:
    """For every cell, edge and candidate: is its mixing weight other than exactly 0? One read
    of the device for all the cells (``[cell][edge][op]``).

    This read is what DARTS-PT's supernet (``Network.skip_zero_weights``, darts-pt's
    ``MixedOp``: ``if w != 0``) costs, once per forward of that supernet: its weight steps,
    alpha steps, SDARTS attacks and Λ-DARTS' ± passes, in the supernet phase and in the
    projection's tuning and scoring alike (no other supernet skips, and no other forward reads
    anything), unless an epoch of recorded steps holds the pattern (``HeldLive``). It cannot
    become a mask on the device without changing results: a candidate at
    weight 0 is not run at all, so its BatchNorm running statistics do not move, a noise op
    draws no random numbers, its parameters get no gradient (``grad`` stays None: the weight
    step, which zeroes with ``set_to_none``, neither decays nor moves them by momentum, see
    ``SearchLoop.weight_step``) and its mixing weight gets none either (an SDARTS attack cannot
    raise a weight clamped to 0, alpha's gradient does not see the op). Running it times 0
    would move the statistics and the RNG, and step those parameters."""
    flags = torch.cat([(w != 0).reshape(-1) for w in cell_weights]).tolist()
    out, at = [], 0
    for w in cell_weights:
        edges, ops = w.shape
        out.append([flags[at + e * ops:at + (e + 1) * ops] for e in range(edges)])
        at += w.numel()
    return out


class HeldLive:
    """The candidates that run, read once from ``cell_weights`` (one tensor per cell, as the
    supernet's forward feeds them), and the device flag of any forward that disagreed."""

    def __init__(self, cell_weights: Sequence[torch.Tensor]) -> None:
        self.rows: Rows = live_candidates(cell_weights)  # the one host read
        # made here, outside any recording: a graph must not copy from the host
        self.masks = [w.detach() != 0 for w in cell_weights]
        self.flag = torch.zeros((), dtype=torch.bool, device=cell_weights[0].device)

    def check(self, cell_weights: Sequence[torch.Tensor]) -> Rows:
        """The held rows for a forward with ``cell_weights``, after queueing the comparison of
        its zeros with them (no host read; each distinct tensor once, as the cells of a kind
        share theirs)."""
        if len(cell_weights) != len(self.masks):
            raise ValueError(f"{len(cell_weights)} cells' weights, {len(self.masks)} held")
        seen: set[int] = set()
        for w, mask in zip(cell_weights, self.masks):
            if id(w) in seen:
                continue
            seen.add(id(w))
            self.flag.logical_or_(torch.ne(w.detach() != 0, mask).any())
        return self.rows

    def broken(self) -> bool:
        """Whether a forward since the hold had its zeros elsewhere (one host read)."""
        return bool(self.flag)


def forward_rows(net: torch.nn.Module, cell_weights: Sequence[torch.Tensor]
                 ) -> list[list[list[bool]] | None]:
    """Each cell's rows of the candidates that run in this forward of ``net``: None (all of
    them) unless it skips zero weights; then those held for the epoch, else one read."""
    if not getattr(net, "skip_zero_weights", False):
        return [None] * len(cell_weights)
    held: HeldLive | None = getattr(net, "held_live", None)
    return held.check(cell_weights) if held is not None else live_candidates(cell_weights)
