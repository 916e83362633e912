"""A tensor read by many ops, whose gradient is summed in one batch on the GPU.

A state of a DARTS cell is read by every candidate on every edge leaving it (DARTS, Liu et
al. 2019, eq. 1-2): the fast path (``fast_mixed``) reads a state ``x`` from its skip terms,
its shared pooling, its shared ReLU and the cell's output, and that ReLU from every separable
and dilated conv of those edges, up to 13 ops. Autograd adds the gradients of a tensor's
readers one by one, one kernel each: on the DARTS space (s5, 8 cells) a first-order step
spent 1,576 of its 13,059 launches on additions (``bench/kernel_count.py``). Where node sums
run batched (``node_sum.BATCHED``, the GPU) each reader here takes its own alias of the
tensor from :class:`Readers`, and the aliases' gradients are summed as one node sum (a stack
and a reduction) when all have arrived: 13,059 launches become 12,226 (grouped edges: 9,090
become 8,730). Elsewhere every reader gets the tensor itself and autograd adds as it always
does; the CPU's results stay bit for bit as they were, the GPU's move by rounding (another
order of addition). The readers' gradients are all held until the last arrives, which did
not move the step's peak memory (the forward's activations set it).

The aliases are views, made ``n`` at a time by one autograd node; ``n`` is the number of
readers the caller plans. An alias nobody reads gets no gradient and costs nothing but its
making; more readers than planned take a second batch (one more addition in the backward),
so a wrong count changes nothing but the launches.
"""
from __future__ import annotations

import torch

from shared.models import node_sum

# Fewer readers are left to autograd: up to 3 gradients take as many launches added one by
# one (2) as summed in one batch (a stack and a reduction)
MIN_READERS = 4


class _FanOut(torch.autograd.Function):
    """``n`` aliases of ``x``; the backward sums the gradients of those that got one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)  # an unread alias: None, not a tensor of zeros
        return tuple(x.view_as(x) for _ in range(n))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        terms = [g for g in grads if g is not None]
        return (node_sum.total(terms) if terms else None), None


class Readers:
    """Hands each reader of ``x`` the tensor it should read: its own alias where the sums are
    batched and ``x`` needs a gradient (``n`` planned readers per batch of aliases), else
    ``x``. ``x`` itself stays available for what reads no values (shapes, layouts)."""

    def __init__(self, x: torch.Tensor, n: int) -> None:
        self.x, self.n = x, max(int(n), 1)
        self._aliases: list[torch.Tensor] = []
        self._fan = (self.n >= MIN_READERS and x.requires_grad and torch.is_grad_enabled()
                     and node_sum.is_batched(x))

    def take(self) -> torch.Tensor:
        """The tensor one more reader reads."""
        if not self._fan:
            return self.x
        if not self._aliases:
            self._aliases = list(reversed(_FanOut.apply(self.x, self.n)))
        return self._aliases.pop()
