"""Figures of NAS-Bench-1Shot1 searches across runs (PNG files, headless).

* ``plot_anytime_regret``: NAS-Bench-101 regret (error of the epoch's one-shot architecture
  minus the best error in the search space) versus search epoch, log y axis, as in the
  NAS-Bench-1Shot1 and SmoothDARTS papers;
* ``plot_eigenvalues``: the dominant eigenvalue of the validation loss' Hessian w.r.t. the
  architecture weights versus epoch (SmoothDARTS' measure of how sharp the found minimum is).

A run is ``(label, space, epochs, values)``: runs with the same label and space (seeds) are
drawn as their mean with a min-max band, one subplot per search space, one colour per label.
Values that are None or NaN (an architecture missing from the benchmark file, an epoch without
an eigenvalue) are left out, point by point. Both functions create the parent directory,
close their figure and return the path.
"""
from __future__ import annotations

import math
import os
import textwrap
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, whatever MPLBACKEND says

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from shared.spaces import NB1Shot1Space, get_nb1shot1_space  # noqa: E402

# (label, search space, epochs, values): one search run's curve
Run = tuple[str, "str | NB1Shot1Space", Sequence[int], Sequence["float | None"]]

# A regret of exactly 0 (the search found the space's best cell) has no place on a log axis:
# it is drawn at this floor instead, below any regret the real benchmark can give otherwise.
REGRET_FLOOR = 1e-5
# Fixed colours for the paper's methods, so every figure agrees; '-2nd' (second-order DARTS)
# variants take their method's colour with a dashed line.
_METHOD_COLORS = {"DARTS": "C0", "SDARTS-RS": "C1", "SDARTS-ADV": "C2"}
_SECOND_ORDER = "-2nd"


def _space(space: str | NB1Shot1Space) -> NB1Shot1Space:
    if isinstance(space, NB1Shot1Space):
        return space
    name = str(space)
    return get_nb1shot1_space(name[len("nb1shot1-"):] if name.startswith("nb1shot1-") else name)


def _clean(run: Run, what: str) -> tuple[str, NB1Shot1Space, list[tuple[int, float]]]:
    """(label, space, [(epoch, value)] with the missing values dropped)."""
    label, space, epochs, values = run
    if len(epochs) != len(values):
        raise ValueError(f"{what}: run {label!r} has {len(epochs)} epochs but {len(values)} "
                         "values")
    points = [(int(e), float(v)) for e, v in zip(epochs, values)
              if v is not None and math.isfinite(float(v))]
    return str(label), _space(space), points


