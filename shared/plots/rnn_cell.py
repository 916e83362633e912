"""The DARTS recurrent cell (``RNNGenotype``) as the released DARTS repository's
``rnn/visualize.py`` draws it: x_{t} and h_{t-1} into the initial state s0, an edge labelled
with its activation from each node's predecessor, the ``concat`` nodes into h_{t} (graphviz
when available, else matplotlib); and the DARTS RNN space's alpha trajectories, a
lower-triangular grid with one row per node and one column per predecessor."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from shared.plots import dot
from shared.plots.common import _SMALL_AXES, Point, _op_colors, _prepare, _save, closed_on_error
from shared.plots.dispatch import register_cell, register_trajectories
from shared.plots.graph import _draw_graph, _figsize, _layout
from shared.plots.trajectory import _plot_edge, _set_ylim, _zoomed_ylim
from shared.rnn_genotype import RNNGenotype
from shared.spaces import RNNSpace

# Node names as DARTS' rnn visualize.py has them: inputs x_{t}, h_{t-1}, the initial state "0"
# (s0), the nodes "1".."N", the output h_{t}.
_RNN_KINDS = {"x_{t}": "input", "h_{t-1}": "input", "h_{t}": "output"}
_RNN_RENAME = {"c_{k-2}": "x_{t}", "c_{k-1}": "h_{t-1}", "c_{k}": "h_{t}"}


# -- the cell diagram --------------------------------------------------------------------------
def _rnn_layout(steps: int) -> dict[str, Point]:
    """The CNN cell's ellipse with s0 as its first inner node: x_{t} and h_{t-1} left, s0 and
    nodes 1..steps alternately above and below the axis, h_{t} right (convex position, so no
    straight edge runs through a third node, and the curve/label machinery applies as is).
    Taller and a little narrower than the CNN cell's: with 9 to 12 inner nodes the CNN
    proportions give a flat band where the long edges to h_{t} run into the labels."""
    spread = 1.3
    height = max(3.2, 0.3 * spread * (steps + 3))
    return {_RNN_RENAME.get(name, name): p
            for name, p in _layout(steps + 1, spread, height).items()}


def _rnn_edges(genotype: RNNGenotype) -> list[tuple[str, str, str | None]]:
    """(source, target, activation or None): x_{t}, h_{t-1} -> s0 and the ``concat`` nodes ->
    h_{t} unlabelled, one labelled edge per node from its predecessor."""
    edges: list[tuple[str, str, str | None]] = [("x_{t}", "0", None), ("h_{t-1}", "0", None)]
    edges += [(str(j), str(i), op) for i, (op, j) in enumerate(genotype.recurrent, start=1)]
    return edges + [(str(i), "h_{t}", None) for i in genotype.concat]


def _rnn_title(genotype: RNNGenotype) -> str:
    title = "recurrent cell"
    if list(genotype.concat) != list(range(1, genotype.steps + 1)):
        title += f"\n$h_{{t}}$ = mean of nodes {', '.join(map(str, genotype.concat))}"
    return title


def plot_rnn_cell(genotype: RNNGenotype, path: str) -> str:
    """The DARTS recurrent cell as a DAG, as DARTS' ``rnn/visualize.py`` draws it but with
    matplotlib (no graphviz needed): x_{t} and h_{t-1} into node 0 (s0), an edge labelled with
    its activation from each node's predecessor, the ``concat`` nodes (dashed) into h_{t}, whose
    value is their mean. Returns ``path``."""
    pos = _rnn_layout(genotype.steps)
    fig, ax = plt.subplots(figsize=_figsize(pos, 1.5, 1.8))
    with closed_on_error(fig):
        _draw_graph(ax, pos, _rnn_edges(genotype), kinds=_RNN_KINDS)
        ax.set_title(_rnn_title(genotype), fontsize=12)
    return _save(fig, path)


def _render_rnn_graphviz(genotype: RNNGenotype, path: str) -> str:
    """DARTS' rnn/visualize.plot, but h_{t} takes only the ``concat`` nodes."""
    g = dot._digraph()
    g.node("x_{t}", fillcolor="darkseagreen2")
    g.node("h_{t-1}", fillcolor="darkseagreen2")
    for i in range(genotype.steps + 1):
        g.node(str(i), fillcolor="lightblue")
    g.node("h_{t}", fillcolor="palegoldenrod")
    for u, v, op in _rnn_edges(genotype):
        g.edge(u, v, label=op, fillcolor="gray")
    return dot._render(g, path)


@register_cell(RNNGenotype)
def _plot_rnn_genotype(genotype: RNNGenotype, prefix: str) -> list[str]:
    """``{prefix}_recurrent.png``: graphviz when available like the CNN cells, else
    ``plot_rnn_cell``."""
    path = _prepare(f"{prefix}_recurrent.png")
    if dot._graphviz_available():
        return [_render_rnn_graphviz(genotype, path)]
    return [plot_rnn_cell(genotype, path)]


