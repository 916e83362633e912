"""What every figure shares: writing a PNG (parent directory created, figure always closed),
one fixed colour per op name across all figures, node colours and size, small-axes rc."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterable, Iterator

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from shared.spaces import DARTS_PRIMITIVES

Point = tuple[float, float]

# Fixed colour per known op name, so every figure agrees; other names get the next free colours.
_KNOWN_OPS = DARTS_PRIMITIVES + ("noise", "sep_conv_7x7", "conv_7x1_1x7", "conv_1x1",
                                 "conv_3x3", "avg_pool_5x5", "max_pool_5x5")
# NB201's and NB-101's ops borrow the strong colours of DARTS ops they never share a figure with.
_BORROWED = {"nor_conv_3x3": "sep_conv_3x3", "nor_conv_1x1": "max_pool_3x3",
             "conv3x3-bn-relu": "sep_conv_3x3", "conv1x1-bn-relu": "max_pool_3x3",
             "maxpool3x3": "avg_pool_3x3",
             # the RNN activations: identity plays skip_connect's part, the rest strong colours
             "tanh": "max_pool_3x3", "relu": "avg_pool_3x3", "sigmoid": "sep_conv_3x3",
             "identity": "skip_connect"}
_NODE_COLORS = {"input": "#b4dcb4", "inner": "#add8e6", "output": "#eee8aa"}
_NODE_RADIUS = 0.5
_SMALL_AXES = {"xtick.labelsize": 7, "ytick.labelsize": 7, "axes.titlesize": 8,
               "axes.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3}


def _prepare(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return path


@contextlib.contextmanager
def closed_on_error(fig: Figure) -> Iterator[Figure]:
    """Close ``fig`` when the drawing in the block raises: a failed figure stays neither open
    nor half written."""
    try:
        yield fig
    except BaseException:
        plt.close(fig)
        raise


def _save(fig: Figure, path: str, tight: bool = True) -> str:
    """Write ``fig`` as PNG to ``path`` and close it, even if saving fails."""
    try:
        fig.savefig(_prepare(path), format="png", dpi=120 if tight else 100,
                    bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return path


def _op_colors(names: Iterable[str]) -> dict[str, Any]:
    """A colour per op name, known names first in DARTS order: fixed colours for the known
    names (so every figure agrees), the next unused palette colours for the others."""
    palette = list(plt.get_cmap("tab20").colors)
    fixed = [palette[2 * i % 20 + 2 * i // 20] for i in range(len(_KNOWN_OPS))]
    spare = [c for c in palette if c not in fixed]
    unique = list(dict.fromkeys(names))
    index = {n: _KNOWN_OPS.index(_BORROWED.get(n, n)) for n in unique
             if _BORROWED.get(n, n) in _KNOWN_OPS}
    known = sorted(index, key=index.__getitem__)
    other = [n for n in unique if n not in index]
    colors = {n: fixed[index[n]] for n in known}
    colors.update({n: spare[i % len(spare)] for i, n in enumerate(other)})
    return colors


def _lighten(color: Any, amount: float = 0.55) -> tuple[float, float, float]:
    r, g, b = matplotlib.colors.to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)
