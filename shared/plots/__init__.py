"""Figures for searches and genotypes (PNG files, headless).

* ``plot_genotype``: the normal and the reduction cell as DAGs, like DARTS' ``visualize.py``
  (graphviz when the ``graphviz`` package and the ``dot`` executable exist, matplotlib otherwise);
  the DARTS recurrent cell (``RNNGenotype``) likewise, x_t and h_{t-1} into s0, one activation
  edge per node, the ``concat`` nodes into h_t; a NAS-Bench-201 cell (``NB201Arch``) as its
  4-node DAG, a NAS-Bench-1Shot1 cell (``NB1Shot1Arch``) as its DAG of choice blocks, loose ends
  dashed (both matplotlib); a ``PerCellGenotype`` as one DARTS diagram per cell,
* ``plot_alpha_trajectories``: softmax(alpha) of every op on every edge versus epoch (DARTS
  spaces: normal and reduce rows of 14 edges; NB201 spaces: one row of 6 edges; NB-1Shot1
  spaces: a row of choice blocks' ops, a row of output and input-choice weights per source;
  the DARTS RNN space: a lower-triangular grid, one row per node, one column per predecessor;
  a per-cell space: one panel per cell, one curve per edge, its strongest op's weight);
  a panel whose curves have barely moved zooms its y axis to them,
* ``plot_curves``: accuracy (or any other logged number) versus epoch, with the best so far.

Every function creates the parent directory, closes its figure and returns the path(s) written.

The modules: ``dispatch`` (the two entry points, registries keyed by genotype / space type),
``common`` (saving, colours), ``graph`` (matplotlib cell DAGs), ``dot`` (graphviz),
``trajectory`` and ``edge_rows`` (alpha-trajectory panels and the rows-of-edges figure), one
module per cell family (``darts_cell``, ``nb201_cell``, ``nb1shot1_cell``, ``rnn_cell``,
``per_cell``), each registering its cell diagram and its alpha-trajectory figure, and
``curves``.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, whatever MPLBACKEND says

# The family modules register their plotters with the dispatch when they are imported.
from shared.plots.common import Point  # noqa: E402
from shared.plots.curves import plot_curves  # noqa: E402
from shared.plots.darts_cell import plot_darts_cells, plot_darts_trajectories  # noqa: E402
from shared.plots.dispatch import (  # noqa: E402
    NB1SHOT1_PREFIX,
    plot_alpha_trajectories,
    plot_genotype,
)
from shared.plots.edge_rows import AlphaTable, Space  # noqa: E402
from shared.plots.nb1shot1_cell import (  # noqa: E402
    Panel,
    plot_nb1shot1_cell,
    plot_nb1shot1_trajectories,
)
from shared.plots.nb201_cell import plot_nb201_cell, plot_nb201_trajectories  # noqa: E402
from shared.plots.per_cell import (  # noqa: E402
    plot_per_cell_genotype,
    plot_per_cell_trajectories,
)
from shared.plots.rnn_cell import plot_rnn_cell, plot_rnn_trajectories  # noqa: E402

__all__ = [
    "NB1SHOT1_PREFIX",
    "AlphaTable",
    "Panel",
    "Point",
    "Space",
    "plot_alpha_trajectories",
    "plot_curves",
    "plot_darts_cells",
    "plot_darts_trajectories",
    "plot_genotype",
    "plot_nb1shot1_cell",
    "plot_nb1shot1_trajectories",
    "plot_nb201_cell",
    "plot_nb201_trajectories",
    "plot_per_cell_genotype",
    "plot_per_cell_trajectories",
    "plot_rnn_cell",
    "plot_rnn_trajectories",
]
