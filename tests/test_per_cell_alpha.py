"""Per-cell alpha on the DARTS-space supernet (StacNAS without ``--alpha_share``,
susan0199/StacNAS ``search_cnn.py``/``cells.py``): ``PerCellSpace``, one alpha and one derived
cell per search cell (``PerCellGenotype``), the final network built cell by cell, the plots and
a one-level search end to end."""
import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from shared.errors import UserError
from shared.genotypes import (
    Genotype,
    PerCellGenotype,
    load_genotype,
    per_cell_genotype_from_alpha,
    save_genotype,
)
from shared.models.cnn import NetworkCIFAR, build_final_network
from shared.models.search_cnn import Network
from shared.spaces import (
    NUM_EDGES,
    CellSpace,
    PerCellSpace,
    get_space,
    kinds_of_cells,
    space_from_dict,
)

LAYERS = 5  # kinds: normal, reduce, normal, reduce, normal
# Every cell its own candidates, op counts 8, 2, 3, 7, 2: pools, dilated convs, 'none', S1's
# per-edge pairs, all through the fast path's special cases.
CELL_SPACES = ("darts", "s1", "s3", "s5", "s2")


def mixed_space() -> PerCellSpace:
    return PerCellSpace.from_cells([get_space(n) for n in CELL_SPACES], name="mixed")


def digits(n=4, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 1, 8, 8, generator=g, dtype=dtype),
            torch.randint(0, 10, (n,), generator=g))


# -- the space ----------------------------------------------------------------------------------
def test_per_cell_space_round_trip_and_rows() -> None:
    space = mixed_space()
    assert space.layers == LAYERS and space.kinds == kinds_of_cells(LAYERS)
    assert space.kinds == ("normal", "reduce", "normal", "reduce", "normal")
    for i, name in enumerate(CELL_SPACES):
        assert space.ops_of(i) == get_space(name).ops(space.kinds[i] == "reduce")
    assert [space.num_ops(i) for i in range(LAYERS)] == [8, 2, 3, 7, 2]
    d = json.loads(json.dumps(space.to_dict()))
    assert "cells" in d and [c["kind"] for c in d["cells"]] == list(space.kinds)
    assert PerCellSpace.from_dict(d) == space == space_from_dict(d)
    s1 = get_space("s1")
    assert space_from_dict(s1.to_dict()) == s1
    rep = PerCellSpace.repeat(s1, 8)
    assert rep.cells == tuple(s1.ops(k == "reduce") for k in kinds_of_cells(8))
    assert rep.name == "s1-per-cell" and not rep.has_none and mixed_space().has_none


def test_per_cell_space_checks() -> None:
    good = mixed_space().to_dict()
    short = json.loads(json.dumps(good))
    short["cells"][2]["ops"] = short["cells"][2]["ops"][:5]
    with pytest.raises(UserError, match="not a per-cell space: .*cell 2 has 5 edges"):
        PerCellSpace.from_dict(short)
    ragged = json.loads(json.dumps(good))
    ragged["cells"][1]["ops"][3] = ["skip_connect"]
    with pytest.raises(UserError, match="cell 1: edges have unequal"):
        PerCellSpace.from_dict(ragged)
    unknown = json.loads(json.dumps(good))
    unknown["cells"][4]["ops"][0] = ["sep_conv_9x9", "skip_connect"]
    with pytest.raises(UserError, match="unknown op.*sep_conv_9x9"):
        space_from_dict(unknown)
    kinds = json.loads(json.dumps(good))
    kinds["cells"][0]["kind"] = "reduce"
    with pytest.raises(UserError, match="are not DARTS'"):
        PerCellSpace.from_dict(kinds)
    with pytest.raises(UserError, match="not a per-cell space"):
        PerCellSpace.from_dict({"name": "x", "cells": [{"ops": good["cells"][0]["ops"]}]})
    with pytest.raises(UserError, match="expected a JSON object"):
        space_from_dict([1, 2])


