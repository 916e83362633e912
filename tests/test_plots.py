"""Tests for shared.plots: every figure is a non-empty PNG, in a directory the call creates,
and no figure stays open. Headless (Agg), CPU only, a few seconds."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from shared import plots
from shared.genotypes import Genotype
from shared.spaces import get_space
from tests.conftest import FakeDigraph

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
)

# NASNet-A: 5 nodes, a repeated (op, input) pair on node 3, and a reduce concat of 3 nodes.
NASNET = Genotype(
    normal=(("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
            ("avg_pool_3x3", 1), ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
            ("sep_conv_3x3", 1), ("skip_connect", 1)),
    normal_concat=(2, 3, 4, 5, 6),
    reduce=(("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
            ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2),
            ("sep_conv_3x3", 2), ("max_pool_3x3", 1)),
    reduce_concat=(4, 5, 6),
)


def assert_png(path: str | Path) -> None:
    data = Path(path).read_bytes()
    assert len(data) > 100, f"{path} is (nearly) empty"
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"


pytestmark = pytest.mark.usefixtures("no_open_figures")


def random_history(space_name: str, epochs: int, seed: int = 0) -> list[dict]:
    space = get_space(space_name)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        alphas = []
        for rows in (space.normal, space.reduce):
            logits = rng.normal(size=(len(rows), len(rows[0])))
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            alphas.append(probs.tolist())
        history.append({"epoch": epoch, "alphas": alphas, "train_acc": 40.0 + 5 * epoch,
                        "valid_acc": 38.0 + 4 * epoch, "train_loss": 2.0 / (epoch + 1)})
    return history


# -- plot_genotype -------------------------------------------------------------------------------
@pytest.mark.parametrize("genotype", [DARTS_V2, NASNET], ids=["darts_v2", "nasnet"])
def test_plot_genotype_matplotlib(tmp_path, no_graphviz, genotype):
    prefix = str(tmp_path / "new" / "dir" / "cell")
    paths = plots.plot_genotype(genotype, prefix)
    assert paths == [f"{prefix}_normal.png", f"{prefix}_reduce.png"]
    for p in paths:
        assert_png(p)


def test_plot_genotype_rejects_malformed_cells(tmp_path):
    bad_input = Genotype(normal=(("skip_connect", 0), ("skip_connect", 2)), normal_concat=(2,),
                         reduce=DARTS_V2.reduce, reduce_concat=DARTS_V2.reduce_concat)
    with pytest.raises(ValueError, match="node 0 cannot take input 2"):
        plots.plot_genotype(bad_input, str(tmp_path / "bad"))
    bad_concat = Genotype(normal=DARTS_V2.normal, normal_concat=(2, 3, 4, 5, 6),
                          reduce=DARTS_V2.reduce, reduce_concat=DARTS_V2.reduce_concat)
    with pytest.raises(ValueError, match="concat"):
        plots.plot_genotype(bad_concat, str(tmp_path / "bad"))
    assert not list(tmp_path.iterdir())


def test_graphviz_needs_package_and_dot(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Digraph=None))
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)  # package, but no `dot`
    assert not plots._graphviz_available()
    monkeypatch.setattr(plots.shutil, "which", lambda name: "/usr/bin/dot")
    assert plots._graphviz_available()
    monkeypatch.setitem(sys.modules, "graphviz", None)  # `dot`, but the import fails
    assert not plots._graphviz_available()


def test_plot_genotype_graphviz_path(tmp_path, monkeypatch):
    FakeDigraph.made = []
    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Digraph=FakeDigraph))
    monkeypatch.setattr(plots.shutil, "which", lambda name: "/usr/bin/dot")
    assert plots._graphviz_available()
    paths = plots.plot_genotype(NASNET, str(tmp_path / "sub" / "nasnet"))
    for p in paths:
        assert_png(p)
    normal, reduce = FakeDigraph.made
    assert normal.kwargs["format"] == "png" and "rankdir=LR" in normal.body
    assert normal.nodes == ["c_{k-2}", "c_{k-1}", "0", "1", "2", "3", "4", "c_{k}"]
    assert ("c_{k-2}", "3", "avg_pool_3x3") in normal.edges
    assert ("1", "3", "skip_connect") in reduce.edges
    assert [e for e in reduce.edges if e[1] == "c_{k}"] == [
        ("2", "c_{k}", None), ("3", "c_{k}", None), ("4", "c_{k}", None)]


@pytest.mark.skipif(not plots._graphviz_available(), reason="graphviz package or dot missing")
def test_plot_genotype_real_graphviz(tmp_path):
    for p in plots.plot_genotype(DARTS_V2, str(tmp_path / "g")):
        assert_png(p)


def test_edge_curves_avoid_other_nodes():
    for genotype in (DARTS_V2, NASNET):
        pairs, concat = genotype.normal, genotype.normal_concat
        pos = plots._layout(len(pairs) // 2)
        edges = plots._edge_list(pairs, concat)
        rads = plots._edge_rads(edges, pos)
        for (u, v, _), rad in zip(edges, rads):
            curve = (pos[u], plots._control(pos[u], pos[v], rad), pos[v])
            others = [p for n, p in pos.items() if n not in (u, v)]
            assert plots._clearance(curve, others) > plots._NODE_RADIUS
        # the repeated c_{k-2} -> node 3 pair of NASNet is drawn as two different curves
        dup = [r for (u, v, _), r in zip(edges, rads) if (u, v) == ("c_{k-2}", "3")]
        assert len(dup) == len(set(dup))


# -- plot_alpha_trajectories ---------------------------------------------------------------------
@pytest.mark.parametrize("space_name", ["s1", "s5"])
@pytest.mark.parametrize("epochs", [1, 3])
def test_plot_alpha_trajectories(tmp_path, space_name, epochs):
    history = random_history(space_name, epochs)
    space = space_name if epochs == 1 else get_space(space_name)  # a name works as well
    path = str(tmp_path / "figs" / f"alphas_{space_name}_{epochs}.png")
    assert plots.plot_alpha_trajectories(history, space, path) == path
    assert_png(path)


def test_plot_alpha_trajectories_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plots.plot_alpha_trajectories([], get_space("s5"), str(tmp_path / "a.png"))
    wrong_space = random_history("s1", 2)  # 2 ops per edge, s5 has 7
    with pytest.raises(ValueError, match="does not match space s5"):
        plots.plot_alpha_trajectories(wrong_space, get_space("s5"), str(tmp_path / "a.png"))


# -- plot_curves ---------------------------------------------------------------------------------
@pytest.mark.parametrize("epochs", [1, 4])
def test_plot_curves(tmp_path, epochs):
    path = str(tmp_path / "curves" / "acc.png")
    assert plots.plot_curves(random_history("s5", epochs), path) == path
    assert_png(path)


def test_plot_curves_other_keys_and_missing(tmp_path):
    history = random_history("s5", 3)
    assert_png(plots.plot_curves(history, str(tmp_path / "loss.png"), keys=("train_loss", "nope")))
    with pytest.raises(ValueError, match="none of"):
        plots.plot_curves(history, str(tmp_path / "x.png"), keys=("nope",))


def test_best_so_far_direction():
    assert plots._best_so_far([1.0, 3.0, 2.0], "valid_acc") == [1.0, 3.0, 3.0]
    assert plots._best_so_far([3.0, 1.0, 2.0], "train_loss") == [3.0, 1.0, 1.0]
