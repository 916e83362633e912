"""The two entry points that pick a figure by type: ``plot_genotype`` by the genotype's type,
``plot_alpha_trajectories`` by the search space's type (a space name is looked up first).

Each cell-family module registers its plotters here when it is imported (``shared.plots``
imports them all): ``@register_cell(NB201Arch)`` and ``@register_trajectories(NB201Space)``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

from shared.spaces import NB201_SPACES, RNNSpace, get_nb1shot1_space, get_space

if TYPE_CHECKING:
    from shared.genotypes import Genotype, PerCellGenotype
    from shared.nb1shot1_arch import NB1Shot1Arch
    from shared.nb201_arch import NB201Arch
    from shared.plots.edge_rows import Space
    from shared.rnn_genotype import RNNGenotype
    from shared.spaces import NB1Shot1Space, PerCellSpace

NB1SHOT1_PREFIX = "nb1shot1-"  # 'nb1shot1-1': the bare '1'..'3' would read as a DARTS space name

CellPlotter = Callable[[Any, str], list[str]]           # (genotype, path prefix) -> paths
TrajectoryPlotter = Callable[[list[dict], Any, str], str]  # (history, space, path) -> path
F = TypeVar("F", bound=Callable[..., Any])

_CELLS: dict[type, CellPlotter] = {}
_TRAJECTORIES: dict[type, TrajectoryPlotter] = {}


def _register(table: dict[type, Any], cls: type) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        if cls in table:
            raise ValueError(f"a plotter for {cls.__name__} is already registered")
        table[cls] = fn
        return fn
    return decorate


def register_cell(cls: type) -> Callable[[F], F]:
    """Decorator: ``fn(genotype, prefix) -> paths`` draws genotypes of type ``cls``."""
    return _register(_CELLS, cls)


def register_trajectories(cls: type) -> Callable[[F], F]:
    """Decorator: ``fn(history, space, path) -> path`` draws the alphas of spaces of type
    ``cls``."""
    return _register(_TRAJECTORIES, cls)


def _lookup(table: dict[type, Any], obj: Any, what: str) -> Any:
    """The entry for ``obj``'s type or its nearest registered base class."""
    for cls in type(obj).__mro__:
        if cls in table:
            return table[cls]
    known = ", ".join(sorted(c.__name__ for c in table))
    raise TypeError(f"no {what} plotter for {type(obj).__name__} (known: {known})")


def plot_genotype(genotype: Genotype | PerCellGenotype | NB201Arch | NB1Shot1Arch | RNNGenotype,
                  prefix: str) -> list[str]:
    """Draw both cells to ``{prefix}_normal.png`` and ``{prefix}_reduce.png`` (an NB201 or an
    NB-1Shot1 cell: ``{prefix}_cell.png``; a DARTS recurrent cell: ``{prefix}_recurrent.png``,
    graphviz when available like the CNN cells, else ``plot_rnn_cell``; a per-cell genotype:
    ``{prefix}_cell{i}.png`` for every cell i); return the paths."""
    return _lookup(_CELLS, genotype, "cell")(genotype, prefix)


def _resolve_space(space: Space | NB1Shot1Space | RNNSpace | str
                   ) -> Space | NB1Shot1Space | RNNSpace:
    """A space object from its name: NB201 names, 'nb1shot1-1'..'nb1shot1-3', 'darts-rnn',
    DARTS names."""
    if not isinstance(space, str):
        return space
    if space in NB201_SPACES:
        return NB201_SPACES[space]
    if space == RNNSpace.name:
        return RNNSpace()
    if space.startswith(NB1SHOT1_PREFIX):
        return get_nb1shot1_space(space[len(NB1SHOT1_PREFIX):])
    return get_space(space)


def plot_alpha_trajectories(history: list[dict],
                            space: Space | NB1Shot1Space | RNNSpace | PerCellSpace | str,
                            path: str) -> str:
    """softmax(alpha) per op per edge versus epoch: a row of edges for each cell type (DARTS:
    normal and reduce, 14 edges; NB201: one row of 6), one colour per op name across all
    subplots and one legend. An NB-1Shot1 space (the object, or 'nb1shot1-1'..'nb1shot1-3'):
    a row of choice blocks (3 op curves each) and a row of the output's and each input-choice
    node's weights (one curve per source node). The DARTS RNN space (``RNNSpace`` or
    'darts-rnn'; ``alphas`` = [one 36 x 5 table, rows in ``RNNSpace.edges()`` order]): one row
    per node, one column per predecessor. A ``PerCellSpace`` (``alphas`` = one table per
    cell): one panel per cell, one curve per edge, the weight of the op it settles on
    (``shared.plots.per_cell``). A panel whose values span less than a fifth of [0, 1] zooms
    its y axis to them. Returns ``path``."""
    space = _resolve_space(space)
    return _lookup(_TRAJECTORIES, space, "alpha-trajectory")(history, space, path)