# -- the supernet -------------------------------------------------------------------------------
def test_one_alpha_per_cell_and_each_cell_its_own_ops() -> None:
    space = mixed_space()
    model = Network(4, 10, LAYERS, space, in_channels=1)
    assert model.cell_types == model.cell_kinds() == tuple(f"cell{i}" for i in range(LAYERS))
    assert Network.cell_types == ("normal", "reduce")  # the class keeps the shared pair
    alphas = model.arch_parameters()
    assert [tuple(a.shape) for a in alphas] == [(NUM_EDGES, space.num_ops(i))
                                                for i in range(LAYERS)]
    assert all(a is b for a, b in zip(alphas, model.alphas_cells))
    arch = {id(a) for a in alphas}
    assert not any(id(p) in arch for p in model.weight_parameters())
    keys = [k for k in model.state_dict() if "alpha" in k]
    assert keys == [f"alphas_cells.{i}" for i in range(LAYERS)]
    for i, cell in enumerate(model.cells):
        assert cell.reduction == (space.kinds[i] == "reduce")
        assert tuple(m.op_names for m in cell._ops) == space.ops_of(i)
    w = model.mixing_weights()
    assert len(w) == LAYERS and len(model.expand_weights(w)) == LAYERS
    assert all(a is b for a, b in zip(model.expand_weights(w), w))
    with pytest.raises(ValueError, match="has 5 cells, the network 8"):
        Network(4, 10, 8, space)


def test_a_shared_space_network_is_unchanged() -> None:
    """Same state_dict keys as ever; the weights are drawn first, so a shared and a per-cell
    network of the same seed differ only in alpha; given the same alpha per kind they compute
    the same logits and the per-cell form of the same genotype."""
    s1 = get_space("s1")
    torch.manual_seed(0)
    shared = Network(4, 10, LAYERS, s1, in_channels=1)
    torch.manual_seed(0)
    per_cell = Network(4, 10, LAYERS, PerCellSpace.repeat(s1, LAYERS), in_channels=1)
    keys = list(shared.state_dict())
    assert "alphas_normal" in keys and "alphas_reduce" in keys
    assert not any("alphas_cells" in k for k in keys)
    assert shared.cell_types == ("normal", "reduce") and "cell_types" not in vars(shared)
    assert shared.cell_kinds() == kinds_of_cells(LAYERS)
    weights = {k: v for k, v in shared.state_dict().items() if "alpha" not in k}
    others = {k: v for k, v in per_cell.state_dict().items() if "alpha" not in k}
    assert weights.keys() == others.keys()
    assert all(torch.equal(weights[k], others[k]) for k in weights)
    with torch.no_grad():
        for a, kind in zip(per_cell.alphas_cells, kinds_of_cells(LAYERS)):
            a.copy_(shared.alphas_reduce if kind == "reduce" else shared.alphas_normal)
    x, _ = digits()
    shared.eval()
    per_cell.eval()
    assert torch.equal(shared(x), per_cell(x))
    assert per_cell.genotype() == PerCellGenotype.repeat(shared.genotype(), LAYERS)


def _step(model, x, y, weights=None):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    loss = F.cross_entropy(model(x, weights), y)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    return loss.detach(), grads, buffers


def _assert_same(a, b, rtol=1e-9, atol=1e-12):
    (la, ga, ba), (lb, gb, bb) = a, b
    torch.testing.assert_close(lb, la, rtol=rtol, atol=atol)
    assert ga.keys() == gb.keys()
    for n in ga:
        if ga[n] is None or gb[n] is None:  # a candidate that did not run: no gradient
            assert ga[n] is None and gb[n] is None, n
            continue
        torch.testing.assert_close(gb[n], ga[n], rtol=rtol, atol=atol, msg=n)
    for k in ba:
        torch.testing.assert_close(bb[k], ba[k], rtol=rtol, atol=atol, msg=k)


