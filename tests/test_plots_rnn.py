"""Tests for the DARTS recurrent cell's figures in shared.plots: ``plot_genotype`` /
``plot_rnn_cell`` on published cells (DARTS_V2, ENAS with 11 nodes and a concat subset,
penn_pgd) and ``plot_alpha_trajectories`` on the 36 x 5 RNN alpha table (zoomed panels when
the alphas barely moved). Every figure is a
real, non-blank PNG and no figure stays open. Headless (Agg), CPU only, a few seconds."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from shared import plots
from shared.plots import common, dot, graph, rnn_cell
from shared.rnn_genotype import RNNGenotype, published_rnn
from shared.spaces import RNN_PRIMITIVES, RNNSpace
from tests.conftest import FakeDigraph

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CELLS = ("DARTS_V2", "ENAS", "penn_pgd")


def assert_png(path: str | Path, min_bytes: int = 5_000) -> None:
    """A PNG of some size whose pixels are not all one colour (a blank figure is ~1-2 kB)."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes"
    pixels = mpimg.imread(str(path))[..., :3]
    dark = (pixels.min(axis=-1) < 0.5).mean()
    assert 0.002 < dark < 0.5, f"{path}: {dark:.4f} of the pixels are drawn"


pytestmark = pytest.mark.usefixtures("no_open_figures")


def random_history(epochs: int, seed: int = 0) -> list[dict]:
    space = RNNSpace()
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        logits = rng.normal(size=(space.num_edges, len(space.ops)))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        history.append({"epoch": epoch, "alphas": [probs.tolist()]})
    return history


# -- the cell ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CELLS)
def test_plot_genotype_rnn_matplotlib(tmp_path, no_graphviz, name):
    prefix = str(tmp_path / "new" / "dir" / name)
    paths = plots.plot_genotype(published_rnn()[name].genotype, prefix)
    assert paths == [f"{prefix}_recurrent.png"]
    assert_png(paths[0])


def test_plot_rnn_cell_returns_path(tmp_path):
    path = str(tmp_path / "sub" / "cell.png")
    assert plots.plot_rnn_cell(published_rnn()["DARTS_V1"].genotype, path) == path
    assert_png(path)


def test_rnn_edges_follow_the_genotype():
    enas = published_rnn()["ENAS"].genotype
    edges = rnn_cell._rnn_edges(enas)
    assert edges[:2] == [("x_{t}", "0", None), ("h_{t-1}", "0", None)]
    labelled = [e for e in edges if e[2] is not None]
    assert labelled == [(str(j), str(i), op) for i, (op, j) in enumerate(enas.recurrent, 1)]
    assert [u for u, v, _ in edges if v == "h_{t}"] == ["2", "5", "6", "9", "10", "11"]
    pos = rnn_cell._rnn_layout(enas.steps)
    assert set(pos) == {"x_{t}", "h_{t-1}", "h_{t}", *map(str, range(12))}


@pytest.mark.parametrize("name", CELLS)
def test_rnn_curves_avoid_other_nodes(name):
    genotype = published_rnn()[name].genotype
    pos = rnn_cell._rnn_layout(genotype.steps)
    edges = rnn_cell._rnn_edges(genotype)
    for (u, v, _), rad in zip(edges, graph._edge_rads(edges, pos)):
        curve = (pos[u], graph._control(pos[u], pos[v], rad), pos[v])
        others = [p for n, p in pos.items() if n not in (u, v)]
        assert graph._clearance(curve, others) > common._NODE_RADIUS, (u, v)


def test_rnn_activation_colours_are_fixed():
    """The same activation has the same colour whatever the order ops first appear in."""
    forward = common._op_colors(RNN_PRIMITIVES)
    backward = common._op_colors(reversed(RNN_PRIMITIVES))
    assert forward == backward
    assert len(set(forward.values())) == len(RNN_PRIMITIVES)


