"""BatchNorm over the global batch of a data-parallel search (every rank's shard together).

``torch.nn.SyncBatchNorm`` does this on GPUs only (its forward refuses CPU tensors), and the
search must run, and be tested, on the CPU with the gloo backend; and the fast supernet path
(``shared.models.fast_mixed``) calls ``F.batch_norm`` itself. So the statistics are combined
here, by one function both paths call: each rank's per-channel mean and (biased) variance are
gathered (``_Gather``) with its row count, and the backward sends every rank's gradient of the
statistics back to the rank that produced them. With n_r rows on rank r of n in all, the
global mean is sum_r n_r mean_r / n and the global variance sum_r n_r (var_r + (mean_r -
mean)^2) / n, the parallel form of the two-pass variance (no E[x^2] - E[x]^2 cancellation).
The running statistics get the global mean and the unbiased global variance, as
``F.batch_norm`` gives one process with the whole batch.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class GlobalBatchNorm:
    """A BatchNorm whose training-mode statistics are those of the global batch of the
    ``data_parallel`` group it was given (``shared.search.data_parallel.DataParallel``); mixed
    into ``nn.BatchNorm2d`` (the CNN supernets) and ``nn.BatchNorm1d`` (the recurrent search
    cell, which normalises (B, nhid) states at every node of every time step)."""

    data_parallel: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.data_parallel is not None
                and self.data_parallel.enabled):
            return super().forward(x)
        factor = 0.0
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
        return global_batch_norm(x, self.running_mean, self.running_var, self.weight,
                                 self.bias, factor, self.eps, self.data_parallel)


class GlobalBatchNorm2d(GlobalBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over the global batch."""


class GlobalBatchNorm1d(GlobalBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the global batch ((N, C) inputs: the statistics are over N)."""


GLOBAL = {nn.BatchNorm2d: GlobalBatchNorm2d, nn.BatchNorm1d: GlobalBatchNorm1d}


def global_batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None,
                      running_var: torch.Tensor | None, weight: torch.Tensor | None,
                      bias: torch.Tensor | None, momentum: float, eps: float,
                      data_parallel: Any) -> torch.Tensor:
    """``F.batch_norm(x, ..., training=True, momentum, eps)`` with the statistics of every
    rank's ``x`` together. Each rank's statistics are weighted by its rows: the shards of a
    training batch are equal (then the weights are 1/N), those of a short evaluation batch
    may differ by one row (``shared.data.on_device.Shard``), even be empty. The gradient is
    that of the global mean loss only for equal shards, which is all training ever has."""
    dims = [0, *range(2, x.dim())]
    # statistics in float32 at least (autocast's bf16 / fp16 activations), float64 as given
    x32 = x if x.dtype in (torch.float32, torch.float64) else x.float()
    rows = x.numel() // x.size(1)
    if rows:
        var, mean = torch.var_mean(x32, dims, correction=0)
    else:  # an empty shard adds nothing (var_mean would give NaN)
        mean = var = x32.new_zeros(x.size(1))
    gathered = _Gather.apply(torch.stack([mean, var, torch.full_like(mean, rows)]),
                             data_parallel)
    means, variances, counts = gathered[:, 0], gathered[:, 1], gathered[:, 2]
    total = counts.sum(0)
    share = counts / total  # exactly 1/N for N equal shards, N a power of 2
    mean = (means * share).sum(0)
    var = ((variances + (means - mean) ** 2) * share).sum(0)
    shape = [1, -1] + [1] * (x.dim() - 2)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    y = (x32 - mean.view(shape)) * scale.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():  # Bessel's n / (n - 1) of the global batch, on the device
            running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            running_var.mul_(1 - momentum).add_(var.detach() * (total / (total - 1).clamp(min=1)),
                                                alpha=momentum)
    return y.to(x.dtype)


class _Gather(torch.autograd.Function):
    """Every rank's tensor, stacked (all_gather); backward: the gradient of this rank's
    tensor summed over every rank's use of it (all_reduce, then this rank's row)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, data_parallel: Any) -> torch.Tensor:
        ctx.data_parallel = data_parallel
        parts = [torch.empty_like(t) for _ in range(data_parallel.world_size)]
        dist.all_gather(parts, t.contiguous(), group=data_parallel.group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        dp = ctx.data_parallel
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=dp.group)
        return grad[dp.rank], None


def batch_norm(module: nn.Module, x: torch.Tensor, running_mean: torch.Tensor | None,
               running_var: torch.Tensor | None, weight: torch.Tensor | None,
               bias: torch.Tensor | None, training: bool, momentum: float,
               eps: float) -> torch.Tensor:
    """``F.batch_norm`` as ``module`` (a BN of the supernet) computes it: over the global
    batch in a data-parallel training forward, else plainly (the fast path calls this)."""
    dp = getattr(module, "data_parallel", None)
    if training and dp is not None and dp.enabled:
        return global_batch_norm(x, running_mean, running_var, weight, bias, momentum, eps, dp)
    return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)


def use_global_batch_norm(model: nn.Module, data_parallel: Any) -> nn.Module:
    """Make every ``nn.BatchNorm2d`` / ``nn.BatchNorm1d`` of ``model`` a global one of
    ``data_parallel`` (in place: the same parameters and buffers, so the state_dict is
    unchanged)."""
    for module in model.modules():
        if type(module) in GLOBAL:
            module.__class__ = GLOBAL[type(module)]
        if isinstance(module, GlobalBatchNorm):
            module.data_parallel = data_parallel
    return model


@contextlib.contextmanager
def local_batch_norm(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every BN of ``model`` normalises with its own input's statistics, as
    one process would: for a computation every rank repeats on the whole global batch (the
    Hessian monitor of ``shared.search.hessian``, whose double backward ``_Gather`` cannot
    differentiate)."""
    saved = [(m, m.data_parallel) for m in model.modules() if isinstance(m, GlobalBatchNorm)]
    for m, _ in saved:
        m.data_parallel = None
    try:
        yield model
    finally:
        for m, dp in saved:
            m.data_parallel = dp
