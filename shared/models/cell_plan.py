"""Who reads what in a DARTS search cell, planned once per cell and reused on every forward.

The fast path (``fast_mixed``) runs a cell state by state (DARTS, Liu et al. 2019, §2.1: node
i sums the edges from every earlier state). For each state it plans how many ops read the state,
its ReLU, the ReLU's even pixels, odd pixels and polyphase components, and each of its
poolings (``Plan``: ``fan_out`` sums those readers' gradients at once), and, with grouped
edges (``grouped_edges``), which same-shaped convs of the edges leaving it, or leaving either
of the cell's two inputs, run together (``Group``). Plans depend only on the cell's modules,
the state's size, the device's rewrites and the candidates that run, so they are made once
(``memo``) and read on every forward.
"""
from __future__ import annotations

import collections
import weakref
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch
import torch.nn as nn

from shared.models import candidate
from shared.models.grouped_edges import Member, group_key, groupable, size_free_key, state_runs

# The states of a group's members, in order: ((state, m), ...), a run of m members that read
# the state; one state, or the cell's two inputs (``INPUTS``), once per kernel size where a
# group takes several (``EMBED``)
Blocks = tuple[tuple[int, int], ...]


class Group(NamedTuple):
    """Same-shaped convs of one kind (``grouped_edges.group_key``) that run together: on the
    edges leaving one state, or leaving either of the cell's two inputs (both are ready when
    the cell starts, and both are read at the same size and stride), the first input's members
    first (by kernel size first where it takes several, ``EMBED``); ``blocks``: the runs of
    members that read one state."""
    members: list[Member]
    blocks: Blocks


# A group's convs of every kernel size (``EMBED``): (separable, dilated)
Merges = tuple[bool, bool]


class Plan(NamedTuple):
    """How many ops read a state (``fan_out``), its ReLU, and the ReLU's even pixels, odd
    pixels and polyphase components, and each of its poolings (``pool_key``);
    (``grouped_edges``) the group of each (edge, candidate) in one, and how many groups
    read each ``(source, blocks)``: copies of the ReLU, or of its even pixels or polyphase
    components, of each state of ``blocks`` as many times as it has members there."""
    x_reads: int = 1
    relu_reads: int = 1
    even_reads: int = 1
    odd_reads: int = 1
    poly_reads: int = 1
    pool_reads: dict[tuple, int] | None = None
    groups: dict[tuple[int, int], Group] | None = None
    copy_reads: dict[tuple[str, Blocks], int] | None = None


_POOL_ATTRS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad",
               "divisor_override", "return_indices")


@candidate.per_module(asked_of=lambda m: isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)))
def pool_key(pool: nn.Module) -> tuple:
    """Poolings with equal keys compute the same thing (found once per pooling)."""
    return (type(pool),) + tuple(getattr(pool, a, None) for a in _POOL_ATTRS)


def leaving_candidates(cell, j: int, live: list[list[bool]] | None) -> list[Member]:
    """The candidates that run on the edges leaving state ``j``: (edge, index, op)."""
    out, offset = [], 0
    for i in range(cell._steps):
        if j < 2 + i:  # node i reads states 0 .. i+1
            edge = offset + j
            out += [(edge, k, op) for k, op in enumerate(cell._ops[edge]._ops)
                    if candidate.kind(op) != "none" and (live is None or live[edge][k])]
        offset += 2 + i
    return out


def _groups(leaving: Sequence[Member], merges: Merges) -> dict[tuple, list[Member]]:
    """The separable and dilated convs of ``leaving`` (``leaving_candidates``) that run
    together, by ``group_key`` (``size_free_key`` for a kind whose kernel sizes merge), in
    order (groups of one included)."""
    groups: dict[tuple, list[Member]] = {}
    for edge, k, op in leaving:
        kind = candidate.kind(op)
        if kind in ("sep", "dil") and groupable(op):
            # an int index: TorchDynamo 2.11 refuses a bool one (a graph break per cell)
            key = size_free_key(op) if merges[1 if kind == "dil" else 0] else group_key(op)
            groups.setdefault(key, []).append((edge, k, op))
    return groups


# The cell's two inputs: their groups of convs run together (``Group``)
INPUTS = (0, 1)


def state_sets(cell) -> list[tuple[int, ...]]:
    """The sets of states whose edges' convs are grouped together: the two inputs, then each
    node but the last (which feeds no edge)."""
    return [INPUTS] + [(j,) for j in range(2, 2 + cell._steps - 1)]


def groups_of(cell, js: Sequence[int], live: list[list[bool]] | None,
              merges: Merges) -> list[Group]:
    """The groups of two or more convs on the edges leaving the states ``js``, each's members
    by kernel size, then state, then edge (so each size's kernels are one block of the
    group's, ``grouped_edges.kernels``)."""
    leaving = {j: leaving_candidates(cell, j, live) for j in js}
    state = {edge: j for j, members in leaving.items() for edge, _, _ in members}
    groups = _groups([m for members in leaving.values() for m in members], merges).values()
    out = []
    for members in groups:
        if len(members) > 1:
            members = sorted(members, key=lambda m: (_size(m[2]), state[m[0]], m[0]))
            out.append(Group(members, state_runs([state[e] for e, _, _ in members])))
    return out


