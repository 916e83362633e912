"""The search loop's contract (``shared.search.loop``), on a tiny fake supernet: every moment in
its order, what each hook sees, each alpha update against a hand-written step, the step order,
and checkpoint/resume of the strategy state."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.models.supernet import Supernet
from shared.search.alpha_update import FixedAlpha, OneLevel
from shared.search.architect import Architect
from shared.search.context import EpochContext, StepContext, restore_rng
from shared.search.loop import SearchLoop

N_OPS, DIM, CLASSES = 3, 5, 4


@dataclass(frozen=True)
class TinyGenotype:
    normal: tuple[int, ...]
    reduce: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"normal": list(self.normal), "reduce": list(self.reduce)}


class TinySupernet(Supernet):
    """Three cells (normal, reduce, normal), each two edges of ``N_OPS`` candidate layers."""

    cell_types = ("normal", "reduce")

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.kinds = ("normal", "reduce", "normal")
        self.cells = nn.ModuleList(nn.ModuleList(nn.Linear(DIM, DIM) for _ in range(2 * N_OPS))
                                   for _ in self.kinds)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(DIM, CLASSES)
        self.alphas_normal = nn.Parameter(0.1 * torch.randn(2, N_OPS))
        self.alphas_reduce = nn.Parameter(0.1 * torch.randn(2, N_OPS))
        self.forwards = 0

    def arch_parameters(self):
        return [self.alphas_normal, self.alphas_reduce]

    def cell_kinds(self):
        return self.kinds

    def forward(self, x, weights=None, cell_weights=None):
        self.forwards += 1
        h = x
        for ops, w in zip(self.cells, self.per_cell_weights(weights, cell_weights)):
            first = sum(w[0, k] * torch.tanh(ops[k](h)) for k in range(N_OPS))
            h = sum(w[1, k] * torch.tanh(ops[N_OPS + k](first)) for k in range(N_OPS)) + h
        return self.head(self.drop(h))

    def genotype(self):
        n, r = self.mixing_weights()
        return TinyGenotype(tuple(n.argmax(-1).tolist()), tuple(r.argmax(-1).tolist()))


def batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, DIM, generator=g), torch.randint(0, CLASSES, (8,), generator=g))
            for _ in range(n)]


TRAIN, VALID = batches(3, 1), batches(3, 2)


def make_loop(tmp_path, alpha_update="first_order", *, model=None, epochs=1, valid=True,
              **kw) -> SearchLoop:
    torch.manual_seed(0)
    model = model if model is not None else TinySupernet()
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 4, eta_min=0.01)
    update = {"first_order": lambda: Architect(model, 3e-2),
              "second_order": lambda: Architect(model, 3e-2, unrolled=True),
              "fixed": FixedAlpha, "one_level": lambda: OneLevel(model, 3e-2)}[alpha_update]()
    return SearchLoop(model=model, optimizer=optimizer, scheduler=scheduler,
                      alpha_update=update, train_queue=TRAIN,
                      valid_queue=VALID if valid else None,
                      valid_eval_queue=VALID if valid else None, epochs=epochs,
                      device=torch.device("cpu"), logger=logging.getLogger("test_search_loop"),
                      checkpoint_path=str(tmp_path / "checkpoint.pth.tar"), progress=False,
                      **kw)


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- the moments, their order and what they see ----------------------------------------------
class Recorder:
    def __init__(self):
        self.events: list[str] = []


def recording_loop(tmp_path, step_order="alpha_first"):
    rec = Recorder()
    loop = make_loop(tmp_path, step_order=step_order, max_batches=2)
    inner = loop.alpha_update

    class SpyUpdate(Architect):
        def __init__(self):
            self.__dict__.update(inner.__dict__)

        def step_alpha(self, ctx):
            rec.events.append(f"alpha:{ctx.step}")
            super().step_alpha(ctx)

    loop.alpha_update = SpyUpdate()

    def perturbation(ctx):
        rec.events.append(f"perturbation:{ctx.step}")
        return ctx.weights

    loop.perturbation = perturbation
    loop.weight_grad_hooks = [lambda ctx: rec.events.append(f"weight_grad:{ctx.step}")]
    loop.step_end_hooks = [lambda ctx: rec.events.append(f"step_end:{ctx.step}")]
    loop.epoch_start_hooks = [lambda ctx: rec.events.append(f"epoch_start:{ctx.epoch}")]
    loop.epoch_end_hooks = [lambda ctx: rec.events.append(f"epoch_end:{ctx.epoch}")]

    def select(model):
        rec.events.append("select")
        return model.genotype()

    loop.select = select
    return loop, rec


def test_every_moment_in_order_alpha_first(tmp_path) -> None:
    loop, rec = recording_loop(tmp_path)
    loop.run()
    step = ["alpha:{s}", "perturbation:{s}", "weight_grad:{s}", "step_end:{s}"]
    assert rec.events == (["epoch_start:0", "select"]
                          + [e.format(s=s) for s in (0, 1) for e in step]
                          + ["select", "epoch_end:0", "select"])


def test_every_moment_in_order_weights_first(tmp_path) -> None:
    loop, rec = recording_loop(tmp_path, step_order="weights_first")
    loop.run()
    step = ["perturbation:{s}", "weight_grad:{s}", "alpha:{s}", "step_end:{s}"]
    assert rec.events[2:-3] == [e.format(s=s) for s in (0, 1) for e in step]


def test_what_the_step_hooks_see(tmp_path) -> None:
    loop = make_loop(tmp_path, "fixed", max_batches=2)
    seen: list[dict] = []
    bumped = {}

    def perturbation(ctx: StepContext):
        bumped[ctx.step] = tuple(w + 0.01 for w in ctx.weights)
        return bumped[ctx.step]

    def weight_grad(ctx: StepContext):
        grads = {n: p.grad.clone() for n, p in ctx.model.named_weight_parameters()}
        seen.append({"ctx": ctx, "grads": grads, "weights": ctx.weights})

    loop.perturbation = perturbation
    loop.weight_grad_hooks = [weight_grad]
    model = loop.model
    before = params(model)
    loop.train_epoch(0, 0.1)
    first = seen[0]
    ctx = first["ctx"]
    assert ctx.loop is loop and ctx.model is model and (ctx.epoch, ctx.step) == (0, 0)
    assert torch.equal(ctx.x, TRAIN[0][0]) and torch.equal(ctx.y, TRAIN[0][1])
    assert torch.equal(ctx.x_val, VALID[0][0]) and torch.equal(ctx.y_val, VALID[0][1])
    assert ctx.lr == 0.1 and not ctx.update_alpha
    assert first["weights"] is bumped[0]  # the forward used what the perturbation returned
    # loss and logits are the step's, computed before any update, and the grads unclipped
    reference = TinySupernet()
    reference.load_state_dict({**model.state_dict(), **before})
    logits = reference(TRAIN[0][0], bumped[0])
    assert torch.equal(ctx.logits, logits)
    assert torch.equal(ctx.loss, F.cross_entropy(logits, TRAIN[0][1]))
    F.cross_entropy(logits, TRAIN[0][1]).backward()
    for n, p in reference.named_weight_parameters():
        assert torch.equal(first["grads"][n], p.grad), n
    assert ctx.cell_weights is None and ctx.rng_state is None  # nobody asked for them


def test_what_the_epoch_hooks_see(tmp_path) -> None:
    loop = make_loop(tmp_path, epochs=2)
    starts, ends = [], []

    def end(ctx: EpochContext):
        ends.append((ctx.epoch, ctx.lr, ctx.result))
        ctx.entry["extra_number"] = 1.5 * ctx.epoch

    loop.epoch_start_hooks = [lambda ctx: starts.append((ctx.epoch, ctx.lr, ctx.result))]
    loop.epoch_end_hooks = [end]
    loop.run()
    assert [s[0] for s in starts] == [0, 1] and all(s[2] is None for s in starts)
    assert [e[0] for e in ends] == [0, 1]
    assert starts[1][1] == ends[1][1] == loop.history[1]["lr"] < starts[0][1]
    assert ends[1][2].genotype.to_dict() == loop.history[1]["genotype"]
    assert [h["extra_number"] for h in loop.history] == [0.0, 1.5]


def test_mixing_transform_reaches_alpha_step_weight_step_and_genotype(tmp_path) -> None:
    loop = make_loop(tmp_path, max_batches=1)
    model = loop.model
    fixed = torch.tensor([0.0, 0.0, 1.0])

    def transform(weights):
        normal, reduce = weights
        return torch.cat([fixed[None], normal[1:]]), reduce

    model.mixing_transform = transform
    seen = []
    # in the weight step, alpha still holds the gradient of the alpha step just taken
    loop.weight_grad_hooks = [lambda ctx: seen.append((ctx.weights,
                                                       model.alphas_normal.grad.clone()))]
    loop.run()
    weights, alpha_grad = seen[0]
    assert torch.equal(weights[0][0], fixed)
    assert model.genotype().normal[0] == 2
    # the alpha step saw the transform too: no gradient reaches the fixed row
    assert torch.equal(alpha_grad[0], torch.zeros(N_OPS)) and alpha_grad[1].abs().sum() > 0


# -- the alpha updates against hand-written steps --------------------------------------------
def reference_optimizers(model):
    """The loop's optimisers, as make_loop builds them: SGD on the weights, DARTS' Adam on
    alpha."""
    return (torch.optim.SGD(model.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4),
            torch.optim.Adam(model.arch_parameters(), lr=3e-2, betas=(0.5, 0.999),
                             weight_decay=1e-3))


def reference_weight_step(model, opt, x, y, weights, clip=5.0):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x, weights), y).backward()
    torch.nn.utils.clip_grad_norm_(model.weight_parameters(), clip)
    opt.step()


def test_bilevel_first_order_step_is_darts(tmp_path) -> None:
    loop = make_loop(tmp_path, max_batches=1)
    ref = copy.deepcopy(loop.model)
    ref_opt, ref_adam = reference_optimizers(ref)
    loop.train_epoch(0, 0.1)
    (x, y), (xv, yv) = TRAIN[0], VALID[0]
    ref_adam.zero_grad()
    F.cross_entropy(ref(xv), yv).backward()  # alpha first, on the validation batch
    ref_adam.step()
    reference_weight_step(ref, ref_opt, x, y, tuple(w.detach() for w in ref.mixing_weights()))
    assert_same(params(loop.model), params(ref))


def test_weights_first_order_steps_alpha_on_the_updated_weights(tmp_path) -> None:
    loop = make_loop(tmp_path, max_batches=1, step_order="weights_first")
    ref = copy.deepcopy(loop.model)
    ref_opt, ref_adam = reference_optimizers(ref)
    loop.train_epoch(0, 0.1)
    (x, y), (xv, yv) = TRAIN[0], VALID[0]
    reference_weight_step(ref, ref_opt, x, y, tuple(w.detach() for w in ref.mixing_weights()))
    ref_adam.zero_grad()
    F.cross_entropy(ref(xv), yv).backward()
    ref_adam.step()
    assert_same(params(loop.model), params(ref))


def test_one_level_steps_both_from_one_training_backward(tmp_path) -> None:
    loop = make_loop(tmp_path, "one_level", max_batches=2, valid=False)
    ref = copy.deepcopy(loop.model)
    ref_opt, ref_adam = reference_optimizers(ref)
    forwards = []
    loop.weight_grad_hooks = [lambda ctx: forwards.append((ctx.x_val, ctx.model.forwards))]
    loop.train_epoch(0, 0.1)
    for x, y in TRAIN[:2]:
        ref_opt.zero_grad(set_to_none=True)
        ref_adam.zero_grad(set_to_none=True)
        F.cross_entropy(ref(x), y).backward()  # alpha in the graph: one backward for both
        torch.nn.utils.clip_grad_norm_(ref.weight_parameters(), 5.0)  # weights only
        ref_opt.step()
        ref_adam.step()
    assert_same(params(loop.model), params(ref))
    assert [f[0] for f in forwards] == [None, None]  # no validation batch
    assert [f[1] for f in forwards] == [1, 2]  # one forward per step


def test_one_level_without_a_validation_split_skips_validation(tmp_path, caplog) -> None:
    loop = make_loop(tmp_path, "one_level", valid=False, epochs=1)
    with caplog.at_level(logging.INFO, logger="test_search_loop"):
        loop.run()
    assert loop.history[0]["valid_acc"] is None and loop.history[0]["valid_loss"] is None
    assert "valid_acc skipped (no validation split)" in caplog.text


def test_fixed_alpha_and_warm_start_never_move_alpha(tmp_path) -> None:
    for loop in (make_loop(tmp_path, "fixed", epochs=2),
                 make_loop(tmp_path, "first_order", epochs=2, warm_start_epochs=2),
                 make_loop(tmp_path, "one_level", epochs=2, warm_start_epochs=2, valid=False)):
        before = [a.detach().clone() for a in loop.model.arch_parameters()]
        loop.run()
        assert all(torch.equal(a, b) for a, b in zip(before, loop.model.arch_parameters()))
    warm = make_loop(tmp_path, "first_order", epochs=2, warm_start_epochs=1)
    seen = []
    warm.step_end_hooks = [lambda ctx: seen.append((ctx.epoch, ctx.update_alpha))]
    warm.run()
    assert sorted(set(seen)) == [(0, False), (1, True)]


def test_second_order_differs_from_first_order(tmp_path) -> None:
    first, second = make_loop(tmp_path, max_batches=1), make_loop(tmp_path, "second_order",
                                                                   max_batches=1)
    assert (first.alpha_update.name, second.alpha_update.name) == ("first_order",
                                                                  "second_order")
    calls = []
    unrolled = second.alpha_update.unrolled_gradient
    second.alpha_update.unrolled_gradient = lambda *a: calls.append(a) or unrolled(*a)
    first.train_epoch(0, 0.1)
    second.train_epoch(0, 0.1)
    assert len(calls) == 1 and calls[0][4] == 0.1  # eta = the step's lr
    assert not torch.equal(first.model.alphas_normal, second.model.alphas_normal)


def test_refusals(tmp_path) -> None:
    with pytest.raises(ValueError, match="step_order"):
        make_loop(tmp_path, step_order="sideways")
    with pytest.raises(ValueError, match="bilevel"):
        make_loop(tmp_path, "one_level", valid=False, perturbation=lambda ctx: ctx.weights)
    with pytest.raises(ValueError, match="validation queue"):
        make_loop(tmp_path, "first_order", valid=False)


# -- what a hook may ask for -----------------------------------------------------------------
def test_cell_grads_are_each_cells_gradient_and_change_nothing(tmp_path) -> None:
    plain, probed = make_loop(tmp_path, max_batches=1), make_loop(tmp_path, max_batches=1)
    got = []

    class Probe:
        needs_cell_grads = True

        def __call__(self, ctx):
            got.append(ctx)

    probed.weight_grad_hooks = [Probe()]
    start = params(probed.model)
    plain.train_epoch(0, 0.1)
    probed.train_epoch(0, 0.1)
    assert_same(params(plain.model), params(probed.model))  # the same step, bit for bit
    ctx = got[0]
    assert len(ctx.cell_weights) == 3
    # each leaf's grad is dL/dA_l of that cell, at the weights after the alpha step
    ref = TinySupernet()
    ref.load_state_dict({**probed.model.state_dict(), **start})
    ref.alphas_normal.data, ref.alphas_reduce.data = (w.detach() for w in
                                                      (probed.model.alphas_normal,
                                                       probed.model.alphas_reduce))
    leaves = [w.detach().clone().requires_grad_() for w in ref.expand_weights(ctx.weights)]
    grads = torch.autograd.grad(F.cross_entropy(ref(ctx.x, cell_weights=leaves), ctx.y), leaves)
    for leaf, g in zip(ctx.cell_weights, grads):
        assert torch.allclose(leaf.grad, g, rtol=1e-6, atol=1e-9)
    assert not torch.allclose(ctx.cell_weights[0].grad, ctx.cell_weights[2].grad)


def test_rng_state_replays_the_forwards_randomness(tmp_path) -> None:
    loop = make_loop(tmp_path, model=TinySupernet(dropout=0.5), max_batches=1)
    replayed = []

    class Replay:
        needs_rng_state = True

        def __call__(self, ctx):
            restore_rng(ctx.rng_state, torch.device("cpu"))
            replayed.append(torch.equal(ctx.model(ctx.x, ctx.weights), ctx.logits))
            assert not torch.equal(ctx.model(ctx.x, ctx.weights), ctx.logits)  # fresh masks

    loop.weight_grad_hooks = [Replay()]
    loop.train_epoch(0, 0.1)
    assert replayed == [True]


# -- checkpoints -----------------------------------------------------------------------------
@pytest.mark.parametrize("update", ["first_order", "second_order", "one_level"])
def test_resume_restores_the_strategy_state_bit_identically(tmp_path, update) -> None:
    valid = update != "one_level"
    whole = make_loop(tmp_path / "whole", update, epochs=3, valid=valid)
    (tmp_path / "whole").mkdir()
    whole.run()

    (tmp_path / "part").mkdir()
    part = make_loop(tmp_path / "part", update, epochs=3, valid=valid)
    part.epochs = 1
    part.run()
    state = torch.load(part.checkpoint_path, weights_only=True)
    assert state["arch_optimizer"]["state"]  # Adam's moments are in the checkpoint
    torch.manual_seed(123)  # a fresh process: nothing left of the first one's RNG
    resumed = make_loop(tmp_path / "part", update, epochs=3, valid=valid)
    resumed.load_state_dict(state)
    assert resumed.start_epoch == 1
    resumed.run()
    assert_same(params(whole.model), params(resumed.model))
    a, b = whole.alpha_update.optimizer.state_dict(), resumed.alpha_update.optimizer.state_dict()
    for k in a["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a["state"][k][name], b["state"][k][name])
    assert whole.history == resumed.history


def test_fixed_alpha_checkpoints_no_arch_optimizer(tmp_path) -> None:
    loop = make_loop(tmp_path, "fixed")
    loop.run()
    assert torch.load(loop.checkpoint_path, weights_only=True)["arch_optimizer"] is None


def test_the_recurrent_loop_reuses_the_step() -> None:
    from shared.search.rnn_loop import RNNSearchLoop

    for moment in ("step", "alpha_step", "weight_step", "mixing_weights_for_weight_step",
                   "train_epoch", "run"):
        assert getattr(RNNSearchLoop, moment) is getattr(SearchLoop, moment), moment


def test_a_one_level_search_without_validation_split_runs_end_to_end(tmp_path) -> None:
    """Composed from a config, as a door would: one-level alpha, every training image used
    for training (train_portion 1), the outputs written without validation numbers."""
    import json

    from shared.search.cnn_search import CNNSearchConfig, run_cnn_search

    cfg = CNNSearchConfig(dataset="digits", epochs=2, layers=3, init_channels=4, batch_size=128,
                          gpu=-1, search_space="s3", progress=False, alpha_update="one_level",
                          train_portion=1.0, debug=True)
    run_cnn_search(cfg, str(tmp_path))
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["valid_acc"] for h in history] == [None, None]
    assert history[0]["alphas"] != history[1]["alphas"]  # alpha moved, one-level
    assert (tmp_path / "accuracy.png").is_file() and (tmp_path / "genotype.json").is_file()
    with pytest.raises(Exception, match="unrolled"):
        run_cnn_search(CNNSearchConfig(dataset="digits", gpu=-1, alpha_update="one_level",
                                       unrolled=True, train_portion=1.0), str(tmp_path / "x"))


def test_under_amp_the_perturbation_runs_as_the_step_does(tmp_path) -> None:
    """``--amp``: SDARTS-ADV's attack forwards run under the step's autocast, as its alpha
    step's and weight step's do."""
    from shared.runtime import Precision
    from shared.search.perturbation import make_perturbation

    torch.manual_seed(0)
    model, seen = TinySupernet(), []
    forward = model.forward

    def recording(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return forward(*args, **kwargs)
    model.forward = recording
    perturbation = make_perturbation("pgd_linf", 0.3, 1)
    perturbation.steps = 2
    loop = make_loop(tmp_path, model=model, perturbation=perturbation,
                     precision=Precision(amp=True))
    loop.step(next(loop.batches(0, 0.1, True)))
    # the alpha step, the loss before the attack, 2 attack steps, the loss after, the weights'
    assert seen == [True] * 6