# -- alpha trajectories ------------------------------------------------------------------------
def _rnn_state(j: int) -> str:
    return f"s{j}"


def _check_rnn_alphas(history: Sequence[dict[str, Any]], space: RNNSpace) -> list[np.ndarray]:
    """The one (edges x ops) table of every epoch as an array; a ValueError that names the
    expected shape otherwise (lists, arrays and CPU tensors all pass)."""
    if not history:
        raise ValueError("plot_alpha_trajectories: the history is empty")
    shape = (space.num_edges, len(space.ops))
    expected = (f"RNN space {space.name} needs alphas = [one {shape[0]} x {shape[1]} table] "
                f"(rows: node 1..{space.steps} x predecessor, ops {list(space.ops)})")
    tables = []
    for i, h in enumerate(history):
        alphas = h.get("alphas")
        if not isinstance(alphas, (list, tuple)) or len(alphas) != 1:
            got = (f"{len(alphas)} tables" if isinstance(alphas, (list, tuple))
                   else type(alphas).__name__)
            raise ValueError(f"epoch {h.get('epoch', i)}: {expected}, got {got}")
        try:
            table = np.asarray(alphas[0], dtype=float)
        except (TypeError, ValueError):  # ragged rows, non-numbers
            table = None
        if table is None or table.shape != shape:
            got = "a ragged table" if table is None else " x ".join(map(str, table.shape))
            raise ValueError(f"epoch {h.get('epoch', i)}: {expected}, got {got}")
        tables.append(table)
    return tables


def trajectories_figure(history: Sequence[dict[str, Any]], space: RNNSpace) -> Figure:
    """The lower-triangular grid: row i = node i, column j = predecessor s_j, one curve per op.
    Only the 36 used axes are created (the upper triangle stays empty, which is also where the
    legend goes); fixed margins instead of tight_layout, which costs seconds on 36 axes. With
    no panel zoomed the panels share one y axis, labelled in the first column; else each panel
    has its own. The caller saves or closes the open figure."""
    tables = _check_rnn_alphas(history, space)
    epochs = [int(h.get("epoch", i)) for i, h in enumerate(history)]
    probs = np.stack(tables)  # epochs x edges x ops
    lims = [_zoomed_ylim(probs[:, e, :]) for e in range(space.num_edges)]
    zoomed = any(lim is not None for lim in lims)
    colors = _op_colors(space.ops)
    n = space.steps
    left, right, top, bottom = 0.75, 0.15, 0.75, 0.55  # inches
    width, height = left + right + 1.55 * n, top + bottom + 1.25 * n
    with plt.rc_context(_SMALL_AXES):
        fig = plt.figure(figsize=(width, height))
        with closed_on_error(fig):
            grid = fig.add_gridspec(n, n, left=left / width, right=1 - right / width,
                                    top=1 - top / height, bottom=bottom / height,
                                    wspace=0.45 if zoomed else 0.12, hspace=0.45)
            first: Axes | None = None
            for e, (node, j) in enumerate(space.edges()):
                ax = fig.add_subplot(grid[node - 1, j], sharex=first,
                                     sharey=None if zoomed else first)
                if first is None:
                    first = ax
                    if not zoomed:
                        ax.set_ylim(-0.02, 1.02)
                        ax.set_yticks([0, 0.5, 1])
                _plot_edge(ax, epochs, probs[:, e, :].tolist(), space.ops, colors)
                if zoomed:
                    _set_ylim(ax, lims[e], [0, 0.5, 1])
                ax.set_title(f"node {node} ← {_rnn_state(j)}", pad=3)
                ax.tick_params(labelleft=zoomed or j == 0, labelbottom=node == n)
                if j == 0:
                    ax.set_ylabel("softmax(α)", fontsize=7, labelpad=2)
                if node == n:
                    ax.set_xlabel("epoch")
            handles = [Line2D([], [], color=colors[op], marker="o", markersize=4, label=op)
                       for op in space.ops]
            # the empty upper-right triangle holds the legend and the key to the names
            fig.legend(handles=handles, loc="upper right", fontsize=10, frameon=False,
                       title="op", title_fontsize=10, ncol=len(handles),
                       bbox_to_anchor=(1 - right / width, 1 - top / height))
            fig.text(1 - right / width, 1 - (top + 0.75) / height,
                     f"{_rnn_state(0)}: the initial state, from $x_t$ and $h_{{t-1}}$\n"
                     f"node i = $s_i$; each node keeps one predecessor after search",
                     ha="right", va="top", fontsize=9)
            fig.suptitle(f"architecture weights per edge (space {space.name}, recurrent cell)",
                         fontsize=12, y=1 - 0.2 / height, va="top")
    return fig


@register_trajectories(RNNSpace)
def plot_rnn_trajectories(history: Sequence[dict[str, Any]], space: RNNSpace,
                          path: str) -> str:
    """softmax(alpha) per op versus epoch, one panel per (node, predecessor). Returns
    ``path``."""
    with plt.rc_context(_SMALL_AXES):
        return _save(trajectories_figure(history, space), path, tight=False)
