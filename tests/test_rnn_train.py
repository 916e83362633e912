"""The training protocol of a found recurrent cell (shared/rnn_evaluation.py, DARTS rnn/train.py):
variable BPTT, slices of the batch, NT-ASGD with averaged-weight validation, rollback on a
non-finite loss."""
from __future__ import annotations

import collections
import math
import os

import pytest
import torch

from shared import rnn_evaluation as RE
from shared.errors import UserError
from shared.logs import close_logger, setup_logger
from shared.rnn_genotype import load_rnn_genotype

TINY = dict(data="embedded", emsize=8, nhid=8, nhidlast=8, batch_size=64, bptt=20, gpu=-1,
            progress=False, log_interval=1000, arch="DARTS_V2")


def make_trainer(tmp_path, **kw) -> RE.RNNTrainer:
    cfg = RE.RNNTrainConfig(**{**TINY, **kw})
    logger = setup_logger(str(tmp_path))
    trainer = RE.build_trainer(cfg, load_rnn_genotype(cfg.arch), str(tmp_path), logger)
    return trainer


@pytest.fixture
def trainer(tmp_path):
    t = make_trainer(tmp_path, epochs=2)
    yield t
    close_logger(t.logger)


def test_window_lengths_follow_the_original_distribution():
    g = torch.Generator().manual_seed(0)
    lengths = [RE.window_length(35, 20, g) for _ in range(20000)]
    assert min(lengths) >= 5 and max(lengths) <= 55
    assert 55 in lengths  # the cap bptt + max_seq_len_delta is reached (35 + 4 sigma)
    short = sum(1 for n in lengths if n < 23) / len(lengths)  # mostly the bptt/2 draws
    assert 0.04 < short < 0.07
    mean = sum(lengths) / len(lengths)
    # 0.95 * E[int(N(35, 5))] + 0.05 * E[int(N(17.5, 5))] ~ 0.95 * 34.5 + 0.05 * 17.0
    assert abs(mean - (0.95 * 34.5 + 0.05 * 17.0)) < 0.15
    g2 = torch.Generator().manual_seed(0)
    assert [RE.window_length(35, 20, g2) for _ in range(100)] == lengths[:100]


def test_lr_is_scaled_by_the_window_length_and_restored(trainer, monkeypatch):
    seen = []
    step = trainer.optimizer.step

    def spy(*a, **kw):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*a, **kw)

    monkeypatch.setattr(trainer.optimizer, "step", spy)
    g = torch.Generator().manual_seed(trainer.cfg.seed)
    trainer.train_epoch(1)
    lengths = []
    i = 0
    while i < trainer.train_data.size(0) - 2:  # replay the epoch's draws
        n = RE.window_length(trainer.cfg.bptt, trainer.cfg.max_seq_len_delta, g)
        lengths.append(n)
        i += n
    assert seen == pytest.approx([20.0 * n / 20 for n in lengths])
    assert trainer.optimizer.param_groups[0]["lr"] == 20.0


def test_slices_of_the_batch_give_the_whole_batch_gradient(tmp_path):
    """--small_batch_size: the sliced batch's accumulated gradient is the whole batch's
    (dropout off, so both see the same function; both start from the seed's weights)."""
    grads = []
    for small in (-1, 16):
        t = make_trainer(tmp_path / str(small), small_batch_size=small, dropout=0, dropouth=0,
                         dropoutx=0, dropouti=0, dropoute=0)
        steps = []
        t.optimizer.step = lambda t=t, steps=steps: steps.append(
            [p.grad.clone() for p in t.model.parameters()])
        t.train_data = t.train_data[:60]
        t.train_epoch(1)
        grads.append(steps)
    assert len(grads[0]) == len(grads[1]) > 1
    for a, b in zip(grads[0], grads[1]):
        for ga, gb in zip(a, b):
            torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


def test_non_monotone_trigger_switches_to_asgd(trainer):
    """Switch when more than nonmono losses are recorded and this one is worse than the best
    of all but the last nonmono (AWD-LSTM's NT-ASGD); never back."""
    trainer.cfg.nonmono = 2
    losses = iter([5.0, 4.0, 4.5, 4.6, 4.2])  # epoch 5: 4.2 > min(5.0, 4.0) -> switch

    def fake_eval(model, data, bptt, max_batches=None):
        v = next(losses)
        return math.exp(v), v

    import shared.rnn_evaluation as mod
    orig = mod.evaluate_perplexity
    mod.evaluate_perplexity = fake_eval
    try:
        results = [trainer.validate_and_save(e) for e in range(1, 6)]
    finally:
        mod.evaluate_perplexity = orig
    assert [r[2] for r in results] == [False, False, False, False, True]
    assert [r[1] for r in results] == [True, True, False, False, False]
    assert isinstance(trainer.optimizer, torch.optim.ASGD)
    group = trainer.optimizer.param_groups[0]
    assert (group["t0"], group["lambd"], group["lr"], group["weight_decay"]) == \
        (0, 0.0, 20.0, 8e-7)
    assert trainer.best_val_loss == [5.0, 4.0, 4.5, 4.6, 4.2]
    assert trainer.stored_loss == 4.0


