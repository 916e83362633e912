"""A NAS-Bench-201 cell: one op name per edge, and its benchmark string.

NB201 keeps every edge of the 4-node cell, so a cell is just 6 op names in edge order
(``shared.spaces.NB201_EDGES``: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2); 'none' is how an edge is
removed. The string form is AutoDL's ``Structure.tostr()``, the key the benchmark API is indexed
by, one ``+``-separated group per node 1..3 with ``op~input`` per incoming edge, e.g.

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from shared.errors import UserError
from shared.spaces import NB201_EDGES, NB201_MAX_NODES, NB201_OPS

if TYPE_CHECKING:  # the cell itself is plain data; tensors only come in and go out
    import torch

NUM_EDGES = len(NB201_EDGES)
NUM_ARCHS = len(NB201_OPS) ** NUM_EDGES  # 15,625
_TERM = re.compile(r"^([a-z0-9_]+)~(\d+)$")
_EXAMPLE = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
            "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


@dataclass(frozen=True)
class NB201Arch:
    """A NAS-Bench-201 cell: ``ops[e]`` is the op on edge ``NB201_EDGES[e]``."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        object.__setattr__(self, "ops", ops)
        if len(ops) != NUM_EDGES:
            raise UserError(f"an NB201 cell has {NUM_EDGES} edges, got {len(ops)} ops: {ops}")
        bad = [op for op in ops if op not in NB201_OPS]
        if bad:
            raise UserError(f"unknown NB201 op(s) {bad}; the ops are {', '.join(NB201_OPS)}")

    # -- the benchmark string -------------------------------------------------------------
    @classmethod
    def from_str(cls, arch_str: str) -> NB201Arch:
        """Parse AutoDL's string. Inputs of a node may come in any order; each must appear once."""
        if not isinstance(arch_str, str):
            raise UserError("an NB201 architecture string is expected, got "
                            f"{type(arch_str).__name__}")
        text = arch_str.strip()
        groups = text.split("+")
        if len(groups) != NB201_MAX_NODES - 1:
            raise UserError(f"bad NB201 architecture {arch_str!r}: expected {NB201_MAX_NODES - 1} "
                            f"'+'-separated nodes like {_EXAMPLE}")
        chosen: dict[tuple[int, int], str] = {}
        for node, group in enumerate(groups, start=1):
            if not (group.startswith("|") and group.endswith("|")) or len(group) < 2:
                raise UserError(f"bad NB201 architecture {arch_str!r}: node {node} "
                                f"{group!r} must look like |op~0|op~1|")
            inputs = set()
            for term in group[1:-1].split("|"):
                m = _TERM.match(term)
                if m is None:
                    raise UserError(f"bad NB201 architecture {arch_str!r}: {term!r} is not "
                                    "op~input")
                op, frm = m.group(1), int(m.group(2))
                if frm >= node:
                    raise UserError(f"bad NB201 architecture {arch_str!r}: node {node} cannot take "
                                    f"input {frm} (only 0..{node - 1})")
                if frm in inputs:
                    raise UserError(f"bad NB201 architecture {arch_str!r}: node {node} takes input "
                                    f"{frm} twice")
                inputs.add(frm)
                chosen[(node, frm)] = op
            if inputs != set(range(node)):
                missing = sorted(set(range(node)) - inputs)
                raise UserError(f"bad NB201 architecture {arch_str!r}: node {node} lacks input(s) "
                                f"{missing}; NB201 writes every edge (use none~i to remove one)")
        return cls(tuple(chosen[e] for e in NB201_EDGES))

    def tostr(self) -> str:
        """AutoDL's string, inputs in ascending order: exactly the benchmark's key."""
        nodes = []
        for node in range(1, NB201_MAX_NODES):
            terms = [f"{op}~{frm}" for (to, frm), op in zip(NB201_EDGES, self.ops) if to == node]
            nodes.append("|" + "|".join(terms) + "|")
        return "+".join(nodes)

    def __str__(self) -> str:
        return self.tostr()

    def node_inputs(self) -> list[list[tuple[str, int]]]:
        """Per node 1..3, its (op, input node) pairs: AutoDL's ``Structure.nodes``."""
        return [[(op, frm) for (to, frm), op in zip(NB201_EDGES, self.ops) if to == node]
                for node in range(1, NB201_MAX_NODES)]

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, str]:
        return {"arch": self.tostr()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NB201Arch:
        if not isinstance(data, Mapping) or "arch" not in data:
            raise UserError(f"an NB201 architecture record needs an 'arch' string, got {data!r}")
        return cls.from_str(data["arch"])

    # -- weights <-> cell -----------------------------------------------------------------
    @classmethod
    def from_weights(cls, weights: torch.Tensor, ops: Sequence[str] = NB201_OPS) -> NB201Arch:
        """Argmax op per edge of a (6 x len(ops)) tensor (alpha, softmax(alpha), projected).

        'none' is a candidate like any other (NB201 keeps every edge), unlike DARTS' parse.
        Ties go to the first op, as ``Tensor.argmax`` and darts-pt's genotype() do.
        """
        if weights.dim() != 2 or weights.shape != (NUM_EDGES, len(ops)):
            raise ValueError(f"NB201 weights must be ({NUM_EDGES}, {len(ops)}), "
                             f"got {tuple(weights.shape)}")
        idx = weights.detach().argmax(dim=-1).tolist()
        return cls(tuple(ops[i] for i in idx))

    def to_weights(self, ops: Sequence[str] = NB201_OPS,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
        """The one-hot (6 x len(ops)) mixing weights selecting this cell in a supernet
        (float32 unless ``dtype``)."""
        import torch

        missing = [op for op in self.ops if op not in ops]
        if missing:
            raise UserError(f"cell {self} uses {missing}, not in the space's ops {tuple(ops)}")
        w = torch.zeros(NUM_EDGES, len(ops), dtype=dtype or torch.float32)
        for e, op in enumerate(self.ops):
            w[e, list(ops).index(op)] = 1.0
        return w

    # -- the whole space ------------------------------------------------------------------
    def space_index(self) -> int:
        """Position in ``index_space()`` (base 5, edge 1<-0 most significant).

        Not the benchmark's arch-index: NAS-Bench-201 numbers its cells in another order (ask
        the API, ``query_index_by_arch``).
        """
        index = 0
        for op in self.ops:
            index = index * len(NB201_OPS) + NB201_OPS.index(op)
        return index

    @classmethod
    def from_space_index(cls, index: int) -> NB201Arch:
        if not 0 <= index < NUM_ARCHS:
            raise UserError(f"NB201 cell index must be in [0, {NUM_ARCHS}), got {index}")
        ops = []
        for _ in range(NUM_EDGES):
            index, r = divmod(index, len(NB201_OPS))
            ops.append(NB201_OPS[r])
        return cls(tuple(reversed(ops)))


def index_space() -> Iterator[NB201Arch]:
    """All 5^6 = 15,625 NB201 cells, in ``space_index`` order."""
    for ops in itertools.product(NB201_OPS, repeat=NUM_EDGES):
        yield NB201Arch(ops)
