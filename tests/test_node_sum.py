"""``shared.models.node_sum``: a node's sums, term by term and batched, against autograd's."""
from __future__ import annotations

import pytest
import torch

from shared.models import node_sum


@pytest.fixture(params=["term_by_term", "batched", "batched_matmul"], autouse=True)
def batched(request, monkeypatch) -> bool:
    """Every test runs the sums three ways: term by term (the CPU's), batched (CUDA's), and
    batched with the per-channel sums as batched matrix products (``node_sum.MATMUL``; the
    tests that batch whatever the way take that switch from here)."""
    monkeypatch.setattr(node_sum, "BATCHED", set() if request.param == "term_by_term"
                        else {"cpu"})
    monkeypatch.setattr(node_sum, "MATMUL", {"cpu"} if request.param == "batched_matmul"
                        else set())
    return request.param != "term_by_term"


def _terms(n: int, channels_last: bool, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    terms = [torch.randn(2, 3, 4, 5, generator=g, dtype=dtype) for _ in range(n)]
    if channels_last:
        terms = [t.contiguous(memory_format=torch.channels_last) for t in terms]
    scales = [torch.randn(3, generator=g, dtype=torch.float64) for _ in range(n)]
    return [t.requires_grad_() for t in terms], [s.requires_grad_() for s in scales]


@pytest.mark.parametrize("channels_last", [False, True])
def test_weighted_sum_is_the_term_by_term_sum_and_keeps_the_layout(channels_last) -> None:
    terms, scales = _terms(4, channels_last)
    out = node_sum.weighted_sum(scales, terms)
    ref = sum(s.view(3, 1, 1) * t for s, t in zip(scales, terms))
    assert torch.allclose(out, ref, rtol=0, atol=1e-14)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, terms + scales, g)
    want = torch.autograd.grad(ref, terms + scales, g)
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-13)
    for a in got[:4]:  # the terms' gradients come in the terms' layout
        assert a.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("channels_last", [False, True])
def test_weighted_sum_has_exact_first_and_second_derivatives(channels_last) -> None:
    # SDARTS' Hessian monitor differentiates alpha's gradient again
    terms, scales = _terms(3, channels_last)

    def f(*inputs):
        return node_sum.weighted_sum(inputs[:3], inputs[3:])
    assert torch.autograd.gradcheck(f, (*scales, *terms))
    assert torch.autograd.gradgradcheck(f, (*scales, *terms))


def test_weighted_sum_computes_only_the_gradients_asked_for() -> None:
    terms, scales = _terms(3, False)
    for s in scales:
        s.requires_grad_(False)
    out = node_sum.weighted_sum(scales, terms)
    out.sum().backward()
    assert all(s.grad is None for s in scales)
    assert all(torch.equal(t.grad, s.view(3, 1, 1).expand_as(t)) for s, t in zip(scales, terms))


def test_under_autocast_the_sum_keeps_the_terms_dtype() -> None:
    terms, scales = _terms(3, True, dtype=torch.bfloat16)
    scales = [s.float().detach().requires_grad_() for s in scales]
    out = node_sum.weighted_sum(scales, terms)
    assert out.dtype == torch.bfloat16  # a 0-d fp32 weight would keep it too
    out.float().sum().backward()
    assert terms[0].grad.dtype == torch.bfloat16 and scales[0].grad.dtype == torch.float32


@pytest.mark.parametrize("channels_last", [False, True])
def test_total_is_the_sum_in_the_terms_layout(channels_last) -> None:
    terms, _ = _terms(5, channels_last)
    out = node_sum.total(terms)
    assert torch.allclose(out, sum(terms), rtol=0, atol=1e-14)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    assert node_sum.total(terms[:1]) is terms[0]


def test_a_scale_per_term_is_required() -> None:
    terms, scales = _terms(2, False)
    with pytest.raises(ValueError, match="1 scales for 2 terms"):
        node_sum.weighted_sum(scales[:1], terms)


