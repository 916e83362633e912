"""The NAS-Bench-1Shot1 cell (``NB1Shot1Arch``): input, one node per choice block filled with
its op's colour, output, loose ends (blocks the NB-101 cell drops) dashed grey (matplotlib);
and the NB-1Shot1 spaces' alpha trajectories: a row of the choice blocks' ops, a row of the
output's and each input-choice node's weights per source node."""
from __future__ import annotations

import math
from typing import Any, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch

from shared.nb1shot1_arch import NB1Shot1Arch
from shared.plots.common import (
    _NODE_COLORS,
    _NODE_RADIUS,
    _SMALL_AXES,
    Point,
    _lighten,
    _op_colors,
    _save,
    closed_on_error,
)
from shared.plots.dispatch import register_cell, register_trajectories
from shared.plots.graph import _edge_rads, _figsize
from shared.plots.trajectory import YLim, _plot_edge, _set_ylim, _zoomed_ylim
from shared.spaces import NB1Shot1Space

# NB-101 names are long; the figure shows the short form (the legend-free cell plot has room for
# one short word under each node).
_NB101_SHORT = {"conv3x3-bn-relu": "conv 3x3", "conv1x1-bn-relu": "conv 1x1",
                "maxpool3x3": "max-pool 3x3"}
_LOOSE_COLOR = "#9a9a9a"
_YTICKS = [0, 0.25, 0.5, 0.75, 1]


# -- the cell diagram --------------------------------------------------------------------------
def _nb1shot1_node(node: int, output: int) -> str:
    return "in" if node == 0 else "out" if node == output else str(node)


def _nb1shot1_layout(num_nodes: int) -> dict[str, Point]:
    """Input left, output right, the choice blocks in order between them, alternately above and
    below the axis on an ellipse: convex position, so no straight edge runs through a node,
    and every block has free space outside the ellipse for its op label."""
    steps = num_nodes - 2
    a, b = 1.45 * (steps + 1), 2.6
    pos = {"in": (-a, 0.0), "out": (a, 0.0)}
    for m in range(steps):
        x = -a + (m + 1) * 2 * a / (steps + 1)
        y = b * math.sqrt(max(0.0, 1 - (x / a) ** 2))
        pos[str(m + 1)] = (x, y if m % 2 == 0 else -y)
    return pos


def plot_nb1shot1_cell(arch: NB1Shot1Arch, path: str) -> str:
    """An NB-1Shot1 cell: input, one node per choice block (filled with its op's colour, the op
    written outside the ellipse), output. Blocks not on a path to the output (loose ends, which
    the NB-101 cell drops) and all their edges are grey and dashed. Returns ``path``."""
    space = arch.search_space
    output = space.output_node
    used = set(arch.used_blocks())
    pos = _nb1shot1_layout(space.num_nodes)
    edges: list[tuple[str, str, str | None]] = []
    loose_edge: list[bool] = []
    for node, parents in enumerate(arch.parents, start=1):
        for p in parents:
            edges.append((_nb1shot1_node(p, output), _nb1shot1_node(node, output), None))
            # an edge into or out of a loose end is not part of the built cell
            loose_edge.append(not ({p, node} - {0, output}) <= used)
    colors = _op_colors(space.ops)
    fig, ax = plt.subplots(figsize=_figsize(pos, 1.6, 2.4))
    circles: dict[str, Circle] = {}
    with closed_on_error(fig):
        for name, (x, y) in pos.items():
            block = name not in ("in", "out")
            loose = block and int(name) not in used
            if not block:
                face = _NODE_COLORS["input" if name == "in" else "output"]
            else:
                face = "#eeeeee" if loose else _lighten(colors[arch.ops[int(name) - 1]])
            circle = Circle((x, y), _NODE_RADIUS, facecolor=face, zorder=3,
                            edgecolor=_LOOSE_COLOR if loose else "black",
                            linewidth=1.5, linestyle="--" if loose else "-")
            circles[name] = ax.add_patch(circle)
            ax.text(x, y, name, ha="center", va="center", fontsize=11, zorder=4,
                    color=_LOOSE_COLOR if loose else "black")
            if block:  # op label outside the ellipse, where no edge runs
                op = arch.ops[int(name) - 1]
                up = y >= 0
                text = _NB101_SHORT.get(op, op) + ("\n(loose end)" if loose else "")
                ax.text(x, y + (1 if up else -1) * (_NODE_RADIUS + 0.15), text,
                        ha="center", va="bottom" if up else "top", fontsize=9, zorder=5,
                        color=_LOOSE_COLOR if loose else "black",
                        bbox=dict(boxstyle="round,pad=0.2", linewidth=0.8,
                                  facecolor="white" if loose else _lighten(colors[op], 0.75),
                                  edgecolor=_LOOSE_COLOR if loose else colors[op]))
        for (u, v, _), rad, loose in zip(edges, _edge_rads(edges, pos), loose_edge):
            ax.add_patch(FancyArrowPatch(
                pos[u], pos[v], patchA=circles[u], patchB=circles[v], zorder=2, clip_on=False,
                connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=14,
                linewidth=1.0 if loose else 1.6, color=_LOOSE_COLOR if loose else "#333333",
                linestyle="--" if loose else "-"))
        xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
        ax.set_xlim(min(xs) - 1.5 * _NODE_RADIUS, max(xs) + 1.5 * _NODE_RADIUS)
        ax.set_ylim(min(ys) - 4 * _NODE_RADIUS, max(ys) + 4 * _NODE_RADIUS)  # room for labels
        ax.set_aspect("equal")
        ax.axis("off")
        title = f"NAS-Bench-1Shot1 cell, search space {space.name}"
        if len(used) < space.steps:
            title += "\ndashed grey: loose ends, dropped from the NB-101 cell"
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


