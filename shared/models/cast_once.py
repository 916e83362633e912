"""Under autocast, a network's convolution and linear weights cast to the autocast dtype all
at once per forward, their gradients back all at once, where autocast casts each weight as its
layer runs (one cast each way per weight: 895 of the 3,026 operations a bf16 DARTS_V2
training step launches, ``bench/kernel_count.py --eval``; on a GPU, launches are the cost).

The weights are concatenated flat in memory order (one launch), cast (one), and cut back into
views of the weights' shapes and strides, which the network runs with
(``torch.func.functional_call``); autocast leaves a weight already in its dtype as it is. In
the backward the views' gradients are concatenated (one launch) and cast back (one), and each
weight's gradient is a block of that buffer, taken by its ``.grad`` as it is. A cast rounds
each value alone, so the results are autocast's bit for bit (``tests/test_cast_once.py``).
It costs host time, ~9 ms a forward at 20 cells (3.8 ms to cast, 5.3 ms more for
``functional_call``), which a replayed graph does not pay and an eager GPU step would: the
evaluation trainer uses it for a recorded step only (``EvalTrainer.cast_once``).
Each view has its weight's strides exactly (a depthwise kernel's size-1 dim's too: oneDNN
chooses its algorithm by them); weights in a layout other than contiguous or channels-last are
left to autocast.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from shared.models.candidate import per_module

# the layers whose weights autocast runs in its lower precision (conv2d, linear)
CAST = (nn.Conv2d, nn.Linear)


def _cl_strides(shape: torch.Size) -> tuple[int, ...]:
    n, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def _layout(w: torch.Tensor) -> str | None:
    """``cl`` or ``contiguous``: the layout whose strides ``w`` has, exactly (a size-1 dim's
    stride too: a kernel may choose its algorithm by them); None for any other."""
    if w.dim() == 4 and w.stride() == _cl_strides(w.shape):
        return "cl"
    if w.stride() == _contiguous_strides(w.shape):
        return "contiguous"
    return None


def _contiguous_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _flat(w: torch.Tensor) -> torch.Tensor:
    """``w``'s values in memory order, as a view."""
    return w.permute(0, 2, 3, 1).reshape(-1) if _layout(w) == "cl" else w.view(-1)


def _shaped(part: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_flat`: a view of ``part`` with ``like``'s shape and strides."""
    if _layout(like) == "cl":
        n, c, h, w = like.shape
        return part.view(n, h, w, c).permute(0, 3, 1, 2)
    return part.view(like.shape)


@per_module
def _cast_parameters(model: nn.Module) -> tuple[tuple[str, nn.Parameter], ...]:
    """``model``'s convolution and linear parameters by name (found once per model: a walk of
    a 20-cell network's modules takes ~1 ms of host time, which a GPU waits for)."""
    return tuple((f"{prefix}.{name}" if prefix else name, p)
                 for prefix, m in model.named_modules() if isinstance(m, CAST)
                 for name, p in m.named_parameters(recurse=False))


def cast_weights(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``model``'s float32 convolution and linear parameters (contiguous or channels-last),
    by name, as ``dtype`` views of one buffer cast at once (differentiable)."""
    named = [(name, p) for name, p in _cast_parameters(model)
             if p.dtype == torch.float32 and _layout(p) is not None]
    if not named:
        return {}
    names, weights = zip(*named)
    low = torch.cat([_flat(w) for w in weights]).to(dtype)
    parts = low.split([w.numel() for w in weights])
    return {name: _shaped(part, w) for name, part, w in zip(names, parts, weights)}


def forward_cast_once(model: nn.Module, *args: Any) -> Any:
    """``model(*args)`` inside an autocast region, its weights cast all at once (a plain call
    outside one)."""
    device_type = next(model.parameters()).device.type
    if not torch.is_autocast_enabled(device_type):
        return model(*args)
    weights = cast_weights(model, torch.get_autocast_dtype(device_type))
    return torch.func.functional_call(model, weights, args)
