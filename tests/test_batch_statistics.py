"""``shared.models.batch_statistics``: a training-mode BN that leaves its batch statistics to
the modules that fold them in, against ``F.batch_norm`` at momentum 1 with scratch buffers
(the batch mean and unbiased variance exactly)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.models.batch_statistics import BatchStatistics, normalised, unbiased_variances

# float32: the rounding of invstd = 1 / sqrt(var + eps), inverted
RTOL = {torch.float32: 1e-6, torch.float64: 1e-14}


def _reference(y, weight, eps):
    mean, var = torch.zeros(2, y.shape[1], dtype=y.dtype).unbind(0)
    return F.batch_norm(y, mean, var, weight, None, True, 1.0, eps), mean, var


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_normalised_is_batch_norm_and_gives_its_statistics(dtype, fmt):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6, affine=False, eps=1e-3).to(dtype)
    y = (torch.randn(4, 6, 5, 5, dtype=dtype) * torch.arange(1, 7, dtype=dtype).view(1, -1, 1, 1)
         + 3).contiguous(memory_format=fmt)
    y[:, 2] = 0.5  # a constant channel: variance 0, never below
    weight = torch.rand(6, dtype=dtype)
    grad = torch.randn(y.shape, dtype=dtype)
    outs = []
    for run in (_reference, lambda y, w, eps: normalised(bn, y, w)):
        yy, ww = y.clone().requires_grad_(), weight.clone().requires_grad_()
        z, *stats = run(yy, ww, bn.eps)
        outs.append((z, *torch.autograd.grad(z, (yy, ww), grad), stats))
    (z0, gy0, gw0, (mean0, var0)), (z1, gy1, gw1, (stats,)) = outs
    assert torch.equal(z0, z1) and torch.equal(gy0, gy1) and torch.equal(gw0, gw1)
    assert stats.var is None and stats.rows == 4 * 5 * 5 and stats.eps == bn.eps
    assert torch.equal(stats.mean, mean0)
    (var,) = unbiased_variances([stats])
    torch.testing.assert_close(var, var0, rtol=RTOL[dtype], atol=1e-12)
    assert var[2] == 0 and (var >= 0).all()
    assert bn.running_mean.eq(0).all() and bn.running_var.eq(1).all()  # untouched


def test_given_variances_pass_through_and_shared_ones_come_once():
    """A data-parallel BN's statistics (``var`` given) are taken as they are; one BN's
    statistics folded into several modules (a shared pooling) give one tensor."""
    given = BatchStatistics(torch.zeros(3), torch.tensor([1.0, 2.0, 3.0]), None, 8, 1e-5)
    derived = BatchStatistics(torch.zeros(2), None, torch.tensor([1.0, 0.5]), 5, 0.0)
    a, b, c = unbiased_variances([given, derived, derived])
    assert a is given.var
    assert b is c
    torch.testing.assert_close(b, torch.tensor([1.0, 4.0]) * 5 / 4)


def test_traced_variances_recompile_for_no_new_forward(monkeypatch):
    """Under ``torch.compile`` every forward's statistics are new objects: the variances are
    traced once (no guard on an object's identity, which recompiled per forward) and equal
    eager's bit for bit, a shared pooling's repeated."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    torch._dynamo.reset()
    traced = torch.compile(lambda stats: unbiased_variances(stats), backend="eager")
    for seed in range(3):  # a RecompileError on the second call without the fix
        g = torch.Generator().manual_seed(seed)
        given = BatchStatistics(torch.zeros(3), torch.rand(3, generator=g), None, 8, 1e-5)
        shared = BatchStatistics(torch.zeros(2), None, torch.rand(2, generator=g) + 0.5, 5, 1e-5)
        stats = [given, shared, shared, BatchStatistics(torch.zeros(2), None,
                                                        torch.rand(2, generator=g) + 0.5, 9, 0.0)]
        eager, out = unbiased_variances(stats), traced(stats)
        assert all(torch.equal(a, b) for a, b in zip(eager, out))
        assert torch.equal(out[1], out[2])
    torch._dynamo.reset()


def test_data_parallel_statistics_come_from_the_global_batch_norm(monkeypatch):
    """With a data-parallel group the BN is ``global_batch_norm``'s (here one rank, through the
    module's ``data_parallel``), which leaves the variance in a scratch buffer."""
    seen = []

    def global_batch_norm(x, running_mean, running_var, weight, bias, momentum, eps, dp):
        seen.append(dp)
        return F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)

    monkeypatch.setattr("shared.models.global_batch_norm.global_batch_norm", global_batch_norm)
    bn = nn.BatchNorm2d(3, affine=False)
    bn.data_parallel = SimpleNamespace(enabled=True)
    y = torch.randn(4, 3, 2, 2)
    z, stats = normalised(bn, y, None)
    assert seen == [bn.data_parallel] and stats.invstd is None
    z0, mean0, var0 = _reference(y, None, bn.eps)
    assert torch.equal(z, z0) and torch.equal(stats.mean, mean0) and torch.equal(stats.var, var0)


@pytest.mark.parametrize("joined", [True, False], ids=["back to back", "apart"])
def test_a_groups_statistics_fold_into_its_running_statistics_at_once(joined):
    """``_Ctx.update_all``: a group's BNs (one batch-statistics call over their channels side
    by side) fold their blocks into their running statistics as each one's own ``update``
    would, bit for bit, counters too; where those lie back to back in one buffer
    (``joined_weights.join``, as ``join_group_weights`` lays a group's out) the update lists
    hold one view for the group, else one entry per module."""
    from shared.models.fast_mixed import _Ctx
    from shared.models.joined_weights import join

    torch.manual_seed(0)
    y = torch.randn(4, 12, 5, 5) * 3 + 1
    runs = []
    for grouped in (True, False):
        bns = [nn.BatchNorm2d(4, affine=False) for _ in range(3)]
        for i, bn in enumerate(bns):  # running statistics that differ
            bn.running_mean.normal_(generator=torch.Generator().manual_seed(i))
        if joined:
            join([bn.running_mean for bn in bns])
            join([bn.running_var for bn in bns])
        ctx = _Ctx(torch.contiguous_format)
        _, stats = normalised(bns[0], y, None)
        if grouped:
            ctx.update_all(bns, stats)
            assert len(ctx.updates[0.1]) == (1 if joined else 3)
        else:
            for i, bn in enumerate(bns):
                ctx.update(bn, stats, slice(4 * i, 4 * i + 4))
        ctx.flush()
        runs.append(bns)
    for a, b in zip(*runs):
        assert torch.equal(a.running_mean, b.running_mean)
        assert torch.equal(a.running_var, b.running_var)
        assert a.num_batches_tracked == b.num_batches_tracked == 1
    assert not runs[0][1].running_mean.eq(runs[0][0].running_mean).all()  # each its own
