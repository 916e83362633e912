"""Every edge that leaves one cell state, computed together: one kernel per stage of a
separable or dilated conv for all of them, where the fast path (``shared.models.fast_mixed``)
launches one per edge.

A DARTS cell state feeds up to four edges (c_{k-2} and c_{k-1} feed every node), and each edge
holds a ``sep_conv_3x3`` and a ``sep_conv_5x5`` (2 x (depthwise, 1x1, BN) per candidate) and a
``dil_conv_3x3`` and a ``dil_conv_5x5`` (depthwise at dilation 2, 1x1, BN). On a GPU the search
step is bound by launching ~20,000 such small kernels, not by their arithmetic (README, Speed).
Here the m same-shaped convs of one kind on the edges leaving a state (same ``group_key``) run
together; so do those on the edges leaving either of the cell's two inputs, which are both
ready when the cell starts (same size and stride: 8 edges, not two groups of 4; the group's
members, its ``blocks`` of states, are planned by ``cell_plan.Group``). A group runs:

* the first depthwise conv: one conv with ``groups=m*C`` of the state's ReLU m times side by side
  (for the inputs' group, the first input's ReLU m_0 times, then the second's m_1 times;
  :func:`copies`, made once for every group with the same blocks) by the m edges' kernels side by
  side, so its output is edge-major (channel e*C + c is edge e's channel c). Stacking the kernels
  on one copy instead (a channel multiplier, ``groups=C``) needs no copy of the input, but its
  output is channel-major: each group then permuted it (a copy of m times the state, and its
  gradient's, per group), and oneDNN's kernel for it was slow;
* each 1x1 conv: one conv with ``groups=m`` (edge e's block of channels by its own matrix);
* each BN (affine-free, as in every search supernet): one ``batch_norm`` over the m*C
  channels, whose batch statistics are each edge's own; each edge's running statistics get
  their update from its slice (``_Ctx.update``); the last BN takes the edges' mixing weights
  as per-channel scales, as the fast path folds them;
* a separable conv's second depthwise conv: one conv with ``groups=m*C``.

Each stage's m kernels are concatenated with ``joined_weights.joined``: a view, not a copy,
where the network laid them back to back in memory (``fast_mixed.join_group_weights``).

On CUDA (``fast_mixed.EMBED``) a group takes every kernel size of its kind: sep_conv_3x3 with
sep_conv_5x5, dil_conv_3x3 with dil_conv_5x5, each 3x3 kernel embedded with zeros in a 5x5
one (:func:`kernels`; all of a cell's such stages built at once, ``embedded_kernels``), the
members by kernel size, then state, then edge. A 3x3 conv then costs a 5x5's arithmetic,
which a GPU bound by launches does not feel (half the groups: a first-order step launches
4,612 operations, not 5,499); the CPU, bound by arithmetic, keeps a group per size.

A dilated conv is that first stage alone (:func:`dil_group`), and its depthwise conv is the
one the fast path would run for its widest member, on the m copies of its input with the kernels
side by side: the caller passes it in (``_State.dil_conv``). So the fast path's rewrites of
dilation hold for the group: at stride 2 an undilated conv of the even pixels, at stride 1 a
conv of the polyphase components (the 1x1 conv and the BN act per pixel, so the group's result
stays polyphase, and each edge's slice joins the polyphase sum of the node that edge feeds),
or a dense kernel with the dilated one embedded.

Equal in exact arithmetic to the per-edge path (float64 agrees to ~1e-14; float32 to rounding,
as any change of summation order). Used where ``Network(grouped_edges=True)``. Off by default:
on the CPU it is slower at the paper's batch size. Space s5, C=16, 8 cells, 32x32, first
order, ``OMP_NUM_THREADS=2``, the two versions' runs interleaved, two of each: at batch 16
(``bench/supernet_step.py --rows 16:1:7 --grouped``, medians of 7 steps) the grouped step
took 1.13x and 1.06x the fast path's speed, where the channel-multiplier version took 0.86x
and 0.85x; at batch 64 (``bench/capture_check.py --device cpu --paths grouped
--batch_size 64 --steps 4``, the real search step) 0.89x and 0.88x, against 0.81x and 0.86x.
Its grouped 1x1 convs cost oneDNN more than the fast path's matrix products. On a GPU, where
it is meant to pay (it removes 900 of the 1,383 convolution, 1x1 and BN calls of a 5-cell
forward on s5, 1,080 with CUDA's grouping, ``tests/test_fast_path.py``; launches per step:
``bench/kernel_count.py``), it is not measured yet.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.models.batch_statistics import normalised
from shared.models.candidate import kind, layers, of_kind, per_module
from shared.models.embedded_kernels import CellKernels, embedded
from shared.models.global_batch_norm import batch_norm
from shared.models.joined_weights import joined
from shared.models.kernel_reuse import reused

CL = torch.channels_last

Member = tuple[int, int, nn.Module]  # (edge index in the cell, candidate index, op)


# A candidate's mixing weight as C equal values (``cell_scales.scales``), a (C,) tensor: the
# per-channel scale of the candidate's last BN, or of its ``scale * t`` term (``node_sum``);
# for a group, its members' back to back, (m*C,)
Scale = torch.Tensor


@per_module(asked_of=of_kind("sep", "dil"))
def group_key(op: nn.Module) -> tuple:
    """Separable convs (kind ``sep``) or dilated convs (``dil``) with equal keys run as one
    group; the kind leads the key, so the two never share one. Found once per op
    (``candidate.per_module``): its shapes and its BNs' eps and momentum, set when it is built."""
    if kind(op) == "sep":
        dw, pw, bn1, dw2, _, bn2 = layers(op)
        return ("sep", dw.kernel_size, dw.stride, dw.padding, dw.dilation, dw.in_channels,
                pw.out_channels, dw2.padding, dw2.dilation,
                bn1.eps, bn1.momentum, bn2.eps, bn2.momentum)
    dw, pw, bn = layers(op)
    return ("dil", dw.kernel_size, dw.stride, dw.padding, dw.dilation, dw.in_channels,
            pw.out_channels, bn.eps, bn.momentum)


