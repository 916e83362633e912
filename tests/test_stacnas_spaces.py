"""StacNAS' spaces as data and its genotype rule (stacnas/spaces.py)."""
import json

import pytest
import torch

from shared.errors import UserError
from shared.spaces import NUM_EDGES, CellSpace
from stacnas.spaces import (
    ALL_OPS,
    GROUP_OPS,
    GROUPS,
    stacnas_genotype,
    stage1_space,
    stage2_space,
)


def _alpha(choice: list[str], ops=GROUP_OPS, none_wins=()) -> torch.Tensor:
    """Logits picking ``choice[e]`` on edge e; on the edges in ``none_wins`` 'none' is even
    larger (stage 1 never picks 'none': no edge is pruned there)."""
    a = torch.zeros(NUM_EDGES, len(ops))
    for e, op in enumerate(choice):
        a[e, ops.index(op)] = 1.0 + e / 100
        if e in none_wins:
            a[e, ops.index("none")] = 5.0
    return a


def test_stage2_holds_each_edges_group_with_a_duplicate_skip_and_none() -> None:
    reps = [GROUP_OPS[e % 4] for e in range(NUM_EDGES)]
    normal = _alpha(reps, none_wins=(0, 5))
    reduce = _alpha(list(reversed(reps)))
    space = stage2_space(normal, reduce, stage1_space())
    assert space.normal[0] == ("avg_pool_3x3", "max_pool_3x3", "none")  # none's 5.0 ignored
    assert space.normal[1] == ("skip_connect", "skip_connect", "none")
    assert space.normal[2] == ("sep_conv_3x3", "sep_conv_5x5", "none")
    assert space.normal[3] == ("dil_conv_3x3", "dil_conv_5x5", "none")
    assert space.reduce == tuple(GROUPS[r] for r in reversed(reps))
    assert CellSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_a_stage2_needs_a_group_stage1_of_the_right_shape() -> None:
    with pytest.raises(UserError, match="needs a stage 1 run with --ops groups"):
        stage2_space(torch.zeros(NUM_EDGES, 8), torch.zeros(NUM_EDGES, 8), stage1_space("all"))
    with pytest.raises(UserError, match="has shape"):
        stage2_space(torch.zeros(NUM_EDGES, 3), torch.zeros(NUM_EDGES, 5), stage1_space())
    with pytest.raises(UserError, match="--ops 'some'"):
        stage1_space("some")
    assert stage1_space("all").normal[0] == ALL_OPS and ALL_OPS[-1] == GROUP_OPS[-1] == "none"


def test_the_genotype_ranks_edges_by_the_raw_logit_not_the_softmax() -> None:
    space = stage1_space()
    ops = list(GROUP_OPS)
    a = torch.full((NUM_EDGES, 5), -10.0)
    # node 0 (edges 0, 1): edge 0's best logit is higher, but edge 1 is far more peaked, so
    # DARTS' softmax ranking would prefer edge 1; both are kept anyway (2 inputs).
    # node 1 (edges 2, 3, 4): edge 2 has the highest raw logit (3.0) but a flat row (softmax
    # weight ~0.25); edges 3 and 4 are peaked (2.0, 1.0 against -10: weight ~1).
    a[2] = torch.tensor([3.0, 2.9, 2.9, 2.9, -10.0])
    a[3, ops.index("sep_conv_3x3")] = 2.0
    a[4, ops.index("dil_conv_3x3")] = 1.0
    # node 2 (edges 5-8): 'none' has the top logit on edge 5, which is ranked by its best
    # other op; edges 6 and 7 tie: the lower input is kept.
    a[5] = torch.tensor([0.5, -10, -10, -10, 9.0])
    a[6, ops.index("skip_connect")] = 0.7
    a[7, ops.index("skip_connect")] = 0.7
    geno = stacnas_genotype(a, a, space)
    node1 = sorted(j for _, j in geno.normal[2:4])
    assert node1 == [0, 1] and ("max_pool_3x3", 0) in geno.normal[2:4]
    from shared.genotypes import genotype_from_alpha

    darts = genotype_from_alpha(a.softmax(-1), a.softmax(-1), space)
    assert sorted(j for _, j in darts.normal[2:4]) == [1, 2]  # the softmax rule differs
    assert geno.normal[4:6] == (("skip_connect", 1), ("skip_connect", 2))
    assert all(op != "none" for op, _ in geno.normal + geno.reduce)


