"""StacNAS' evidence for operation groups (arXiv 1909.11926, sec. 3, fig. 2): the correlation
of the candidates' outputs on an edge, and a KMeans clustering of their mean outputs shown in
a 2-D PCA projection (the released ``feature.py``, ``compute_online``, and ``feature_map.py``,
``plot_clusters``: k = 2..min(#ops, 4), files ``corr_{key}.txt`` and
``dist_{key}_group{k}.png``).

Differences from the released code: KMeans is seeded (``random_state``, ``n_init=10``; the
released one was not, so its groups could change between runs), the cluster centres are drawn
(the released code computed but did not draw them), the CSV has a header row of op names and
6 decimals (released: no header, ``%8.4f``), and a heat-map ``corr_{key}.png`` and a
``clusters.json`` summary are added.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from shared.errors import UserError
from shared.plots.common import _save, closed_on_error  # also selects the Agg backend
from stacnas.feature_stats import StreamingCorrelation

MAX_GROUPS = 4  # the released feature.py: k = 2..min(#ops, 4)


def _check_ops(n_ops: int, op_names: Sequence[str]) -> None:
    if len(op_names) != n_ops:
        raise UserError(f"{len(op_names)} op names for {n_ops} ops")
    if n_ops < 2:
        raise UserError(f"grouping needs at least 2 operations (besides 'none'), got {n_ops}: "
                        f"{', '.join(op_names) or 'none'}")


def cluster_ops(means: np.ndarray, op_names: Sequence[str], ks: Sequence[int],
                seed: int = 0) -> dict[int, list[int]]:
    """KMeans labels of the per-op mean feature vectors (rows of ``means``) for each k."""
    means = np.asarray(means, dtype=np.float64)
    _check_ops(len(means), op_names)
    out = {}
    for k in ks:
        if not 1 <= k <= len(means):
            raise UserError(f"cannot form {k} groups of {len(means)} operations")
        km = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(means)
        out[k] = [int(v) for v in km.labels_]
    return out


def plot_clusters(means: np.ndarray, op_names: Sequence[str], labels: Sequence[int],
                  path: str, title: str = "feature clusters") -> str:
    """Scatter of the op means in their 2-D PCA projection, coloured by cluster, annotated
    with the op names; each cluster's centre (mean of its members, KMeans' centre) as a
    hollow triangle. PCA is fitted on the op means only, as released."""
    import matplotlib.pyplot as plt

    means = np.asarray(means, dtype=np.float64)
    _check_ops(len(means), op_names)
    labels = np.asarray(labels)
    groups = sorted(set(labels.tolist()))
    centres = np.stack([means[labels == g].mean(axis=0) for g in groups])
    # fewer ops or dims than 2 components: pad the projection with zeros
    n_comp = min(2, means.shape[0], means.shape[1])
    pca = PCA(n_components=n_comp).fit(means)
    proj = np.zeros((len(means) + len(groups), 2))
    proj[:, :n_comp] = pca.transform(np.concatenate([means, centres]))
    colors = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(6, 6))
    with closed_on_error(fig):
        pts, cen = proj[:len(means)], proj[len(means):]
        ax.scatter(pts[:, 0], pts[:, 1], s=100, alpha=0.8,
                   c=[colors[groups.index(g) % 10] for g in labels])
        ax.scatter(cen[:, 0], cen[:, 1], s=160, marker="^", facecolors="none",
                   edgecolors=[colors[i % 10] for i in range(len(groups))])
        for (x, y), name in zip(pts, op_names):
            ax.annotate(name, (x, y), fontsize=8)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_correlation_heatmap(corr: np.ndarray, op_names: Sequence[str], path: str,
                             title: str = "feature correlation") -> str:
    """Op x op correlation on a fixed -1..1 colour scale, each value written in its cell
    (NaN, a zero-variance op, as "nan" on a blank cell)."""
    import matplotlib.pyplot as plt

    corr = np.asarray(corr, dtype=np.float64)
    _check_ops(len(corr), op_names)
    n = len(op_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.6 + 0.8 * n))
    with closed_on_error(fig):
        im = ax.imshow(corr, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
        for i in range(n):
            for j in range(n):
                v = corr[i, j]
                ax.text(j, i, "nan" if np.isnan(v) else f"{v:.2f}", ha="center",
                        va="center", fontsize=7, color="white" if abs(v) > 0.6 else "black")
        ax.set_xticks(range(n), op_names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(n), op_names, fontsize=7)
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def write_correlation_csv(corr: np.ndarray, op_names: Sequence[str], path: str) -> str:
    """The correlation as CSV: a header row of the op names, then one row per op (6 decimals,
    NaN as ``nan``). Read back with ``np.loadtxt(path, delimiter=",", skiprows=1)`` (or any
    CSV reader that takes the first row as header)."""
    corr = np.asarray(corr, dtype=np.float64)
    _check_ops(len(corr), op_names)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savetxt(path, corr, fmt="%.6f", delimiter=",", header=",".join(op_names), comments="")
    return path


def analyse(stats: Mapping[str, StreamingCorrelation], op_names: Sequence[str] | None,
            out_dir: str, seed: int = 0) -> dict[str, Any]:
    """Write, per key of ``stats``: ``corr_{key}.txt`` (CSV), ``corr_{key}.png`` (heat-map),
    ``dist_{key}_group{k}.png`` for k = 2..min(#ops, 4); and ``clusters.json``, the returned
    summary ``{"seed", "edges": {key: {"samples", "op_names", "zero_variance", "groups":
    {str(k): labels}}}}``. ``op_names``: None takes each statistic's own names. A zero-variance
    op is listed under ``zero_variance`` and has NaN correlations (it is still clustered)."""
    if not stats:
        raise UserError("no feature statistics to analyse (no cells or edges were collected)")
    summary: dict[str, Any] = {"seed": seed, "edges": {}}
    for key, st in stats.items():
        names = list(op_names if op_names is not None else (st.op_names or ()))
        means, corr = st.means, st.correlation()
        _check_ops(len(means), names)
        ks = list(range(2, min(len(names), MAX_GROUPS) + 1))
        groups = cluster_ops(means, names, ks, seed)
        write_correlation_csv(corr, names, os.path.join(out_dir, f"corr_{key}.txt"))
        plot_correlation_heatmap(corr, names, os.path.join(out_dir, f"corr_{key}.png"),
                                 f"feature correlation, {key}")
        for k, labels in groups.items():
            plot_clusters(means, names, labels, os.path.join(out_dir, f"dist_{key}_group{k}.png"),
                          f"feature clusters, {key}, {k} groups")
        summary["edges"][key] = {
            "samples": st.count, "op_names": names,
            "zero_variance": [n for n, v in zip(names, np.diag(st.comoments)) if v <= 0],
            "groups": {str(k): labels for k, labels in groups.items()}}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "clusters.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
