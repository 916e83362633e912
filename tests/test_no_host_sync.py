"""No host synchronisation inside a search step, beyond ``tests/test_search_meters.py``: the
recurrent search (its Architect's clip coefficients, first and second order; its NLL meter),
Λ-DARTS' regulariser (``shared.search.alignment``: whether to align is a device flag, a zero
cell gradient is refused at the epoch's end), and DARTS-PT's skip of candidates at weight 0,
the one read left, made once per forward of that supernet."""
from __future__ import annotations

import logging
import math
import os

import pytest
import torch

from shared.data.text import batchify
from shared.errors import UserError
from shared.logs import AverageMeter
from shared.models.live import HeldLive
from shared.models.search_cnn import Network
from shared.models.search_rnn import RNNModelSearch
from shared.search.alignment import LayerAlignment
from shared.search.alignment_terms import corr
from shared.search.meters import DeviceMean
from shared.search.perturbation import make_perturbation
from shared.search.rnn_architect import RNNArchitect, _clip_coef
from shared.search.rnn_loop import RNNSearchLoop
from shared.spaces import get_space
from tests.test_search_loop import TinySupernet, make_loop
from tests.test_search_meters import HostRead, no_host_reads, tiny_loop

NTOKEN = 30


# -- the recurrent search -------------------------------------------------------------------------
def tiny_rnn_loop(tmp_path, unrolled: bool, nlayers: int = 1, perturb: str = "none",
                  report_freq: int = 2) -> RNNSearchLoop:
    torch.manual_seed(0)
    text = torch.randint(0, NTOKEN, (240,), generator=torch.Generator().manual_seed(5))
    train, search = batchify(text[:160], 4), batchify(text[160:], 4)
    model = RNNModelSearch(NTOKEN, 6, 6, 6, 0.3, 0.2, 0.3, 0.2, 0.1, nlayers=nlayers)
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=20.0, weight_decay=5e-7)
    return RNNSearchLoop(
        model=model, optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0),
        alpha_update=RNNArchitect(model, clip=0.25, unrolled=unrolled), train_queue=train,
        valid_queue=search, valid_eval_queue=batchify(text[160:], 2), epochs=1,
        device=torch.device("cpu"), logger=logging.getLogger("test_no_host_sync"),
        checkpoint_path=str(tmp_path / "c.pth.tar"), grad_clip=0.25, report_freq=report_freq,
        perturbation=make_perturbation(perturb, 0.3, 1),
        generators=(torch.Generator().manual_seed(3),), progress=False, bptt=7, batch_size=4)


def guarded_steps(loop, steps: int | None = None) -> int:
    """Run the epoch's steps, each under ``no_host_reads``, with its report where no line is
    due (the windows are drawn between them: the recurrent loop's length draw reads its CPU
    generator, outside the step)."""
    n, meters = 0, loop.new_meters()
    for ctx in loop.batches(0, loop.scheduler.get_last_lr()[0], True):
        with no_host_reads():
            loop.step(ctx)
            loop.after_step(ctx)
            if ctx.step % loop.report_freq:
                assert loop.report(ctx, meters) is None
        n += 1
        if steps is not None and n == steps:
            break
    return n


@pytest.mark.parametrize("unrolled, perturb", [(False, "none"), (True, "none"),
                                               (True, "random"), (False, "pgd_linf")])
def test_a_recurrent_search_step_reads_nothing_back(tmp_path, unrolled, perturb) -> None:
    loop = tiny_rnn_loop(tmp_path, unrolled, perturb=perturb)
    alpha = loop.model.weights.detach().clone()
    assert guarded_steps(loop) >= 3
    assert not torch.equal(alpha, loop.model.weights)


def test_the_clip_coefficient_is_the_python_number_it_was() -> None:
    """min(1, c / (‖g‖ + 1e-6)) from ``norm.item()`` in double, and as the factor of a float32
    gradient: bit for bit, clipping or not."""
    g = torch.Generator().manual_seed(0)
    for scale in (1e-9, 1e-3, 0.1, 1.0, 30.0):
        grads = [torch.randn(n, generator=g) * scale for n in (7, 40, 3)]
        for max_norm in (0.25, 1e-6, 1e9):
            norm = torch.cat(grads).norm().item()
            want = min(1.0, max_norm / (norm + 1e-6))
            got = _clip_coef(grads, max_norm)
            assert got.dtype == torch.float64 and got.item() == want
            assert all(torch.equal(got * x, want * x) and torch.equal(0.7 * got * x,
                                                                      0.7 * want * x)
                       for x in grads)


def test_the_recurrent_meter_is_average_meter_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    mean, meter = DeviceMean(torch.device("cpu")), AverageMeter()
    assert mean.average() == 0.0
    for n in (35, 17, 35, 35, 9):
        loss = torch.rand((), generator=g) * 6
        mean.update(loss, n)
        meter.update(loss.item(), n)
        assert mean.average() == meter.avg  # ==, not approx