@register_cell(NB1Shot1Arch)
def _plot_nb1shot1_genotype(arch: NB1Shot1Arch, prefix: str) -> list[str]:
    return [plot_nb1shot1_cell(arch, f"{prefix}_cell.png")]


# -- alpha trajectories ------------------------------------------------------------------------
def _source_name(node: int) -> str:
    return "input" if node == 0 else f"node {node}"


# (tensor index in the mixing-weights tuple, row, subplot title, curve labels), per subplot
Panel = tuple[int, int, str, list[str]]


def _nb1shot1_panels(space: NB1Shot1Space) -> list[list[Panel]]:
    """Row 0: each choice block's ops (``alphas_mixed_op`` rows). Row 1: the output's weights,
    then each input-choice node's, one curve per candidate source node."""
    ops_row: list[Panel] = [(0, b, f"node {b + 1}: op", list(space.ops))
                            for b in range(space.steps)]
    sources_row: list[Panel] = [(1, 0, "output ← sources",
                                 [_source_name(n) for n in range(space.steps + 1)])]
    sources_row += [(2 + i, 0, f"node {node} ← sources", [_source_name(n) for n in range(node)])
                    for i, node in enumerate(space.input_choice_nodes)]
    return [ops_row, sources_row]


def _check_nb1shot1_alphas(history: Sequence[dict[str, Any]], space: NB1Shot1Space) -> None:
    if not history:
        raise ValueError("plot_alpha_trajectories: the history is empty")
    shapes = [(space.steps, len(space.ops)), (1, space.steps + 1),
              *((1, node) for node in space.input_choice_nodes)]
    for h in history:
        alphas = h.get("alphas")
        if not isinstance(alphas, (list, tuple)) or len(alphas) != len(shapes):
            got = len(alphas) if isinstance(alphas, (list, tuple)) else type(alphas).__name__
            raise ValueError(f"epoch {h.get('epoch')}: NB-1Shot1 space {space.name} needs "
                             f"{len(shapes)} alpha tensors (mixed_op, output, one per input-"
                             f"choice node {list(space.input_choice_nodes)}), got {got}")
        for k, (table, (rows, cols)) in enumerate(zip(alphas, shapes)):
            ok = (isinstance(table, (list, tuple)) and len(table) == rows
                  and all(isinstance(r, (list, tuple)) and len(r) == cols for r in table))
            if not ok:
                raise ValueError(f"epoch {h.get('epoch')}: alpha tensor {k} does not match "
                                 f"NB-1Shot1 space {space.name}: expected {rows} x {cols}")


