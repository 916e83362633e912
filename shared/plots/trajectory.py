"""One panel of an alpha-trajectory figure: a curve per op (softmax(alpha) versus epoch) and the
panel's y range, 0..1, or zoomed to the curves when they have barely moved: after a short
search every curve still sits near 1/num_ops and would be a flat, indistinguishable line on
0..1."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator, ScalarFormatter

FULL_YLIM = (-0.02, 1.02)  # the y range of a panel that is not zoomed
ZOOM_BELOW = 0.2  # a panel whose values span less than this (of [0, 1]) is zoomed to them
MARGIN = 0.1  # a zoomed panel shows this fraction of the values' span above and below them
MIN_SPAN = 0.01  # a zoomed panel spans at least this much, so the axis is never degenerate

YLim = tuple[float, float]


def _plot_edge(ax: Axes, epochs: list[int], probs: list[list[float]], ops: Sequence[str],
               colors: dict[str, Any]) -> None:
    marker = "o" if len(epochs) <= 30 else None
    for k, op in enumerate(ops):
        ax.plot(epochs, [p[k] for p in probs], color=colors[op], marker=marker, markersize=3,
                linewidth=1.3, label=op)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.set_xticks([epochs[0]])


def _zoomed_ylim(values: Any) -> YLim | None:
    """The y limits of a panel showing ``values`` (probabilities, any nesting): None (keep
    ``FULL_YLIM``) when their finite part spans ``ZOOM_BELOW`` or more, or is empty; else
    their range, widened by ``MARGIN`` of it on each side and to at least ``MIN_SPAN``."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo
    if span >= ZOOM_BELOW:
        return None
    pad = max(MARGIN * span, (MIN_SPAN - span) / 2)
    return lo - pad, hi + pad


def _set_ylim(ax: Axes, lim: YLim | None, full_ticks: Sequence[float]) -> None:
    """``FULL_YLIM`` with ``full_ticks`` when ``lim`` is None, else ``lim`` with about four
    plainly written ticks (steps of 1, 2 or 5 for short labels; no offset, so the labels read
    as the probabilities)."""
    if lim is None:
        ax.set_ylim(*FULL_YLIM)
        ax.set_yticks(full_ticks)
        return
    ax.set_ylim(*lim)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
