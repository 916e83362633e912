"""Kernels built once per search step while their weights stay (``shared.models.kernel_reuse``):
when a built kernel is handed out again and when it is built anew; the search loop's steps
(first order, second order with its finite differences written into the weights, SDARTS-ADV's
attack) give the same weights, alpha and running statistics bit for bit with it as without,
as CUDA groups the edges (3x3 kernels padded into 5x5 ones), building fewer kernels."""
from __future__ import annotations

import contextlib
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from shared.models import embedded_kernels, fast_mixed, kernel_reuse
from shared.models.kernel_reuse import forget, reused, within_step
from shared.models.search_cnn import Network
from shared.runtime import Precision
from shared.search.alignment import LayerAlignment
from shared.search.architect import Architect
from shared.search.loop import SearchLoop
from shared.search.perturbation import make_perturbation
from shared.spaces import get_space


def _counting(weights):
    built = []

    def build():
        built.append(1)
        return torch.cat([F.pad(weights[0], (1,) * 4), weights[1]])
    return built, build


def _weights():
    torch.manual_seed(0)
    return [nn.Parameter(torch.randn(2, 1, 3, 3)), nn.Parameter(torch.randn(2, 1, 5, 5))]


def test_a_kernel_is_built_once_per_step_while_its_weights_stay():
    w = _weights()
    built, build = _counting(w)
    reused(w, build), reused(w, build)
    assert len(built) == 2  # outside a step: every time
    built.clear()
    with within_step():
        a = reused(w, build)
        with within_step():  # a nested scope keeps the outer one's
            assert reused(w, build) is a
        assert reused(w, build) is a
        with torch.no_grad():  # one with its graph serves a forward without
            assert reused(w, build) is a
            w[0].mul_(2)  # written in place: its version moved
        b = reused(w, build)
        assert b is not a and torch.equal(b[:2, :, 1:4, 1:4], w[0])
        forget()  # an optimiser that moves no version counter stepped
        assert reused(w, build) is not b
        assert len(built) == 3
    built.clear()
    with within_step():
        reused(w, build)
        assert len(built) == 1
    plain = [t.detach().clone() for t in w]  # substituted weights (functional_call): not kept
    built, build = _counting(plain)
    with within_step():
        reused(plain, build), reused(plain, build)
    assert len(built) == 2


def test_a_kernel_built_without_its_graph_is_built_again_for_a_backward():
    w = _weights()
    built, build = _counting(w)
    with within_step():
        with torch.no_grad():
            a = reused(w, build)
        b = reused(w, build)
        assert b is not a and b.requires_grad
        assert reused(w, build) is b
    assert len(built) == 2


def test_the_graph_of_a_kept_kernel_serves_a_second_backward():
    """A first forward's backward asks for its input's gradient only (as the alpha step's for
    the mixing weights'); the second forward reuses the kernel and its backward reaches the
    weights: the gradients those of building the kernel anew."""
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    grads = []
    for scope in (within_step, contextlib.nullcontext):
        w = _weights()
        _, build = _counting(w)
        with scope():
            torch.autograd.grad(F.conv2d(x, reused(w, build), padding=2, groups=4).sum(), x)
            F.conv2d(x, reused(w, build), padding=2, groups=4).square().sum().backward()
        grads.append([p.grad for p in w])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_under_autocast_a_weight_is_cast_once_per_step_as_autocast_casts_it():
    w, b = _weights()
    x = torch.randn(1, 2, 6, 6)
    with torch.autocast("cpu", torch.bfloat16):
        assert kernel_reuse.weight(w) is w  # outside a step: autocast casts it at the conv
        want = F.conv2d(x, w, None, 1, 1, 1, 2)
        with within_step():
            a = kernel_reuse.weight(w)
            assert a.dtype == torch.bfloat16 and torch.equal(a, w.to(torch.bfloat16))
            assert kernel_reuse.weight(w) is a
            assert torch.equal(F.conv2d(x, a, None, 1, 1, 1, 2), want)
            kernel = reused([w, b], lambda: torch.cat([F.pad(w, (1,) * 4), b]))
            assert kernel.dtype == torch.bfloat16  # a built kernel cast too, once
            assert reused([w, b], lambda: None) is kernel
            forget()
            assert kernel_reuse.weight(w) is not a
    with within_step():  # no autocast: the weight as it is
        assert kernel_reuse.weight(w) is w