def _pair(space, **kwargs):
    torch.manual_seed(0)
    plain = Network(4, 10, LAYERS, space, in_channels=1, fast=False, **kwargs).double()
    fast = Network(4, 10, LAYERS, space, in_channels=1, fast=True, **kwargs).double()
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def test_fast_path_equals_plain_path_per_cell() -> None:
    """Logits, every weight's and every cell's alpha gradient, BN running statistics: float64,
    where the fast path's rewrites are identities up to ~1e-14."""
    plain, fast = _pair(mixed_space())
    with torch.no_grad():  # alpha away from uniform, so the gradients are not all alike
        for a in plain.arch_parameters():
            a.normal_()
    fast.load_state_dict(plain.state_dict())
    x, y = digits(dtype=torch.float64)
    a, b = _step(plain, x, y), _step(fast, x, y)
    _assert_same(a, b)
    assert all(a[1][f"alphas_cells.{i}"].abs().max() > 1e-6 for i in range(LAYERS))


def test_fast_path_skips_zero_weights_per_cell() -> None:
    """``skip_zero_weights``: a candidate of mixing weight exactly 0 runs in neither path (no
    gradient for its parameters), per cell."""
    space = mixed_space()
    plain, fast = _pair(space, skip_zero_weights=True)
    x, y = digits(dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    weights = []
    for i in range(LAYERS):
        w = torch.rand(NUM_EDGES, space.num_ops(i), generator=g, dtype=torch.float64)
        weights.append(torch.where(w < 0.4, torch.zeros_like(w), w))
    weights = tuple(weights)
    a, b = _step(plain, x, y, weights), _step(fast, x, y, weights)
    _assert_same(a, b)
    skipped = [n for n, grad in a[1].items() if grad is None and "alpha" not in n]
    assert skipped
    # e.g. cell 0 (DARTS' 8 ops), edge e, op k with weight 0: its parameters got no gradient
    e, k = next((e, k) for e in range(NUM_EDGES) for k in (4, 5, 6, 7) if weights[0][e, k] == 0)
    assert all(a[1][n] is None for n in a[1] if n.startswith(f"cells.0._ops.{e}._ops.{k}."))


def test_each_cells_genotype_reads_only_its_own_alpha() -> None:
    space = mixed_space()
    model = Network(4, 10, LAYERS, space, in_channels=1)
    before = model.genotype()
    assert isinstance(before, PerCellGenotype) and before.layers == LAYERS
    assert before.kinds == space.kinds
    with torch.no_grad():  # cell 2 (S3: none, skip, sep3): skip wins on every edge, input 0 first
        a = model.alphas_cells[2]
        a.zero_()
        a[:, 1] = 5.0
        a[[0, 2, 5, 9], 1] = 6.0
        a[[1, 3, 6, 10], 1] = 5.5
    after = model.genotype()
    assert after.cells[2] == (("skip_connect", 0), ("skip_connect", 1)) * 4
    assert after.cells[2] != before.cells[2]
    assert all(after.cells[i] == before.cells[i] for i in range(LAYERS) if i != 2)
    for i in range(LAYERS):  # every chosen op is a candidate of its own cell and edge
        starts = [0, 2, 5, 9]
        for p, (op, j) in enumerate(after.cells[i]):
            assert op in space.ops_of(i)[starts[p // 2] + j]
    explicit = per_cell_genotype_from_alpha(model.mixing_weights(), space)
    assert explicit == after
    with pytest.raises(ValueError, match="4 mixing-weight tensors for the 5 cells"):
        per_cell_genotype_from_alpha(model.mixing_weights()[:4], space)


# -- the genotype -------------------------------------------------------------------------------
def _genotype() -> PerCellGenotype:
    """Cell i uses one op everywhere: sep3, max_pool, dil3, skip, sep5."""
    ops = ("sep_conv_3x3", "max_pool_3x3", "dil_conv_3x3", "skip_connect", "sep_conv_5x5")
    pairs = lambda op: tuple((op, j) for node in range(4) for j in (0, node + 1))  # noqa: E731
    return PerCellGenotype(tuple(pairs(op) for op in ops), ((2, 3, 4, 5),) * LAYERS,
                           kinds_of_cells(LAYERS))


def test_per_cell_genotype_round_trip(tmp_path) -> None:
    genotype = _genotype()
    genotype.check()
    path = str(tmp_path / "g.json")
    save_genotype(genotype, path, dataset="digits")
    loaded = load_genotype(path)
    assert isinstance(loaded, PerCellGenotype) and loaded == genotype
    assert json.load(open(path))["genotype"] == genotype.to_dict()
    # outputs.py writes a non-Genotype result unwrapped, its context keys beside "cells"
    flat = str(tmp_path / "flat.json")
    with open(flat, "w") as f:
        json.dump({**genotype.to_dict(), "dataset": "digits"}, f)
    assert load_genotype(flat) == genotype
    assert isinstance(load_genotype("DARTS_V2"), Genotype)
    text = str(genotype)
    assert "cell 0 (normal): [('sep_conv_3x3', 0)" in text and "cell 3 (reduce)" in text


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["cells"][2].update(kind="middle"), "cell 2: kind 'middle'"),
    (lambda d: d["cells"][1]["ops"].__setitem__(2, ["max_pool_3x3", 3]),
     r"cell 1 \(reduce\): node 1 reads input 3"),
    (lambda d: d["cells"][4].update(concat=[2, 9]), r"cell 4 concat \[2, 9\]"),
    (lambda d: d["cells"][0]["ops"].__setitem__(0, ["conv_99", 0]), "unknown operation"),
    (lambda d: d["cells"][3].pop("concat"), "not a per-cell genotype"),
    (lambda d: d.update(cells=[]), "need as many of each"),
])
def test_a_bad_per_cell_genotype_is_refused(edit, message) -> None:
    d = json.loads(json.dumps(_genotype().to_dict()))
    edit(d)
    with pytest.raises(UserError, match=message):
        PerCellGenotype.from_dict(d)


