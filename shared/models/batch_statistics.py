"""One training-mode BatchNorm whose batch statistics several BN modules fold into their
running statistics: the pooling shared by every edge leaving a state (``fast_mixed``), the m
edges' BNs of a group run as one over their channels side by side (``grouped_edges``).

``F.batch_norm`` leaves the statistics only in running buffers it updates in place, so these
calls used to pass momentum 1 and a pair of zeroed scratch buffers: one ``zeros`` launch per
call, 160 of a first-order step's 11,577 on the fast path, 544 of 8,253 grouped (as CUDA runs
it, ``bench/kernel_count.py``). ``torch.native_batch_norm`` without running buffers (the op
``F.batch_norm`` runs for these affine-free BNs on CUDA and on the CPU; cuDNN's needs an
affine BN) returns them instead: the batch mean and ``invstd = 1 / sqrt(biased var + eps)``;
its output and gradients are bit for bit ``F.batch_norm``'s, and on CUDA it launches as many
kernels (``batch_norm_cuda_out`` in aten/src/ATen/native/cuda/Normalization.cu inverts the
variance with ``batch_norm_calc_invstd`` where it would have updated the running buffers with
``batch_norm_update_stats_and_invert``). The unbiased variance a running
statistic takes is recovered from ``invstd`` when the forward's updates are applied, for all
the calls at once (``unbiased_variances``): it differs from the one ``F.batch_norm`` computes
by the rounding of ``invstd`` (measured: 1.2e-7 relative in float32, 4e-16 in float64), an
error ~1e-7 of ``var + eps``, which is all an evaluation-mode BN ever reads of it.

A data-parallel search normalises with the global batch's statistics
(``global_batch_norm``), which still leaves them in scratch buffers.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn as nn

from shared.models.global_batch_norm import batch_norm


class BatchStatistics(NamedTuple):
    """A BN's batch mean and either its unbiased variance (``var``) or ``invstd`` =
    1 / sqrt(biased variance + ``eps``) over ``rows`` values per channel."""
    mean: torch.Tensor
    var: torch.Tensor | None
    invstd: torch.Tensor | None
    rows: int
    eps: float


def normalised(module: nn.BatchNorm2d, y: torch.Tensor,
               weight: torch.Tensor | None) -> tuple[torch.Tensor, BatchStatistics]:
    """``weight * (y - mean) / sqrt(var + eps)`` by ``y``'s batch statistics (``module``'s
    eps: an affine-free BN, ``weight`` a per-channel scale or None), and those statistics;
    no running statistic is touched."""
    rows = y.numel() // y.shape[1]
    dp = getattr(module, "data_parallel", None)
    if dp is not None and dp.enabled:  # the global batch's: momentum 1 leaves them in scratch
        mean, var = torch.zeros(2, y.shape[1], dtype=module.running_mean.dtype,
                                device=y.device).unbind(0)
        z = batch_norm(module, y, mean, var, weight, None, True, 1.0, module.eps)
        return z, BatchStatistics(mean, var, None, rows, module.eps)
    z, mean, invstd = torch.native_batch_norm(y, weight, None, None, None, True, 0.0,
                                              module.eps)
    return z, BatchStatistics(mean, None, invstd, rows, module.eps)


def unbiased_variances(stats: Sequence[BatchStatistics]) -> list[torch.Tensor]:
    """Each one's unbiased batch variance, ``(invstd^-2 - eps) * rows / (rows - 1)`` where it
    is given by ``invstd``, in one batch of ``_foreach`` kernels for them all; clamped at 0,
    where rounding leaves a constant channel's variance a hair below."""
    if torch.compiler.is_compiling():
        # TorchDynamo guards on the identity of an object passed to id(), and every
        # forward's statistics are new objects: a recompile per call (seen with torch 2.11:
        # its limit reached, the update ran eagerly). Traced, each entry is computed as it
        # comes, the same arithmetic on each value (the compiler may merge the repeats).
        keys = list(range(len(stats)))
    else:  # a shared pooling's statistics, once for all its edges
        first: dict[int, int] = {}
        keys = [first.setdefault(id(s), i) for i, s in enumerate(stats)]
    unique = {key: stats[key] for key in dict.fromkeys(keys)}
    out = {key: s.var for key, s in unique.items() if s.invstd is None}
    derived = {key: s for key, s in unique.items() if s.invstd is not None}
    if derived:
        var = torch._foreach_pow([s.invstd for s in derived.values()], -2.0)
        torch._foreach_sub_(var, [s.eps for s in derived.values()])
        torch._foreach_clamp_min_(var, 0.0)
        torch._foreach_mul_(var, [s.rows / max(s.rows - 1, 1) for s in derived.values()])
        out.update(zip(derived, var))
    return [out[key] for key in keys]
