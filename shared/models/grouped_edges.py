"""Every edge that leaves one cell state, computed together: one kernel per stage of a
separable conv for all of them, where the fast path (``shared.models.fast_mixed``) launches one
per edge.

A DARTS cell state feeds up to four edges (c_{k-2} and c_{k-1} feed every node), and each edge
holds a ``sep_conv_3x3`` and a ``sep_conv_5x5``: 2 x (depthwise, 1x1, BN) per candidate. On a
GPU the search step is bound by launching ~20,000 such small kernels, not by their arithmetic
(README, Speed). Here the m same-shaped separable convs on the edges leaving a state run as:

* the first depthwise conv: one conv of the state's ReLU with the m edges' kernels stacked,
  ``groups=C`` (output channel c*m + e is edge e's channel c; no copy of the input), then one
  permutation to edge-major channels;
* each 1x1 conv: one conv with ``groups=m`` (edge e's block of channels by its own matrix);
* each BN (affine-free, as in every search supernet): one ``batch_norm`` over the m*C
  channels, whose batch statistics are each edge's own; each edge's running statistics get
  their update from its slice (``_Ctx.update``); the last BN takes the edges' mixing weights
  as per-channel scales, as the fast path folds them;
* the second depthwise conv: one conv with ``groups=m*C``.

Equal in exact arithmetic to the per-edge path (float64 agrees to ~1e-14; float32 to rounding,
as any change of summation order). Used where ``Network(grouped_edges=True)``. Off by default:
on the CPU it is slower (``bench/supernet_step.py --grouped``, C=16, 8 cells, 32x32: 0.82x the
fast path's speed at batch 16, 0.76x at 64; oneDNN's grouped 1x1 convs and the permutation
cost more than the calls saved, where the fast path's 1x1 convs are matrix products), and on a
GPU, where it is meant to pay, it is not measured yet.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.models.global_batch_norm import batch_norm

Member = tuple[int, int, nn.Module]  # (edge index in the cell, candidate index, SepConv)


def group_key(op: nn.Module) -> tuple:
    """Separable convs with equal keys run as one group."""
    dw, bn1, bn2 = op[0][1], op[0][3], op[1][3]
    return (dw.kernel_size, dw.stride, dw.padding, dw.dilation, dw.in_channels,
            op[0][2].out_channels, op[1][1].padding, op[1][1].dilation,
            bn1.eps, bn1.momentum, bn2.eps, bn2.momentum)


def groupable(op: nn.Module) -> bool:
    """Affine-free BNs that track running statistics with a momentum (every search op)."""
    return all(bn.weight is None and bn.bias is None and bn.track_running_stats
               and bn.momentum is not None for bn in (op[0][3], op[1][3]))


def _stacked_bn(ctx, y: torch.Tensor, modules: Sequence[nn.BatchNorm2d],
                scales: Sequence[torch.Tensor] | None) -> torch.Tensor:
    """Each module's BN of its block of ``y``'s channels (times its scale), in one call."""
    m, c = len(modules), y.shape[1] // len(modules)
    first = modules[0]
    weight = None if scales is None else torch.cat([s.expand(c) for s in scales])
    if not first.training:  # each edge's running statistics, side by side
        mean = torch.cat([b.running_mean for b in modules])
        var = torch.cat([b.running_var for b in modules])
        return batch_norm(first, y, mean, var, weight, None, False, 0.0, first.eps)
    # momentum 1 leaves the batch mean and unbiased variance in the scratch buffers, what each
    # edge's BN folds into its running statistics
    mean = torch.zeros(m * c, dtype=first.running_mean.dtype, device=y.device)
    var = torch.ones_like(mean)
    z = batch_norm(first, y, mean, var, weight, None, True, 1.0, first.eps)
    for i, b in enumerate(modules):
        ctx.update(b, mean[i * c:(i + 1) * c], var[i * c:(i + 1) * c])
    return z


def sep_group(ctx, relu: torch.Tensor, members: Sequence[Member], weights: torch.Tensor,
              memory_format: torch.memory_format) -> dict[tuple[int, int], torch.Tensor]:
    """``weights[e, k] * op(x)`` for every (e, k, op) of ``members`` (same ``group_key``),
    from the state's ReLU; returned per (edge, candidate)."""
    ops = [op for _, _, op in members]
    m = len(ops)
    a = ops[0][0]
    dw, c = a[1], a[1].in_channels
    kernels = torch.stack([op[0][1].weight for op in ops], 1).flatten(0, 1)  # c*m + e
    y = F.conv2d(relu, kernels, None, dw.stride, dw.padding, dw.dilation, c)
    y = y.unflatten(1, (c, m)).transpose(1, 2).flatten(1, 2)  # edge-major channels
    y = y.contiguous(memory_format=memory_format)
    y = F.conv2d(y, torch.cat([op[0][2].weight for op in ops]), None, 1, 0, 1, m)
    y = F.relu_(_stacked_bn(ctx, y, [op[0][3] for op in ops], None))
    b = ops[0][1]
    y = F.conv2d(y, torch.cat([op[1][1].weight for op in ops]), None, b[1].stride,
                 b[1].padding, b[1].dilation, y.shape[1])
    y = F.conv2d(y, torch.cat([op[1][2].weight for op in ops]), None, 1, 0, 1, m)
    y = _stacked_bn(ctx, y, [op[1][3] for op in ops], [weights[e, k] for e, k, _ in members])
    out = y.shape[1] // m
    return {(e, k): y[:, i * out:(i + 1) * out] for i, (e, k, _) in enumerate(members)}