def _label_style(labels: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """(colour, linestyle) per label: the paper's methods their fixed colour, others the next
    unused tab10 colours in order of appearance."""
    spare = iter(f"C{i}" for i in range(3, 1000))
    style: dict[str, tuple[Any, str]] = {}
    base_color: dict[str, Any] = dict(_METHOD_COLORS)
    for label in labels:
        second = label.endswith(_SECOND_ORDER)
        base = label[:-len(_SECOND_ORDER)] if second else label
        if base not in base_color:
            base_color[base] = next(spare)
        style[label] = (base_color[base], "--" if second else "-")
    return style


def _label_order(labels: Sequence[str]) -> list[str]:
    """The paper's methods first (DARTS, SDARTS-RS, SDARTS-ADV, each before its -2nd), then the
    others in order of appearance."""
    known = list(_METHOD_COLORS)

    def key(label: str) -> tuple[int, int]:
        base = label[:-len(_SECOND_ORDER)] if label.endswith(_SECOND_ORDER) else label
        rank = known.index(base) if base in known else len(known)
        return rank, int(label.endswith(_SECOND_ORDER))

    unique = list(dict.fromkeys(labels))
    return sorted(unique, key=key)  # stable: unknown labels keep their order


def _aggregate(curves: Sequence[list[tuple[int, float]]]
               ) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per epoch over the runs that have a value there: epochs, mean, min, max."""
    by_epoch: dict[int, list[float]] = {}
    for points in curves:
        for e, v in points:
            by_epoch.setdefault(e, []).append(v)
    epochs = sorted(by_epoch)
    return (epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs],
            [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs])


def _plot_runs(runs: Sequence[Run], path: str, what: str, transform: Any, ylabel: str,
               title: str, log_y: bool) -> str:
    """The shared body: group the runs by (space, label), one subplot per space."""
    cleaned = [_clean(run, what) for run in runs]
    cleaned = [(label, space, transform(space, points)) for label, space, points in cleaned]
    present = [c for c in cleaned if c[2]]  # a run without numbers is skipped
    if not present:
        raise ValueError(f"{what}: none of the {len(runs)} run(s) has any {ylabel} values")
    spaces = sorted({space.name: space for _, space, _ in present}.items())
    style = _label_style(_label_order([label for label, _, _ in present]))
    width = 5.0 * len(spaces) + 0.4
    fig, axes = plt.subplots(1, len(spaces), figsize=(width, 4.3), squeeze=False)
    try:
        for ax, (name, _) in zip(axes[0], spaces):
            in_space = [c for c in present if c[1].name == name]
            for label in _label_order([c[0] for c in in_space]):
                curves = [points for lab, _, points in in_space if lab == label]
                _draw_group(ax, label, curves, style[label])
            ax.set_title(f"search space {name}", fontsize=10)
            ax.set_xlabel("search epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if log_y:
                ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both" if log_y else "major")
            ax.legend(fontsize=8)
        axes[0][0].set_ylabel(ylabel)
        # wrapped to the figure's width (about 9 characters per inch at 11 pt), else a
        # one-space figure cuts the title off at both sides
        fig.suptitle(textwrap.fill(title, width=int(9 * width)), fontsize=11)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path


def _draw_group(ax: Axes, label: str, curves: Sequence[list[tuple[int, float]]],
                style: tuple[Any, str]) -> None:
    color, linestyle = style
    epochs, mean, lo, hi = _aggregate(curves)
    n = len(curves)
    ax.plot(epochs, mean, color=color, linestyle=linestyle,
            marker="o" if len(epochs) <= 30 else None, markersize=3.5,
            label=label if n == 1 else f"{label} (mean of {n}, min-max)")
    if n > 1:
        ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, linewidth=0)


def plot_anytime_regret(runs: Sequence[Run], path: str, which: str = "test") -> str:
    """NB-101 ``which`` ('test' or 'valid') regret per search epoch, log y axis.

    ``runs``: (label, space, epochs, errors), errors being NB-101 mean errors (fractions) of
    each epoch's architecture, None where the benchmark has none. Regret = error minus the
    space's ``test_min_error`` (``valid_min_error``); 0 is drawn at ``REGRET_FLOOR``.
    Raises ValueError when no run has any error."""
    if which not in ("test", "valid"):
        raise ValueError(f"which must be 'test' or 'valid', got {which!r}")

    def regret(space: NB1Shot1Space, points: list[tuple[int, float]]) -> list[tuple[int, float]]:
        best = space.test_min_error if which == "test" else space.valid_min_error
        return [(e, max(v - best, REGRET_FLOOR)) for e, v in points]

    return _plot_runs(runs, path, "plot_anytime_regret", regret, f"NB-101 {which} regret",
                      f"NB-101 {which} regret of the one-shot architecture "
                      f"(error − best {which} error in the space)", log_y=True)


def plot_eigenvalues(runs: Sequence[Run], path: str) -> str:
    """Dominant eigenvalue of the validation loss' Hessian w.r.t. all alphas per search epoch.

    ``runs``: (label, space, epochs, eigenvalues), None where an epoch has none. Raises
    ValueError when no run has any eigenvalue."""
    return _plot_runs(runs, path, "plot_eigenvalues", lambda space, points: points,
                      "dominant eigenvalue", "dominant eigenvalue of the validation loss' "
                      "Hessian w.r.t. the architecture weights", log_y=False)
