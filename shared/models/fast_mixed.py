"""The fast evaluation of the search supernet: same modules, same parameters, fewer and
cheaper kernels.

``Network(..., fast=True)`` runs its cells through :func:`cell_forward` instead of
``SearchCell.forward``. Nothing here owns a parameter or a buffer: every weight, every BN
running statistic is read from (and updated in) the plain modules of ``search_cnn``
(``cells.k._ops.e._ops.i...``), so the two paths share one ``state_dict`` layout, a
checkpoint of one loads into the other, and ``torch.func.functional_call`` substitutes
parameters in both. The plain per-candidate path (``fast=False``) is the reference the tests
compare this one to (outputs, weight gradients, mixing-weight gradients, running statistics).

What it does differently, each an exact rewrite (equal in exact arithmetic; fp32 results
agree to rounding, float64 to ~1e-14):

* on CPU activations run channels-last (the input is converted once): oneDNN's depthwise
  kernels, above all the weight gradient, are several times faster in that layout (on CUDA
  they run NCHW, see ``DEVICE_FORMAT``);
* 'none' (``w * 0``) is skipped: its output and its mixing-weight gradient are zero (and with
  ``Network.skip_zero_weights`` so is every candidate of weight exactly 0, as in the plain path,
  decided by one read of the device per forward, or held for an epoch of recorded steps:
  ``shared.models.live``);
* work shared by every edge that reads the same cell state is done once per state, not
  once per edge and op: the ReLU in front of every conv op, the pooling, and (training) the
  batch-normalised pooling, whose batch statistics are the same for every edge; each edge's
  own BN running statistics still get their update;
* on CUDA the gradients of a tensor that many ops read (a state, its ReLU, its even pixels,
  its polyphase components, a shared pooling) are summed in one batch (``fan_out``), not
  added one by one as autograd does; a cell plans who reads each state (``cell_plan``);
* the mixing weight is folded into the op's last (affine-free) BN as its per-channel scale,
  and ``skip``/pooling terms are summed with their weights by one operation per node with its
  own backward, batched over a stack of the terms on CUDA (``node_sum``); a cell's weights
  are expanded to those per-channel scales once, for all its candidates (``cell_scales``);
* on the CPU (``UNDILATE``), dilated depthwise convs (DARTS ``dil_conv``, dilation 2), whose
  oneDNN kernels are slow: at stride 2 a dilation-2 conv only reads the even pixels, so it is
  an undilated conv of ``x[:, :, ::2, ::2]``; at stride 1 it is an undilated conv of each of
  the four 2x2 polyphase components (stacked on the batch axis, transformed once per state);
  the 1x1 conv and the BN after it act per pixel, so they run on the polyphase layout too (BN
  batch statistics are over the same set of values) and only the weighted sum is transformed
  back, once per node. Where a polyphase component would be too small for a fast kernel the
  dilated kernel is embedded in a dense one (3x3 at dilation 2 = 5x5 with zeros);
* 1x1 convs are matrix products over the channels-last pixels (``F.linear``);
* FactorizedReduce's 1x1 stride-2 convs are 1x1 convs of the even / odd pixels;
* with ``Network(grouped_edges=True)`` (off by default) the same-shaped separable convs, and
  the same-shaped dilated convs, on the edges leaving one state (or either of the cell's two
  inputs, ``Group``) run together, one kernel per stage for all of them
  (``shared.models.grouped_edges``); a dilated group gets the rewrite above that any one of
  its convs would (``_State.dil_conv``), on the stacked kernels; on CUDA (``EMBED``) each
  kind's kernel sizes share a group, the smaller kernels embedded in the widest;
* in evaluation mode, where node sums are batched, the poolings', FactorizedReduces' and (with
  dilated convs run as they are) the convs' last BNs, which read running statistics, are
  folded into the node sums as weighted terms (``shared.models.eval_folds``).

Any op it does not recognise runs as ``w * op(x)``, as in the plain path.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.models import candidate, cell_plan, cell_scales, kernel_reuse, node_sum
from shared.models.batch_statistics import BatchStatistics, normalised, unbiased_variances
from shared.models.cell_plan import Blocks, Plan
from shared.models.cell_scales import CellScales
from shared.models.device_policy import switched
from shared.models.embedded_kernels import CellKernels
from shared.models.eval_folds import FOLD_TIERS, EvalFolds, FoldPlan, foldable
from shared.models.fan_out import Readers
from shared.models.global_batch_norm import batch_norm
from shared.models.grouped_edges import Scale, copies, dil_group, sep_group, widest
from shared.models.joined_weights import join, joined_view
from shared.models.live import forward_rows
from shared.ops import FactorizedReduce, NoiseOp, SepConv

CL = torch.channels_last
# The memory format the fast path runs in, per device type (default: contiguous NCHW).
# On CPU oneDNN's depthwise kernels, above all their weight gradient, are several times faster
# channels-last. On CUDA (H200, cuDNN, torch 2.11) the fast path ran slower channels-last
# than NCHW (fwd+bwd, batch 64: 428 vs 309 ms, plain 365 ms), and in one channels-last run its
# float64 gradients on the spaces with pooling and dilated convs disagreed with the plain
# path (not reproduced op by op, not root-caused), so it runs NCHW there whatever the input.
DEVICE_FORMAT = {"cpu": CL}

# A stride-1 dilated conv goes polyphase when each component is at least this many pixels on
# a side (smaller: oneDNN's 5x5 weight-gradient kernel drops to a slow GEMM path), except 3x3
# kernels, which keep oneDNN's fast depthwise kernels at every size.
POLY_MIN_SIDE = {3: 1, 5: 8}

# Device types whose dilated depthwise convs are rewritten undilated (``_dil_source``: the even
# pixels, the polyphase components, a dense kernel), for oneDNN's slow dilated kernels. On CUDA
# PyTorch runs an fp32 or bf16 NCHW depthwise conv with its own kernel (cuDNN's only in fp16
# and undilated, ``ConvParams::use_cudnn_depthwise`` in aten/src/ATen/native/Convolution.cpp),
# which reads a dilated tap as it reads an undilated one; there the rewrites would only add
# copies: a first-order step launched 11,577 operations without them, 12,226 with them
# (``bench/kernel_count.py``; ``bench/capture_check.py --paths undilated`` times the two).
UNDILATE = {"cpu"}


def undilated(device_type: str, on: bool) -> contextlib.AbstractContextManager:
    """Dilated convs on ``device_type`` rewritten undilated (``on``) or run as they are while
    inside (``device_policy.switched``)."""
    return switched(UNDILATE, device_type, on)


# Device types where a group of edges' convs (``grouped_edges``) takes every kernel size of its
# kind: sep_conv_3x3 with sep_conv_5x5, and dil_conv_3x3 with dil_conv_5x5 where the dilation
# is not rewritten (``UNDILATE``, whose rewrites depend on the kernel size), the smaller
# kernels embedded with zeros in the widest (``grouped_edges.kernels``). Half as many groups,
# the kernels padded and concatenated (a cell's all at once, ``embedded_kernels``), a 3x3
# conv's arithmetic that of a 5x5: for a GPU, bound by launches (a first-order step: 5,499
# operations without it, 4,612 with it, ``bench/kernel_count.py``), not for a CPU, bound by
# arithmetic.
EMBED = {"cuda"}


def embedded(device_type: str, on: bool) -> contextlib.AbstractContextManager:
    """Groups on ``device_type`` take every kernel size (``on``) or one while inside."""
    return switched(EMBED, device_type, on)


def _merges(device_type: str) -> tuple[bool, bool]:
    """Whether the separable convs, and the dilated convs, of every kernel size run in one
    group on ``device_type`` (``EMBED``)."""
    embed = device_type in EMBED
    return embed, embed and device_type not in UNDILATE


# -- kernels ----------------------------------------------------------------------------------
class _Ctx:
    """Per-forward bookkeeping: BN counters and running-statistic updates, applied in batches."""

    def __init__(self, noise_format: torch.memory_format, grouped: bool = False) -> None:
        self.noise_format = noise_format
        self.grouped = grouped  # sep / dil convs of the edges leaving a state run together
        self.counters: list[torch.Tensor] = []
        # per running-average factor: (running mean, running variance, batch statistics,
        # their channels in them)
        self.updates: dict[float, list[tuple[torch.Tensor, torch.Tensor, BatchStatistics,
                                             slice | None]]] = {}

    def count(self, m: nn.BatchNorm2d) -> float:
        """Count one training-mode call of ``m``; returns its running-average factor."""
        if m.momentum is None:  # cumulative average: needs the count now
            m.num_batches_tracked.add_(1)
            return 1.0 / float(m.num_batches_tracked)
        if m.num_batches_tracked is not None:
            self.counters.append(m.num_batches_tracked)
        return m.momentum

    def update(self, m: nn.BatchNorm2d, stats: BatchStatistics,
               part: slice | None = None) -> None:
        """Fold the batch statistics of channels ``part`` (None: all) of ``stats`` into
        ``m``'s running statistics (at :meth:`flush`). None, not ``slice(None)``: TorchDynamo
        2.11 cannot hold a slice as a default (a graph break at every shared pooling)."""
        self.updates.setdefault(self.count(m), []).append(
            (m.running_mean, m.running_var, stats, part))

    def update_all(self, modules: Sequence[nn.BatchNorm2d], stats: BatchStatistics) -> None:
        """:meth:`update` of each of ``modules`` by its block of ``stats``' channels (theirs
        side by side, in order). Where their running statistics lie back to back in one
        buffer (``join_group_weights``) and they share a momentum, the buffer's view takes the
        whole ``stats`` as one running statistic: the same arithmetic on each value, one
        tensor of the update's lists instead of one per module (a grouped first-order step,
        as on CUDA: 896 to 320 a forward), less host time and, on CUDA, fewer chunks of the
        multi-tensor kernels."""
        momenta = {m.momentum for m in modules}
        alike = len(momenta) == 1 and None not in momenta and all(
            m.training and m.track_running_stats for m in modules)
        mean = joined_view([m.running_mean for m in modules]) if alike else None
        var = joined_view([m.running_var for m in modules]) if mean is not None else None
        if var is None:
            c = stats.mean.shape[0] // len(modules)
            for i, m in enumerate(modules):
                self.update(m, stats, slice(i * c, (i + 1) * c))
            return
        for m in modules:
            self.count(m)
        self.updates.setdefault(modules[0].momentum, []).append((mean, var, stats, None))

    def flush(self) -> None:
        with torch.no_grad():
            if self.counters:
                torch._foreach_add_(self.counters, 1)
            for factor, items in self.updates.items():
                variances = unbiased_variances([stats for _, _, stats, _ in items])
                rm = [mean for mean, _, _, _ in items]
                rv = [var for _, var, _, _ in items]
                torch._foreach_mul_(rm, 1.0 - factor)
                torch._foreach_add_(rm, [_part(stats.mean, part) for _, _, stats, part in items],
                                    alpha=factor)
                torch._foreach_mul_(rv, 1.0 - factor)
                torch._foreach_add_(rv, [_part(v, part)
                                         for v, (_, _, _, part) in zip(variances, items)],
                                    alpha=factor)
        self.counters, self.updates = [], {}


def _part(t: torch.Tensor, part: slice | None) -> torch.Tensor:
    """``t[part]``; ``t`` itself for all of it (None: no view to make)."""
    return t if part is None else t[part]


def _bn(ctx: _Ctx, y: torch.Tensor, m: nn.BatchNorm2d,
        scale: Scale | None = None) -> torch.Tensor:
    """``scale * m(y)`` as one batch_norm call (the mixing weight as BN's per-channel scale)."""
    weight, bias = m.weight, m.bias
    if scale is not None:
        weight, bias = (scale, None) if weight is None else (weight * scale, bias * scale)
    training = m.training or (m.running_mean is None and m.running_var is None)
    track = not m.training or m.track_running_stats
    factor = ctx.count(m) if m.training and m.track_running_stats else 0.0
    return batch_norm(m, y, m.running_mean if track else None,
                      m.running_var if track else None, weight, bias, training, factor, m.eps)


def _pw(x: torch.Tensor, c: nn.Conv2d) -> torch.Tensor:
    """1x1 conv; on channels-last input a matrix product over the pixels."""
    if x.is_contiguous(memory_format=CL):
        return F.linear(x.permute(0, 2, 3, 1), kernel_reuse.weight(c.weight).flatten(1),
                        c.bias).permute(0, 3, 1, 2)
    return F.conv2d(x, kernel_reuse.weight(c.weight), c.bias)


def _layout(t: torch.Tensor) -> torch.memory_format:
    """The memory format ``t`` is in (or, for a strided slice, was sliced from)."""
    return CL if t.dim() == 4 and t.stride(1) == 1 and t.shape[1] > 1 else torch.contiguous_format


def poly_in(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (4N, C, H/2, W/2), in x's memory format: the 2x2 polyphase components
    ``x[:, :, a::2, b::2]`` stacked on the batch axis (component-major)."""
    n, c, h, w = x.shape
    if _layout(x) == CL:
        return (x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
                .permute(2, 4, 0, 1, 3, 5).reshape(4 * n, h // 2, w // 2, c).permute(0, 3, 1, 2))
    return (x.reshape(n, c, h // 2, 2, w // 2, 2).permute(3, 5, 0, 1, 2, 4)
            .reshape(4 * n, c, h // 2, w // 2))


def poly_out(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`poly_in`."""
    n4, c, h2, w2 = y.shape
    if _layout(y) == CL:
        return (y.permute(0, 2, 3, 1).reshape(2, 2, n4 // 4, h2, w2, c)
                .permute(2, 3, 0, 4, 1, 5).reshape(n4 // 4, 2 * h2, 2 * w2, c)
                .permute(0, 3, 1, 2))
    return (y.reshape(2, 2, n4 // 4, c, h2, w2).permute(2, 3, 4, 0, 5, 1)
            .reshape(n4 // 4, c, 2 * h2, 2 * w2))


def embed_dilated(w: torch.Tensor, d: int) -> torch.Tensor:
    """A k x k kernel at dilation d as the equal dense (d(k-1)+1)^2 kernel (zeros between)."""
    co, ci, k, _ = w.shape
    dense = F.pad(w.reshape(co, ci, k, 1, k, 1), (0, d - 1, 0, 0, 0, d - 1))
    K = d * (k - 1) + 1
    return dense.reshape(co, ci, k * d, k * d)[:, :, :K, :K]


def _dil_source(dw: nn.Conv2d, x: torch.Tensor) -> str:
    """How the fast path runs the depthwise conv ``dw`` of a dilated conv of state ``x``
    (``_State.dil_conv``): undilated, of its ReLU's ``even`` pixels or of its ``poly``phase
    components; on its ReLU with the kernel embedded in a ``dense`` one; or ``dilated``, on its
    ReLU as it is (where the device's kernels are not rewritten, ``UNDILATE``)."""
    k, d, s = dw.kernel_size[0], dw.dilation[0], dw.stride[0]
    h, w = x.shape[-2:]
    if d == 1 or x.device.type not in UNDILATE:
        return "dilated"
    if d == 2 and s == 2:
        return "even"
    if (d == 2 and s == 1 and h % 2 == 0 and w % 2 == 0
            and min(h, w) // 2 >= POLY_MIN_SIDE.get(k, 1 << 30)):
        return "poly"
    return "dense" if s == 1 else "dilated"


def _read_source(source: str) -> str:
    """What a dilated conv run as ``source`` says (``_dil_source``) reads: the state's ReLU
    ('relu'), its even pixels ('even') or its polyphase components ('poly')."""
    return source if source in ("even", "poly") else "relu"


class _CellStates:
    """What the states of one cell share with grouped edges: the states themselves, the
    copies made of them for the groups (``grouped_edges.copies``), and the groups' results
    not yet taken by their edges."""

    def __init__(self, kernels: CellKernels | None = None) -> None:
        self.states: list["_State"] = []
        self.kernels = kernels  # the groups' stages of several kernel sizes, built at once
        self.copies: dict[tuple[str, Blocks], Readers] = {}
        # (edge, candidate): (term, in polyphase layout)
        self.terms: dict[tuple[int, int], tuple[torch.Tensor, bool]] = {}


class _State:
    """One cell state and the work every edge reading it shares. Every op that reads the
    state's values reads them from :meth:`read` (or its ReLU's from :meth:`relu`), so that on
    the GPU their gradients are summed at once (``fan_out``)."""

    def __init__(self, x: torch.Tensor, stride: int, plan: Plan | None = None,
                 cell: _CellStates | None = None) -> None:
        plan = plan or Plan()  # unplanned: each read is left to autograd
        self.x, self.stride = x, stride
        self._x = Readers(x, plan.x_reads)
        self._plan = plan
        self._cell = cell or _CellStates()
        self._relu: Readers | None = None
        self._even = self._odd = self._poly = None
        self._pools: dict = {}

    def read(self) -> torch.Tensor:
        """The state, for one more op that reads it."""
        return self._x.take()

    def conv_term(self, ctx: "_Ctx", edge: int, k: int, op: nn.Module,
                  scales: CellScales, folded: bool = False) -> tuple[torch.Tensor, bool]:
        """``scale * op(x)`` (``scale = scales.rows[edge][k]``) for a separable or dilated conv
        ``op``, and whether it is in the polyphase layout (its node transforms it back with the
        node's other such terms); ``folded``: ``op(x)`` before its last BN (evaluation mode,
        the BN folded into the node's sum: ``eval_folds``). With the edges' grouping on,
        computed with every same-shaped conv of its kind on the edges leaving this state, or
        either input of the cell (``Group``, ``grouped_edges``): the first member to be asked
        computes them all, each later one takes its own."""
        group = (self._plan.groups or {}).get((edge, k))  # grouped_edges
        if group is None:
            scale = scales.rows[edge][k]
            if isinstance(op, SepConv):
                return _sep(ctx, self, op, scale, folded), False
            return _dil(ctx, self, op, scale, folded)
        terms = self._cell.terms
        if (edge, k) not in terms:
            members, scale = group.members, scales.groups[group.members[0][:2]]
            if isinstance(op, SepConv):
                made = sep_group(ctx, self.copies("relu", group.blocks), members, scale,
                                 self._cell.kernels, folded)
                poly = False
            else:
                dw = widest([candidate.layers(o)[0] for _, _, o in members])
                conv, poly = self.dil_conv(dw, group.blocks)
                made = dil_group(ctx, conv, members, scale, self._cell.kernels, folded)
            terms.update({key: (t, poly) for key, t in made.items()})
        return terms.pop((edge, k))

    def dil_conv(self, dw: nn.Conv2d, blocks: Blocks | None = None
                 ) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool]:
        """The depthwise conv ``dw`` of this state's ReLU as the fast path runs it, as a
        function of the kernel (``dw.weight``; for a ``Group`` its members' kernels side by
        side, run on the copies of its states' inputs, ``blocks``, with ``groups=M*C``), and
        whether its result is in the polyphase layout. Dilated oneDNN kernels are slow
        (``UNDILATE``): at stride 2 a dilation-2 conv only reads the even pixels, so it is an
        undilated conv of them; at stride 1 an undilated conv of each polyphase component,
        where a component is large enough for a fast kernel (``POLY_MIN_SIDE``); else the
        dilated kernel embedded in a dense one."""
        k, d = dw.kernel_size[0], dw.dilation[0]
        source = _dil_source(dw, self.x)
        stride, padding, dilation = dw.stride, dw.padding, dw.dilation
        embed, poly = 1, False
        if source == "even":  # only even pixels are read
            stride, padding, dilation = 1, k // 2, 1
        elif source == "poly":
            padding, dilation, poly = k // 2, 1, True
        elif source == "dense":  # 3x3 at dilation 2 = 5x5 with zeros
            embed, padding, dilation = d, (d * (k - 1) + 1) // 2, 1

        def conv(kernel: torch.Tensor) -> torch.Tensor:
            name = _read_source(source)
            x = self.copies(name, blocks) if blocks else self._source(name)
            if embed > 1:
                kernel = embed_dilated(kernel, embed)
            copies = x.shape[1] // dw.in_channels
            return F.conv2d(x, kernel, None, stride, padding, dilation, dw.groups * copies)
        return conv, poly

    def _source(self, name: str) -> torch.Tensor:
        """The ReLU ('relu'), its even pixels ('even') or its polyphase components ('poly'),
        for one more reader."""
        return {"relu": self.relu, "even": self.relu_even, "poly": self.relu_poly}[name]()

    def copies(self, source: str, blocks: Blocks) -> torch.Tensor:
        """The ReLU (``source`` 'relu'), its even pixels ('even') or its polyphase components
        ('poly') of each state of ``blocks``, as many times as it has members there, side by
        side (``grouped_edges.copies``), made once for every group with those blocks that
        reads them, for one more such group."""
        made = self._cell.copies
        if (source, blocks) not in made:
            reads = (self._plan.copy_reads or {}).get((source, blocks), 1)
            read = {j: self._cell.states[j]._source(source) for j in dict(blocks)}
            parts = [(read[j], m) for j, m in blocks]
            made[source, blocks] = Readers(copies(parts), reads)
        return made[source, blocks].take()

    def _relu_readers(self) -> Readers:
        if self._relu is None:
            self._relu = Readers(F.relu(self.read()), self._plan.relu_reads)
        return self._relu

    def relu(self) -> torch.Tensor:
        """The state's ReLU (shared by its edges' conv ops), for one more op that reads it."""
        return self._relu_readers().take()

    def relu_even(self) -> torch.Tensor:
        if self._even is None:
            r = self.relu()
            self._even = Readers(r[:, :, ::2, ::2].contiguous(memory_format=_layout(r)),
                                 self._plan.even_reads)
        return self._even.take()

    def relu_odd(self) -> torch.Tensor:
        if self._odd is None:
            r = self.relu()
            self._odd = Readers(r[:, :, 1::2, 1::2].contiguous(memory_format=_layout(r)),
                                self._plan.odd_reads)
        return self._odd.take()

    def relu_poly(self) -> torch.Tensor:
        if self._poly is None:
            self._poly = Readers(poly_in(self.relu()), self._plan.poly_reads)
        return self._poly.take()

    def pooled(self, ctx: _Ctx, op: nn.Sequential, scale: Scale):
        """This edge's ``scale * BN(pool(x))``, the pooling shared by every edge of the state;
        in training also the normalisation (returned as the pair (scale, z): a ``scale * z``
        term)."""
        pool, m = candidate.layers(op)
        p, normed = self._pooling(pool)
        if not (m.training and m.track_running_stats and m.weight is None
                and m.bias is None):
            return _bn(ctx, p.take(), m, scale)
        if m.eps not in normed:  # the batch statistics, what each edge's BN folds in
            z, stats = normalised(m, p.x, None)
            normed[m.eps] = (Readers(z, p.n), stats)  # read as often as the pooling
        z, stats = normed[m.eps]
        ctx.update(m, stats)
        return scale, z.take()

    def _pooling(self, pool: nn.Module) -> list:
        """[the pooling ``pool`` of the state (shared by every edge), its normalisations by
        eps]."""
        key = cell_plan.pool_key(pool)
        if key not in self._pools:  # read by each edge's BN, or by the one shared
            reads = (self._plan.pool_reads or {}).get(key, 1)
            self._pools[key] = [Readers(pool(self.read()), reads), {}]
        return self._pools[key]

    def pooling(self, op: nn.Sequential) -> torch.Tensor:
        """The pooling of a pooling candidate ``op`` (shared by every edge), for one more
        reader."""
        return self._pooling(candidate.layers(op)[0])[0].take()


def _dil(ctx: _Ctx, st: _State, op: nn.Module, scale: Scale,
         folded: bool = False) -> tuple[torch.Tensor, bool]:
    """``scale * op(x)`` (``folded``: before its BN) and whether it is in the polyphase layout
    (``_State.dil_conv``)."""
    dw, pw, bn = candidate.layers(op)
    conv, poly = st.dil_conv(dw)
    y = _pw(conv(kernel_reuse.weight(dw.weight)), pw)
    return (y if folded else _bn(ctx, y, bn, scale)), poly


def _sep(ctx: _Ctx, st: _State, op: SepConv, scale: Scale, folded: bool = False) -> torch.Tensor:
    """``scale * op(x)`` (``folded``: before its last BN)."""
    dw1, pw1, bn1, dw2, pw2, bn2 = candidate.layers(op)
    y = F.conv2d(st.relu(), kernel_reuse.weight(dw1.weight), None, dw1.stride, dw1.padding,
                 dw1.dilation, dw1.groups)
    y = F.relu_(_bn(ctx, _pw(y, pw1), bn1))  # in place: BN's backward needs not its output
    y = F.conv2d(y, kernel_reuse.weight(dw2.weight), None, dw2.stride, dw2.padding, dw2.dilation,
                 dw2.groups)
    y = _pw(y, pw2)
    return y if folded else _bn(ctx, y, bn2, scale)


def _fr(ctx: _Ctx, st: _State, op: FactorizedReduce,
        scale: Scale | None = None, folded: bool = False) -> torch.Tensor:
    """``scale * op(x)`` (``folded``: before its BN)."""
    # A 1x1 stride-2 conv is a 1x1 conv of the even pixels. Also a workaround: oneDNN's
    # channels-last 1x1 stride-2 weight gradient corrupts the heap on small inputs
    # (torch 2.14 CPU, e.g. N=4, C=4, 8x8). The even and odd pixels are taken once per state,
    # for all its edges' FactorizedReduce (and the dilated convs at stride 2).
    out = torch.cat([_pw(st.relu_even(), op.conv_1), _pw(st.relu_odd(), op.conv_2)], dim=1)
    return out if folded else _bn(ctx, out, op.bn, scale)


def _preprocess(ctx: _Ctx, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(m, FactorizedReduce) and candidate.kind(m) == "fr":
        return _fr(ctx, _State(x, 2), m)
    if (isinstance(m, nn.Sequential) and len(m) == 3 and isinstance(m[0], nn.ReLU)
            and isinstance(m[1], nn.Conv2d) and isinstance(m[2], nn.BatchNorm2d)
            and m[1].kernel_size == (1, 1) and m[1].stride == (1, 1) and m[1].groups == 1
            and m[1].padding == (0, 0)):
        return _bn(ctx, _pw(F.relu(x), m[1]), m[2])
    return m(x)


def _noise(op: NoiseOp, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """NoiseOp drawn in the layout the plain path would draw it in (same RNG stream, same
    values): the plain path sees channels-last states only when given channels-last input."""
    if op.stride != 1:
        x = x[:, :, :: op.stride, :: op.stride]
    return (torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format)
            .normal_().mul_(op.std).add_(op.mean))


def _node(adds: list[torch.Tensor], muls: list[tuple[torch.Tensor, torch.Tensor]],
          poly_terms: list[torch.Tensor], folds: EvalFolds | None = None,
          node: int = 0) -> torch.Tensor | None:
    """A node's sum of its edges' terms: the batch-normalised ones (``adds``, the mixing weight
    inside), ``scale * t`` for the others (``muls``) and, transformed back once, those in the
    polyphase layout (``node_sum``; on CUDA a few kernels per node, not a few per term); and
    the evaluation-mode ``-sum a * mean`` of the BNs ``folds`` folds into node ``node``
    (``eval_folds``: then there are ``muls``, their ``a * y``)."""
    if poly_terms:
        adds = adds + [poly_out(node_sum.total(poly_terms))]
    if folds is not None and node in folds.fed:  # one more unscaled term: (C,) broadcast
        offset = folds.offset(node, node_sum.common_dtype([t for _, t in muls] + adds))
        like = muls[0][1]
        adds = adds + [offset.view(1, -1, *(1,) * (like.dim() - 2)).expand_as(like)]
    if muls:  # in training (no folds) every scale is a mixing weight expanded: uniform
        return node_sum.weighted_sum([s for s, _ in muls], [t for _, t in muls], adds,
                                     uniform=folds is None)
    return node_sum.total(adds) if adds else None


def _folded_term(ctx: _Ctx, st: _State, edge: int, k: int, op: nn.Module, kind: str,
                 scales: CellScales) -> torch.Tensor:
    """A folded candidate's output before its last BN (``eval_folds``)."""
    if kind == "pool":
        return st.pooling(op)
    if kind == "fr":
        return _fr(ctx, st, op, folded=True)
    return st.conv_term(ctx, edge, k, op, scales, folded=True)[0]  # never polyphase here


def _eval_folds(cell, scales: CellScales, live: list[list[bool]] | None,
                ref: torch.Tensor, grouped: bool) -> EvalFolds | None:
    """The cell's :class:`EvalFolds`: the first of ``FOLD_TIERS`` whose BNs all can fold
    (``foldable``; the convs' only where the device runs dilated convs as they are, not
    ``UNDILATE``); None where none can (each candidate then runs its own BN); ``grouped``: the
    cell's convs run grouped (``scales`` has their groups' vectors)."""
    device_type = ref.device.type
    merges = _merges(device_type)

    def groups() -> list[list[tuple[int, int]]]:  # where the grouped convs' scales lie
        members = cell_plan.cell_groups(cell, live, merges) if grouped else ()
        return [[(e, k) for e, k, _ in group] for group in members]

    tiers = FOLD_TIERS if device_type not in UNDILATE else FOLD_TIERS[1:]
    for kinds in tiers:
        key = ("folds", cell_plan.live_key(live), kinds, grouped, merges)
        plan = cell_plan.memo(cell, key, lambda f=kinds: FoldPlan(cell, live, f, groups()))
        if foldable(plan.bns):
            return plan.folds(scales, ref)
    return None


def _cell_kernels(cell, live: list[list[bool]] | None, device_type: str) -> CellKernels:
    """A new :class:`CellKernels` (one per forward) of the cell's embedded stages (made once,
    ``cell_plan.memo``)."""
    merges = _merges(device_type)
    key = ("embedded", cell_plan.live_key(live), merges)
    return CellKernels(cell_plan.memo(cell, key,
                                      lambda: cell_plan.embedded_stages(cell, live, merges)))


def join_group_weights(net: nn.Module) -> None:
    """Lay the kernels of each group of every cell state (all candidates running, as the
    device of the network's parameters groups them) back to back in memory, stage by stage
    and kernel size (a cell's stages of several sizes, ``EMBED``, all together, size by size:
    ``CellKernels`` reads each size's at once), and its BNs' running statistics stage by
    stage (``joined_weights.join``),
    so that the grouped path's concatenations of them are views (the statistics are read so
    in evaluation mode: inference, and SDARTS-ADV's attack, 9 forwards a step)."""
    merges = _merges(next(net.parameters()).device.type)
    for cell in net.cells:
        embedded = cell_plan.embedded_stages(cell, None, merges)
        for size in sorted({conv.kernel_size for stage in embedded for conv in stage}):
            join([conv.weight for stage in embedded for conv in stage
                  if conv.kernel_size == size])  # all the cell's at once: CellKernels
        for members in cell_plan.cell_groups(cell, None, merges):
            for stage in zip(*(candidate.layers(op) for _, _, op in members)):
                if list(stage) in embedded:
                    continue
                if isinstance(stage[0], nn.Conv2d):
                    for size in sorted({conv.kernel_size for conv in stage}):
                        join([conv.weight for conv in stage if conv.kernel_size == size])
                elif isinstance(stage[0], nn.BatchNorm2d):
                    join([bn.running_mean for bn in stage])
                    join([bn.running_var for bn in stage])


def _plans(cell, js: tuple[int, ...], x: torch.Tensor, live: list[list[bool]] | None,
           grouped: bool) -> list[Plan]:
    """Who reads each state of ``js`` (a set of ``cell_plan.state_sets``, each state the size of
    ``x``): the ops on the edges leaving it and, if it is one of the cell's outputs, the
    cell's concatenation (``fan_out``: the counts only save launches, the results never
    depend on them); with ``grouped``, the groups of convs of their edges."""
    key = (js, grouped, tuple(x.shape[-2:]), x.device.type in UNDILATE, _merges(x.device.type),
           cell_plan.live_key(live))
    return cell_plan.memo(cell, key, lambda: cell_plan.make_plans(
        cell, js, live, grouped, _merges(x.device.type), functools.partial(_conv_source, x=x)))


def _conv_source(op: nn.Module, kind: str, x: torch.Tensor) -> str:
    """What a separable ("sep") or dilated ("dil") conv ``op`` of state ``x`` reads of it: its
    ReLU, its even pixels or its polyphase components (``_dil_source``)."""
    return "relu" if kind == "sep" else _read_source(_dil_source(candidate.layers(op)[0], x))


def _grouped_scales(cell, weights: torch.Tensor, channels: int,
                    live: list[list[bool]] | None) -> CellScales:
    """The cell's ``cell_scales.grouped_scales`` in the layout of its groups on the weights'
    device (made once, ``cell_plan.memo``)."""
    merges = _merges(weights.device.type)
    layout = cell_plan.memo(cell, ("scales", cell_plan.live_key(live), merges), lambda: (
        cell_scales.scale_layout(cell_plan.cell_groups(cell, live, merges), *weights.shape)))
    return cell_scales.grouped_scales(weights, channels, layout)


def cell_forward(cell, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                 ctx: _Ctx | None = None, live: list[list[bool]] | None = None
                 ) -> torch.Tensor:
    """``SearchCell.forward``, fast. Node-major like the plain path, so random ops draw in
    the same order. ``live``: per edge, which candidates run (this cell's rows of
    ``shared.models.live.forward_rows``); None: all of them."""
    own = ctx is None
    ctx = ctx or _Ctx(torch.contiguous_format)
    stride = 2 if cell.reduction else 1
    inputs = [_preprocess(ctx, m, s) for m, s in ((cell.preprocess0, s0), (cell.preprocess1, s1))]
    if inputs[0].shape != inputs[1].shape:  # every edge of a node gives the node's shape
        raise RuntimeError(f"a cell's two inputs differ in shape after their preprocessing: "
                           f"{tuple(inputs[0].shape)} and {tuple(inputs[1].shape)}")
    device_type = inputs[0].device.type
    shared = _CellStates(_cell_kernels(cell, live, device_type) if ctx.grouped else None)
    states = shared.states
    plans = _plans(cell, cell_plan.INPUTS, inputs[0], live, ctx.grouped)
    states += [_State(x, stride, plan, shared) for x, plan in zip(inputs, plans)]
    channels = states[0].x.shape[1]
    scales = (_grouped_scales(cell, weights, channels, live) if ctx.grouped
              else CellScales(cell_scales.scales(weights, channels), {}))
    folds = (_eval_folds(cell, scales, live, weights, ctx.grouped)
             if not cell.training and node_sum.is_batched(weights) else None)
    offset = 0
    for node in range(cell._steps):
        adds, muls, poly_terms = [], [], []
        for j, st in enumerate(states):
            mixed = cell._ops[offset + j]
            for k, (op, w) in enumerate(zip(mixed._ops, scales.rows[offset + j])):
                kind = candidate.kind(op)
                if kind == "none" or (live is not None and not live[offset + j][k]):
                    continue
                if kind == "skip":
                    muls.append((w, st.read()))
                elif folds is not None and kind in folds.kinds:  # evaluation mode, folded
                    muls.append((folds.a[offset + j, k],
                                 _folded_term(ctx, st, offset + j, k, op, kind, scales)))
                elif kind == "pool":
                    term = st.pooled(ctx, op, w)
                    if isinstance(term, tuple):
                        muls.append(term)
                    else:
                        adds.append(term)
                elif kind in ("sep", "dil"):
                    term, poly = st.conv_term(ctx, offset + j, k, op, scales)
                    if poly:  # transformed back once, with the node's other such terms
                        poly_terms.append(term)
                    else:
                        adds.append(term)
                elif kind == "fr":
                    adds.append(_fr(ctx, st, op, w))
                elif kind == "noise":
                    muls.append((w, _noise(op, st.x, ctx.noise_format)))
                else:
                    muls.append((w, op(st.read())))
        acc = _node(adds, muls, poly_terms, folds, node)
        if acc is None:  # every op into this node is 'none'
            s = states[0].stride
            acc = states[0].read()[:, :, ::s, ::s].mul(0.0)
        offset += len(states)
        (plan,) = _plans(cell, (len(states),), acc, live, ctx.grouped)
        states.append(_State(acc, 1, plan, shared))
    if own:
        ctx.flush()
    return torch.cat([st.read() for st in states[-cell._multiplier:]], dim=1)


def network_forward(net, x: torch.Tensor, cell_weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Network.forward`` after the mixing weights are chosen, fast."""
    ctx = _Ctx(CL if x.dim() == 4 and x.is_contiguous(memory_format=CL) and not x.is_contiguous()
               else torch.contiguous_format, getattr(net, "grouped_edges", False))
    if x.dim() == 4:
        x = x.contiguous(memory_format=DEVICE_FORMAT.get(x.device.type, torch.contiguous_format))
    # DARTS-PT's skip of candidates at weight 0: one read for every cell, made before the stem
    # and the cells are queued, or the rows held for a recorded epoch (shared.models.live)
    lives = forward_rows(net, cell_weights)
    s0 = s1 = net.stem(x)
    try:
        for cell, w, live in zip(net.cells, cell_weights, lives):
            s0, s1 = s1, cell_forward(cell, s0, s1, w, ctx, live)
    finally:
        ctx.flush()
    return net.classifier(net.global_pooling(s1).flatten(1))
