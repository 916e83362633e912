"""The NAS-Bench-201 cell (``NB201Arch``): its 4-node DAG with one op per edge, removed
(``none``) edges dashed grey (matplotlib); and the NB201 spaces' alpha trajectories, one row of
6 edges."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from shared.nb201_arch import NB201Arch
from shared.plots.common import Point, _save, closed_on_error
from shared.plots.dispatch import register_cell, register_trajectories
from shared.plots.edge_rows import AlphaTable, _plot_trajectories, _trajectories_figure
from shared.plots.graph import _draw_graph
from shared.spaces import NB201_EDGES, NB201Space


def _nb201_layout() -> dict[str, Point]:
    """NB201's 4 nodes as a diamond (convex, so no straight edge crosses a node): input left,
    nodes 1 above and 2 below, output (node 3) right."""
    return {"c_{k-1}": (-3.0, 0.0), "1": (0.0, 2.2), "2": (0.0, -2.2), "c_{k}": (3.0, 0.0)}


def _nb201_node(i: int) -> str:
    return {0: "c_{k-1}", 3: "c_{k}"}.get(i, str(i))


def plot_nb201_cell(arch: NB201Arch, path: str) -> str:
    """An NB201 cell: node 0 (the cell input) to node 3 (its output), one edge per op;
    ``none`` edges (removed) are drawn dashed grey. Returns ``path``."""
    pos = _nb201_layout()
    edges = [(_nb201_node(frm), _nb201_node(to), None if op == "none" else op)
             for (to, frm), op in zip(NB201_EDGES, arch.ops)]
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    with closed_on_error(fig):
        _draw_graph(ax, pos, edges)
        ax.set_title(f"NAS-Bench-201 cell\n{arch.tostr()}", fontsize=8)
    return _save(fig, path)


@register_cell(NB201Arch)
def _plot_nb201_genotype(arch: NB201Arch, prefix: str) -> list[str]:
    return [plot_nb201_cell(arch, f"{prefix}_cell.png")]


def _alpha_tables(space: NB201Space) -> list[AlphaTable]:
    titles = [f"node {to} ← {'input' if frm == 0 else f'node {frm}'}"
              for to, frm in space.edges]
    return [("cell", [space.ops] * space.num_edges, titles)]


def trajectories_figure(history: Sequence[dict[str, Any]], space: NB201Space) -> Figure:
    """The open alpha-trajectory figure of an NB201 space (the caller saves or closes it)."""
    return _trajectories_figure(history, space, _alpha_tables(space))


@register_trajectories(NB201Space)
def plot_nb201_trajectories(history: list[dict], space: NB201Space, path: str) -> str:
    """softmax(alpha) per op versus epoch, one row of the cell's 6 edges. Returns ``path``."""
    return _plot_trajectories(history, space, _alpha_tables(space), path)
