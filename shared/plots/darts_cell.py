"""The DARTS CNN cells (``Genotype``): the normal and the reduction cell as DAGs, as the
released DARTS repository's ``cnn/visualize.py`` draws them (c_{k-2} and c_{k-1} in, an edge
labelled with its op per (op, input) pair, c_{k} out), with graphviz when available, else with
matplotlib; and the DARTS spaces' alpha trajectories, a normal and a reduce row of 14 edges."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from shared.genotypes import Genotype
from shared.plots import dot
from shared.plots.common import _prepare, _save, closed_on_error
from shared.plots.dispatch import register_cell, register_trajectories
from shared.plots.edge_rows import AlphaTable, _plot_trajectories, _trajectories_figure
from shared.plots.graph import _draw_graph, _figsize, _layout
from shared.spaces import CellSpace, edge_inputs


def _input_name(j: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(j, str(j - 2))


def _cell_edges(pairs: Sequence[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """(op, input, node) of every edge; node i uses pairs 2i and 2i+1."""
    if len(pairs) % 2:
        raise ValueError(f"a cell needs two (op, input) pairs per node, got {len(pairs)} pairs")
    edges = [(op, int(j), k // 2) for k, (op, j) in enumerate(pairs)]
    for op, j, node in edges:
        if not 0 <= j < 2 + node:
            raise ValueError(f"node {node} cannot take input {j} ({op}): inputs are 0, 1 and "
                             f"the earlier nodes 2..{1 + node}")
    return edges


def _edge_list(pairs: Sequence[tuple[str, int]], concat: Sequence[int]
               ) -> list[tuple[str, str, str | None]]:
    """(source, target, op or None for the concat edges)."""
    edges: list[tuple[str, str, str | None]] = [
        (_input_name(j), str(node), op) for op, j, node in _cell_edges(pairs)]
    bad = [i for i in concat if not 0 <= i < 2 + len(pairs) // 2]
    if bad:
        raise ValueError(f"concat {list(concat)} names nodes {bad} the cell does not have")
    return edges + [(_input_name(i), "c_{k}", None) for i in concat]


# -- the cell diagram --------------------------------------------------------------------------
def _render_graphviz(pairs: Sequence[tuple[str, int]], concat: Sequence[int], path: str) -> str:
    """DARTS' visualize.plot, but the output node takes only the ``concat`` nodes."""
    g = dot._digraph()
    g.node("c_{k-2}", fillcolor="darkseagreen2")
    g.node("c_{k-1}", fillcolor="darkseagreen2")
    steps = len(pairs) // 2
    for i in range(steps):
        g.node(str(i), fillcolor="lightblue")
    for op, j, node in _cell_edges(pairs):
        g.edge(_input_name(j), str(node), label=op, fillcolor="gray")
    g.node("c_{k}", fillcolor="palegoldenrod")
    for i in concat:
        g.edge(_input_name(i), "c_{k}", fillcolor="gray")
    return dot._render(g, path)


def _draw_cell(ax: Axes, pairs: Sequence[tuple[str, int]], concat: Sequence[int]) -> None:
    _draw_graph(ax, _layout(len(pairs) // 2), _edge_list(pairs, concat))


def _render_matplotlib(pairs: Sequence[tuple[str, int]], concat: Sequence[int], path: str,
                       title: str) -> str:
    fig, ax = plt.subplots(figsize=_figsize(_layout(len(pairs) // 2), 1.5, 1.8))
    with closed_on_error(fig):
        _draw_cell(ax, pairs, concat)
        ax.set_title(title, fontsize=12)
    return _save(fig, path)


@register_cell(Genotype)
def plot_darts_cells(genotype: Genotype, prefix: str) -> list[str]:
    """Both cells to ``{prefix}_normal.png`` and ``{prefix}_reduce.png``; return the paths. A
    malformed cell raises a ValueError before any file is written."""
    use_graphviz = dot._graphviz_available()
    paths = []
    for cell in ("normal", "reduce"):
        pairs, concat = getattr(genotype, cell), getattr(genotype, f"{cell}_concat")
        _edge_list(pairs, concat)  # a malformed cell fails here, before any file is written
        paths.append(render_cell(pairs, concat, _prepare(f"{prefix}_{cell}.png"),
                                 f"{cell} cell", use_graphviz))
    return paths


def render_cell(pairs: Sequence[tuple[str, int]], concat: Sequence[int], path: str, title: str,
                use_graphviz: bool) -> str:
    """One cell's diagram: graphviz where it is installed, else matplotlib (titled)."""
    if use_graphviz:
        return _render_graphviz(pairs, concat, path)
    return _render_matplotlib(pairs, concat, path, title)


# -- alpha trajectories ------------------------------------------------------------------------
def _edge_title(node: int, j: int) -> str:
    source = {0: "$c_{k-2}$", 1: "$c_{k-1}$"}.get(j, f"node {j - 2}")
    return f"node {node} ← {source}"


def _alpha_tables(space: CellSpace) -> list[AlphaTable]:
    return [(cell, rows, [_edge_title(n, j) for n, j in edge_inputs()[:len(rows)]])
            for cell, rows in (("normal", space.normal), ("reduce", space.reduce))]


def trajectories_figure(history: Sequence[dict[str, Any]], space: CellSpace) -> Figure:
    """The open alpha-trajectory figure of a DARTS space (the caller saves or closes it)."""
    return _trajectories_figure(history, space, _alpha_tables(space))


@register_trajectories(CellSpace)
def plot_darts_trajectories(history: list[dict], space: CellSpace, path: str) -> str:
    """softmax(alpha) per op versus epoch, a normal and a reduce row of 14 edges (each with
    the space's candidate ops for that edge). Returns ``path``."""
    return _plot_trajectories(history, space, _alpha_tables(space), path)
