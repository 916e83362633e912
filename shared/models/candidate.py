"""What a candidate op of the search supernet is, for the fast path, found once per module.

The fast path (``fast_mixed``) asks on every forward what each of the supernet's candidates
is (its :func:`kind`), where its layers are (:func:`layers`) and, with grouped edges, which
group it joins (``grouped_edges.group_key``). Reading that from nested ``nn.Sequential``
modules (indexing one walks its children) took ~10 µs a candidate, and the DARTS space's
8-cell supernet has 784 candidates, run in two forwards a step: ~16 ms of host time per step
for the kinds alone, which a GPU running the step eagerly waits for. A module's structure
does not change after it is built, so each answer is kept on the module itself
(:func:`per_module`); :func:`learn` asks them all before ``torch.compile`` traces a network,
so that the trace reads them instead of working them out again.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch
import torch.nn as nn

from shared.ops import DilConv, FactorizedReduce, Identity, NoiseOp, SepConv, Zero

T = TypeVar("T")


# The questions ``learn`` asks: (question, which modules it is asked of)
_QUESTIONS: list[tuple[Callable[[nn.Module], object], Callable[[nn.Module], bool]]] = []
_UNKNOWN = object()  # a question not asked of a module yet (None can be an answer)


def per_module(fn: Callable[[nn.Module], T] | None = None, *,
               asked_of: Callable[[nn.Module], bool] | None = None) -> Any:
    """``fn(module)``, computed once per module (for a function of its structure only) and
    kept on the module itself: a module's deep copy carries the answers (of its own copied
    submodules, ``copy.deepcopy`` maps them), and a traced forward (``torch.compile``) reads
    each answer as an attribute of the module, which TorchDynamo guards by value (the same
    for every network of the same structure) instead of tracing ``fn`` again (indexing an
    ``nn.Sequential`` walks its children: one DARTS cell's first compiled forward interpreted
    616,000 bytecodes in 73 s on the CPU tracing the questions, 97,000 in 42 s reading them). Traced
    before it was asked eagerly, the answer is computed and not kept (keeping it would change
    what the trace guarded on); ``learn`` asks first. ``asked_of``: the modules ``learn`` asks
    it of (None: none, a question not asked inside a traced forward)."""
    if fn is None:
        return functools.partial(per_module, asked_of=asked_of)
    name = f"_per_module_{fn.__module__.rsplit('.', 1)[-1]}_{fn.__name__}"

    @functools.wraps(fn)
    def once(op: nn.Module) -> T:
        value = getattr(op, name, _UNKNOWN)
        if value is _UNKNOWN:
            value = fn(op)
            if not torch.compiler.is_compiling():
                op.__dict__[name] = value  # not nn.Module.__setattr__: never a submodule
        return value

    if asked_of is not None:
        _QUESTIONS.append((once, asked_of))
    return once


def learn(model: nn.Module) -> None:
    """Ask each ``per_module`` question of every module of ``model`` it is asked of, eagerly:
    before ``torch.compile`` traces the model, so that the trace reads the answers."""
    for module in model.modules():
        for question, asked_of in _QUESTIONS:
            if asked_of(module):
                question(module)


def every_module(_: nn.Module) -> bool:
    return True


def of_kind(*kinds: str) -> Callable[[nn.Module], bool]:
    """``asked_of`` the candidates of these kinds."""
    return lambda op: kind(op) in kinds


@per_module(asked_of=every_module)
def kind(op: nn.Module) -> str:
    """How the fast path runs ``op``: ``none``, ``skip``, ``noise``, ``fr`` (FactorizedReduce),
    ``sep`` (separable conv), ``dil`` (dilated conv), ``pool`` (pooling and BN) or, for any
    other op, ``generic`` (``w * op(x)``, as the plain path)."""
    if isinstance(op, Zero):
        return "none"
    if isinstance(op, Identity):
        return "skip"
    if isinstance(op, NoiseOp):
        return "noise"
    if isinstance(op, FactorizedReduce) and _is_1x1_s2(op.conv_1) and _is_1x1_s2(op.conv_2):
        return "fr"
    if isinstance(op, SepConv) and _is_dil(op[0]) and _is_dil(op[1]):
        return "sep"
    if isinstance(op, DilConv) and _is_dil(op):
        return "dil"
    if (isinstance(op, nn.Sequential) and len(op) == 2 and isinstance(op[1], nn.BatchNorm2d)
            and isinstance(op[0], (nn.MaxPool2d, nn.AvgPool2d))):
        return "pool"
    return "generic"


@per_module(asked_of=of_kind("sep", "dil", "pool"))
def layers(op: nn.Module) -> tuple[nn.Module, ...]:
    """The layers the fast path runs of a ``sep``, ``dil`` or ``pool`` candidate:
    (depthwise conv, 1x1 conv, BN) once (``dil``) or twice (``sep``), (pooling, BN)."""
    found = kind(op)
    if found == "sep":
        return (op[0][1], op[0][2], op[0][3], op[1][1], op[1][2], op[1][3])
    if found == "dil":
        return (op[1], op[2], op[3])
    if found == "pool":
        return (op[0], op[1])
    raise ValueError(f"a {found} candidate has no layers of its own to run")


def _is_1x1_s2(c: nn.Conv2d) -> bool:
    return (c.kernel_size == (1, 1) and c.stride == (2, 2) and c.padding == (0, 0)
            and c.dilation == (1, 1) and c.groups == 1)


def _is_dil(op: nn.Sequential) -> bool:
    """ReLU -> square depthwise conv with 'same' padding -> 1x1 conv -> BN."""
    if len(op) != 4 or not isinstance(op[0], nn.ReLU):
        return False
    dw, pw_, bn_ = op[1], op[2], op[3]
    k, d, s, p = dw.kernel_size, dw.dilation, dw.stride, dw.padding
    return (isinstance(dw, nn.Conv2d) and isinstance(pw_, nn.Conv2d)
            and isinstance(bn_, nn.BatchNorm2d) and isinstance(p, tuple)
            and k[0] == k[1] and k[0] % 2 == 1 and d[0] == d[1] and s[0] == s[1]
            and p == (d[0] * (k[0] // 2),) * 2 and dw.groups == dw.in_channels == dw.out_channels
            and dw.bias is None and pw_.kernel_size == (1, 1) and pw_.stride == (1, 1)
            and pw_.groups == 1)