def test_final_network_builds_each_cell_from_its_own_genotype() -> None:
    genotype = _genotype()
    model = NetworkCIFAR(4, 10, LAYERS, True, genotype, in_channels=1)
    counts = [Counter(type(op).__name__ for op in cell._ops) for cell in model.cells]
    assert counts[0] == {"SepConv": 8}
    assert counts[1] == {"MaxPool2d": 8}
    assert counts[2] == {"DilConv": 8}
    # reduce cell 3: skip from a cell input (inputs 0, 0, 1, 0, 0: five pairs) is stride 2
    # there (FactorizedReduce), from a node (three pairs) Identity
    assert counts[3] == {"FactorizedReduce": 5, "Identity": 3}
    assert counts[4] == {"SepConv": 8}
    assert [c.reduction for c in model.cells] == [k == "reduce" for k in genotype.kinds]
    model.train()
    model.drop_path_prob = 0.1
    logits, aux = model(digits()[0])
    assert logits.shape == aux.shape == (4, 10)
    with pytest.raises(UserError, match="the genotype has 5 cells, the network 8"):
        build_final_network(genotype, "digits", 4, 8)
    wrong = PerCellGenotype(genotype.cells, genotype.concats,
                            ("reduce",) + genotype.kinds[1:])
    with pytest.raises(UserError, match=r"differ from the network's at cells \[0\]"):
        build_final_network(wrong, "digits", 4, LAYERS)


def test_per_cell_form_of_a_shared_genotype_builds_the_same_network() -> None:
    darts = load_genotype("DARTS_V2")
    for dataset, layers in (("cifar10", 8), ("imagenet", 14)):
        torch.manual_seed(0)
        a = build_final_network(darts, dataset, 8, layers, auxiliary=True)
        torch.manual_seed(0)
        b = build_final_network(PerCellGenotype.repeat(darts, layers), dataset, 8, layers,
                                auxiliary=True)
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- plots --------------------------------------------------------------------------------------
def _history(space: PerCellSpace, epochs: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"epoch": e, "alphas": [torch.randn(NUM_EDGES, space.num_ops(i), generator=g)
                                    .softmax(-1).tolist() for i in range(space.layers)]}
            for e in range(epochs)]