@per_module(asked_of=of_kind("sep", "dil"))
def size_free_key(op: nn.Module) -> tuple:
    """:func:`group_key` without the kernel size (and the 'same' padding that follows from
    it): where a group takes convs of every kernel size of its kind (``fast_mixed.EMBED``)."""
    if kind(op) == "sep":
        dw, pw, bn1, dw2, _, bn2 = layers(op)
        return ("sep", dw.stride, dw.dilation, dw.in_channels, pw.out_channels, dw2.dilation,
                bn1.eps, bn1.momentum, bn2.eps, bn2.momentum)
    dw, pw, bn = layers(op)
    return ("dil", dw.stride, dw.dilation, dw.in_channels, pw.out_channels, bn.eps,
            bn.momentum)


@per_module(asked_of=of_kind("sep", "dil"))
def groupable(op: nn.Module) -> bool:
    """Affine-free BNs that track running statistics with a momentum (every search op)."""
    bns = [m for m in layers(op) if isinstance(m, nn.BatchNorm2d)]
    return all(bn.weight is None and bn.bias is None and bn.track_running_stats
               and bn.momentum is not None for bn in bns)


def _stacked_bn(ctx, y: torch.Tensor, modules: Sequence[nn.BatchNorm2d],
                weight: Scale | None) -> torch.Tensor:
    """Each module's BN of its block of ``y``'s channels (times its block of ``weight``, the
    members' scales), in one call."""
    first = modules[0]
    if not first.training:  # each edge's running statistics, side by side (a view where
        mean = joined([b.running_mean for b in modules])  # laid out so: join_group_weights)
        var = joined([b.running_var for b in modules])
        return batch_norm(first, y, mean, var, weight, None, False, 0.0, first.eps)
    # the batch statistics of all the blocks, each edge's folded into its running statistics
    z, stats = normalised(first, y, weight)
    ctx.update_all(modules, stats)
    return z


