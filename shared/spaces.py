"""Search spaces as data.

A DARTS-style cell space is two tables (normal and reduction cell) listing, for each of
the 14 edges in DARTS edge order, the candidate op names on that edge. One supernet class
(`shared.models.search_cnn.Network`) reads any of them.

Edge order (DARTS ``cnn/model_search.py``): node 0 takes inputs 0, 1 (edges 0-1); node 1 takes
0, 1, 2 (edges 2-4); node 2: edges 5-8; node 3: edges 9-13. Input 0 is c_{k-2}, input 1 is
c_{k-1}, input 2+m is intermediate node m.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

from shared.errors import UserError

STEPS = 4
NUM_EDGES = sum(2 + i for i in range(STEPS))  # 14

# DARTS' 8 primitives, in the order of quark0/darts cnn/genotypes.py.
DARTS_PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


def edge_inputs(steps: int = STEPS) -> list[tuple[int, int]]:
    """(node, input) of every edge, in DARTS edge order."""
    return [(node, j) for node in range(steps) for j in range(2 + node)]


@dataclass(frozen=True)
class CellSpace:
    """Candidate ops per edge for the normal and the reduction cell."""

    name: str
    normal: tuple[tuple[str, ...], ...]
    reduce: tuple[tuple[str, ...], ...]
    description: str = ""

    def __post_init__(self) -> None:
        for cell, rows in (("normal", self.normal), ("reduce", self.reduce)):
            if len(rows) != NUM_EDGES:
                raise ValueError(f"space {self.name}: {cell} has {len(rows)} edges, "
                                 f"not {NUM_EDGES}")
            if len({len(r) for r in rows}) != 1:
                # alpha is one (edges x ops) tensor per cell type, so rows must be equally long.
                raise ValueError(f"space {self.name}: {cell} edges have unequal op counts")

    def ops(self, reduction: bool) -> tuple[tuple[str, ...], ...]:
        return self.reduce if reduction else self.normal

    def num_ops(self, reduction: bool) -> int:
        return len(self.ops(reduction)[0])

    @property
    def has_none(self) -> bool:
        return any("none" in row for row in self.normal + self.reduce)

    def to_dict(self) -> dict:
        """The space as JSON-ready data (a space derived at run time, StacNAS' stage 2, is
        saved with its run so a resume does not need what it was derived from)."""
        return {"name": self.name, "description": self.description,
                "normal": [list(r) for r in self.normal], "reduce": [list(r) for r in self.reduce]}

    @staticmethod
    def from_dict(d: dict) -> "CellSpace":
        """A space from ``to_dict``'s form, checked: 14 edges per cell, equally many known
        ops per edge; anything else is one UserError."""
        from shared.ops import OPS

        try:
            rows = {cell: tuple(tuple(str(op) for op in row) for row in d[cell])
                    for cell in ("normal", "reduce")}
            space = CellSpace(str(d["name"]), rows["normal"], rows["reduce"],
                              str(d.get("description", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"not a cell space: {exc}") from None
        unknown = sorted({op for row in space.normal + space.reduce for op in row} - set(OPS))
        if unknown:
            raise UserError(f"space {space.name}: unknown op(s) {', '.join(unknown)}")
        return space


def kinds_of_cells(layers: int) -> tuple[str, ...]:
    """Each cell's kind in DARTS' network of ``layers`` cells: reduce at L//3 and 2L//3
    (DARTS ``cnn/model_search.py`` and ``cnn/model.py``)."""
    return tuple("reduce" if i in (layers // 3, 2 * layers // 3) else "normal"
                 for i in range(layers))


Rows = tuple[tuple[str, ...], ...]  # candidate ops per edge of one cell, in DARTS edge order


def _check_rows(where: str, rows: Rows) -> None:
    if len(rows) != NUM_EDGES:
        raise ValueError(f"{where} has {len(rows)} edges, not {NUM_EDGES}")
    if not rows[0] or len({len(r) for r in rows}) != 1:
        # alpha is one (edges x ops) tensor per cell, so rows must be equally long.
        raise ValueError(f"{where}: edges have unequal (or no) op counts")


@dataclass(frozen=True)
class PerCellSpace:
    """Candidate ops per edge for every search cell on its own: one alpha per cell.

    StacNAS (Li et al., arXiv 1909.11926; susan0199/StacNAS ``search_cnn.py`` and
    ``cells.py``) searches, without ``--alpha_share``, one alpha per cell and derives one
    genotype per cell; each cell may have its own candidates (its stage 2 derives them from
    that cell's stage-1 alpha). ``kinds`` is each cell's kind, DARTS' rule
    (``kinds_of_cells``): the supernet places its reduction cells there, so any other layout
    is refused. Within a cell every edge has equally many ops; cells may differ."""

    name: str
    cells: tuple[Rows, ...]
    kinds: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.cells:
            raise ValueError(f"space {self.name}: no cells")
        if tuple(self.kinds) != kinds_of_cells(len(self.cells)):
            raise ValueError(f"space {self.name}: cell kinds {list(self.kinds)} are not DARTS' "
                             f"for {len(self.cells)} cells {list(kinds_of_cells(len(self.cells)))}")
        for i, rows in enumerate(self.cells):
            _check_rows(f"space {self.name}: cell {i}", rows)

    @property
    def layers(self) -> int:
        return len(self.cells)

    def ops_of(self, i: int) -> Rows:
        """Candidate ops per edge of search cell ``i``."""
        return self.cells[i]

    def num_ops(self, i: int) -> int:
        return len(self.cells[i][0])

    @property
    def has_none(self) -> bool:
        return any("none" in row for rows in self.cells for row in rows)

    @staticmethod
    def repeat(space: CellSpace, layers: int, name: str | None = None) -> "PerCellSpace":
        """Every cell of a ``layers``-cell network gets the rows of its kind in ``space``
        (a per-cell search over a shared space: StacNAS without ``--alpha_share``)."""
        kinds = kinds_of_cells(layers)
        return PerCellSpace(name or f"{space.name}-per-cell",
                            tuple(space.ops(k == "reduce") for k in kinds), kinds,
                            space.description)

    @staticmethod
    def from_cells(spaces: Sequence[CellSpace], name: str | None = None,
                   description: str = "") -> "PerCellSpace":
        """Cell i takes the rows of its kind from ``spaces[i]`` (one space per cell, e.g.
        StacNAS' stage-2 space derived from each cell's own stage-1 alpha)."""
        kinds = kinds_of_cells(len(spaces))
        return PerCellSpace(name or "per-cell", tuple(s.ops(k == "reduce")
                                                      for s, k in zip(spaces, kinds)),
                            kinds, description)

    def to_dict(self) -> dict:
        """JSON-ready; the "cells" key tells it from a ``CellSpace`` (``space_from_dict``)."""
        return {"name": self.name, "description": self.description,
                "cells": [{"kind": k, "ops": [list(r) for r in rows]}
                          for k, rows in zip(self.kinds, self.cells)]}

    @staticmethod
    def from_dict(d: dict) -> "PerCellSpace":
        """A space from ``to_dict``'s form, checked like ``CellSpace.from_dict``: 14 edges per
        cell, equally many known ops per edge of a cell, DARTS' cell kinds; anything else is
        one UserError."""
        from shared.ops import OPS

        try:
            cells = tuple(tuple(tuple(str(op) for op in row) for row in c["ops"])
                          for c in d["cells"])
            kinds = tuple(str(c["kind"]) for c in d["cells"])
            space = PerCellSpace(str(d["name"]), cells, kinds, str(d.get("description", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"not a per-cell space: {exc}") from None
        unknown = sorted({op for rows in space.cells for row in rows for op in row} - set(OPS))
        if unknown:
            raise UserError(f"space {space.name}: unknown op(s) {', '.join(unknown)}")
        return space


def space_from_dict(d: dict) -> CellSpace | PerCellSpace:
    """A ``CellSpace`` or, when ``d`` has "cells", a ``PerCellSpace`` (both checked)."""
    if not isinstance(d, dict):
        raise UserError(f"not a cell space: expected a JSON object, got {type(d).__name__}")
    return PerCellSpace.from_dict(d) if "cells" in d else CellSpace.from_dict(d)


def _uniform(name: str, ops: tuple[str, ...], description: str) -> CellSpace:
    rows = tuple(ops for _ in range(NUM_EDGES))
    return CellSpace(name, rows, rows, description)


# RobustDARTS S1: per-edge pairs (RobustDARTS ``src/spaces.py``), in edge order.
_S1_NORMAL = (
    ("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"), ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"),
    ("max_pool_3x3", "skip_connect"), ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "sep_conv_3x3"), ("skip_connect", "dil_conv_3x3"),
    ("skip_connect", "sep_conv_3x3"), ("max_pool_3x3", "skip_connect"),
    ("skip_connect", "dil_conv_3x3"), ("dil_conv_3x3", "dil_conv_5x5"),
    ("dil_conv_3x3", "dil_conv_5x5"),
)
_S1_REDUCE = (
    ("max_pool_3x3", "avg_pool_3x3"), ("max_pool_3x3", "dil_conv_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"), ("max_pool_3x3", "avg_pool_3x3"),
    ("skip_connect", "dil_conv_5x5"),
    ("max_pool_3x3", "avg_pool_3x3"), ("max_pool_3x3", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5"),
    ("max_pool_3x3", "avg_pool_3x3"), ("max_pool_3x3", "avg_pool_3x3"),
    ("skip_connect", "dil_conv_5x5"), ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"),
)

SPACES: dict[str, CellSpace] = {
    "s1": CellSpace("s1", _S1_NORMAL, _S1_REDUCE, "RobustDARTS S1: two ops per edge"),
    "s2": _uniform("s2", ("skip_connect", "sep_conv_3x3"), "RobustDARTS S2"),
    "s3": _uniform("s3", ("none", "skip_connect", "sep_conv_3x3"), "RobustDARTS S3"),
    "s4": _uniform("s4", ("noise", "sep_conv_3x3"), "RobustDARTS S4"),
    # SmoothDARTS/DARTS-PT s5 comment out 'none' (``sota/cnn/spaces.py`` in both repositories).
    "s5": _uniform("s5", DARTS_PRIMITIVES[1:], "DARTS space without 'none' (SDARTS s5)"),
    "darts": _uniform("darts", DARTS_PRIMITIVES, "original DARTS space, 8 ops with 'none'"),
}


def get_space(name: str) -> CellSpace:
    """Look up a space by name; unknown names are a user error listing the choices."""
    try:
        return SPACES[name]
    except KeyError:
        raise UserError(f"unknown search space {name!r}; choose from {', '.join(SPACES)}") from None


# -- NAS-Bench-201 ----------------------------------------------------------------------------
# A different shape from the DARTS cells above: one input node, 4 nodes in all, every pair of
# nodes joined (6 edges), the same 5 candidates on every edge and no topology choice: 'none' on
# an edge plays the role of removing it. So it is its own table, not a CellSpace row.

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                              "avg_pool_3x3")
NB201_MAX_NODES = 4
# (to_node, from_node) in AutoDL's edge order, the sorted keys '1<-0', '2<-0', '2<-1', '3<-0',
# '3<-1', '3<-2'. Row e of the (6 x ops) alpha and of every NB201 weight tensor is edge e.
NB201_EDGES: tuple[tuple[int, int], ...] = tuple(
    (to, frm) for to in range(1, NB201_MAX_NODES) for frm in range(to))


def nb201_edge_key(edge: tuple[int, int]) -> str:
    """AutoDL's name of an edge, e.g. '2<-1' (the ModuleDict key in darts-pt's search cell)."""
    return f"{edge[0]}<-{edge[1]}"


@dataclass(frozen=True)
class NB201Space:
    """The NAS-Bench-201 cell space: candidate ops (same on every edge) and the 6 edges."""

    name: str = "nas-bench-201"
    ops: tuple[str, ...] = NB201_OPS
    edges: tuple[tuple[int, int], ...] = NB201_EDGES
    max_nodes: int = NB201_MAX_NODES
    description: str = "NAS-Bench-201: 4 nodes, 6 edges, 5 ops, 15,625 cells"

    def __post_init__(self) -> None:
        if not set(self.ops) <= set(NB201_OPS):
            # Every derived cell must be an NB201 cell, so the benchmark can be queried.
            raise ValueError(f"space {self.name}: ops {self.ops} are not all NB201 ops")

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @property
    def edge_keys(self) -> tuple[str, ...]:
        return tuple(nb201_edge_key(e) for e in self.edges)


# darts-pt's nasbench201/cell_operations.py offers reduced candidate sets over the same cell
# (its --search_space flag). Only those whose ops are all NB201 ops are kept here: their cells
# are still NB201 cells. ('nas-bench-201-s4' with the 'noise' op and 'darts' are not.)
NB201_SPACES: dict[str, NB201Space] = {
    s.name: s for s in (
        NB201Space(),
        NB201Space("nas-bench-201-simple",
                   ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"),
                   description="NB201 without 'none'"),
        NB201Space("nas-bench-201-s2", ("skip_connect", "nor_conv_3x3"),
                   description="NB201 analogue of RobustDARTS S2"),
        NB201Space("nas-bench-201-s10", ("none", "nor_conv_3x3"),
                   description="'none' or conv 3x3 on every edge"),
        NB201Space("connect-nas", ("none", "skip_connect", "nor_conv_3x3"),
                   description="three-op connectivity space"),
    )
}


def get_nb201_space(name: str = "nas-bench-201") -> NB201Space:
    """Look up an NB201-shaped space by name; unknown names are a user error listing choices."""
    try:
        return NB201_SPACES[name]
    except KeyError:
        raise UserError(f"unknown NAS-Bench-201 search space {name!r}; choose from "
                        f"{', '.join(NB201_SPACES)}") from None


# -- NAS-Bench-1Shot1 ---------------------------------------------------------------------------
# Three sub-spaces of NAS-Bench-101 (NAS-Bench-1Shot1: Zela, Siems & Hutter, ICLR'20; code in
# nasbench-1shot1 ``nasbench_analysis/search_spaces/``): a cell input (node 0), choice blocks
# 1..n (one op each) and the cell output (the last node). Each node takes a fixed NUMBER of
# parents among the nodes before it; which parents, and each block's op, are searched. Every
# cell of these spaces is an NAS-Bench-101 cell (<= 7 vertices, <= 9 edges), so a search can be
# scored by table look-up.

# The one-shot alpha column order of nasbench-1shot1's optimizers/darts/genotypes.py (it differs
# from NAS-Bench-101's own canonical order, which only its hash uses).
NB1SHOT1_PRIMITIVES: tuple[str, ...] = ("maxpool3x3", "conv3x3-bn-relu", "conv1x1-bn-relu")


@dataclass(frozen=True)
class NB1Shot1Space:
    """One NAS-Bench-1Shot1 search space: parents per node and the op choices.

    ``num_parents[n]`` is how many parents node n takes among nodes 0..n-1 (node 0 = cell input,
    the last node = cell output). A node with as many parents as candidates (node 1 always; SS1's
    node 2) has none to choose: its block sums all its inputs and has no input alpha.
    ``test_min_error``/``valid_min_error`` are the best mean NB-101 errors in the space, the
    baseline of regret plots (constants of the released code)."""

    name: str
    num_parents: tuple[int, ...]
    test_min_error: float
    valid_min_error: float
    description: str = ""
    ops: tuple[str, ...] = NB1SHOT1_PRIMITIVES

    def __post_init__(self) -> None:
        if self.num_parents[0] != 0 or any(not 1 <= k <= n for n, k
                                           in enumerate(self.num_parents) if n > 0):
            raise ValueError(f"space {self.name}: node n needs 1..n parents, got "
                             f"{self.num_parents}")
        if sum(self.num_parents) > 9:
            raise ValueError(f"space {self.name}: an NB-101 cell has at most 9 edges")

    @property
    def num_nodes(self) -> int:
        return len(self.num_parents)

    @property
    def output_node(self) -> int:
        return self.num_nodes - 1

    @property
    def steps(self) -> int:
        """Number of choice blocks (graph nodes 1..steps)."""
        return self.num_nodes - 2

    def has_input_choice(self, node: int) -> bool:
        return 0 < node < self.output_node and self.num_parents[node] < node

    @property
    def input_choice_nodes(self) -> tuple[int, ...]:
        """Nodes whose parents an input alpha chooses (SS1: 3, 4; SS2: 2, 3, 4; SS3: 2..5)."""
        return tuple(n for n in range(1, self.output_node) if self.has_input_choice(n))

    def parent_choices(self, node: int) -> list[tuple[int, ...]]:
        """Every admissible parent set of ``node`` (sorted tuples)."""
        return list(itertools.combinations(range(node), self.num_parents[node]))

    def architectures(self) -> Iterator[tuple[tuple[tuple[int, ...], ...], tuple[str, ...]]]:
        """Every (parents per node 1..output, op per block) of the space, loose ends included."""
        parent_sets = itertools.product(*(self.parent_choices(n)
                                          for n in range(1, self.num_nodes)))
        for parents in parent_sets:
            for ops in itertools.product(self.ops, repeat=self.steps):
                yield parents, ops

    def count(self, ops_of_loose_ends: bool = False) -> int:
        """Number of architectures, by enumerating the parent choices.

        A block that feeds no other node ("loose end") is dropped when the cell is built, so
        its op is irrelevant: by default it is not counted (``ops_of_loose_ends=False``). This
        gives the NAS-Bench-1Shot1 paper's sizes of spaces 1 and 3 (6,240 and 363,648). The
        paper's 29,160 for space 2 is instead the plain product, every parent choice times
        3^4 ops (``ops_of_loose_ends=True``); the first rule gives 16,632 there."""
        total = 0
        for parents in itertools.product(*(self.parent_choices(n)
                                           for n in range(1, self.num_nodes))):
            if ops_of_loose_ends:
                used = self.steps
            else:
                used = len({p for ps in parents for p in ps} - {0})
            total += len(self.ops) ** used
        return total


NB1SHOT1_SPACES: dict[str, NB1Shot1Space] = {
    s.name: s for s in (
        NB1Shot1Space("1", (0, 1, 2, 2, 2, 2), 0.05448716878890991, 0.049278855323791504,
                      "NAS-Bench-1Shot1 space 1: 4 choice blocks, output takes 2 parents"),
        NB1Shot1Space("2", (0, 1, 1, 2, 2, 3), 0.057592153549194336, 0.051582515239715576,
                      "NAS-Bench-1Shot1 space 2: 4 choice blocks, output takes 3 parents"),
        NB1Shot1Space("3", (0, 1, 1, 1, 2, 2, 2), 0.05338543653488159, 0.04847759008407593,
                      "NAS-Bench-1Shot1 space 3: 5 choice blocks, output takes 2 parents"),
    )
}


def get_nb1shot1_space(name: str) -> NB1Shot1Space:
    """Look up an NB-1Shot1 space ('1', '2', '3'); unknown names are a user error."""
    try:
        return NB1SHOT1_SPACES[str(name)]
    except KeyError:
        raise UserError(f"unknown NAS-Bench-1Shot1 search space {name!r}; choose from "
                        f"{', '.join(NB1SHOT1_SPACES)}") from None


# -- the DARTS recurrent cell (PTB) ------------------------------------------------------------
# DARTS rnn/genotypes.py: 8 nodes after the initial state s0; node i (1..8) takes ONE
# predecessor s_j (j < i) through a highway step with one of these activations. In search
# every node mixes all its predecessors: 1 + 2 + ... + 8 = 36 (edge, op) rows, one alpha
# shared by the layer. 'none' takes probability mass but contributes nothing.
RNN_PRIMITIVES: tuple[str, ...] = ("none", "tanh", "relu", "sigmoid", "identity")
RNN_STEPS = 8


@dataclass(frozen=True)
class RNNSpace:
    name: str = "darts-rnn"
    ops: tuple[str, ...] = RNN_PRIMITIVES
    steps: int = RNN_STEPS
    description: str = "DARTS recurrent cell: 8 nodes, 36 edges, 5 ops"

    @property
    def num_edges(self) -> int:
        return self.steps * (self.steps + 1) // 2

    def edges(self) -> list[tuple[int, int]]:
        """(node, predecessor) of every alpha row, node 1..steps, predecessor 0..node-1."""
        return [(i, j) for i in range(1, self.steps + 1) for j in range(i)]
