"""DARTS-PT's projection: op and topology selection, the schedules, the projected weights,
fixed alpha (Blank-PT), SDARTS under projection."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from darts_pt.projection import (ProjectionState, darts_nid2eids, evaluate, project_edge,
                                 project_op, projected_genotype, projection_schedule)
from darts_pt.tuning import ProjectedPerturbation, ProjectionConfig, tuning_loop
from shared.search.perturbation import LinfPGD, RandomSmoothing
from shared.errors import UserError
from tests.conftest import perturb as apply_perturbation
from shared.runtime import Precision
from shared.spaces import NUM_EDGES, get_space

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