def test_plots_of_a_per_cell_search(tmp_path, monkeypatch) -> None:
    from shared.plots import dot, plot_alpha_trajectories, plot_genotype

    monkeypatch.setattr(dot, "_graphviz_available", lambda: False)
    paths = plot_genotype(_genotype(), str(tmp_path / "g"))
    assert paths == [str(tmp_path / f"g_cell{i}.png") for i in range(LAYERS)]
    assert all((tmp_path / f"g_cell{i}.png").stat().st_size > 0 for i in range(LAYERS))
    space = mixed_space()
    out = plot_alpha_trajectories(_history(space), space, str(tmp_path / "a.png"))
    assert out == str(tmp_path / "a.png") and (tmp_path / "a.png").stat().st_size > 0
    bad = _history(space)
    bad[1]["alphas"] = bad[1]["alphas"][:4]
    with pytest.raises(ValueError, match="need 5 alpha table"):
        plot_alpha_trajectories(bad, space, str(tmp_path / "b.png"))
    assert not (tmp_path / "b.png").exists()


def test_the_trajectory_panels_follow_each_edges_winner() -> None:
    import matplotlib.pyplot as plt

    from shared.plots.per_cell import trajectories_figure

    space = PerCellSpace.repeat(get_space("s3"), 8)  # none, skip, sep3 on every edge
    history = _history(space, 2)
    history[-1]["alphas"][6][0] = [0.9, 0.02, 0.08]  # 'none' ignored: sep3 is the winner
    fig = trajectories_figure(history, space)
    try:
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
        assert [ax.get_title() for ax in panels] == [f"cell {i} ({k})"
                                                     for i, k in enumerate(space.kinds)]
        assert all(len(ax.lines) == NUM_EDGES for ax in panels)
        assert list(panels[6].lines[0].get_ydata()) == [history[0]["alphas"][6][0][2], 0.08]
        styles = Counter(line.get_linestyle() for line in panels[6].lines)
        assert styles == {"-": 8, "--": 6}  # two inputs kept per node
    finally:
        plt.close(fig)


# -- a search end to end ------------------------------------------------------------------------
def test_a_one_level_per_cell_search_runs_end_to_end(tmp_path) -> None:
    from shared.checkpoint import load_checkpoint
    from shared.search.cnn_search import CNNSearchConfig, run_cnn_search

    space = mixed_space()
    cfg = CNNSearchConfig(dataset="digits", batch_size=256, epochs=1, init_channels=4,
                          layers=LAYERS, gpu=-1, debug=True, progress=False,
                          alpha_update="one_level", train_portion=1.0,
                          space_data=space.to_dict())
    out = tmp_path / "run"
    genotype = run_cnn_search(cfg, str(out))
    assert isinstance(genotype, PerCellGenotype) and genotype.kinds == space.kinds
    assert load_genotype(str(out / "genotype.json")) == genotype
    history = json.load(open(out / "history.json"))
    assert [len(t[0]) for t in history[-1]["alphas"]] == [space.num_ops(i)
                                                          for i in range(LAYERS)]
    assert PerCellGenotype.from_dict(history[-1]["genotype"]) == genotype
    for name in ["alpha_trajectories.png", "accuracy.png"] + [f"genotype_cell{i}.png"
                                                              for i in range(LAYERS)]:
        assert (out / name).stat().st_size > 0, name
    state = load_checkpoint(str(out / "checkpoint.pth.tar"))
    assert space_from_dict(state["config"]["space_data"]) == space
    with pytest.raises(UserError, match="has 5 cells, the network 8"):
        run_cnn_search(CNNSearchConfig(dataset="digits", gpu=-1, layers=8,
                                       space_data=space.to_dict()), str(tmp_path / "b"))
    assert isinstance(space_from_dict(get_space("s1").to_dict()), CellSpace)