@pytest.mark.parametrize("fast", [False, True])
def test_the_supernet_runs_a_stage2_space_with_two_independent_skips(fast) -> None:
    from shared.models.search_cnn import Network

    reps = [GROUP_OPS[e % 4] for e in range(NUM_EDGES)]
    space = stage2_space(_alpha(reps), _alpha(reps), stage1_space())
    model = Network(4, 10, 5, space, in_channels=1, fast=fast)
    assert tuple(model.arch_parameters()[0].shape) == (NUM_EDGES, 3)
    out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    out.sum().backward()
    if not fast:  # edge 1 (skip group) of a reduce cell is stride 2: two FactorizedReduce
        edge = next(c for c in model.cells if c.reduction)._ops[1]._ops
        assert type(edge[0]).__name__ == type(edge[1]).__name__ == "FactorizedReduce"
        assert edge[0].conv_1.weight is not edge[1].conv_1.weight
        assert edge[0].conv_1.weight.grad is not None and edge[1].conv_1.weight.grad is not None


def test_a_saved_space_is_checked_when_read() -> None:
    good = stage1_space().to_dict()
    with pytest.raises(UserError, match="not a cell space"):
        CellSpace.from_dict({"name": "x", "normal": good["normal"][:3],
                             "reduce": good["reduce"]})
    bad = dict(good, normal=[["sep_conv_9x9"] * 5] * NUM_EDGES)
    with pytest.raises(UserError, match="unknown op"):
        CellSpace.from_dict(bad)


def test_a_search_runs_on_a_derived_space_saved_with_its_config(tmp_path) -> None:
    """A one-level search on the whole training set (StacNAS' setting) over a stage-2 space
    given as data: the checkpoint holds the space, so a resume needs nothing else."""
    from shared.checkpoint import load_checkpoint
    from shared.search.cnn_search import CNNSearchConfig, run_cnn_search

    reps = [GROUP_OPS[e % 4] for e in range(NUM_EDGES)]
    space = stage2_space(_alpha(reps), _alpha(reps), stage1_space())
    cfg = CNNSearchConfig(dataset="digits", batch_size=64, epochs=2, init_channels=4, layers=5,
                          gpu=-1, debug=True, progress=False, alpha_update="one_level",
                          train_portion=1.0, grad_clip=3.0, space_data=space.to_dict())
    genotype = run_cnn_search(cfg, str(tmp_path / "a"))
    allowed = {op for row in space.normal + space.reduce for op in row}
    assert {op for op, _ in genotype.normal + genotype.reduce} <= allowed - {"none"}
    state = load_checkpoint(str(tmp_path / "a" / "checkpoint.pth.tar"))
    assert CellSpace.from_dict(state["config"]["space_data"]) == space
    assert state["history"][-1]["valid_acc"] is None  # no validation split
    with pytest.raises(UserError, match="reads its spaces by name"):
        run_cnn_search(CNNSearchConfig(dataset="digits", supernet="nb201", gpu=-1,
                                       space_data=space.to_dict()), str(tmp_path / "b"))


def test_a_per_cell_stage2_takes_each_cells_own_groups_and_its_depth() -> None:
    from shared.spaces import PerCellSpace
    from stacnas.spaces import stacnas_genotype_per_cell, stage2_space_per_cell

    stage1 = stage1_space("groups", per_cell_layers=5)
    assert isinstance(stage1, PerCellSpace) and stage1.kinds == (
        "normal", "reduce", "normal", "reduce", "normal")
    alphas = [_alpha([GROUP_OPS[(e + i) % 4] for e in range(NUM_EDGES)]) for i in range(5)]
    space = stage2_space_per_cell(alphas, stage1, 5)
    for i in range(5):
        assert space.ops_of(i) == tuple(GROUPS[GROUP_OPS[(e + i) % 4]] for e in range(NUM_EDGES))
    # one genotype per cell: StacNAS' rule on each cell's own logits
    logits = [torch.randn(NUM_EDGES, 3) for _ in range(5)]
    genotype = stacnas_genotype_per_cell(logits, space)
    for i in range(5):
        rows = space.ops_of(i)
        shared = stacnas_genotype(logits[i], logits[i],
                                  CellSpace("c", rows, rows))
        assert genotype.cells[i] == shared.normal
    with pytest.raises(UserError, match="stage 2 needs --num_cells 5 as stage 1 had, not 8"):
        stage2_space_per_cell(alphas, stage1, 8)