def _source_colors(n: int) -> dict[str, Any]:
    """A colour per source node (input, node 1, ...): tab10 colours that the NB-101 ops (orange,
    green, purple) do not use, so the two legends never suggest a link."""
    palette = plt.get_cmap("tab10").colors
    picks = [palette[i] for i in (0, 3, 5, 6, 8, 9, 7)]
    return {_source_name(k): picks[k % len(picks)] for k in range(n)}


def _panel_ylims(history: Sequence[dict[str, Any]], space: NB1Shot1Space
                 ) -> list[list[YLim | None]]:
    """Each panel's zoomed y limits, or None where it keeps 0..1."""
    return [[_zoomed_ylim([h["alphas"][tensor][row] for h in history])
             for tensor, row, _, _ in panels] for panels in _nb1shot1_panels(space)]


def _draw_nb1shot1_trajectories(fig: Figure, axes: Any, history: Sequence[dict[str, Any]],
                                space: NB1Shot1Space, lims: list[list[YLim | None]]) -> None:
    """Draw into ``axes`` (2 rows); ``lims`` as ``_panel_ylims``: with no panel zoomed the axes
    share one y axis, else each panel has its own."""
    epochs = [int(h.get("epoch", i)) for i, h in enumerate(history)]
    rows = _nb1shot1_panels(space)
    op_colors = _op_colors(space.ops)
    legends = [{op: op_colors[op] for op in space.ops}, _source_colors(space.steps + 1)]
    zoomed = any(lim is not None for row in lims for lim in row)
    if not zoomed:
        axes[0][0].set_ylim(-0.02, 1.02)  # shared by all axes
        axes[0][0].set_yticks(_YTICKS)
    for r, (panels, colors) in enumerate(zip(rows, legends)):
        for c, (tensor, row, title, labels) in enumerate(panels):
            ax = axes[r][c]
            _plot_edge(ax, epochs, [h["alphas"][tensor][row] for h in history], labels, colors)
            if zoomed:
                _set_ylim(ax, lims[r][c], _YTICKS)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.tick_params(labelleft=True)  # rows differ in length: every row keeps its ticks
        for ax in axes[r][len(panels):]:
            ax.set_visible(False)
        axes[r][0].set_ylabel(f"{'choice blocks' if r == 0 else 'inputs'}\nsoftmax(α)",
                              fontsize=9)
        handles = [Line2D([], [], color=col, marker="o", markersize=4,
                          label=_NB101_SHORT.get(name, name)) for name, col in colors.items()]
        # each row its own legend, right of the row's last used subplot
        axes[r][len(panels) - 1].legend(handles=handles, loc="upper left", fontsize=8,
                                        bbox_to_anchor=(1.04, 1.0), frameon=False,
                                        title="op" if r == 0 else "source", title_fontsize=8)
    fig.suptitle(f"architecture weights, NAS-Bench-1Shot1 search space {space.name}",
                 fontsize=11)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / width, right=1 - 1.35 / width, top=1 - 0.6 / height,
                        bottom=0.5 / height, wspace=0.35 if zoomed else 0.25, hspace=0.55)


def trajectories_figure(history: Sequence[dict[str, Any]], space: NB1Shot1Space) -> Figure:
    """The open alpha-trajectory figure of an NB-1Shot1 space (the caller saves or closes it);
    a ValueError before any figure exists when the alphas do not match the space."""
    _check_nb1shot1_alphas(history, space)
    lims = _panel_ylims(history, space)
    zoomed = any(lim is not None for row in lims for lim in row)
    cols = max(len(r) for r in _nb1shot1_panels(space))
    with plt.rc_context(_SMALL_AXES):
        fig, axes = plt.subplots(2, cols, figsize=(2.0 * cols + 2.1, 5.6), sharey=not zoomed,
                                 squeeze=False)
        with closed_on_error(fig):
            _draw_nb1shot1_trajectories(fig, axes, history, space, lims)
    return fig


@register_trajectories(NB1Shot1Space)
def plot_nb1shot1_trajectories(history: list[dict], space: NB1Shot1Space, path: str) -> str:
    """softmax(alpha) versus epoch: a row of choice blocks (one curve per op) and a row of the
    output's and each input-choice node's weights (one curve per source node). Returns
    ``path``."""
    with plt.rc_context(_SMALL_AXES):
        return _save(trajectories_figure(history, space), path, tight=False)
