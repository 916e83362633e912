"""A DARTS node's sum of its edges' terms, with a hand-written backward, batched on the GPU.

A node of a DARTS cell is the sum, over the edges into it and the candidates on each edge,
of ``w * o(x)`` (DARTS, Liu et al. 2019, eq. 2). The fast path (``fast_mixed``) folds ``w``
into a candidate's last batch norm where it has one, so a node is

    x_i = sum_j b_j + sum_k w_k * t_k

with ``b_j`` the batch-normalised terms and ``t_k`` the others (skip, the shared normalised
pooling, noise), each ``w_k`` a (C,) row of the cell's table of scales. Written as
``addcmul(acc, w_k, t_k)`` term by term, autograd's backward spends four kernels per ``t_k``
(``addcmul``'s derivative multiplies each factor by ``value`` before the gradient) and a
reduction. :class:`_WeightedSum` computes ``sum_k w_k t_k`` with its own backward: the terms'
gradients ``grad * w_k`` and the scales' ``sum(grad * t_k)`` over all but the channel axis,
which is all the derivative needs; ``sum_j b_j`` is added to it (:func:`total`).

How the sums run depends on the device (``BATCHED``). On a GPU, where a search step is bound
by launching ~16,000 small kernels (README, Speed), every sum is batched over a stack of its
terms: on the DARTS space's first-order step 16,247 launches became 13,387. A node is one
:class:`_BatchedSum` of all its terms, the ``b_j`` with rows of ones in the table of scales:
a stack of the scales, one of the terms, a product and a reduction forward, whatever their
number. In training every scale is a mixing weight expanded to C values (``uniform``), and
the product and the reduction are one matrix-vector product of the stack with the weights,
which reads the stack once where they wrote it again and read it twice (a grouped
first-order step: 64 launches and 7% of its bytes less, ``bench/step_floor.py``); the
evaluation mode's folded BNs (``eval_folds``) scale each channel apart and keep the product
and the reduction. Backward, one product of the node's gradient with the forward's table
gives every scaled term's gradient, the plain terms taking the node's gradient itself (times
ones: the same values, 2% of a grouped first-order step's bytes not written), and, where the
scales want theirs (the alpha step), the ``t_k`` are stacked again for one more product and
a reduction (kept from the forward they would hold a copy of every term until the
backward). Where the plain terms are fewer than the scaled ones (the evaluation mode's folded
nodes, whose only plain term is the BNs' offset: SDARTS-ADV's attack, seven backwards a step),
the forward's stack is kept instead (:class:`_StackedSum`, the stack made by autograd's
``stack`` so that gradients of gradients still reach the terms): its rows stand in for the
scaled terms the backward would hold (which are freed where nothing else holds them, as the
folded convs' and poolings' outputs; a skip's state is held anyway), and an SDARTS-ADV step
stacks 224 times fewer (17,842 launches grouped, 466 GB moved, not 18,066 and 490; bit for bit
the same; the CPU's peak memory of that step at batch 16 3.9 GB, not 4.1). The ``b_j`` summed
apart (a stack and a reduction) and added to the weighted sum, and the table stacked again
backward, cost a grouped first-order step 256 more of its 4,420 launches
(``bench/kernel_count.py``). On the CPU, which is bound by the arithmetic and memory
traffic, not by launches, a stack is an extra copy of every term
and reductions over the stacked axis are slow (2 threads: a 12-term node's stacked sum 1.6 ms
against 0.44 ms added term by term), so there the sums run term by term, with the same
backward formula. The two give the same values to rounding (another order of addition); the
tests run both on the CPU.

Where the scales are per channel (the folded nodes) the batched forward writes the product
of the stack and the table out and reads it again to reduce it, and so does every scale's
gradient with the node's gradient. With ``MATMUL`` they are batched matrix products instead:
each (sample, channel)'s (1, n) scales times its terms' (n, pixels) rows, a view of the NCHW
stack, which reads the stack once and writes only the sum; each scale's gradient one more
with the node's gradient's row (where that is dense; a cat's slice keeps the product), then
a sum over the samples. The same launches (the scales expanded over the samples are the
one small copy), the values to rounding; SDARTS-ADV's grouped step moves 417 GB, not 466
(fast 396, not 445; first order 92.7, not 93.6: its scales' gradients), as
``bench/step_floor.py --paths grouped+matmul`` counts it. Off until a GPU shows how fast
cuBLAS runs these thin products (one row by n, N * C of them; ``bench/capture_check.py
--paths matmul-sums``, in ``bench/gpu_check.sh``). Channels-last stacks, with no run of
pixels per channel, keep the product and the reduction.

``fan_out`` sums the gradients of a tensor's many readers the same way.

Terms are stacked in the first one's memory order (channels-last ones as (N, H, W, C)), so
the sums come back in their terms' layout.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import torch

from shared.models.device_policy import switched

# device types whose node sums run batched over a stack of their terms (the rest term by term;
# ``batched`` switches one for a while)
BATCHED: set[str] = {"cuda"}

# device types whose batched sums with a scale per channel (the evaluation mode's folded nodes,
# as SDARTS-ADV's attack runs them; every scale's gradient) are batched matrix products over
# the stack's rows, one pass, not a product written out and reduced (NCHW terms; ``matmul``
# switches one for a while). Off until a GPU measures cuBLAS on these thin products.
MATMUL: set[str] = set()


def batched(device_type: str, on: bool) -> contextlib.AbstractContextManager:
    """Node sums on ``device_type`` batched (``on``) or term by term while inside
    (``device_policy.switched``)."""
    return switched(BATCHED, device_type, on)


def matmul(device_type: str, on: bool) -> contextlib.AbstractContextManager:
    """Per-channel batched sums on ``device_type`` as batched matrix products (``on``) or as
    a product and a reduction while inside (``device_policy.switched``)."""
    return switched(MATMUL, device_type, on)


def is_batched(t: torch.Tensor) -> bool:
    """Do sums of tensors like ``t`` run batched (its device type is in ``BATCHED``)?"""
    return t.device.type in BATCHED


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.shape[1] > 1 and t.stride(1) == 1


def common_dtype(terms: Sequence[torch.Tensor]) -> torch.dtype:
    """The dtype the terms' sum comes in (autocast's terms may differ)."""
    dtypes = {t.dtype for t in terms}
    return dtypes.pop() if len(dtypes) == 1 else functools.reduce(torch.promote_types, dtypes)


def _to_order(t: torch.Tensor, cl: bool) -> torch.Tensor:
    """(N, C, H, W) as (N, H, W, C) if ``cl``: a channels-last tensor in its memory order."""
    return t.permute(0, 2, 3, 1) if cl else t


def _from_order(t: torch.Tensor, cl: bool) -> torch.Tensor:
    """The inverse of :func:`_to_order`."""
    return t.permute(0, 3, 1, 2) if cl else t


def _stack(terms: Sequence[torch.Tensor], dtype: torch.dtype, cl: bool) -> torch.Tensor:
    """(n, *a term in the first term's memory order), one kernel (terms in another layout, as
    a small one can be, are copied into it)."""
    return torch.stack([_to_order(t, cl).to(dtype) for t in terms])


def total(terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """``terms[0] + terms[1] + ...``: batched, one stack and one reduction; else (or for two
    terms, one addition) term by term."""
    if len(terms) == 1:
        return terms[0]
    if len(terms) == 2 or not is_batched(terms[0]):
        return functools.reduce(torch.add, terms)
    cl = _channels_last(terms[0])
    return _from_order(_stack(terms, common_dtype(terms), cl).sum(0), cl)


def _scale_table(scales: Sequence[torch.Tensor], dtype: torch.dtype, cl: bool,
                 dim: int) -> torch.Tensor:
    """The (C,) scales stacked to broadcast against a stack of terms in memory order."""
    table = torch.stack([s.reshape(-1) for s in scales]).to(dtype)  # (n, C)
    n, c = table.shape
    shape = (n,) + (1,) * (dim - 1) + (c,) if cl else (n, 1, c) + (1,) * (dim - 2)
    return table.view(shape)


def _per_channel(s: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
    """A (C,) scale as a factor of ``term`` (N, C, ...), in its dtype."""
    return s.reshape((-1,) + (1,) * (term.dim() - 2)).to(term.dtype)


class _WeightedSum(torch.autograd.Function):
    """``sum_k scales[k] * terms[k]``, scales (C,) against the terms' channel axis, term by
    term (where sums are not batched)."""

    @staticmethod
    def forward(ctx, n: int, *inputs: torch.Tensor) -> torch.Tensor:
        scales, terms = inputs[:n], inputs[n:]
        ctx.n = n
        ctx.save_for_backward(*inputs)
        dtype = common_dtype(terms)
        out = terms[0].to(dtype)
        out = out * _per_channel(scales[0], out)
        for s, t in zip(scales[1:], terms[1:]):
            out = torch.addcmul(out, _per_channel(s, out), t.to(dtype))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inputs = ctx.saved_tensors
        n = ctx.n
        scales, terms = inputs[:n], inputs[n:]
        want_terms, want_scales = any(ctx.needs_input_grad[1 + n:]), \
            any(ctx.needs_input_grad[1:1 + n])
        term_grads = [grad * _per_channel(s, grad) for s in scales] if want_terms \
            else [None] * n
        reduce = (0,) + tuple(range(2, grad.dim()))
        scale_grads = [(grad * t.to(grad.dtype)).sum(reduce) for t in terms] if want_scales \
            else [None] * n
        grads = [None if g is None else g.to(s.dtype).view(s.shape)
                 for g, s in zip(scale_grads, scales)]
        grads += [None if g is None else g.to(t.dtype) for g, t in zip(term_grads, terms)]
        return (None, *grads)


_ONES: dict[tuple, torch.Tensor] = {}


def _ones_like(scale: torch.Tensor) -> torch.Tensor:
    """(C,) ones in ``scale``'s dtype and device: an unscaled term's row of the scale table
    (made once, not launched again per node)."""
    key = (scale.numel(), scale.dtype, scale.device)
    if key not in _ONES:
        _ONES[key] = torch.ones(scale.numel(), dtype=scale.dtype, device=scale.device)
    return _ONES[key]


def _by_matmul(stack: torch.Tensor, cl: bool) -> bool:
    """Does a per-channel sum over ``stack`` run as a batched matrix product (``MATMUL``: an
    NCHW stack, whose (sample, channel) rows are each one run of pixels)?"""
    return not cl and stack.dim() >= 4 and stack.device.type in MATMUL


def _rows_of(stack: torch.Tensor) -> torch.Tensor:
    """(n, N, C, *pixels) as (N * C, n, P): each sample's channel a matrix of its n terms'
    pixel rows, P values each, the rows N * C * P apart; a view of a dense stack (cuBLAS takes
    the strides as they are)."""
    n, batch, channels = stack.shape[:3]
    return stack.reshape(n, batch * channels, -1).transpose(0, 1)


def _per_channel_matmul(stack: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``(stack * table).sum(0)`` for an NCHW stack and a (n, 1, C, 1, 1) table, as one
    batched product of each (sample, channel)'s (1, n) scales with its (n, P) rows: the stack
    read once, nothing written but the sum (the scales expanded over the samples first, a
    copy of N * C * n values); in the stack's dtype (autocast would take it to bf16)."""
    n, batch, channels = stack.shape[:3]
    weights = table.reshape(n, channels).t().expand(batch, channels, n)
    with torch.autocast(stack.device.type, enabled=False):
        out = torch.bmm(weights.reshape(batch * channels, 1, n), _rows_of(stack))
    return out.view(stack.shape[1:])


