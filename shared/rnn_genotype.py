"""The DARTS recurrent cell as a genotype: one (activation, predecessor) pair per node and the
nodes whose mean is the cell output (DARTS ``rnn/genotypes.py``).

Node i (1-based) computes s_i = s_j + c * (f(h) - s_j) from its one predecessor s_j, j < i,
where s_0 is the cell's initial state. The published cells (``published_rnn_genotypes.json``:
DARTS_V1, DARTS_V2 = DARTS, ENAS, SDARTS' penn_random and penn_pgd) are looked up by name.

``RNNGenotype.from_weights`` is DARTS' derivation (DARTS ``rnn/model_search.py``): for every
node, the single predecessor with the largest non-``none`` probability, then its argmax
non-``none`` op (ties: the first, as the strict ``>`` of the original); ``concat`` = all 8
nodes.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import torch

from shared.errors import UserError
from shared.spaces import RNN_PRIMITIVES, RNNSpace

ACTIVATIONS = tuple(op for op in RNN_PRIMITIVES if op != "none")


@dataclass(frozen=True)
class RNNGenotype:
    recurrent: tuple[tuple[str, int], ...]
    concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for i, (op, pred) in enumerate(self.recurrent, start=1):
            if op not in ACTIVATIONS:
                raise ValueError(f"node {i}: unknown activation {op!r}; one of {ACTIVATIONS}")
            if not 0 <= pred < i:
                raise ValueError(f"node {i}: predecessor {pred} must be in 0..{i - 1}")
        if not self.concat or any(not 1 <= c <= len(self.recurrent) for c in self.concat):
            raise ValueError(f"concat {self.concat} must name nodes 1..{len(self.recurrent)}")

    @property
    def steps(self) -> int:
        return len(self.recurrent)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "RNNGenotype":
        try:
            return RNNGenotype(tuple((str(op), int(j)) for op, j in d["recurrent"]),
                               tuple(int(c) for c in d["concat"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"not an RNN genotype (need recurrent, concat): {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"recurrent": [list(p) for p in self.recurrent], "concat": list(self.concat)}

    def __str__(self) -> str:  # the shape the original repositories print
        concat = (f"range({self.concat[0]}, {self.concat[-1] + 1})"
                  if list(self.concat) == list(range(self.concat[0], self.concat[-1] + 1))
                  else str(list(self.concat)))
        return f"Genotype(recurrent={list(self.recurrent)}, concat={concat})"

    @staticmethod
    def from_weights(weights: torch.Tensor, space: RNNSpace | None = None) -> "RNNGenotype":
        """DARTS' rule on softmax(alpha) (rows in ``RNNSpace.edges()`` order, ops in
        ``space.ops`` order)."""
        space = space or RNNSpace()
        w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
        if tuple(w.shape) != (space.num_edges, len(space.ops)):
            raise ValueError(f"weights must be {space.num_edges} x {len(space.ops)}, "
                             f"got {tuple(w.shape)}")
        keep = [k for k, op in enumerate(space.ops) if op != "none"]
        gene, start = [], 0
        for i in range(1, space.steps + 1):
            rows = w[start:start + i][:, keep]
            best = rows.max(dim=1).values
            j = int(torch.argmax(best))  # first maximum: the lower predecessor on ties
            k = keep[int(torch.argmax(rows[j]))]
            gene.append((space.ops[k], j))
            start += i
        return RNNGenotype(tuple(gene), tuple(range(1, space.steps + 1)))


@dataclass(frozen=True)
class PublishedRNNGenotype:
    name: str
    genotype: RNNGenotype
    source: str
    method: str = ""
    search_dataset: str = ""
    alias_of: str = ""
    reported: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=1)
def published_rnn() -> dict[str, PublishedRNNGenotype]:
    raw = json.loads(resources.files("shared").joinpath("published_rnn_genotypes.json")
                     .read_text())["genotypes"]
    out: dict[str, PublishedRNNGenotype] = {}
    for name, e in raw.items():
        target = raw[e["alias_of"]] if "alias_of" in e else e
        out[name] = PublishedRNNGenotype(
            name, RNNGenotype.from_dict(target), e["source"], target.get("method", ""),
            target.get("search_dataset", ""), e.get("alias_of", ""), target.get("reported", {}))
    return out


def load_rnn_genotype(arch: str) -> RNNGenotype:
    """``--arch``: a registry name (DARTS_V1, DARTS_V2, DARTS, ENAS, penn_random, penn_pgd)
    or a genotype JSON file a search wrote (``{"genotype": {...}}`` or the bare dict)."""
    if arch in published_rnn():
        return published_rnn()[arch].genotype
    if os.path.isfile(arch):
        try:
            with open(arch) as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"--arch {arch}: cannot read a genotype JSON ({exc})") from None
        return RNNGenotype.from_dict(d.get("genotype", d))
    raise UserError(f"--arch {arch!r}: neither a published RNN genotype "
                    f"({', '.join(published_rnn())}) nor a genotype JSON file")


def registry_names() -> Sequence[str]:
    return tuple(published_rnn())