class _Copies(torch.autograd.Function):
    """Runs of copies of the inputs side by side on the channel axis, in the inputs' memory
    format (an input may have several runs): channel e*C + c is copy e's channel c, so a
    depthwise conv with ``groups=M*C`` runs edge e's kernels on copy e. The backward sums
    each input's copies' gradients in one reduction where its runs are alike and evenly
    spaced (always so in a full DARTS cell), one per run plus their additions else
    (``cat``'s own would hand the input a view per copy, added one by one)."""

    @staticmethod
    def forward(ctx, runs: tuple[tuple[int, int], ...], *xs: torch.Tensor) -> torch.Tensor:
        ctx.runs = runs
        return torch.cat([xs[i] for i, m in runs for _ in range(m)], dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        n, total, h, w = grad.shape
        c = total // sum(m for _, m in ctx.runs)
        # channels-last: reduced in that order, kept in it
        last = grad.stride(1) == 1 and c > 1 and grad.is_contiguous(memory_format=CL)
        grad = grad if last or grad.is_contiguous() else grad.contiguous()
        at: dict[int, list[tuple[int, int]]] = {}  # input: (first copy, copies) per run
        first = 0
        for i, m in ctx.runs:
            at.setdefault(i, []).append((first, m))
            first += m
        return (None, *(_summed(grad, runs, c, last) for _, runs in sorted(at.items())))


def _summed(grad: torch.Tensor, runs: list[tuple[int, int]], c: int,
            last: bool) -> torch.Tensor:
    """The sum of the copies ``runs`` ((first copy, copies) each) of ``grad``'s channels:
    one reduction over a strided view where the runs are alike and evenly spaced."""
    n, total, h, w = grad.shape
    ms = {m for _, m in runs}
    gaps = {b[0] - a[0] for a, b in zip(runs, runs[1:])} or {0}
    if torch.compiler.is_compiling() and len(runs) == 1:  # a strided view's storage offset
        (first, m), = runs  # is no traceable value: the run's copies as a plain view
        if last:
            rows = grad.permute(0, 2, 3, 1).unflatten(3, (total // c, c))
            return rows[:, :, :, first:first + m].sum(3).permute(0, 3, 1, 2)
        return grad.unflatten(1, (total // c, c))[:, first:first + m].sum(1)
    if len(ms) > 1 or len(gaps) > 1 or torch.compiler.is_compiling():  # run by run
        parts = [_summed(grad, [run], c, last) for run in runs]
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out
    (m,), (gap,), r = ms, gaps, len(runs)
    start = runs[0][0] * c
    # the runs as a dim of their own (r, at ``gap`` copies), the copies (m), the channels (c)
    outer = ((r, gap * c),) if r > 1 else ()
    if last:  # of the (n, h, w, total) rows
        rows = grad.permute(0, 2, 3, 1)
        sizes, strides = zip((n, h * w * total), (h, w * total), (w, total), *outer, (m, c),
                             (c, 1))
        view = rows.as_strided(sizes, strides, rows.storage_offset() + start)
        return view.sum((3, 4) if r > 1 else 3).permute(0, 3, 1, 2)
    outer = tuple((k, stride * h * w) for k, stride in outer)
    sizes, strides = zip((n, total * h * w), *outer, (m, c * h * w), (c, h * w), (h, w),
                         (w, 1))
    view = grad.as_strided(sizes, strides, grad.storage_offset() + start * h * w)
    return view.sum((1, 2) if r > 1 else 1)


def copies(parts: Sequence[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """Each ``(x, m)`` of ``parts`` (x: (N, C, H, W)) m times along the channels, in order:
    (N, M*C, H, W), M the sum of the m's; edge-major. A tensor may come in several parts
    (the same object): its gradient is their sum."""
    xs: list[torch.Tensor] = []
    runs = []
    for x, m in parts:
        i = next((k for k, seen in enumerate(xs) if seen is x), None)
        if i is None:
            i = len(xs)
            xs.append(x)
        runs.append((i, m))
    return _Copies.apply(tuple(runs), *xs)


def state_runs(states: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """(state, how many in a row) of each run of equal states in a group's members, in order
    (a loop, not ``itertools.groupby``, which TorchDynamo 2.11 does not trace: a graph break
    per cell)."""
    runs: list[list[int]] = []
    for j in states:
        if runs and runs[-1][0] == j:
            runs[-1][1] += 1
        else:
            runs.append([j, 1])
    return tuple((j, n) for j, n in runs)


def widest(convs: Sequence[nn.Conv2d]) -> nn.Conv2d:
    """The conv of the largest kernel (the first of them): its stride, padding and dilation
    are the group's."""
    sizes = [c.kernel_size[0] for c in convs]
    return convs[sizes.index(max(sizes))]  # TorchDynamo 2.11 breaks the graph at max(key=)


def kernels(convs: Sequence[nn.Conv2d], cell: CellKernels | None = None) -> torch.Tensor:
    """The convs' kernels side by side (dim 0), in order. Where their sizes differ, each is
    embedded with zeros in the middle of the widest's size: every conv is square with 'same'
    padding (``candidate.kind``), so at the widest's padding the embedded kernel reads the
    pixels its own read, by the same weights, at every output pixel (a 3x3 conv at padding
    p is the 5x5 one at p + d with its outer ring zero). Where ``cell`` (the cell's stages of
    several sizes, built at once) holds them, its; else built alone
    (``embedded_kernels.embedded``) once per search step while the weights stay
    (``kernel_reuse``); of one size, joined (a view where laid out so)."""
    weights = [c.weight for c in convs]
    kernel = None if cell is None else cell(convs)
    return kernel if kernel is not None else reused(weights, lambda: _kernels(weights))


def _kernels(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    if all(w.shape[-1] == weights[0].shape[-1] for w in weights):
        return joined(weights)
    return embedded([weights])[0]


def _pw_bn(ctx, y: torch.Tensor, pws: Sequence[nn.Conv2d], bns: Sequence[nn.BatchNorm2d] | None,
           scale: Scale | None) -> torch.Tensor:
    """Edge-major ``y``: each edge's 1x1 conv of its block (one conv, ``groups=m``), then
    its BN (one stacked call) times its block of ``scale``; no BN where ``bns`` is None (folded
    into the node sums: ``eval_folds``)."""
    weights = [p.weight for p in pws]
    y = F.conv2d(y, reused(weights, lambda: joined(weights)), None, 1, 0, 1, len(pws))
    return y if bns is None else _stacked_bn(ctx, y, bns, scale)


def _dw_pw_bn(ctx, conv: Callable[[torch.Tensor], torch.Tensor], dws: Sequence[nn.Conv2d],
              pws: Sequence[nn.Conv2d], bns: Sequence[nn.BatchNorm2d] | None,
              scale: Scale | None, cell: CellKernels | None) -> torch.Tensor:
    """Depthwise conv -> 1x1 conv -> BN of m edges reading one input, in one call each:
    ``conv(kernels)`` is the depthwise conv of the input's m copies (:func:`copies`) by the m
    edges' kernels side by side (``groups=m*C``, :func:`kernels`, ``cell``'s where it holds
    them), so its output is edge-major already."""
    y = conv(kernels(dws, cell))
    return _pw_bn(ctx, y, pws, bns, scale)


def _split(y: torch.Tensor, members: Sequence[Member]) -> dict[tuple[int, int], torch.Tensor]:
    """Each member's block of channels. One ``split``, not m slices: its backward is one
    concatenation of the members' gradients, where each slice's would be a zero-filled tensor
    of all m blocks, and autograd would add m of them."""
    parts = y.split(y.shape[1] // len(members), dim=1)
    return {(e, k): t for (e, k, _), t in zip(members, parts)}


def sep_group(ctx, relu_copies: torch.Tensor, members: Sequence[Member], scale: Scale,
              cell: CellKernels | None = None,
              folded: bool = False) -> dict[tuple[int, int], torch.Tensor]:
    """``w * op(x)`` for every (e, k, op) of ``members`` (separable convs, same
    ``group_key``), ``scale`` their mixing weights ``w`` as C values each, back to back; from
    the state's ReLU in m copies (:func:`copies`); returned per (edge, candidate). ``cell``:
    the cell's kernels of several sizes, built at once (:func:`kernels`); ``folded``: each
    ``op(x)`` before its last BN (evaluation mode, the BN folded into the node sums)."""
    # per op: (depthwise, 1x1, BN) twice
    dw1, pw1, bn1, dw2, pw2, bn2 = zip(*(layers(op) for _, _, op in members))
    a, b = widest(dw1), widest(dw2)

    def first(kernels: torch.Tensor) -> torch.Tensor:
        return F.conv2d(relu_copies, kernels, None, a.stride, a.padding, a.dilation,
                        relu_copies.shape[1])

    y = _dw_pw_bn(ctx, first, dw1, pw1, bn1, None, cell)
    y = F.relu_(y)  # in place: BN's backward needs not its output
    y = F.conv2d(y, kernels(dw2, cell), None, b.stride, b.padding, b.dilation, y.shape[1])
    y = _pw_bn(ctx, y, pw2, None if folded else bn2, scale)
    return _split(y, members)


def dil_group(ctx, conv: Callable[[torch.Tensor], torch.Tensor], members: Sequence[Member],
              scale: Scale, cell: CellKernels | None = None, folded: bool = False
              ) -> dict[tuple[int, int], torch.Tensor]:
    """``w * op(x)`` for every (e, k, op) of ``members`` (dilated convs, same ``group_key``),
    ``scale`` as for :func:`sep_group`; ``conv(kernels)``: the depthwise conv of the m copies
    of the state's ReLU (:func:`copies`) as the fast path runs it for one member, with the m
    kernels side by side (``groups=m*C``), so the result is in that conv's layout (polyphase
    where it is polyphase); returned per (edge, candidate); ``cell`` and ``folded`` as for
    :func:`sep_group`."""
    dws, pws, bns = zip(*(layers(op) for _, _, op in members))  # per op: depthwise, 1x1, BN
    y = _dw_pw_bn(ctx, conv, dws, pws, None if folded else bns, scale, cell)
    return _split(y, members)
