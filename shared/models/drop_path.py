"""Drop-path in the final network's training step (DARTS ``utils.drop_path``, ``model.py``
``Cell.forward``; FractalNet's drop-path, Larsson et al. 2017): its factors for every op drawn
at once, and a node's sum of its two dropped ops in two launches forward and one backward.

A node of an evaluated cell is ``h0 + h1``, each droppable op's output (all but the
identities) times its per-sample factor. Written so, a node with two dropped ops costs two
products and an addition forward and two products backward (DARTS_V2, 20 cells: 118 products
and 80 additions forward, 119 products backward, of the 2,246 launches a training step
had, ``bench/kernel_count.py --eval``). :func:`dropped_sum` makes the second product and the
addition one ``addcmul`` and the two gradients one product of the node's gradient with both
factors (they are adjacent rows of the cell's factors, so a view of them, no copy): a step 118
launches fewer. ``addcmul`` rounds ``h1 * d1 + p`` once where the product and the addition
round twice (a fused multiply-add where the device has one), so the node's values move by
rounding, not more."""
from __future__ import annotations

import torch


def drop_path_scales(count: int, batch: int, drop_prob: float, like: torch.Tensor) -> torch.Tensor:
    """DARTS' drop-path (``utils.drop_path``) for ``count`` ops at once: each op's output is
    multiplied by its row, per sample 0 with probability ``drop_prob`` and else
    1 / (1 - ``drop_prob``), which zeroes whole samples of the op and rescales the rest.

    Shape (count, batch, 1, 1, 1), in ``like``'s dtype and device. The original draws a mask
    per op and divides and multiplies each op's output (with the backward, five launches per
    op, 590 of the 2,986 of a DARTS_V2 training step); here one draw and one division serve
    the whole network, and each op is one multiplication each way. The samples are as
    independent as the original's, drawn in another order; the product differs from the
    original's ``x / keep * mask`` by the rounding of 1 / keep."""
    keep = 1.0 - drop_prob
    mask = torch.empty(count, batch, 1, 1, 1, device=like.device, dtype=like.dtype)
    return mask.bernoulli_(keep).div_(keep)


class _OneDropped(torch.autograd.Function):
    """``kept + h * factor``: ``kept`` not dropped (an identity, or an op a group already
    scaled)."""

    @staticmethod
    def forward(ctx, kept: torch.Tensor, h: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(factor)
        ctx.dtypes = kept.dtype, h.dtype
        return torch.addcmul(kept, h, factor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (factor,) = ctx.saved_tensors
        kept_dtype, h_dtype = ctx.dtypes
        return grad.to(kept_dtype), (grad * factor).to(h_dtype), None


class _BothDropped(torch.autograd.Function):
    """``h0 * factors[0] + h1 * factors[1]``, ``factors`` (2, N, 1, 1, 1)."""

    @staticmethod
    def forward(ctx, h0: torch.Tensor, h1: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(factors)
        ctx.dtypes = h0.dtype, h1.dtype
        return torch.addcmul(h0 * factors[0], h1, factors[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (factors,) = ctx.saved_tensors
        # both gradients in one product: (1, N, C, H, W) against (2, N, 1, 1, 1), laid out
        # as the gradient is (channels-last stays channels-last)
        g0, g1 = (grad.unsqueeze(0) * factors).unbind(0)
        return g0.to(ctx.dtypes[0]), g1.to(ctx.dtypes[1]), None


def dropped_sum(h0: torch.Tensor, h1: torch.Tensor, scales: torch.Tensor | None,
                rows: tuple[int | None, int | None]) -> torch.Tensor:
    """A node's ``h0 * d0 + h1 * d1``: ``d = scales[row]`` (``scales`` the cell's rows of
    :func:`drop_path_scales`, constants), an op without a row (None) taken as it is;
    ``scales`` None: no drop-path, ``h0 + h1``. In the dtype ``h0 * d0 + h1 * d1`` has."""
    r0, r1 = rows if scales is not None else (None, None)
    if r0 is None and r1 is None:
        return h0 + h1
    if r0 is None:
        return _OneDropped.apply(h0, h1, scales[r1])
    if r1 is None:
        return _OneDropped.apply(h1, h0, scales[r0])
    if r1 < r0:
        h0, h1, r0, r1 = h1, h0, r1, r0
    # rows r0 and r1 as one view (the step r1 - r0 >= 1: a node's two ops are distinct)
    return _BothDropped.apply(h0, h1, scales[r0:r1 + 1:r1 - r0])