def test_a_recurrent_epoch_reads_its_meter_once_per_report(tmp_path, caplog) -> None:
    loop = tiny_rnn_loop(tmp_path, unrolled=False, report_freq=2)
    reads = []
    real = DeviceMean.average
    DeviceMean.average = lambda self, *dp: reads.append(1) or real(self, *dp)
    try:
        with caplog.at_level(logging.INFO, logger="test_no_host_sync"):
            ppl, nll = loop.train_epoch(0, 20.0)
    finally:
        DeviceMean.average = real
    lines = [r.message for r in caplog.records if "batches" in r.message]
    assert len(lines) >= 2 and len(reads) == len(lines) + 1  # + the epoch's summary
    assert [int(line.split("|")[2].split()[0]) for line in lines] == list(
        range(0, 2 * len(lines), 2))
    assert ppl == math.exp(nll)


# -- Λ-DARTS ------------------------------------------------------------------------------------
@pytest.mark.parametrize("update, regularizer, fresh", [
    ("first_order", "corr", False), ("second_order", "signcorr", False),
    ("first_order", "corr", True), ("first_order", None, False)])
def test_a_lambda_darts_step_reads_nothing_back(tmp_path, update, regularizer, fresh) -> None:
    loop = tiny_loop(tmp_path, update)
    hook = LayerAlignment(regularizer, 0.5, 1e-3, epochs=2, fresh_noise=fresh)
    hook.attach(loop)
    hook.lam = 0.5
    contexts = list(loop.batches(0, 0.1, True))
    with no_host_reads():
        for ctx in contexts:
            loop.step(ctx)
            loop.after_step(ctx)
    assert len(hook._train) == len(hook._valid) == len(contexts)
    assert not bool(hook._undefined)


@pytest.mark.parametrize("unrolled", [False, True])
def test_a_lambda_darts_recurrent_step_reads_nothing_back(tmp_path, unrolled) -> None:
    loop = tiny_rnn_loop(tmp_path, unrolled, nlayers=2)
    LayerAlignment("corr", 0.1, 0.05, 2, cells="all", schedule=False).attach(loop)
    assert guarded_steps(loop, steps=3) == 3


def _twins(tmp_path, space: str = "s4"):
    """The same DARTS supernet search twice (S4: its noise op draws from the RNG, BatchNorm
    everywhere; 5 cells of 2 nodes): one regularised, one recording only (what the early
    return left)."""
    from shared.search.architect import Architect
    from shared.search.loop import SearchLoop

    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
            for _ in range(3)]
    loops = []
    for name, regularizer in (("aligned", "corr"), ("recorded", None)):
        torch.manual_seed(0)
        model = Network(4, 10, 5, get_space(space), in_channels=1, steps=2, multiplier=2)
        optimizer = torch.optim.SGD(model.weight_parameters(), 0.1, momentum=0.9,
                                    weight_decay=3e-4)
        loop = SearchLoop(model=model, optimizer=optimizer,
                          scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0),
                          alpha_update=Architect(model, 3e-3, 1e-3, 0.9, 3e-4),
                          train_queue=data, valid_queue=data, valid_eval_queue=None, epochs=1,
                          device=torch.device("cpu"),
                          logger=logging.getLogger("test_no_host_sync"),
                          checkpoint_path=str(tmp_path / name / "c.pth.tar"), progress=False)
        LayerAlignment(regularizer, 0.5, 1e-3, epochs=2, schedule=False).attach(loop)
        loops.append(loop)
    return loops


def _same_state(a, b) -> None:
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(v, w), k
    assert str(a.optimizer.state_dict()) == str(b.optimizer.state_dict())


def test_a_zero_direction_ends_the_step_as_the_early_return_did(tmp_path, monkeypatch) -> None:
    """p = 0: nothing to align. The ± passes run (at A exactly, replaying the base pass's random
    state) and are undone on the device: weights, their momentum, BatchNorm's running
    statistics and the RNG end bit for bit as in a step without the regulariser."""
    import shared.search.alignment as alignment

    monkeypatch.setitem(alignment.REGULARIZERS, "corr",
                        (corr, lambda gs, **kw: [torch.zeros_like(g) for g in gs]))
    aligned, recorded = _twins(tmp_path)
    rng = []
    for loop in (aligned, recorded):
        torch.manual_seed(7)
        contexts = list(loop.batches(0, 0.1, True))
        with no_host_reads():
            for ctx in contexts:
                loop.step(ctx)
                loop.after_step(ctx)
        rng.append(torch.get_rng_state())
    _same_state(aligned, recorded)
    assert torch.equal(*rng)
    hooks = [loop.weight_grad_hooks[0] for loop in (aligned, recorded)]
    assert all(torch.equal(a, b) for a, b in zip(hooks[0]._train, hooks[1]._train))


