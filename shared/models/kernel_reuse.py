"""Kernels built from the weights once per search step, not once per forward.

Where a grouped edge's convs of two kernel sizes run as one (``grouped_edges.kernels``, on
CUDA: ``fast_mixed.EMBED``), each stage's 3x3 kernels are padded to 5x5 and concatenated with
the 5x5 ones: two launches per stage and forward. A search step runs several forwards with the
same weights: first-order DARTS' alpha step and weight step (the weights move only at the end
of the step), SDARTS-ADV's seven attack steps and the two losses it compares between them (its
step launched 25,104 operations as on CUDA, 2,112 of them these pads and concatenations; 23,184
with them reused; first order 4,612 and 4,420; ``bench/kernel_count.py``). Inside
:func:`within_step` (the search loop's step) such a kernel is built once, and built again only
after a write of the weights: whatever writes them in a step says :func:`forget` (the weight
step after its optimiser's step, the second-order step after each write of its finite
difference, ``Architect.hessian_vector_product``). The weights' version counters guard too (a
weight another object, or written in place since), but they alone would not do: a fused
optimiser (``torch.optim.SGD(fused=True)``) does not move them, nor does a
``torch._foreach_*_`` write while a ``TorchDispatchMode`` is active (as the launch counter's;
measured on torch 2.14), nor a write through ``p.data``.

A kernel built where no gradient was recorded (``torch.no_grad``) is not handed to a forward
that needs the weights' gradients; one built with its graph serves every later forward: the
pad's and the concatenation's backward keep no tensors, so the weight step's backward may run
through the graph that the alpha step's forward recorded (whose own backward, asked for the
mixing weights' gradients only, did not enter it). Only parameters are reused, never tensors
substituted for them (``torch.func.functional_call``), nor inside ``torch.compile``; the
second-order step's unrolled forward runs on the parameters themselves, moved to w' and back
(``architect.virtual_model``), and says :func:`forget` at each move. The values are the same
tensors the forward would build: results do not change by a bit. A step recorded as a CUDA
graph records the built kernel's first use and its reuses alike.

Under autocast (``--amp``) a kernel, and a conv's weight the fast path runs as it is
(:func:`weight`), is also cast to autocast's dtype once per step and kept (autocast casts a
weight at every conv, and keeps a cast only for a leaf tensor within one autocast region: the
alpha step and the weight step are two). It is the cast autocast would make, so results do
not change by a bit; a bf16 first-order step launched 5,001 operations as on CUDA, 4,759 with
the casts kept (``bench/kernel_count.py --amp``).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

# (id of each weight, ..., what): (the weights, their versions, the kernel); None outside a
# step; ``what`` () for a kernel, ("cast", dtype) for its cast
_step: dict[tuple, tuple[tuple[torch.Tensor, ...], tuple[int, ...], torch.Tensor]] | None
_step = None


@contextlib.contextmanager
def within_step() -> Iterator[None]:
    """While inside, :func:`reused` keeps what it builds (dropped when the outermost exits)."""
    global _step
    outer = _step
    if outer is None:
        _step = {}
    try:
        yield
    finally:
        _step = outer


def forget() -> None:
    """The weights changed (an optimiser stepped): nothing kept so far serves any more."""
    if _step is not None:
        _step.clear()


def _needs_grad(weights: Sequence[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(w.requires_grad for w in weights)


def _reusing(weights: Sequence[torch.Tensor]) -> bool:
    return (_step is not None and not torch.compiler.is_compiling()
            and all(isinstance(w, nn.Parameter) for w in weights))


def reused(weights: Sequence[torch.Tensor], build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``build()``, a kernel made of ``weights``; inside :func:`within_step` the one built
    before from the same unchanged parameters where it serves (see the module's text), cast
    to autocast's dtype where autocast is on (:func:`weight`)."""
    if not _reusing(weights):
        return build()
    return _cast(weights, _kept(weights, (), build))


def weight(w: torch.Tensor) -> torch.Tensor:
    """A conv's or a linear layer's weight as it runs: inside :func:`within_step`, under
    autocast, the parameter cast to autocast's dtype once and kept as a kernel is (else
    ``w``)."""
    return _cast((w,), w) if _reusing((w,)) else w


def autocast_dtype(w: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast casts the float32 ``w`` to for a conv or a linear layer where it is
    on for ``w``'s device; None where it casts nothing."""
    device = w.device.type
    if w.dtype != torch.float32 or not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def _cast(weights: Sequence[torch.Tensor], kernel: torch.Tensor) -> torch.Tensor:
    """``kernel`` (made of ``weights``) as autocast would hand it to a conv or a linear layer:
    in autocast's dtype where autocast is on for its device and it is float32; the cast kept
    as the kernel is."""
    dtype = autocast_dtype(kernel)
    if dtype is None:
        return kernel
    return _kept(weights, ("cast", dtype), lambda: kernel.to(dtype))


def reused_together(groups: Sequence[Sequence[torch.Tensor]], i: int, dtype: torch.dtype | None,
                    build: Callable[[], Sequence[torch.Tensor]]) -> torch.Tensor | None:
    """Inside :func:`within_step`, the kernel of ``groups[i]`` (its weights) of ``build()``,
    which builds every group's kernel at once (in ``dtype``, autocast's, if given: then kept
    as :func:`reused` keeps a cast); built again, all of them, where it does not serve
    (:func:`_kept`'s rules, group by group). None outside a step, or where a weight is not a
    parameter (then the caller builds its own)."""
    if _step is None or torch.compiler.is_compiling():
        return None
    what = () if dtype is None else ("cast", dtype)
    kept = _serving(groups[i], what)  # only parameters' are kept (checked once, at the build)
    if kept is None:
        if not _reusing([w for weights in groups for w in weights]):
            return None
        built = build()
        for weights, kernel in zip(groups, built):
            _keep(weights, what, kernel)
        kept = built[i]
    return kept


def _kept(weights: Sequence[torch.Tensor], what: tuple,
          build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``build()``, or what it built before for ``weights`` (and ``what``) where it serves."""
    kept = _serving(weights, what)
    if kept is None:
        kept = build()
        _keep(weights, what, kept)
    return kept


def _serving(weights: Sequence[torch.Tensor], what: tuple) -> torch.Tensor | None:
    """What was kept for ``weights`` (and ``what``), where the weights are unchanged since and
    it has a graph if a gradient is wanted; else None."""
    kept = _step.get(tuple(id(w) for w in weights) + what)
    versions = tuple(w._version for w in weights)
    if kept is not None and kept[1] == versions and (kept[2].requires_grad
                                                     or not _needs_grad(weights)):
        return kept[2]
    return None


def _keep(weights: Sequence[torch.Tensor], what: tuple, kernel: torch.Tensor) -> None:
    versions = tuple(w._version for w in weights)  # the weights held: their ids stay theirs
    _step[tuple(id(w) for w in weights) + what] = (tuple(weights), versions, kernel)
