"""Data-parallel search: N processes, each computing its shard of every batch, move the weights
and alpha exactly as one process with the whole batch would.

What makes N shards equal one batch (to float rounding, not bit for bit: sums are ordered
differently):

* the data (``shared.data.on_device``): every rank draws the same global batch and its
  augmentation and keeps its rows, so the union of the shards is the one-process batch;
* the BatchNorm statistics (``shared.models.global_batch_norm``): in training mode each BN
  normalises with the mean and variance of the global batch (gathered, differentiably, from
  every rank), and updates its running statistics with them;
* every gradient (``DataParallel.average``): each rank's loss is the mean over its shard, and
  the backward through the gathered statistics routes every rank's share of the global loss
  back to the rank whose activations produced it; the average over ranks of the per-rank
  gradients is then the gradient of the global mean loss. The loop averages the weights' (and
  one-level alpha's) gradients after the weight step's backward, the Architect alpha's (and,
  second order, each gradient of the unrolled step and of the finite difference), SDARTS-ADV
  each attack gradient and the losses its keep-rule compares;
* every rank holds the same parameters, optimiser states and RNG states, so identical updates
  keep them identical; SDARTS-RS draws the same noise on every rank from the global RNG.

Only rank 0 writes (checkpoints, logs, TensorBoard, plots); every rank computes the same
epoch numbers from the summed meters, so every rank takes the same decisions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist

from shared.distributed import DistContext
from shared.search.tensor_lists import same_kind


@dataclass(frozen=True)
class DataParallel(DistContext):
    """This process's place in a data-parallel search (``rank`` of ``world_size``, as
    ``DistContext``) and its process ``group`` (None: the default one). The default, one
    process, makes every method a no-op."""

    group: Any = None

    @classmethod
    def of(cls, ctx: DistContext) -> "DataParallel":
        """The data parallelism of the processes ``ctx`` describes (the default group)."""
        return cls(rank=ctx.rank, world_size=ctx.world_size)

    def average(self, tensors: Iterable[torch.Tensor | None]) -> None:
        """Replace each tensor by its mean over the ranks, in place: one all-reduce of one
        flat buffer per dtype (None entries skipped: every rank has the same ones)."""
        if not self.enabled:
            return
        present = [t for t in tensors if t is not None]
        for index in same_kind(present):
            group = [present[i] for i in index]
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat, group=self.group)
            flat /= self.world_size
            # copied back as one multi-tensor copy, not one launch per tensor (~1,400 weights)
            parts = flat.split([t.numel() for t in group])
            torch._foreach_copy_(group, [part.view_as(t) for part, t in zip(parts, group)])

    def average_grads(self, params: Iterable[torch.Tensor]) -> None:
        self.average(p.grad for p in params)

    def averaged(self, tensors: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        """``tensors`` (e.g. what ``torch.autograd.grad`` returned), averaged in place."""
        self.average(tensors)
        return tensors

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of a (detached) value, e.g. a shard's mean loss."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, group=self.group)
        return value / self.world_size

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's (equal-sized) shard stacked in rank order: the global batch."""
        if not self.enabled:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.contiguous(), group=self.group)
        return torch.cat(parts)

    def sum_(self, value: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over the ranks, in place (the meters' sums)."""
        if self.enabled:
            dist.all_reduce(value, group=self.group)
        return value

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.group)


ONE_PROCESS = DataParallel()