def test_terms_in_different_layouts_are_summed_in_the_first_ones() -> None:
    # a small state can come channels-last from one op and NCHW from another
    terms, scales = _terms(3, True)
    terms[1] = terms[1].detach().contiguous().requires_grad_()
    ref = sum(s.view(3, 1, 1) * t for s, t in zip(scales, terms))
    assert torch.allclose(node_sum.weighted_sum(scales, terms), ref, rtol=0, atol=1e-14)
    assert torch.allclose(node_sum.total(terms), sum(terms), rtol=0, atol=1e-14)
    got = torch.autograd.grad(node_sum.weighted_sum(scales, terms), terms + scales,
                              torch.ones_like(ref))
    want = torch.autograd.grad(ref, terms + scales, torch.ones_like(ref))
    assert all(torch.allclose(a, b, rtol=0, atol=1e-13) for a, b in zip(got, want))


def _calls_in(fn, op=torch.ops.aten.stack) -> int:
    """How many calls of ``op`` (an ATen overload packet) ``fn()`` dispatches."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is op:
                Count.n += 1
            return func(*args, **(kwargs or {}))
    with Count():
        fn()
    return Count.n



def test_a_batched_backward_casts_the_scales_gradients_back_at_once() -> None:
    # under autocast the terms are bf16 and the scales fp32: one cast of all the scales'
    # gradients, none for the terms' (each in the node's dtype already)
    terms, scales = _terms(4, True, dtype=torch.bfloat16)
    scales = [s.float().detach().requires_grad_() for s in scales]
    node_sum.BATCHED = {"cpu"}  # restored by the fixture's monkeypatch
    out = node_sum.weighted_sum(scales[:2], terms[:2], terms[2:])
    g = torch.ones_like(out)
    grads: list = []
    assert _calls_in(lambda: grads.extend(torch.autograd.grad(out, terms + scales[:2], g)),
                     torch.ops.aten._to_copy) == 1
    assert [t.dtype for t in grads] == [torch.bfloat16] * 4 + [torch.float32] * 2


def test_plain_terms_join_the_weighted_sum(batched) -> None:
    # a node's batch-normalised terms (their weight inside) join its weighted ones
    terms, scales = _terms(5, True)
    plain, weighted = terms[3:], terms[:3]
    out = node_sum.weighted_sum(scales[:3], weighted, plain)
    ref = sum(s.view(3, 1, 1) * t for s, t in zip(scales, weighted)) + sum(plain)
    assert torch.allclose(out, ref, rtol=0, atol=1e-14)
    assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, terms + scales[:3], g)
    want = torch.autograd.grad(ref, terms + scales[:3], g)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-13) for a, b in zip(got, want))
    assert all(a.is_contiguous(memory_format=torch.channels_last) for a in got[:5])

    def f(*inputs):
        return node_sum.weighted_sum(inputs[:2], inputs[2:4], inputs[4:])
    inputs = (*scales[:2], *terms[:4])
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)
    if not batched:  # term by term: the plain terms' total plus the weighted sum, as before
        assert torch.equal(out, node_sum.total(plain) + node_sum.weighted_sum(scales[:3],
                                                                                weighted))


def test_a_batched_sum_stacks_once_forward_and_only_the_scaled_terms_backward() -> None:
    # one stack of the scales and one of every term forward; backward, the forward's table
    # serves the terms' gradients and only the scales' gradients stack (their terms) again,
    # unless the backward records a graph (the Hessian's), which makes the table again (a
    # training node: more plain terms, batch-normalised, than scaled ones)
    terms, scales = _terms(5, True)
    node_sum.BATCHED = {"cpu"}  # restored by the fixture's monkeypatch
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    out: list = []
    assert _calls_in(lambda: out.append(node_sum.weighted_sum(scales[:2], terms[:2],
                                                                terms[2:]))) == 2
    grads: list = []
    assert _calls_in(lambda: grads.extend(
        torch.autograd.grad(out[0], terms + scales[:2], g))) == 1
    again = torch.autograd.grad(node_sum.weighted_sum(scales[:2], terms[:2], terms[2:]),
                                terms + scales[:2], g, create_graph=True)
    assert all(torch.equal(a, b.detach()) for a, b in zip(grads, again))
    for s in scales:  # only the terms want gradients: nothing is stacked backward
        s.requires_grad_(False)
    out = node_sum.weighted_sum(scales[:2], terms[:2], terms[2:])
    assert _calls_in(lambda: torch.autograd.grad(out, terms, g)) == 0


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("uniform", [False, True])
def test_a_batched_sum_of_few_plain_terms_keeps_its_stack_for_the_scales(channels_last,
                                                                           uniform) -> None:
    # the evaluation mode's folded nodes (SDARTS-ADV's attack): scaled terms and the BNs'
    # offset; the scales' gradients read the forward's stack, not a new one, and every value
    # is the restacking sum's bit for bit; gradients of gradients hold (the stack is the
    # sum's input, made by autograd's stack)
    terms, scales = _terms(5, channels_last)
    if uniform:
        scales = [s[:1].detach().expand(3).clone().requires_grad_() for s in scales]
    node_sum.BATCHED = {"cpu"}  # restored by the fixture's monkeypatch
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=fmt)
    out: list = []
    assert _calls_in(lambda: out.append(node_sum.weighted_sum(
        scales[:4], terms[:4], terms[4:], uniform=uniform))) == 2
    grads: list = []
    assert _calls_in(lambda: grads.extend(
        torch.autograd.grad(out[0], terms + scales[:4], g))) == 0
    ref = node_sum._BatchedSum.apply(4, uniform, *scales[:4], *terms)  # stacks again
    assert torch.equal(out[0], ref) and out[0].is_contiguous(memory_format=fmt)
    want = torch.autograd.grad(ref, terms + scales[:4], g)
    assert all(torch.equal(a, b) for a, b in zip(grads, want))
    assert all(a.is_contiguous(memory_format=fmt) for a in grads[:5])

    def f(*inputs):
        return node_sum.weighted_sum(inputs[:2], inputs[2:4], inputs[4:], uniform=uniform)
    assert torch.autograd.gradgradcheck(f, (*scales[:2], *terms[:3]))


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_batched_backward_hands_the_plain_terms_the_nodes_gradient(channels_last) -> None:
    # a plain term's gradient is g times ones: g itself where g lies as the terms do (no
    # product, no copy), else the product's rows; the same values bit for bit either way
    terms, scales = _terms(5, channels_last)
    node_sum.BATCHED = {"cpu"}  # restored by the fixture's monkeypatch
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    dense = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=fmt)
    wide = torch.randn(2, 6, 4, 5, dtype=torch.float64).contiguous(memory_format=fmt)
    for g, shared in ((dense, True), (wide[:, 1:4], False)):  # a cat's slice is not dense
        out = node_sum.weighted_sum(scales[:2], terms[:2], terms[2:])
        grads = torch.autograd.grad(out, terms, g)
        for plain in grads[2:]:
            assert torch.equal(plain, g)
            assert (plain.data_ptr() == g.data_ptr()) == shared
            assert shared or plain.is_contiguous(memory_format=fmt)
        for s, scaled in zip(scales, grads[:2]):
            assert torch.equal(scaled, g * s.view(3, 1, 1))
            assert scaled.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_uniform_sum_is_one_matrix_vector_product_of_the_stack(channels_last) -> None:
    # a mixing weight expanded to C values (as in training): batched, the forward is the
    # stack times the weights, one mv, not a product with the table and a reduction; the
    # values are the per-channel sum's to rounding and the backward is the same
    terms, _ = _terms(5, channels_last)
    weights = torch.randn(3, dtype=torch.float64)
    scales = [w.expand(3).clone().requires_grad_() for w in weights]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=fmt)
    runs = {}
    for uniform in (False, True):
        out = node_sum.weighted_sum(scales, terms[:3], terms[3:], uniform=uniform)
        runs[uniform] = out, torch.autograd.grad(out, terms + scales, g)
    (a, grads_a), (b, grads_b) = runs[False], runs[True]
    assert torch.allclose(b, a, rtol=0, atol=1e-14) and b.is_contiguous(memory_format=fmt)
    assert all(torch.equal(x, y) for x, y in zip(grads_a, grads_b))
    ops = {op: _calls_in(lambda: node_sum.weighted_sum(scales, terms[:3], terms[3:],
                                                         uniform=True), op)
           for op in (torch.ops.aten.mv, torch.ops.aten.mul, torch.ops.aten.sum)}
    if node_sum.is_batched(terms[0]):
        assert ops == {torch.ops.aten.mv: 1, torch.ops.aten.mul: 0, torch.ops.aten.sum: 0}
    else:  # term by term: unchanged (a product, then additions of products)
        assert ops[torch.ops.aten.mv] == 0 and ops[torch.ops.aten.mul] == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the mv stays in the terms' dtype
        assert node_sum.weighted_sum(scales, terms[:3], terms[3:], uniform=True).dtype == \
            torch.float64


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_per_channel_sum_as_batched_matrix_products_reads_its_stack_once(channels_last
                                                                            ) -> None:
    # node_sum.MATMUL: an NCHW node's per-channel sum (the folded nodes of the evaluation
    # mode) is one batched product of each (sample, channel)'s scales with its terms' pixel
    # rows, forward, and its scales' gradients one more with the node's gradient, where a
    # product wrote the stack out again and a reduction read it; the values are the
    # products' to rounding, the terms' gradients the same bits; channels-last stacks (no
    # run of pixels per channel) keep the product and the reduction
    terms, scales = _terms(5, channels_last)
    node_sum.BATCHED = {"cpu"}  # restored by the fixture's monkeypatch
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=fmt)
    runs, calls = {}, {}
    ops = (torch.ops.aten.bmm, torch.ops.aten.mul, torch.ops.aten.sum)
    for way in (set(), {"cpu"}):
        node_sum.MATMUL = way
        out = node_sum.weighted_sum(scales[:4], terms[:4], terms[4:])
        runs[bool(way)] = out, torch.autograd.grad(out, terms + scales[:4], g)
        calls[bool(way)] = (
            {op: _calls_in(lambda: node_sum.weighted_sum(scales[:4], terms[:4], terms[4:]), op)
             for op in ops},
            {op: _calls_in(lambda: torch.autograd.grad(
                node_sum.weighted_sum(scales[:4], terms[:4], terms[4:]), scales[:4], g), op)
             for op in ops})
    (a, grads_a), (b, grads_b) = runs[False], runs[True]
    assert torch.allclose(b, a, rtol=0, atol=1e-14) and b.is_contiguous(memory_format=fmt)
    assert all(torch.equal(x, y) for x, y in zip(grads_a[:5], grads_b[:5]))
    assert all(torch.allclose(x, y, rtol=0, atol=1e-13) for x, y in zip(grads_a[5:],
                                                                        grads_b[5:]))
    bmm, mul, add_up = ops
    if channels_last:
        assert calls[True] == calls[False] and calls[True][0][bmm] == 0
    else:
        forward, backward = calls[True]
        assert forward == {bmm: 1, mul: 0, add_up: 0}
        # the forward's bmm and the scales' (then a sum of their dots over the samples); the
        # one product left is the terms' gradients, g times the table
        assert (backward[bmm], backward[mul], backward[add_up]) == (2, 1, 1)
        assert calls[False] == ({bmm: 0, mul: 1, add_up: 1}, {bmm: 0, mul: 3, add_up: 2})
        # a gradient that is a cat's slice (not dense: read as rows it would be copied) takes
        # the product and the reduction for the scales, to the same values
        sliced = torch.randn(2, 6, 4, 5, dtype=torch.float64)[:, 1:4]
        grads = {}
        for way in (set(), {"cpu"}):
            node_sum.MATMUL = way
            out = node_sum.weighted_sum(scales[:4], terms[:4], terms[4:])
            grads[bool(way)] = torch.autograd.grad(out, scales[:4], sliced)
        assert all(torch.allclose(x, y, rtol=0, atol=1e-13) for x, y in zip(*grads.values()))
        assert _calls_in(lambda: torch.autograd.grad(node_sum.weighted_sum(
            scales[:4], terms[:4], terms[4:]), scales[:4], sliced), bmm) == 1
    node_sum.MATMUL = {"cpu"}
    low = [t.detach().to(torch.bfloat16).requires_grad_() for t in terms]
    scales32 = [s.detach().float().requires_grad_() for s in scales]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the products stay in the terms' dtype
        out = node_sum.weighted_sum(scales32[:4], low[:4], low[4:])
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert low[0].grad.dtype == torch.bfloat16 and scales32[0].grad.dtype == torch.float32
