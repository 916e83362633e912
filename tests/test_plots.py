"""Tests for shared.plots: every figure is a non-empty PNG, in a directory the call creates,
and no figure stays open; alpha-trajectory panels zoom to alphas that have barely moved.
Headless (Agg), CPU only, a few seconds."""
from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Collection

import matplotlib.pyplot as plt
import numpy as np
import pytest

from shared import plots
from shared.genotypes import Genotype
from shared.plots import common, curves, darts_cell, dot, graph, nb201_cell, trajectory
from shared.spaces import NB201_SPACES, get_space
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
    monkeypatch.setattr(dot.shutil, "which", lambda name: None)  # package, but no `dot`
    assert not dot._graphviz_available()
    monkeypatch.setattr(dot.shutil, "which", lambda name: "/usr/bin/dot")
    assert dot._graphviz_available()
    monkeypatch.setitem(sys.modules, "graphviz", None)  # `dot`, but the import fails
    assert not dot._graphviz_available()


def test_plot_genotype_graphviz_path(tmp_path, monkeypatch):
    FakeDigraph.made = []
    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Digraph=FakeDigraph))
    monkeypatch.setattr(dot.shutil, "which", lambda name: "/usr/bin/dot")
    assert dot._graphviz_available()
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


def test_no_graphviz_fixture_reaches_the_cell_modules(tmp_path, monkeypatch, no_graphviz):
    """With graphviz and `dot` both present, the fixture still makes the DARTS cells take the
    matplotlib path: the patch lands where the cell module looks the check up."""
    FakeDigraph.made = []
    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Digraph=FakeDigraph))
    monkeypatch.setattr(dot.shutil, "which", lambda name: "/usr/bin/dot")
    for p in plots.plot_genotype(DARTS_V2, str(tmp_path / "cell")):
        assert_png(p)
    assert FakeDigraph.made == []


def test_plot_genotype_rejects_unknown_types(tmp_path):
    with pytest.raises(TypeError, match="no cell plotter for dict"):
        plots.plot_genotype({"normal": DARTS_V2.normal}, str(tmp_path / "x"))
    with pytest.raises(TypeError, match="no alpha-trajectory plotter for int"):
        plots.plot_alpha_trajectories(random_history("s5", 1), 5, str(tmp_path / "x.png"))
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not dot._graphviz_available(), reason="graphviz package or dot missing")
def test_plot_genotype_real_graphviz(tmp_path):
    for p in plots.plot_genotype(DARTS_V2, str(tmp_path / "g")):
        assert_png(p)


def test_edge_curves_avoid_other_nodes():
    for genotype in (DARTS_V2, NASNET):
        pairs, concat = genotype.normal, genotype.normal_concat
        pos = graph._layout(len(pairs) // 2)
        edges = darts_cell._edge_list(pairs, concat)
        rads = graph._edge_rads(edges, pos)
        for (u, v, _), rad in zip(edges, rads):
            curve = (pos[u], graph._control(pos[u], pos[v], rad), pos[v])
            others = [p for n, p in pos.items() if n not in (u, v)]
            assert graph._clearance(curve, others) > common._NODE_RADIUS
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


def flat_history(space_name: str, epochs: int = 3, jitter: float = 0.002,
                 moving: Collection[tuple[int, int]] = (), seed: int = 0) -> list[dict]:
    """Alphas of a short search: every probability within 1/num_ops +- ``jitter``, except on
    the ``moving`` (table, edge) pairs, whose first op climbs from 1/num_ops to 0.9."""
    space = get_space(space_name)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        alphas = []
        for r, rows in enumerate((space.normal, space.reduce)):
            n = len(rows[0])
            noise = rng.uniform(-jitter / 2, jitter / 2, size=(len(rows), n))
            probs = 1 / n + noise - noise.mean(axis=1, keepdims=True)  # within +- jitter
            first = 1 / n + (0.9 - 1 / n) * epoch / max(epochs - 1, 1)
            for e in range(len(rows)):
                if (r, e) in moving:
                    probs[e] = [first] + [(1 - first) / (n - 1)] * (n - 1)
            alphas.append(probs.tolist())
        history.append({"epoch": epoch, "alphas": alphas})
    return history


def panel_data_range(ax) -> tuple[float, float]:
    ys = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.lines])
    return float(ys.min()), float(ys.max())


def assert_full_range(ax) -> None:
    assert ax.get_ylim() == pytest.approx((-0.02, 1.02))
    assert list(ax.get_yticks()) == [0, 0.25, 0.5, 0.75, 1]


