"""``shared.ops``: the candidate operations."""
import copy

import torch
import torch.nn as nn


def test_a_dilated_conv_in_bf16_channels_last_on_the_cpu_gets_its_true_gradient():
    """PyTorch 2.14.1's oneDNN kernel gives a dilated depthwise conv in bf16 on channels-last
    32x32 tensors a wrong weight gradient (1e35, NaN); ``DilatedConv2d`` runs it on NCHW
    there: its gradients equal the NCHW conv's, and fp64's within bf16's rounding."""
    from shared.ops import DilatedConv2d, DilConv

    op = DilConv(4, 4, 5, 1, 4, 2)
    assert type(op[1]) is DilatedConv2d and type(DilConv(4, 4, 3, 1, 1, 1)[1]) is nn.Conv2d
    x = torch.randn(4, 4, 32, 32, generator=torch.Generator().manual_seed(1)).bfloat16().float()
    with torch.no_grad():
        op[1].weight.copy_(op[1].weight.bfloat16().float())

    def grads(fmt, amp, dtype=torch.float32):
        m = copy.deepcopy(op).to(dtype).to(memory_format=fmt)
        xx = x.to(dtype).contiguous(memory_format=fmt).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = m[1](m[0](xx))
        return torch.autograd.grad(y.float().sum(), (xx, m[1].weight))

    cl, nchw = grads(torch.channels_last, True), grads(torch.contiguous_format, True)
    ref = grads(torch.contiguous_format, False, torch.float64)
    for a, b, r in zip(cl, nchw, ref):
        assert torch.equal(a.contiguous(), b.contiguous())
        torch.testing.assert_close(a.double(), r, rtol=0.02, atol=0.02 * r.abs().max().item())