def test_plot_genotype_rnn_graphviz_path(tmp_path, monkeypatch):
    FakeDigraph.made = []
    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Digraph=FakeDigraph))
    monkeypatch.setattr(dot.shutil, "which", lambda name: "/usr/bin/dot")
    prefix = str(tmp_path / "sub" / "enas")
    assert plots.plot_genotype(published_rnn()["ENAS"].genotype, prefix) == [
        f"{prefix}_recurrent.png"]
    assert Path(f"{prefix}_recurrent.png").read_bytes()[:8] == PNG_MAGIC
    (g,) = FakeDigraph.made
    assert "rankdir=LR" in g.body
    assert g.nodes == ["x_{t}", "h_{t-1}", *map(str, range(12)), "h_{t}"]
    assert ("8", "11", "relu") in g.edges and ("h_{t-1}", "0", None) in g.edges
    assert [u for u, v, _ in g.edges if v == "h_{t}"] == ["2", "5", "6", "9", "10", "11"]


def test_no_graphviz_fixture_reaches_the_rnn_cell(tmp_path, monkeypatch, no_graphviz):
    """With graphviz and `dot` both present, the fixture still gives the matplotlib figure."""
    FakeDigraph.made = []
    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Digraph=FakeDigraph))
    monkeypatch.setattr(dot.shutil, "which", lambda name: "/usr/bin/dot")
    (path,) = plots.plot_genotype(published_rnn()["DARTS_V2"].genotype, str(tmp_path / "c"))
    assert_png(path)
    assert FakeDigraph.made == []


# -- alpha trajectories --------------------------------------------------------------------------
@pytest.mark.parametrize("space", [RNNSpace(), "darts-rnn"], ids=["object", "name"])
def test_plot_alpha_trajectories_rnn(tmp_path, space):
    path = str(tmp_path / "figs" / "alphas.png")
    assert plots.plot_alpha_trajectories(random_history(3), space, path) == path
    assert_png(path, min_bytes=20_000)


def test_plot_alpha_trajectories_rnn_accepts_arrays(tmp_path):
    history = [{"epoch": h["epoch"], "alphas": [np.asarray(h["alphas"][0])]}
               for h in random_history(1)]
    assert_png(plots.plot_alpha_trajectories(history, RNNSpace(), str(tmp_path / "a.png")))


@pytest.mark.parametrize("alphas, got", [
    (lambda t: [t[:35]], "35 x 5"),                          # a node's row missing
    (lambda t: [[r[:4] for r in t]], "36 x 4"),              # an op missing
    (lambda t: [t, t], "2 tables"),                          # two tables (a CNN history)
    (lambda t: t, "36 tables"),                              # the table, not wrapped in a list
    (lambda t: [t[:-1] + [t[-1][:3]]], "a ragged table"),    # one short row
    (lambda t: None, "NoneType"),
], ids=["rows", "ops", "two-tables", "unwrapped", "ragged", "missing"])
def test_plot_alpha_trajectories_rnn_rejects_wrong_shape(tmp_path, alphas, got):
    history = random_history(2)
    history[1]["alphas"] = alphas(history[1]["alphas"][0])
    with pytest.raises(ValueError, match=rf"epoch 1: .*one 36 x 5 table.*got {got}"):
        plots.plot_alpha_trajectories(history, RNNSpace(), str(tmp_path / "a.png"))
    assert not list(tmp_path.iterdir())


def test_rnn_alpha_panels_zoom_when_alphas_barely_moved():
    space = RNNSpace()
    rng = np.random.default_rng(3)
    history = [{"epoch": e, "alphas": [0.2 + rng.uniform(-0.002, 0.002, (36, 5))]}
               for e in range(3)]
    fig = rnn_cell.trajectories_figure(history, space)
    try:
        assert len(fig.axes) == 36
        for ax in fig.axes:
            lo, hi = ax.get_ylim()
            assert hi - lo < 0.05 and lo < 0.198 and hi > 0.202
            assert all(t.get_visible() for t in ax.get_yticklabels())
    finally:
        plt.close(fig)
    fig = rnn_cell.trajectories_figure(random_history(3), space)  # large moves: 0..1
    try:
        assert all(ax.get_ylim() == pytest.approx((-0.02, 1.02)) for ax in fig.axes)
    finally:
        plt.close(fig)


def test_plot_alpha_trajectories_rnn_empty(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plots.plot_alpha_trajectories([], "darts-rnn", str(tmp_path / "a.png"))


def test_rnn_genotype_still_validates():
    """plot_genotype relies on RNNGenotype refusing malformed cells before anything is drawn."""
    with pytest.raises(ValueError, match="predecessor"):
        RNNGenotype((("tanh", 1),), (1,))
