"""The rows-of-edges alpha-trajectory figure of the DARTS and NB201 spaces: one row per alpha
table (DARTS: normal and reduce, 14 edges each; NB201: one row of 6 edges), one panel per
edge with a curve per op, one colour per op name across all panels and one legend under the
rows. The cell modules supply the tables (``AlphaTable``)."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from shared.plots.common import _SMALL_AXES, _op_colors, _save, closed_on_error
from shared.plots.trajectory import YLim, _plot_edge, _set_ylim, _zoomed_ylim
from shared.spaces import CellSpace, NB201Space

Space = CellSpace | NB201Space
# (cell type, candidate ops per edge, subplot title per edge), one per alpha table
AlphaTable = tuple[str, Sequence[Sequence[str]], list[str]]

_YTICKS = [0, 0.25, 0.5, 0.75, 1]


def _check_alphas(history: Sequence[dict[str, Any]], space: Space,
                  tables: list[AlphaTable]) -> None:
    if not history:
        raise ValueError("plot_alpha_trajectories: the history is empty")
    for h in history:
        alphas = h["alphas"]
        if len(alphas) != len(tables):
            names = ", ".join(cell for cell, _, _ in tables)
            raise ValueError(f"epoch {h.get('epoch')}: need {len(tables)} alpha table(s) "
                             f"({names}), got {len(alphas)}")
        for table, (_, ops, _) in zip(alphas, tables):
            if len(table) != len(ops) or any(len(r) != len(o) for r, o in zip(table, ops)):
                raise ValueError(f"epoch {h.get('epoch')}: alpha table does not match space "
                                 f"{space.name} ({len(ops)} edges x {len(ops[0])} ops)")


def _draw_trajectories(fig: Figure, axes: Any, history: Sequence[dict[str, Any]], space: Space,
                       tables: list[AlphaTable], lims: list[list[YLim | None]]) -> None:
    """Draw into ``axes`` (rows x edges); ``lims``: each panel's zoomed y limits or None. With
    no panel zoomed the axes share y (only the first column labelled), else each panel has its
    own y axis and tick labels."""
    epochs = [int(h["epoch"]) for h in history]
    colors = _op_colors(op for _, rows, _ in tables for row in rows for op in row)
    zoomed = any(lim is not None for row in lims for lim in row)
    if not zoomed:
        axes[0][0].set_ylim(-0.02, 1.02)  # shared by all axes
        axes[0][0].set_yticks(_YTICKS)
    for r, (cell, rows, titles) in enumerate(tables):
        for e, title in enumerate(titles):
            ax = axes[r][e]
            _plot_edge(ax, epochs, [h["alphas"][r][e] for h in history], rows[e], colors)
            if zoomed:
                _set_ylim(ax, lims[r][e], _YTICKS)
            ax.set_title(title, y=1.0)  # placed, not measured: nothing sits above a panel
            if r == len(tables) - 1:
                ax.set_xlabel("epoch")
        axes[r][0].set_ylabel(f"{cell}\nsoftmax(α)", fontsize=9)
    handles = [Line2D([], [], color=c, marker="o", markersize=4, label=op)
               for op, c in colors.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=10,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"architecture weights per edge (space {space.name})", fontsize=11)
    # fixed margins in inches: tight_layout costs seconds on 28 axes
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, top=1 - 0.6 / height,
                        bottom=1.05 / height, wspace=0.4 if zoomed else 0.12, hspace=0.4)


def _trajectories_figure(history: Sequence[dict[str, Any]], space: Space,
                         tables: list[AlphaTable]) -> Figure:
    """The open figure (the caller saves or closes it); a ValueError before any figure exists
    when ``history`` does not match ``tables``."""
    _check_alphas(history, space, tables)
    lims = [[_zoomed_ylim([h["alphas"][r][e] for h in history]) for e in range(len(titles))]
            for r, (_, _, titles) in enumerate(tables)]
    zoomed = any(lim is not None for row in lims for lim in row)
    n_edges = len(tables[0][1])
    width = max(1.75 * n_edges, 7.0)  # room for the legend under a short row
    with plt.rc_context(_SMALL_AXES):  # rc rather than per-axis calls: faster on 28 axes
        fig, axes = plt.subplots(len(tables), n_edges, figsize=(width, 0.4 + 2.5 * len(tables)),
                                 sharey=not zoomed, squeeze=False)
        with closed_on_error(fig):
            _draw_trajectories(fig, axes, history, space, tables, lims)
    return fig


def _plot_trajectories(history: Sequence[dict[str, Any]], space: Space,
                       tables: list[AlphaTable], path: str) -> str:
    with plt.rc_context(_SMALL_AXES):
        return _save(_trajectories_figure(history, space, tables), path, tight=False)
