"""Per-cell DARTS search (``PerCellSpace`` / ``PerCellGenotype``, StacNAS without
``--alpha_share``: susan0199/StacNAS ``search_cnn.py``): one cell diagram per cell, and one
alpha-trajectory figure for all cells.

The cell diagrams are the DARTS ones (``darts_cell``), ``{prefix}_cell{i}.png`` per cell.

The trajectory figure has one small panel per cell (a grid, ``MAX_COLUMNS`` wide) instead of
DARTS' row of 14 per-op panels per alpha: a 20-cell network would need 280 panels, unreadable
and some 15 s to draw. A panel holds one curve per edge: the softmax weight, versus epoch, of
the op the edge would contribute to the cell at the last epoch (its strongest non-'none' op,
the one DARTS' rule ranks the edge by). The curve has that op's colour (the same colours as
every figure) and is solid when DARTS' rule keeps the edge at the last epoch (two inputs per
node), dashed when it drops it. So a panel shows which op each edge settles on, how decided it
is, and which edges make the derived cell; the full per-op curves of one cell are one
``shared.plots.edge_rows`` row away if ever needed."""
from __future__ import annotations

import math
from typing import Any, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from shared.genotypes import PerCellGenotype, _parse_cell
from shared.plots import dot
from shared.plots.common import _SMALL_AXES, _op_colors, _prepare, _save, closed_on_error
from shared.plots.darts_cell import _edge_list, render_cell
from shared.plots.dispatch import register_cell, register_trajectories
from shared.plots.edge_rows import _check_alphas
from shared.plots.trajectory import _set_ylim, _zoomed_ylim
from shared.spaces import STEPS, PerCellSpace, edge_inputs

MAX_COLUMNS = 5  # cells per row of the trajectory figure
_YTICKS = [0, 0.25, 0.5, 0.75, 1]


# -- the cell diagrams ---------------------------------------------------------------------------
@register_cell(PerCellGenotype)
def plot_per_cell_genotype(genotype: PerCellGenotype, prefix: str) -> list[str]:
    """Cell i to ``{prefix}_cell{i}.png`` (DARTS' diagram, titled with its kind); returns the
    paths in cell order. A malformed cell raises a ValueError before any file is written."""
    cells = list(zip(genotype.cells, genotype.concats, genotype.kinds))
    for pairs, concat, _ in cells:
        _edge_list(pairs, concat)
    use_graphviz = dot._graphviz_available()
    paths = []
    for i, (pairs, concat, kind) in enumerate(cells):
        paths.append(render_cell(pairs, concat, _prepare(f"{prefix}_cell{i}.png"),
                                 f"cell {i} ({kind})", use_graphviz))
    return paths


# -- alpha trajectories --------------------------------------------------------------------------
def _winners(table: Sequence[Sequence[float]], rows: Sequence[Sequence[str]]) -> list[int]:
    """Per edge, the index of its strongest non-'none' op (any op if all are 'none')."""
    out = []
    for probs, ops in zip(table, rows):
        cands = [k for k, name in enumerate(ops) if name != "none"] or list(range(len(ops)))
        out.append(max(cands, key=lambda k: probs[k]))  # first maximum, as _parse_cell
    return out


def _kept_edges(table: Sequence[Sequence[float]], rows: Sequence[Sequence[str]]) -> set[int]:
    """The edges DARTS' rule keeps (``_parse_cell``: two inputs per node); none when an edge
    offers only 'none', which the rule cannot rank."""
    try:
        pairs = _parse_cell(torch.tensor(table), rows, STEPS)
    except ValueError:
        return set()
    edges = edge_inputs(STEPS)
    return {edges.index((p // 2, j)) for p, (_, j) in enumerate(pairs)}


def _cell_tables(space: PerCellSpace) -> list[tuple[str, Sequence[Sequence[str]], list[str]]]:
    """``edge_rows``' table form (for its shape check): one per cell, edges as titles."""
    return [(f"cell {i}", rows, [str(e) for e in range(len(rows))])
            for i, rows in enumerate(space.cells)]


def trajectories_figure(history: Sequence[dict[str, Any]], space: PerCellSpace) -> Figure:
    """The open figure (the caller saves or closes it); a ValueError before any figure exists
    when ``history``'s alphas (one table per cell) do not match ``space``."""
    _check_alphas(history, space, _cell_tables(space))
    epochs = [int(h["epoch"]) for h in history]
    colors = _op_colors(op for rows in space.cells for row in rows for op in row)
    last = history[-1]["alphas"]
    ncols = min(space.layers, MAX_COLUMNS)
    nrows = math.ceil(space.layers / ncols)
    marker = "o" if len(epochs) <= 30 else None
    used: dict[str, Any] = {}
    with plt.rc_context(_SMALL_AXES):
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 0.9 + 2.3 * nrows),
                                 squeeze=False)
        with closed_on_error(fig):
            for i, rows in enumerate(space.cells):
                ax = axes[i // ncols][i % ncols]
                winners = _winners(last[i], rows)
                kept = _kept_edges(last[i], rows)
                curves = []
                for e, k in enumerate(winners):
                    values = [h["alphas"][i][e][k] for h in history]
                    curves.append(values)
                    op = rows[e][k]
                    used[op] = colors[op]
                    ax.plot(epochs, values, color=colors[op], marker=marker, markersize=2.5,
                            linewidth=1.4 if e in kept else 0.9,
                            linestyle="-" if e in kept else "--")
                _set_ylim(ax, _zoomed_ylim(curves), _YTICKS)
                ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
                if len(epochs) == 1:
                    ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
                    ax.set_xticks([epochs[0]])
                ax.set_title(f"cell {i} ({space.kinds[i]})")
                if i % ncols == 0:
                    ax.set_ylabel("softmax(α)")
                if i + ncols >= space.layers:  # no panel below
                    ax.set_xlabel("epoch")
            for j in range(space.layers, nrows * ncols):
                axes[j // ncols][j % ncols].set_visible(False)
            handles = [Line2D([], [], color=c, label=op) for op, c in used.items()]
            handles += [Line2D([], [], color="black", linestyle="-", label="edge kept"),
                        Line2D([], [], color="black", linestyle="--", label="edge dropped")]
            fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6),
                       fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.0))
            fig.suptitle(f"per edge: weight of its strongest op at the last epoch "
                         f"(space {space.name})", fontsize=10)
            width, height = fig.get_size_inches()
            fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width,
                                top=1 - 0.55 / height, bottom=1.1 / height, wspace=0.35,
                                hspace=0.55)
    return fig


@register_trajectories(PerCellSpace)
def plot_per_cell_trajectories(history: list[dict], space: PerCellSpace, path: str) -> str:
    """One panel per cell, one curve per edge (see the module docstring). Returns ``path``."""
    with plt.rc_context(_SMALL_AXES):
        return _save(trajectories_figure(history, space), path, tight=False)
