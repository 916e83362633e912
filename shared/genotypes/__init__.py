"""Genotypes: the discrete cell a search ends with.

* ``Genotype``: DARTS' (op, input) pairs per node plus the concat list, JSON (de)serialisable.
* the registry of every published CNN genotype (``published_genotypes.json``), with source,
  search dataset/space and the numbers the paper reports,
* ``genotype_from_alpha``: the DARTS derivation rule (Liu et al., ICLR'19, sec. 2.4).

``python -m shared.genotypes list|show NAME`` is the command line (``__main__.py``); the final
networks a genotype builds are in ``shared.models.cnn``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Sequence

from shared.errors import UserError
from shared.spaces import STEPS, CellSpace

if TYPE_CHECKING:  # tensors come in; no torch needed to read the registry
    import torch

Pair = tuple[str, int]


@dataclass(frozen=True)
class Genotype:
    """A DARTS cell pair. Node i (0-based) uses pairs 2i and 2i+1; input 0 = c_{k-2},
    1 = c_{k-1}, 2+m = intermediate node m."""

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...]

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Genotype":
        """A genotype from its JSON form, checked (``check``): a cell that would build a wrong
        network or crash inside PyTorch is refused here, with what is wrong."""
        try:
            genotype = Genotype(
                normal=tuple((str(op), int(j)) for op, j in d["normal"]),
                normal_concat=tuple(int(i) for i in d["normal_concat"]),
                reduce=tuple((str(op), int(j)) for op, j in d["reduce"]),
                reduce_concat=tuple(int(i) for i in d["reduce_concat"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"not a CNN genotype (need normal, normal_concat, reduce, "
                            f"reduce_concat): {exc}") from None
        genotype.check()
        return genotype

    def check(self) -> None:
        """Each cell: two (op, input) pairs per node, every op a known candidate, every input an
        earlier state (0 = c_{k-2}, 1 = c_{k-1}, 2 + m = node m before this one), and a
        non-empty ``concat`` of distinct existing states. A negative input would otherwise
        wrap around in Python and silently build another network."""
        from shared.ops import OPS

        for cell, pairs, concat in (("normal", self.normal, self.normal_concat),
                                    ("reduce", self.reduce, self.reduce_concat)):
            if not pairs or len(pairs) % 2:
                raise UserError(f"genotype {cell} cell: {len(pairs)} (op, input) pairs; each "
                                f"node takes two, so a cell needs an even number >= 2")
            for p, (op, j) in enumerate(pairs):
                node = p // 2
                if op not in OPS:
                    raise UserError(f"genotype {cell} cell: unknown operation {op!r} (node "
                                    f"{node}); known: {', '.join(sorted(OPS))}")
                if not 0 <= j < 2 + node:
                    raise UserError(f"genotype {cell} cell: node {node} reads input {j}; it "
                                    f"can read 0..{1 + node} (the two cell inputs and the "
                                    f"nodes before it)")
            states = 2 + len(pairs) // 2
            if not concat or len(set(concat)) != len(concat) or \
                    not all(0 <= i < states for i in concat):
                raise UserError(f"genotype {cell}_concat {list(concat)}: needs distinct states "
                                f"in 0..{states - 1}")

    def to_dict(self) -> dict[str, Any]:
        return {"normal": [list(p) for p in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [list(p) for p in self.reduce], "reduce_concat": list(self.reduce_concat)}

    def __str__(self) -> str:  # the original repos print namedtuples; keep that familiar shape
        return (f"Genotype(normal={list(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={list(self.reduce)}, reduce_concat={list(self.reduce_concat)})")


@dataclass(frozen=True)
class PublishedGenotype:
    name: str
    genotype: Genotype
    source: str
    method: str = ""
    search_dataset: str = ""
    search_space: str = ""
    alias_of: str = ""
    note: str = ""
    reported: dict[str, Any] = field(default_factory=dict)
    reference_params_M: float | None = None


@lru_cache(maxsize=1)
def _registry_json() -> dict[str, dict[str, Any]]:
    text = resources.files("shared").joinpath("published_genotypes.json").read_text()
    return json.loads(text)["genotypes"]


@lru_cache(maxsize=1)
def published() -> dict[str, PublishedGenotype]:
    """All published CNN genotypes by name, in the order of the source files."""
    out = {}
    for name, e in _registry_json().items():
        if e["kind"] != "cnn":
            continue
        out[name] = PublishedGenotype(
            name=name, genotype=Genotype.from_dict(e), source=e.get("source", ""),
            method=e.get("method", ""), search_dataset=e.get("search_dataset", ""),
            search_space=e.get("search_space", ""), alias_of=e.get("alias_of", ""),
            note=e.get("note", ""), reported=e.get("reported", {}),
            reference_params_M=e.get("reference_params_M"))
    return out


def load_genotype(name_or_path: str) -> Genotype:
    """A registry name (``DARTS_V2``, ``c10_s5_pgd``) or a genotype JSON written by a search."""
    reg = published()
    if name_or_path in reg:
        return reg[name_or_path].genotype
    if name_or_path.endswith(".json") or os.path.sep in name_or_path:
        if not os.path.isfile(name_or_path):
            raise UserError(f"genotype file {name_or_path!r} does not exist")
        try:
            with open(name_or_path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read genotype file {name_or_path!r}: {exc}") from None
        if isinstance(data, dict) and "genotype" in data:  # search result files wrap it
            data = data["genotype"]
        try:
            return Genotype.from_dict(data)
        except UserError as exc:
            raise UserError(f"genotype file {name_or_path!r}: {exc}") from None
    low = name_or_path.lower()
    close = [n for n in reg if n.lower() == low or low in n.lower()]
    hint = f" Did you mean: {', '.join(close[:5])}?" if close else ""
    raise UserError(f"unknown architecture {name_or_path!r}: not a registered genotype nor a "
                    f"genotype .json file. `python -m shared.genotypes list` shows the "
                    f"names.{hint}")


def save_genotype(genotype: Genotype, path: str, **extra: Any) -> None:
    """Write ``{"genotype": ..., **extra}`` atomically (a killed writer leaves the old file);
    a non-finite number in ``extra`` (a diverged run's accuracy) is written as null."""
    from shared.checkpoint import write_json  # imports torch, which listing genotypes needs not

    write_json(path, {"genotype": genotype.to_dict(), **extra}, indent=1)


def _parse_cell(probs: torch.Tensor, ops: Sequence[Sequence[str]], steps: int) -> list[Pair]:
    """DARTS rule for one cell: per node keep the 2 strongest inputs, each with its best op.

    Edge strength is the largest non-'none' probability (DARTS ``cnn/model_search.py``,
    ``genotype()``; Liu et al., ICLR'19, sec. 2.4); the sort is stable so ties keep the lower
    input index, and the first maximal op wins. Op names come from the edge's own candidate
    list, so per-edge spaces (S1) parse correctly.
    """
    probs = probs.detach().float().cpu()
    gene: list[Pair] = []
    start, n = 0, 2
    for _ in range(steps):
        rows = range(start, start + n)

        def best(e: int) -> tuple[float, int]:
            cands = [(float(probs[e, k]), k) for k, name in enumerate(ops[e]) if name != "none"]
            top = max(p for p, _ in cands)
            return top, next(k for p, k in cands if p == top)

        strength = {e: best(e) for e in rows}
        chosen = sorted(rows, key=lambda e: -strength[e][0])[:2]  # sorted() is stable
        for e in chosen:
            gene.append((ops[e][strength[e][1]], e - start))
        start += n
        n += 1
    return gene


def genotype_from_alpha(weights_normal: torch.Tensor, weights_reduce: torch.Tensor,
                        space: CellSpace, steps: int = STEPS, multiplier: int = 4) -> Genotype:
    """Derive the genotype from mixing weights (softmax(alpha)) of a DARTS-space supernet."""
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return Genotype(
        normal=tuple(_parse_cell(weights_normal, space.normal, steps)), normal_concat=concat,
        reduce=tuple(_parse_cell(weights_reduce, space.reduce, steps)), reduce_concat=concat)