def _loop(kind: str) -> SearchLoop:
    """A grouped S5 supernet (C=4, 5 cells of 2 nodes, 8x8) searched as ``kind``: 'first', 'second'
    (second order), 'pgd_linf' (SDARTS-ADV: a first-order alpha step and a 2-step attack) or
    'fused, weights first' (first order, the weights stepped first by a fused SGD, which
    moves no version counter) or 'lambda' (first order with Λ-DARTS' regulariser)."""
    torch.manual_seed(0)
    model = Network(4, 10, 5, get_space("s5"), steps=2, multiplier=2, grouped_edges=True)
    fused = kind == "fused, weights first"
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9,
                                weight_decay=3e-4, fused=fused)
    architect = Architect(model, 3e-4, 1e-3, 0.9, 3e-4, unrolled=kind == "second")
    perturbation = None
    if kind == "pgd_linf":
        perturbation = make_perturbation(kind, 0.3, 50)
        perturbation.steps = 2
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g))
               for _ in range(4)]
    loop = SearchLoop(
        model=model, optimizer=optimizer, scheduler=None, alpha_update=architect,
        train_queue=batches[:2], valid_queue=batches[2:], valid_eval_queue=None, epochs=50,
        device=torch.device("cpu"), logger=logging.getLogger("test"), checkpoint_path="unused",
        perturbation=perturbation, progress=False, report_freq=10 ** 6,
        step_order="weights_first" if fused else "alpha_first")
    if kind == "lambda":  # its ± passes: two more backwards through the step's kernels
        LayerAlignment("corr", 0.5, 1e-3, 50, cells="all", schedule=False).attach(loop)
    return loop


def _autocast_loop(kind: str) -> SearchLoop:
    """:func:`_loop` under bf16 autocast ('first, autocast', 'pgd_linf, autocast')."""
    loop = _loop(kind.split(",")[0])
    loop.precision = Precision(amp=True)
    return loop


class _Passing(TorchDispatchMode):
    """Runs every operation as it is (a TorchDispatchMode: foreach writes inside one move no
    version counter), counting the casts (``casts``)."""

    casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.casts += func.overloadpacket is torch.ops.aten._to_copy
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["first", "second", "pgd_linf", "fused, weights first", "lambda",
                                  "second, in a dispatch mode", "first, autocast",
                                  "pgd_linf, autocast"])
def test_the_search_steps_are_the_same_bit_for_bit_with_fewer_kernels_built(kind, monkeypatch):
    """Two steps of the search loop as CUDA groups the edges (EMBED, dilation as it is):
    weights, alpha, running statistics and momentum equal those of building every kernel at
    every forward; the pads and concatenations are built fewer times (the second-order
    step's finite differences write the weights in place between its forwards: built anew,
    also where a dispatch mode hides those writes from the version counters)."""
    built = []
    embed = embedded_kernels._Embedded.forward

    def counted(*args):
        built.append(1)
        return embed(*args)

    monkeypatch.setattr(embedded_kernels._Embedded, "forward", staticmethod(counted))
    results, counts, casts = [], [], []
    for reuse in (True, False):
        if not reuse:
            monkeypatch.setattr(kernel_reuse, "within_step", contextlib.nullcontext)
        built.clear()
        counting = "dispatch" in kind or "autocast" in kind
        mode = _Passing() if counting else contextlib.nullcontext()
        with fast_mixed.embedded("cpu", True), fast_mixed.undilated("cpu", False), mode:
            if "autocast" in kind:
                loop = _autocast_loop(kind)
            else:
                loop = _loop("second" if "dispatch" in kind else kind)
            for ctx in loop.batches(10, 0.025, True):
                loop.step(ctx)
        counts.append(len(built))
        casts.append(mode.casts if counting else 0)
        results.append({**loop.model.state_dict(),
                        **{f"momentum{i}": s["momentum_buffer"] for i, s in
                           enumerate(loop.optimizer.state.values())}})
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key
    if kind.startswith("second"):  # every forward but the unrolled one's sees other weights (w, w +
        assert counts[0] == counts[1]  # R v, w - R v, w written back): nothing to reuse
    elif kind == "fused, weights first":  # the alpha step's forward sees the stepped weights
        assert counts[0] == counts[1]
    else:
        assert counts[0] < counts[1]
    if "autocast" in kind:  # each kernel and weight cast once per step, not per forward
        assert casts[0] < casts[1]
