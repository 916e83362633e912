"""Training curves: accuracy, perplexity or any other logged number versus epoch, each with a
dashed best-so-far (anytime) curve, optional event marks and a logarithmic y axis."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from shared.plots.common import _save, closed_on_error


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(int(h.get("epoch", i)), float(h[key])) for i, h in enumerate(history)
              if isinstance(h.get(key), (int, float)) and not isinstance(h.get(key), bool)]
    return [p[0] for p in points], [p[1] for p in points]


def _best_so_far(values: list[float], key: str) -> list[float]:
    better = min if any(k in key for k in ("loss", "obj", "err", "ppl")) else max
    out: list[float] = []
    for v in values:
        out.append(v if not out else better(out[-1], v))
    return out


def plot_curves(history: list[dict], path: str,
                keys: Sequence[str] = ("train_acc", "valid_acc"),
                marks: Sequence[tuple[float, str]] = (), log_y: bool = False,
                anytime: bool = True) -> str:
    """``keys`` (those present) versus epoch, each with a dashed best-so-far (anytime) curve
    (``anytime=False``: without, for numbers that are not a score, e.g. a correlation);
    ``marks``: (epoch, label) events drawn as labelled vertical lines (e.g. a switch to ASGD);
    ``log_y``: a logarithmic y axis (perplexities fall by orders of magnitude)."""
    series = {k: _series(history, k) for k in keys}
    series = {k: s for k, s in series.items() if s[0]}
    if not series:
        raise ValueError(f"plot_curves: none of {list(keys)} is in the history")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    with closed_on_error(fig):
        for i, (key, (epochs, values)) in enumerate(series.items()):
            color = f"C{i}"
            ax.plot(epochs, values, color=color, marker="o" if len(epochs) <= 50 else None,
                    markersize=3.5, label=key)
            if anytime:
                ax.plot(epochs, _best_so_far(values, key), color=color, linestyle="--",
                        linewidth=1.0, alpha=0.7, label=f"best {key} so far")
        for epoch, label in marks:
            ax.axvline(epoch, color="0.4", linestyle=":", linewidth=1.2, label=label)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(", ".join(series))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
    return _save(fig, path)
