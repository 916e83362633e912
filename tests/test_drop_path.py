"""A final-network node's sum of its two ops under drop-path (``shared.models.drop_path``):
the values of ``h0 * d0 + h1 * d1`` to rounding, the same gradients, fewer launches."""
import pytest
import torch

from bench.kernel_count import LaunchCount
from shared.models.drop_path import drop_path_scales, dropped_sum

N, C, H = 3, 4, 5


def _inputs(dtype=torch.float64, cl=False):
    g = torch.Generator().manual_seed(0)
    h = [torch.randn(N, C, H, H, generator=g, dtype=dtype) for _ in range(2)]
    if cl:
        h = [t.contiguous(memory_format=torch.channels_last) for t in h]
    h = [t.requires_grad_() for t in h]
    torch.manual_seed(1)
    scales = drop_path_scales(4, N, 0.5, torch.empty(0, dtype=torch.float64))
    scales[0, 0] = scales[1, 1] = 0.0  # a dropped sample in each of the first two rows
    scales[0, 1] = scales[1, 2] = 2.0
    return h, scales


def _plain(h, scales, rows):
    return sum(t if r is None else t * scales[r] for t, r in zip(h, rows))


@pytest.mark.parametrize("rows", [(0, 1), (1, 0), (0, 2), (None, 1), (2, None), (None, None)])
def test_a_node_is_its_ops_times_their_factors_with_their_gradients(rows):
    """Any two rows (adjacent or not, in either order), one op undropped (an identity, or an
    op its group scaled), none: the values of the ops times their rows, to one rounding (an
    addcmul rounds once, a product and a sum twice), and the same gradients bit for bit."""
    h, scales = _inputs()
    got = dropped_sum(*h, scales, rows)
    want = _plain(h, scales, rows)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=1e-15)
    g = torch.randn_like(got)
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(got, h, g),
                                                  torch.autograd.grad(want, h, g)))


def test_without_scales_it_is_the_sum():
    h, _ = _inputs()
    assert torch.equal(dropped_sum(*h, None, (0, 1)), h[0] + h[1])


def test_dtypes_and_layout_are_the_plain_expressions():
    """bf16 ops (autocast) with fp32 factors: the sum in fp32 as ``h * d`` promotes it, each
    gradient in its op's dtype; channels-last ops get channels-last gradients."""
    h, scales = _inputs(torch.bfloat16, cl=True)
    scales = scales.float()
    for rows in ((0, 1), (None, 1)):
        got = dropped_sum(*h, scales, rows)
        assert got.dtype == _plain(h, scales, rows).dtype == torch.float32
        grads = torch.autograd.grad(got, h, torch.ones_like(got))
        assert [t.dtype for t in grads] == [torch.bfloat16] * 2
        assert all(t.is_contiguous(memory_format=torch.channels_last) for t in grads)


def test_two_dropped_ops_are_two_launches_forward_and_one_backward():
    """Written plainly, two products and an addition forward and two products backward."""
    h, scales = _inputs()
    for rows, forward, backward in (((0, 1), 2, 1), ((None, 1), 1, 1)):
        with LaunchCount() as count:
            out = dropped_sum(*h, scales, rows)
        assert sum(count.counts.values()) == forward, count.counts
        g = torch.ones_like(out)
        with LaunchCount() as count:  # the undropped op takes the node's gradient as it is
            torch.autograd.grad(out, h, g)
        assert sum(count.counts.values()) == backward, count.counts