def _size(op: nn.Module) -> int:
    """A separable or dilated conv's kernel size."""
    return candidate.layers(op)[0].kernel_size[0]


def cell_groups(cell, live: list[list[bool]] | None, merges: Merges) -> Iterator[list[Member]]:
    """The members of each group of convs that run together (``merges``: the device's)."""
    for js in state_sets(cell):
        for group in groups_of(cell, js, live, merges):
            yield group.members


def embedded_stages(cell, live: list[list[bool]] | None,
                    merges: Merges) -> list[list[nn.Conv2d]]:
    """The depthwise stages of several kernel sizes of the cell's groups (``merges``: the
    device's, ``fast_mixed.EMBED``), each's convs in the group's order: what ``CellKernels``
    builds at once."""
    stages = []
    for members in cell_groups(cell, live, merges):
        for stage in zip(*(candidate.layers(op) for _, _, op in members)):
            if isinstance(stage[0], nn.Conv2d) and len({c.kernel_size for c in stage}) > 1:
                stages.append(list(stage))
    return stages


# A cell's plans, by what they depend on besides the cell's modules: the state, its size, the
# device's rewrites of dilation, the grouping and the candidates that run; and (grouped) its
# scale layouts, by the candidates that run. Made once, read on every forward (~0.3 ms a cell
# to make, ~4 ms of host time a step); a cell keeps at most PLANS_PER_CELL (DARTS-PT's
# projection runs fewer candidates at each of its steps).
_PLANS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Any]] = weakref.WeakKeyDictionary()
PLANS_PER_CELL = 64


def live_key(live: list[list[bool]] | None) -> tuple | None:
    return None if live is None else tuple(map(tuple, live))


def memo(cell, key: tuple, make: Callable[[], Any]) -> Any:
    """``make()``, kept in the cell's ``_PLANS`` under ``key`` (at most PLANS_PER_CELL)."""
    if torch.compiler.is_compiling():  # traced once; TorchDynamo would guard on the memo
        return make()
    plans = _PLANS.setdefault(cell, {})
    value = plans.get(key)
    if value is None:
        if len(plans) >= PLANS_PER_CELL:
            plans.clear()
        value = plans[key] = make()
    return value


def make_plans(cell, js: tuple[int, ...], live: list[list[bool]] | None, grouped: bool,
               merges: Merges, source: Callable[[nn.Module, str], str]) -> list[Plan]:
    """Each state of ``js``'s :class:`Plan`; ``source(op, kind)``: what a separable ("sep")
    or dilated ("dil") conv ``op`` reads of its state on this device and at this size."""
    groups = groups_of(cell, js, live, merges) if grouped else []
    # the convs that read: each group (of 2 or more) the copies of its states' source, made
    # once per (source, blocks); each other conv on its own; a dilated conv reads the ReLU,
    # its even pixels or its polyphase components, a FactorizedReduce the even and the odd
    # pixels
    copy_reads = collections.Counter(
        (source(g.members[0][2], candidate.kind(g.members[0][2])), g.blocks) for g in groups)
    of = {(edge, k): g for g in groups for edge, k, _ in g.members}
    return [_state_plan(cell, j, live, of, dict(copy_reads), source) for j in js]


def _state_plan(cell, j: int, live: list[list[bool]] | None,
                groups: dict[tuple[int, int], Group], copy_reads: dict[tuple[str, Blocks], int],
                source: Callable[[nn.Module, str], str]) -> Plan:
    """State ``j``'s :class:`Plan`: ``groups`` (each grouped candidate's) with their
    ``copy_reads``, ``source(op, kind)`` what an ungrouped conv reads."""
    leaving = leaving_candidates(cell, j, live)
    kinds = [candidate.kind(op) for _, _, op in leaving]
    sources = collections.Counter({"even": 0, "odd": 0, "poly": 0})
    sources.update(name for name, blocks in copy_reads if any(s == j for s, _ in blocks))
    for (edge, k, op), kind in zip(leaving, kinds):
        if (edge, k) in groups:
            continue
        if kind in ("sep", "dil"):
            sources[source(op, kind)] += 1
        elif kind == "fr":
            sources.update(("even", "odd"))
    relu_reads = sources["relu"] + sum(sources[s] > 0 for s in ("even", "odd", "poly"))
    pools = collections.Counter(pool_key(candidate.layers(op)[0])
                                for (_, _, op), kind in zip(leaving, kinds) if kind == "pool")
    x_reads = (kinds.count("skip") + kinds.count("generic") + len(pools) + (relu_reads > 0)
               + (j >= 2 + cell._steps - cell._multiplier))
    return Plan(x_reads, relu_reads, sources["even"], sources["odd"], sources["poly"],
                 dict(pools), groups, copy_reads)