def _per_channel_dots(scaled: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``(scaled * g).sum`` over all but the stack's and the channel axis, (n, C), for an
    NCHW stack and the node's dense gradient g (1, N, C, *pixels): each (sample, channel)'s n
    rows times its gradient's row in one batched product, then a sum over the samples."""
    n, batch, channels = scaled.shape[:3]
    column = g[0].to(scaled.dtype).view(batch * channels, -1, 1)
    with torch.autocast(scaled.device.type, enabled=False):
        dots = torch.bmm(_rows_of(scaled), column)  # (N * C, n, 1)
    return dots.view(batch, channels, n).sum(0).t()


def _summed(stack: torch.Tensor, table: torch.Tensor, uniform: bool, cl: bool) -> torch.Tensor:
    """The stack's rows times the table's, summed over the stack: a product and a reduction
    (``MATMUL``: batched matrix products, :func:`_per_channel_matmul`); where each scale is
    one value (``uniform``), a matrix-vector product of the stack with them (each row's first
    value), one pass over the stack, where a product and a reduction write it again and read
    it twice; in the terms' dtype (autocast would take a matrix-vector product to bf16)."""
    if not uniform:
        if _by_matmul(stack, cl):
            return _per_channel_matmul(stack, table)
        return _from_order((stack * table).sum(0), cl)
    rows = stack.shape[0]
    weights = table.reshape(rows, -1)[:, 0]
    with torch.autocast(stack.device.type, enabled=False):
        out = torch.mv(stack.reshape(rows, -1).t(), weights)
    return _from_order(out.view(stack.shape[1:]), cl)


def _scale_grads(scaled: torch.Tensor, g: torch.Tensor, cl: bool,
                 scales: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each scale's gradient, ``sum(g * t_k)`` over all but the channel axis, from the stack
    of the scaled terms ``scaled`` and the node's gradient ``g`` (1, *a term), both in memory
    order (``MATMUL``: batched matrix products, :func:`_per_channel_dots`); in each scale's
    dtype and shape."""
    if _by_matmul(scaled, cl) and g[0].is_contiguous():  # (a cat's slice: a copy to read so)
        products = _per_channel_dots(scaled, g)
    else:
        channel = g.dim() - 1 if cl else 2
        reduce = tuple(d for d in range(1, g.dim()) if d != channel)
        products = (scaled * g).sum(reduce)
    # cast back at once (autocast: bf16 sums, fp32 scales), not scale by scale
    sums = products.to(common_dtype(scales)).unbind(0)
    return [x.to(s.dtype).view(s.shape) for x, s in zip(sums, scales)]


def _saved_table(ctx, scales: Sequence[torch.Tensor], plain: int, g: torch.Tensor,
                 cl: bool) -> torch.Tensor:
    """The forward's table of scales for the backward: kept where the backward records no
    graph (where one does, as SDARTS' Hessian, it is made again from the saved scales, whose
    graph the kept one lacks)."""
    table = ctx.table
    if table is None or torch.is_grad_enabled() or table.dtype != g.dtype:
        table = _scale_table(_rows(scales, plain), g.dtype, cl, g.dim() - 1)
    return table


def _forward_table(ctx, scales: Sequence[torch.Tensor], plain: int, dtype: torch.dtype,
                   cl: bool, dim: int) -> torch.Tensor:
    """The table of scales (``plain`` rows of ones after them) against a stack of ``dim``-d
    terms, also left on ``ctx`` for :func:`_saved_table` (not while compiling: a traced
    graph's tensor)."""
    table = _scale_table(_rows(scales, plain), dtype, cl, dim)
    ctx.table = None if torch.compiler.is_compiling() else table
    return table


class _BatchedSum(torch.autograd.Function):
    """``sum_k scales[k] * terms[k] + sum_j plain[j]`` over one stack of all the terms (the
    plain ones scaled by ones): a stack of the scales, one of the terms, a product and a
    reduction, whatever the number of terms (``uniform``: one matrix-vector product instead
    of the product and the reduction, :func:`_summed`). The backward stacks the scaled terms
    again for their scales' gradients."""

    @staticmethod
    def forward(ctx, n: int, uniform: bool, *inputs: torch.Tensor) -> torch.Tensor:
        scales, terms, plain = inputs[:n], inputs[n:2 * n], inputs[2 * n:]
        every = terms + plain
        dtype = common_dtype(every)
        ctx.n, ctx.cl = n, _channels_last(every[0])
        ctx.plain_dtypes = [t.dtype for t in plain]
        ctx.save_for_backward(*scales, *terms)  # the plain terms' gradients need no values
        table = _forward_table(ctx, scales, len(plain), dtype, ctx.cl, every[0].dim())
        return _summed(_stack(every, dtype, ctx.cl), table, uniform, ctx.cl)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors
        n, cl = ctx.n, ctx.cl
        scales, terms = saved[:n], saved[n:]
        want_terms = any(ctx.needs_input_grad[2 + n:])
        want_scales = any(ctx.needs_input_grad[2:2 + n])
        g = _to_order(grad, cl).unsqueeze(0)  # the stack's order, whatever the strides
        grads: list[torch.Tensor | None] = [None] * (2 * n + len(ctx.plain_dtypes))
        if want_scales:  # the scaled terms' stack again
            grads[:n] = _scale_grads(_stack(terms, g.dtype, cl), g, cl, scales)
        if want_terms:  # the scaled terms' gradients, one product of g with their rows
            table = _saved_table(ctx, scales, len(ctx.plain_dtypes), g, cl)
            # a plain term's gradient is the node's, g times its row of ones: where g lies as
            # the product's rows would (dense, in the terms' order), g itself for them all,
            # else the product's rows (one kernel still, not a copy and a product)
            as_is = g[0].is_contiguous()
            products = (g * (table[:n] if as_is else table)).unbind(0)
            dtypes = [t.dtype for t in terms] + ctx.plain_dtypes
            grads[n:] = [(grad if i >= len(products) else _from_order(products[i], cl)).to(d)
                         for i, d in enumerate(dtypes)]
        return (None, None, *grads)


class _StackedSum(torch.autograd.Function):
    """:class:`_BatchedSum` of a stack made outside it (``stack``: the ``n`` scaled terms,
    then the plain ones, in memory order), which it holds for its scales' gradients, not
    stacking the scaled terms again: where the plain terms are few (:func:`weighted_sum`).
    Its gradient is the stack's, one product of g with the whole table, which autograd's
    ``stack`` hands each term as a view."""

    @staticmethod
    def forward(ctx, n: int, uniform: bool, cl: bool, stack: torch.Tensor,
                *scales: torch.Tensor) -> torch.Tensor:
        ctx.n, ctx.cl = n, cl
        ctx.save_for_backward(stack, *scales)
        table = _forward_table(ctx, scales, stack.shape[0] - n, stack.dtype, cl,
                               stack.dim() - 1)
        return _summed(stack, table, uniform, cl)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        stack, *scales = ctx.saved_tensors
        n, cl = ctx.n, ctx.cl
        g = _to_order(grad, cl).unsqueeze(0)
        stack_grad = scale_grads = None
        if ctx.needs_input_grad[3]:
            stack_grad = g * _saved_table(ctx, scales, stack.shape[0] - n, g, cl)
        if any(ctx.needs_input_grad[4:]):
            scale_grads = _scale_grads(stack[:n], g, cl, scales)
        return (None, None, None, stack_grad, *(scale_grads or [None] * n))


def _rows(scales: Sequence[torch.Tensor], plain: int) -> list[torch.Tensor]:
    """The scale table's rows: the scales, then ones for ``plain`` unscaled terms."""
    return list(scales) + [_ones_like(scales[0])] * plain


def weighted_sum(scales: Sequence[torch.Tensor], terms: Sequence[torch.Tensor],
                 plain: Sequence[torch.Tensor] = (), uniform: bool = False) -> torch.Tensor:
    """``sum_k scales[k] * terms[k] + sum_j plain[j]``: each scale's C values (any shape of C
    elements) scale the channel axis (1) of its (N, C, H, W) term; terms of several dtypes
    (autocast) are summed in their common one, as ``w * t`` would be with a 0-d ``w``.
    Batched, all the terms are one stack (a node's three sums in four kernels, not seven;
    three with ``uniform``); term by term, ``total(plain)`` plus the weighted terms.
    ``uniform``: the caller's word that each scale's C values are one value (a mixing weight
    expanded, ``cell_scales``), which the batched forward then reads once per scale; it is not
    checked (that would read the device)."""
    if len(terms) != len(scales) or not terms:
        raise ValueError(f"{len(scales)} scales for {len(terms)} terms")
    if is_batched(terms[0]):
        if len(plain) < len(scales) and torch.is_grad_enabled() and any(
                s.requires_grad for s in scales):
            # the scales' gradients read the scaled terms stacked: where the plain terms are
            # fewer (the evaluation mode's folded nodes: only the BNs' offset, as SDARTS-ADV's
            # attack runs them), the forward's stack, kept in place of the scaled terms, saves
            # stacking them again for a few plain rows held
            every = [*terms, *plain]
            cl = _channels_last(every[0])
            stack = _stack(every, common_dtype(every), cl)
            return _StackedSum.apply(len(scales), uniform, cl, stack, *scales)
        return _BatchedSum.apply(len(scales), uniform, *scales, *terms, *plain)
    weighted = _WeightedSum.apply(len(scales), *scales, *terms)
    return weighted if not plain else total(plain) + weighted
