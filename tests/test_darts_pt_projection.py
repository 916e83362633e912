"""DARTS-PT's projection: op and topology selection, the schedules, the projected weights,
fixed alpha (Blank-PT), SDARTS under projection."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from darts_pt.projection import (
    ProjectionState,
    darts_nid2eids,
    evaluate,
    project_edge,
    project_op,
    projected_genotype,
    projection_schedule,
)
from darts_pt.tuning import ProjectedPerturbation, ProjectionConfig, tuning_loop
from shared.errors import UserError
from shared.runtime import Precision
from shared.search.perturbation import LinfPGD, RandomSmoothing
from shared.spaces import NUM_EDGES, get_space
from tests.conftest import perturb as apply_perturbation

LOG = logging.getLogger("test-projection")


# -- a supernet where exactly one op of one edge carries the signal ----------------------------
class SignalNet(nn.Module):
    """logits = sum_e sum_o w[e, o] * op_eo(x); op (edge 1, op 2) is the identity on the
    one-hot-ish input, every other op is a fixed random map (noise for the classifier)."""

    def __init__(self, edges: int = 3, ops: int = 3, classes: int = 4, signal=(1, 2)) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.maps = nn.Parameter(torch.randn(edges, ops, classes, classes, generator=g) * 0.3,
                                 requires_grad=False)
        with torch.no_grad():
            self.maps[signal] = torch.eye(classes) * 5
        self.alpha = nn.Parameter(torch.zeros(edges, ops))
        self.mixing_transform = None

    def mixing_weights(self):
        w = (F.softmax(self.alpha, dim=-1),)
        return self.mixing_transform(w) if self.mixing_transform else w

    def forward(self, x, weights=None):
        (w,) = weights if weights is not None else self.mixing_weights()
        return torch.einsum("eo,eoij,nj->ni", w, self.maps, x)

    def loss(self, x, y, weights=None):  # the supernets' training loss (SDARTS' attack uses it)
        return F.cross_entropy(self(x, weights), y)


def signal_data(n: int = 256, classes: int = 4):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(classes, (n,), generator=g)
    x = F.one_hot(y, classes).float() + 0.3 * torch.randn(n, classes, generator=g)
    return [(x[i:i + 64], y[i:i + 64]) for i in range(0, n, 64)]


@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_project_op_keeps_the_op_that_carries_the_signal(crit: str) -> None:
    model, queue = SignalNet(), signal_data()
    state = ProjectionState(("cell",), 3)
    model.mixing_transform = state.apply
    score = lambda w: evaluate(model, queue, w, torch.device("cpu"), Precision())  # noqa: E731
    rng = torch.Generator().manual_seed(0)
    chosen = {}
    while state.undecided_edges("cell"):
        base = tuple(w.detach() for w in model.mixing_weights())
        eid, opid = project_op(state, "cell", crit, base, score, rng, LOG)
        chosen[eid] = opid
    assert chosen[1] == 2
    assert sorted(chosen) == [0, 1, 2]
    # every row of the projected weights is now one-hot at the chosen op
    (w,) = model.mixing_weights()
    assert torch.equal(w, F.one_hot(torch.tensor([chosen[e] for e in range(3)]), 3).float())


def test_project_edge_keeps_two_inputs_per_node_and_the_edges_that_matter() -> None:
    """A DARTS-like cell: node 1 (edges 2, 3, 4) where only edge 3 carries signal."""
    model = SignalNet(edges=NUM_EDGES, ops=2, signal=(3, 1))
    queue = signal_data()
    state = ProjectionState(("cell",), NUM_EDGES, darts_nid2eids())
    model.mixing_transform = state.apply
    for e in range(NUM_EDGES):
        state.project_op("cell", e, 1)
    score = lambda w: evaluate(model, queue, w, torch.device("cpu"), Precision())  # noqa: E731
    rng = torch.Generator().manual_seed(0)
    while state.undecided_nodes("cell"):
        base = tuple(w.detach() for w in model.mixing_weights())
        project_edge(state, "cell", "acc", base, score, rng, LOG)
    kept = state.selected_eids["cell"]
    assert {n: len(e) for n, e in kept.items()} == {0: 2, 1: 2, 2: 2}
    assert 3 in kept[0]
    (w,) = model.mixing_weights()
    dropped = state.dropped_edges("cell")
    assert len(dropped) == 1 + 2 + 3
    for e in range(NUM_EDGES):
        assert w[e].sum().item() == (0.0 if e in dropped else 1.0)


def test_schedules_match_the_released_code() -> None:
    tune, events = projection_schedule(NUM_EDGES, 3, 5)
    assert tune == 81
    assert sorted(events) == list(range(0, 81, 5))
    assert [events[t] for t in sorted(events)] == ["op"] * 14 + ["edge"] * 3
    tune, events = projection_schedule(6, 0, 5)
    assert tune == 25 and sorted(events) == [0, 5, 10, 15, 20, 24]
    assert set(events.values()) == {"op"}
    assert projection_schedule(NUM_EDGES, 3, 1)[0] == 17
    with pytest.raises(UserError, match="proj_intv"):
        projection_schedule(6, 0, 1)  # 5 events for 6 edges in the released formula


def test_projected_weights_are_constants_and_undecided_rows_still_learn() -> None:
    state = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
    state.project_op("normal", 4, 2)
    state.project_op("reduce", 0, 1)
    alpha = [torch.randn(NUM_EDGES, 7, requires_grad=True) for _ in range(2)]
    w = state.apply(tuple(F.softmax(a, -1) for a in alpha))
    assert torch.equal(w[0][4], F.one_hot(torch.tensor(2), 7).float())
    assert torch.equal(w[1][0], F.one_hot(torch.tensor(1), 7).float())
    (w[0] * torch.randn_like(w[0])).sum().backward()
    assert torch.all(alpha[0].grad[4] == 0) and alpha[0].grad[5].abs().sum() > 0
    # a round trip through a checkpoint keeps the decisions
    other = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
    other.load_state_dict(state.state_dict())
    assert other.proj_ops == state.proj_ops


def test_projected_genotype_reads_the_decisions() -> None:
    space = get_space("s3")  # none, skip_connect, sep_conv_3x3: 'none' can be chosen
    state = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
    for cell in state.cell_types:
        for e in range(NUM_EDGES):
            state.project_op(cell, e, e % 3)
        for nid, eids in darts_nid2eids().items():
            state.project_edge(cell, nid, eids[-2:])
    g = projected_genotype(state, space)
    assert g.normal[:2] == (("none", 0), ("skip_connect", 1))
    assert g.normal[2:4] == (("none", 1), ("skip_connect", 2))  # edges 3, 4 of node 1
    assert len(g.normal) == len(g.reduce) == 8 and g.normal_concat == (2, 3, 4, 5)


@pytest.mark.parametrize("inner", [RandomSmoothing(0.3, 10, ramp=False),
                                   LinfPGD(0.3, 10, ramp=False, steps=2)])
def test_sdarts_perturbation_cannot_move_projected_rows(inner) -> None:
    torch.manual_seed(0)
    model, queue = SignalNet(edges=3, ops=3), signal_data()
    state = ProjectionState(("cell",), 3)
    state.project_op("cell", 0, 1)
    model.mixing_transform = state.apply
    perturb = ProjectedPerturbation(inner, state)
    assert perturb.epsilon(0) == perturb.epsilon(9) == 0.3  # DARTS-PT tunes at constant eps
    x, y = queue[0]
    (w,) = apply_perturbation(perturb, model, model.mixing_weights(), x, y, epoch=0)
    assert torch.equal(w[0], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(w.sum(-1), torch.ones(3))


# -- the engine's tuning loop on the DARTS supernet --------------------------------------------
def _digits_search(tmp_path, fixed_alpha: bool):
    from shared.logs import setup_logger
    from shared.search.cnn_search import CNNSearchConfig, build_cnn_search

    cfg = CNNSearchConfig(dataset="digits", epochs=1, layers=3, init_channels=4, batch_size=64,
                          gpu=-1, search_space="s2", progress=False, seed=0,
                          alpha_update="fixed" if fixed_alpha else "bilevel")
    logger = setup_logger(str(tmp_path), "log.txt", name="test-pt")
    return build_cnn_search(cfg, str(tmp_path), logger, max_batches=1)


def test_blank_keeps_alpha_bit_identical_through_supernet_and_tuning(tmp_path) -> None:
    search = _digits_search(tmp_path, fixed_alpha=True)
    before = [a.detach().clone() for a in search.model.arch_parameters()]
    search.loop.run()
    state = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
    tune = tuning_loop(search.loop, state, ProjectionConfig(proj_intv=1, crit={
        "normal": "acc", "reduce": "loss"}, fast=True, seed=0), str(tmp_path / "proj"),
        batch_size=64)
    tune.epochs = 3  # three projection events are enough to check alpha is never stepped
    tune.run()
    after = search.model.arch_parameters()
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert sum(o >= 0 for o in state.proj_ops["normal"]) == 3
    assert (tmp_path / "proj" / "checkpoint_0.pth.tar").is_file()
    assert (tmp_path / "proj" / "checkpoint.pth.tar").is_file()


def test_darts_proj_keeps_training_alpha_during_tuning(tmp_path) -> None:
    search = _digits_search(tmp_path, fixed_alpha=False)
    search.loop.run()
    before = [a.detach().clone() for a in search.model.arch_parameters()]
    state = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
    tune = tuning_loop(search.loop, state, ProjectionConfig(
        proj_intv=1, crit={"normal": "acc", "reduce": "acc"}, fast=True, seed=0),
        str(tmp_path / "proj"), batch_size=64)
    tune.epochs = 1
    tune.run()
    assert not torch.equal(before[0], search.model.arch_parameters()[0])
    assert tune.optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)  # lr / 10, constant


def _tuned(tmp_path, capture: str) -> tuple[dict, dict, str]:
    """DARTS-PT's tuning (skipping candidates at weight 0) from a fresh supernet, 2 epochs of 7
    steps, each after a projection (scored on one batch), recorded (``capture``) or not."""
    from shared.capture import make_capturable
    from shared.logs import setup_logger
    from shared.search.cnn_search import CNNSearchConfig, build_cnn_search

    cfg = CNNSearchConfig(dataset="digits", epochs=1, layers=3, init_channels=4, batch_size=128,
                          gpu=-1, search_space="s2", progress=False, seed=0,
                          skip_zero_weights=True, step_capture=capture, data_on_device=True)
    out = tmp_path / capture
    search = build_cnn_search(cfg, str(out), setup_logger(str(out), "log.txt",
                                                          name=f"test-pt-{capture}"))
    make_capturable(search.loop.alpha_update.optimizer)  # as a recording makes it, both sides
    state = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
    tune = tuning_loop(search.loop, state, ProjectionConfig(
        proj_intv=1, crit={"normal": "acc", "reduce": "loss"}, seed=0, fast=True),
        str(out / "proj"), batch_size=128)
    tune.epochs, tune.max_batches = 2, None  # --fast's one-batch scoring, whole epochs
    tune.run()
    return tune.model.state_dict(), state.state_dict(), (out / "log.txt").read_text()


def test_recorded_tuning_equals_the_eager_one(tmp_path) -> None:
    """``--step_capture`` in the projection phase (the CPU's emulation of a CUDA graph): each
    tuning epoch recorded after its projection, with the zeros of the projected rows held
    (``shared.models.live``), gives the eager tuning's weights, alpha, BN statistics and
    decisions bit for bit (second order: ``tests/test_step_capture.py``)."""
    eager_state, eager_proj, _ = _tuned(tmp_path, "off")
    state, proj, log = _tuned(tmp_path, "emulate")
    assert proj == eager_proj and sum(o >= 0 for o in proj["proj_ops"]["normal"]) == 2
    for key, value in eager_state.items():
        assert torch.equal(value, state[key]), key
    assert "step capture = emulate" in log and "step capture: eager" not in log


# -- darts-pt's supernet skips candidates of weight exactly 0 -----------------------------------
def _skipping_pair(space: str = "s5"):
    """The same DARTS supernet twice, float64, one skipping candidates of weight 0."""
    from shared.models.search_cnn import Network

    torch.manual_seed(0)
    plain = Network(4, 10, 3, get_space(space), fast=False).double()
    skipping = Network(4, 10, 3, get_space(space), fast=False, skip_zero_weights=True).double()
    skipping.load_state_dict(plain.state_dict())
    return plain, skipping


def _masked_weights(model, remove_edge: bool = True):
    normal, reduce = (w.detach().clone() for w in model.mixing_weights())
    normal[0, 3] = reduce[2, 0] = 0.0  # DARTS-PT's mask of one candidate ...
    if remove_edge:
        normal[5] = 0.0  # ... and an edge its topology step removed
    return normal, reduce


def _bn_stats(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_released_mixed_op_skips_zero_weights_and_their_bn_statistics() -> None:
    """darts-pt's MixedOp, ``sum(w * op(x) for w, op in zip(weights, ops) if w != 0)``, ported
    here verbatim, against MixedOp(skip_zero=True): same output, same BN statistics."""
    from shared.models.search_cnn import MixedOp

    torch.manual_seed(0)
    ours = MixedOp(4, 1, get_space("s5").ops(False)[0]).double()
    released = MixedOp(4, 1, get_space("s5").ops(False)[0]).double()
    released.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = torch.tensor([0.3, 0.0, 0.2, 0.0, 0.1, 0.4, 0.0], dtype=torch.float64)
    got = ours(x, w, skip_zero=True)
    want = sum(wi * op(x) for wi, op in zip(w, released._ops) if wi != 0)
    assert torch.equal(got, want)
    a, b = _bn_stats(ours), _bn_stats(released)
    assert all(torch.equal(a[k], b[k]) for k in a)
    untouched = MixedOp(4, 1, get_space("s5").ops(False)[0]).double()
    for k, v in _bn_stats(untouched).items():  # op 1 (avg_pool's BN) never ran
        if k.startswith("_ops.1."):
            assert torch.equal(a[k], v), k


def test_skipping_keeps_logits_and_decisions_but_not_the_masked_bn_statistics() -> None:
    plain, skipping = _skipping_pair()
    x, y = torch.randn(8, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    weights = _masked_weights(plain)
    plain.train(), skipping.train()
    before = _bn_stats(skipping)
    assert torch.allclose(plain(x, weights), skipping(x, weights), rtol=0, atol=1e-12)
    after_plain, after_skip = _bn_stats(plain), _bn_stats(skipping)
    masked = [k for k in before if torch.equal(before[k], after_skip[k])]
    assert masked and all(not torch.equal(before[k], after_plain[k]) for k in masked
                          if "num_batches" not in k)
    # the projection's scores, hence its decisions, do not depend on the skip
    queue = [(x, y)]

    def scores(model):
        score = lambda w: evaluate(model, queue, w, torch.device("cpu"), Precision())  # noqa
        state = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
        model.mixing_transform = state.apply
        base = tuple(w.detach() for w in model.mixing_weights())
        rng = torch.Generator().manual_seed(0)
        return project_op(state, "normal", "loss", base, score, rng, LOG), state.proj_ops

    assert scores(plain) == scores(skipping)


def test_fast_path_skips_exactly_as_the_plain_path() -> None:
    from shared.models.search_cnn import Network

    plain, _ = _skipping_pair()
    torch.manual_seed(0)
    fast = Network(4, 10, 3, get_space("s5"), skip_zero_weights=True).double()
    slow = Network(4, 10, 3, get_space("s5"), fast=False, skip_zero_weights=True).double()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    weights = _masked_weights(fast)
    leaves = [tuple(w.clone().requires_grad_() for w in weights) for _ in range(2)]
    outs = [m(x, lv) for m, lv in ((fast, leaves[0]), (slow, leaves[1]))]
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-12)
    grads = [torch.autograd.grad(o.square().sum(), lv) for o, lv in zip(outs, leaves)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert grads[0][0][0, 3] == 0 and grads[0][0][5].abs().sum() == 0  # skipped: no gradient
    sa, sb = _bn_stats(fast), _bn_stats(slow)
    assert all(torch.allclose(sa[k].double(), sb[k].double(), rtol=1e-10, atol=1e-12)
               for k in sa)


def test_second_order_alpha_gradient_with_candidates_that_do_not_run() -> None:
    """DARTS' second-order alpha step (``--unrolled``) on DARTS-PT's supernet after projections:
    the weights of candidates that no longer run take no part in the unrolled step (autograd
    called them unused, and ``darts-proj --unrolled`` stopped with a traceback at its first
    tuning step); their gradient is 0, so alpha's gradient is that of the supernet running
    them times 0 (float64)."""
    from shared.search.architect import Architect

    grads = []
    for model in _skipping_pair():
        state = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
        state.project_op("normal", 0, 3)
        state.project_edge("normal", 0, [2, 4])  # edge 3 dropped
        state.project_op("reduce", 2, 0)
        model.mixing_transform = state.apply
        optimizer = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9,
                                    weight_decay=3e-4)
        architect = Architect(model, 3e-4, 1e-3, 0.9, 3e-4, unrolled=True)
        g = torch.Generator().manual_seed(1)
        x, x_val = (torch.randn(8, 3, 8, 8, generator=g, dtype=torch.float64) for _ in "ab")
        y, y_val = (torch.randint(0, 10, (8,), generator=g) for _ in "ab")
        grads.append(architect.unrolled_gradient(x, y, x_val, y_val, 0.025, optimizer))
    for plain, skipping in zip(*grads):
        assert plain.abs().sum() > 0
        torch.testing.assert_close(skipping, plain, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("skip", [True, False])
def test_pgd_cannot_raise_a_weight_clamped_to_zero_when_skipped(skip: bool) -> None:
    """darts-pt's SDARTS attack: an entry at exactly 0 gets no gradient, stays 0; a supernet
    that runs every candidate lets the attack raise it again. (A row of zeros, a removed edge,
    is not such an entry: the attack's simplex projection turns it one-hot, in the released
    ``clip`` too.)"""
    plain, skipping = _skipping_pair()
    model = skipping if skip else plain
    model.eval()
    x, y = torch.randn(8, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    weights = _masked_weights(model, remove_edge=False)
    zero = [w == 0 for w in weights]
    adv, _, _ = LinfPGD(0.3, 10, ramp=False, steps=3, random_start=False).attack(
        model, weights, x, y, eps=0.3)
    stayed = all(torch.all(a[z] == 0) for a, z in zip(adv, zero))
    assert stayed is skip


def test_only_darts_pt_supernets_skip() -> None:
    from darts_pt.sota.cnn import train_search as pt_door
    from sdarts.sota.cnn import train_search as sdarts_door
    from shared.cli.search_door import search_config

    for method in ("darts", "blank", "sdarts", "darts-proj"):
        args = pt_door.build_parser().parse_args(["--method", method])
        assert pt_door.to_config(args).skip_zero_weights, method
    args = sdarts_door.build_parser().parse_args([])
    assert not search_config(args, "darts").skip_zero_weights  # SmoothDARTS runs every op