def test_a_zero_direction_with_fresh_noise_moves_only_the_rng(tmp_path, monkeypatch) -> None:
    """``fresh_noise``: the ± passes draw new noise, so their gradients differ even at A; they
    are still discarded (weights and statistics as without the regulariser), but the RNG has
    moved on where the early return left it: the one difference, only in this mode."""
    import shared.search.alignment as alignment

    monkeypatch.setitem(alignment.REGULARIZERS, "corr",
                        (corr, lambda gs, **kw: [torch.zeros_like(g) for g in gs]))
    aligned, recorded = _twins(tmp_path)
    aligned.weight_grad_hooks[0].needs_rng_state = False  # as LayerAlignment(fresh_noise=True)
    rng = []
    for loop in (aligned, recorded):
        torch.manual_seed(7)
        ctx = next(loop.batches(0, 0.1, True))
        with no_host_reads():
            loop.step(ctx)
        rng.append(torch.get_rng_state())
    _same_state(aligned, recorded)
    assert not torch.equal(*rng)


def test_without_the_zero_direction_the_twins_differ(tmp_path) -> None:
    """(The test above could not pass by the regulariser doing nothing anywhere.)"""
    aligned, recorded = _twins(tmp_path)
    for loop in (aligned, recorded):
        torch.manual_seed(7)
        for ctx in list(loop.batches(0, 0.1, True)):
            loop.step(ctx)
    assert any(not torch.equal(p, q) for p, q in zip(aligned.model.parameters(),
                                                    recorded.model.parameters()))


def _dead_normal_cell(model: TinySupernet) -> None:
    """Cell 0's layers all 0: its gradient w.r.t. its mixing weights is exactly 0 (tanh(0) = 0
    and nothing flows back through the zero layers) until a step moves them."""
    with torch.no_grad():
        for layer in model.cells[0]:
            layer.weight.zero_()
            layer.bias.zero_()


def test_a_zero_cell_gradient_is_refused_at_the_end_of_the_epoch(tmp_path) -> None:
    """The released code divides by zero there; the step no longer reads the norms: it goes on
    as without the regulariser (Λ NaN, nothing aligned), and the epoch is refused before it is
    saved, as the step used to refuse it."""
    steps = []
    for regularizer in ("corr", None):
        torch.manual_seed(0)
        model = TinySupernet()
        _dead_normal_cell(model)
        loop = make_loop(tmp_path / str(regularizer), model=model, epochs=2)
        hook = LayerAlignment(regularizer, 1.0, 1e-4, epochs=2, schedule=False)
        hook.attach(loop)
        ctx = next(loop.batches(0, 0.1, True))
        with no_host_reads():
            loop.step(ctx)
            loop.after_step(ctx)
        steps.append([p.detach().clone() for p in model.parameters()])
        assert bool(hook._undefined) and math.isnan(float(hook._train[0]))
    assert all(torch.equal(a, b) for a, b in zip(*steps))

    torch.manual_seed(0)
    model = TinySupernet()
    _dead_normal_cell(model)
    loop = make_loop(tmp_path / "run", model=model, epochs=2)
    LayerAlignment("corr", 1.0, 1e-4, epochs=2, schedule=False).attach(loop)
    with pytest.raises(UserError, match="zero gradient.*; seen in epoch 0, which is not saved"):
        loop.run()
    assert not os.path.exists(loop.checkpoint_path) and loop.history[-1]["epoch"] == 0
    with pytest.raises(UserError, match="zero gradient"):  # called as it is: refused at once
        corr([torch.ones(3), torch.zeros(3)])


# -- DARTS-PT: the one read left ------------------------------------------------------------------
def test_darts_pt_supernet_reads_its_weights_once_per_forward() -> None:
    """Skipping a candidate at weight exactly 0 (no output, no BN statistics, no gradient: see
    ``shared.models.live.live_candidates``) needs the weights on the host: one read for all
    cells."""
    torch.manual_seed(0)
    model = Network(4, 10, 5, get_space("s5"), in_channels=1, skip_zero_weights=True)
    normal, reduce = (w.detach().clone() for w in model.mixing_weights())
    normal[0, 3] = reduce[1] = 0.0
    x = torch.randn(2, 1, 8, 8)
    reads = []
    real = torch.Tensor.tolist

    def count(self):
        reads.append(1)
        return real(self)
    torch.Tensor.tolist = count
    try:
        model(x, (normal, reduce))
    finally:
        torch.Tensor.tolist = real
    assert len(reads) == 1
    model.skip_zero_weights = False
    with no_host_reads():
        model(x, (normal, reduce))
    model.skip_zero_weights = True
    with no_host_reads(), pytest.raises(HostRead):
        model(x, (normal, reduce))
    # an epoch of recorded steps holds the zeros read at its start: its forwards read nothing,
    # and queue on the device the check that the zeros are where they were
    model.held_live = HeldLive(model.per_cell_weights((normal, reduce)))
    with no_host_reads():
        model(x, (normal, reduce))
    assert not model.held_live.broken()
    normal[0, 4] = 0.0
    with no_host_reads():
        model(x, (normal, reduce))
    assert model.held_live.broken()