def test_asgd_validates_and_saves_the_averaged_weights(trainer):
    trainer.optimizer = RE.make_optimizer("asgd", trainer.model, trainer.cfg)
    trainer.train_data = trainer.train_data[:100]
    iterates = []
    step = trainer.optimizer.step

    def record():
        step()
        iterates.append([p.detach().clone() for p in trainer.model.parameters()])

    trainer.optimizer.step = record
    trainer.train_epoch(1)
    assert len(iterates) >= 3
    current = [p.detach().clone() for p in trainer.model.parameters()]
    # torch's ASGD with t0 = 0: ax copies the first two iterates, then averages from the 2nd
    expected = [torch.stack([it[k] for it in iterates[1:]]).mean(0)
                for k in range(len(current))]
    with trainer.averaged_weights():
        for p, e in zip(trainer.model.parameters(), expected):
            torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-6)
        averaged_ppl = RE.evaluate_perplexity(trainer.model, trainer.valid_data, 20)[1]
    for p, c in zip(trainer.model.parameters(), current):  # put back
        assert torch.equal(p.detach(), c)
    val_loss, saved, switched = trainer.validate_and_save(1)
    assert (val_loss, saved, switched) == (averaged_ppl, True, False)
    best = torch.load(trainer.best_path, weights_only=True)
    assert best["averaged"] and best["optimizer_kind"] == "asgd"
    assert torch.equal(best["state_dict"]["rnns.0._W0"],
                       trainer.optimizer.state[trainer.model.rnns[0]._W0]["ax"])


def poison_at(monkeypatch, calls: set[int]):
    """Make the weights non-finite just before the listed training windows (counted from 1):
    the loss of those windows is NaN, as after a blown-up step."""
    real = RE.regularised_loss
    count = [0]

    def poisoned(model, *a, **kw):
        count[0] += 1
        if count[0] in calls:
            with torch.no_grad():
                model.rnns[0]._W0[0, 0] = float("nan")
        return real(model, *a, **kw)

    monkeypatch.setattr(RE, "regularised_loss", poisoned)
    return count


def poison_in_epoch(monkeypatch, trainer, epoch: int, window: int) -> None:
    """:func:`poison_at` the ``window``-th training window of ``epoch`` (counted from 1): an
    epoch's number of windows depends on the corpus, whose embedded text varies with Python's
    version (``shared.data.text.embedded_corpus``)."""
    real, seen = RE.regularised_loss, collections.Counter()

    def poisoned(model, *a, **kw):
        now = trainer.epoch + 1  # the epoch under way
        seen[now] += 1
        if (now, seen[now]) == (epoch, window):
            with torch.no_grad():
                model.rnns[0]._W0[0, 0] = float("nan")
        return real(model, *a, **kw)

    monkeypatch.setattr(RE, "regularised_loss", poisoned)


def test_a_nan_rolls_back_to_the_best_model_and_training_goes_on(tmp_path, monkeypatch):
    t = make_trainer(tmp_path, epochs=3)
    poison_in_epoch(monkeypatch, t, epoch=2, window=5)
    t.run()
    assert len(t.rollbacks) == 1
    rb = t.rollbacks[0]
    assert (rb["epoch"], rb["to_epoch"], rb["what"]) == (2, 1, "training loss")
    assert [h["epoch"] for h in t.history] == [1, 2, 3]
    assert all(math.isfinite(h["train_loss"]) for h in t.history)
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    log = open(tmp_path / "log.txt").read()
    assert "non-finite training loss at epoch 2" in log
    assert "rolling back to the best model (epoch 1" in log
    assert t.consecutive_rollbacks == 0
    state = t.state_dict()
    assert state["rollbacks"] == t.rollbacks
    close_logger(t.logger)


def test_a_nan_before_any_checkpoint_is_one_clear_error(tmp_path, monkeypatch):
    t = make_trainer(tmp_path, epochs=2)
    poison_at(monkeypatch, {3})
    with pytest.raises(UserError, match="before any epoch was validated.*lower --lr"):
        t.run()
    close_logger(t.logger)


def test_divergence_that_keeps_coming_back_stops(tmp_path, monkeypatch):
    t = make_trainer(tmp_path, epochs=3)
    windows = t.train_data.size(0) // 20
    poison_at(monkeypatch, set(range(windows + 10, windows + 300)))  # each window in epoch 2
    with pytest.raises(UserError, match=f"{RE.MAX_ROLLBACKS} times in a row"):
        t.run()
    assert len(t.rollbacks) == RE.MAX_ROLLBACKS
    assert os.path.isfile(t.best_path)
    close_logger(t.logger)


def test_test_py_names_its_own_flag_and_a_search_checkpoint(tmp_path):
    """RNN test.py has no --resume: a file it cannot use is named by --model_path, and a
    search checkpoint is called one (train its genotype first)."""
    from tests.test_search_loop import make_loop

    corrupt = tmp_path / "model.pt"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError) as info:
        RE.load_best_model(str(corrupt), torch.device("cpu"))
    message = str(info.value)
    assert message.startswith("--model_path: expected a checkpoint written by this project")
    assert "--resume" not in message and "weights_only" not in message, message
    loop = make_loop(tmp_path)
    loop.save(1)
    with pytest.raises(UserError, match=r"is not a model.pt written by sdarts/sota/rnn/train.py "
                                        r"\(that is a search \(supernet\) checkpoint"):
        RE.load_best_model(loop.checkpoint_path, torch.device("cpu"))


def test_bad_settings_are_refused():
    for kw, message in [({"small_batch_size": 24}, "must divide --batch_size"),
                        ({"emsize": 16}, "--emsize = --nhid = --nhidlast"),
                        ({"dropoute": 1.0}, "--dropoute must be in"),
                        ({"lr": 0}, "--lr must be > 0"),
                        ({"bptt": 0}, "--bptt must be >= 1")]:
        with pytest.raises(UserError, match=message):
            RE.validate_config(RE.RNNTrainConfig(**{**TINY, **kw}))


def test_a_resume_on_another_vocabulary_writes_nothing(tmp_path):
    cfg = RE.RNNTrainConfig(**TINY)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match="vocabulary differs"):
        RE.run_rnn_training(cfg, load_rnn_genotype("DARTS"), str(run),
                            resume_state={"vocabulary": "another corpus"})
    assert list(run.iterdir()) == []  # not even a log line