def test_alpha_panels_zoom_when_alphas_barely_moved():
    history = flat_history("s5")
    assert all(abs(p - 1 / 7) <= 0.002 + 1e-12 for h in history for table in h["alphas"]
               for row in table for p in row)
    fig = darts_cell.trajectories_figure(history, get_space("s5"))
    try:
        assert len(fig.axes) == 28  # normal and reduce rows of 14 edges
        for ax in fig.axes:
            assert len(ax.lines) == 7  # the lines stay: one per op
            lo, hi = ax.get_ylim()
            data_lo, data_hi = panel_data_range(ax)
            assert hi - lo < 0.05, f"{ax.get_title()}: y axis {lo:.3f}..{hi:.3f} not zoomed"
            assert lo < data_lo and data_hi < hi  # every point inside, with a margin
            assert hi - lo >= trajectory.MIN_SPAN - 1e-9  # never degenerate
            assert len(ax.get_shared_y_axes().get_siblings(ax)) == 1  # own y axis
            assert all(t.get_visible() for t in ax.get_yticklabels())  # own tick labels
    finally:
        plt.close(fig)


def test_alpha_panels_keep_0_1_after_a_large_move():
    every_edge = {(r, e) for r in (0, 1) for e in range(14)}
    fig = darts_cell.trajectories_figure(flat_history("s5", moving=every_edge),
                                         get_space("s5"))
    try:
        assert len(fig.axes) == 28
        for ax in fig.axes:
            assert len(ax.lines) == 7
            assert_full_range(ax)
        # as before the zoom existed: one shared y axis, labelled in the first column only
        assert len(fig.axes[0].get_shared_y_axes().get_siblings(fig.axes[0])) == 28
        assert not any(t.get_visible() for t in fig.axes[1].get_yticklabels())
    finally:
        plt.close(fig)


def test_alpha_panels_zoom_one_by_one():
    """Only the panels that barely moved zoom; the edge that moved keeps 0..1."""
    fig = darts_cell.trajectories_figure(flat_history("s5", moving={(0, 3)}), get_space("s5"))
    try:
        for k, ax in enumerate(fig.axes):
            if k == 3:
                assert_full_range(ax)
                assert all(t.get_visible() for t in ax.get_yticklabels())
            else:
                lo, hi = ax.get_ylim()
                assert hi - lo < 0.05
    finally:
        plt.close(fig)


def test_nb201_alpha_panels_zoom():
    space = NB201_SPACES["nas-bench-201"]
    rng = np.random.default_rng(1)
    history = [{"epoch": e, "alphas": [(0.2 + rng.uniform(-0.001, 0.001, (6, 5))).tolist()]}
               for e in range(3)]
    fig = nb201_cell.trajectories_figure(history, space)
    try:
        assert len(fig.axes) == 6
        assert all(ax.get_ylim()[1] - ax.get_ylim()[0] < 0.05 for ax in fig.axes)
    finally:
        plt.close(fig)


def test_zoomed_ylim_rule():
    assert trajectory._zoomed_ylim([[0.0, 1.0], [0.5, 0.5]]) is None  # a large move: 0..1
    assert trajectory._zoomed_ylim([0.4, 0.65]) is None  # spans more than ZOOM_BELOW: 0..1
    lo, hi = trajectory._zoomed_ylim([0.4, 0.5])
    assert (lo, hi) == pytest.approx((0.39, 0.51))  # the range plus a tenth of it each side
    lo, hi = trajectory._zoomed_ylim([[0.25] * 4] * 3)  # not moved at all: never degenerate
    assert (lo, hi) == pytest.approx((0.25 - trajectory.MIN_SPAN / 2,
                                      0.25 + trajectory.MIN_SPAN / 2))
    assert trajectory._zoomed_ylim([0.3, float("nan"), 0.31]) == pytest.approx((0.299, 0.311))
    assert trajectory._zoomed_ylim([float("nan")]) is None


def test_plot_alpha_trajectories_flat_history(tmp_path):
    path = str(tmp_path / "alpha_trajectories.png")
    assert plots.plot_alpha_trajectories(flat_history("s5"), "s5", path) == path
    assert_png(path)


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
    assert curves._best_so_far([1.0, 3.0, 2.0], "valid_acc") == [1.0, 3.0, 3.0]
    assert curves._best_so_far([3.0, 1.0, 2.0], "train_loss") == [3.0, 1.0, 1.0]
