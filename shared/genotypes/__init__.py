"""Genotypes: the discrete cell a search ends with.

* ``Genotype``: DARTS' (op, input) pairs per node plus the concat list, JSON (de)serialisable.
* ``PerCellGenotype``: one such cell per cell of the network (StacNAS without
  ``--alpha_share``: one alpha, hence one derived cell, per search cell).
* the registry of every published CNN genotype (``published_genotypes.json``), with source,
  search dataset/space and the numbers the paper reports,
* ``genotype_from_alpha``: the DARTS derivation rule (Liu et al., ICLR'19, sec. 2.4);
  ``per_cell_genotype_from_alpha`` applies it to every cell of a ``PerCellSpace``.

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
from shared.spaces import STEPS, CellSpace, PerCellSpace, kinds_of_cells

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
        for cell, pairs, concat in (("normal", self.normal, self.normal_concat),
                                    ("reduce", self.reduce, self.reduce_concat)):
            _check_cell(f"{cell} cell", f"{cell}_concat", pairs, concat)

    def to_dict(self) -> dict[str, Any]:
        return {"normal": [list(p) for p in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [list(p) for p in self.reduce], "reduce_concat": list(self.reduce_concat)}

    def __str__(self) -> str:  # the original repos print namedtuples; keep that familiar shape
        return (f"Genotype(normal={list(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={list(self.reduce)}, reduce_concat={list(self.reduce_concat)})")


def _check_cell(cell: str, concat_name: str, pairs: Sequence[Pair],
                concat: Sequence[int]) -> None:
    """``Genotype.check`` for one cell; ``cell``/``concat_name`` name it in the messages."""
    from shared.ops import OPS

    if not pairs or len(pairs) % 2:
        raise UserError(f"genotype {cell}: {len(pairs)} (op, input) pairs; each "
                        f"node takes two, so a cell needs an even number >= 2")
    for p, (op, j) in enumerate(pairs):
        node = p // 2
        if op not in OPS:
            raise UserError(f"genotype {cell}: unknown operation {op!r} (node "
                            f"{node}); known: {', '.join(sorted(OPS))}")
        if not 0 <= j < 2 + node:
            raise UserError(f"genotype {cell}: node {node} reads input {j}; it "
                            f"can read 0..{1 + node} (the two cell inputs and the "
                            f"nodes before it)")
    states = 2 + len(pairs) // 2
    if not concat or len(set(concat)) != len(concat) or \
            not all(0 <= i < states for i in concat):
        raise UserError(f"genotype {concat_name} {list(concat)}: needs distinct states "
                        f"in 0..{states - 1}")


CELL_KINDS = ("normal", "reduce")


@dataclass(frozen=True)
class PerCellGenotype:
    """One DARTS cell per cell of the network, in forward order: cell i is ``cells[i]``
    ((op, input) pairs as in ``Genotype``), its output concatenates ``concats[i]`` and it is a
    reduction cell when ``kinds[i]`` is "reduce". StacNAS without ``--alpha_share`` derives
    one per search cell (susan0199/StacNAS ``genotypes.py``, ``save_alphas``: one
    ``build_genotype_from_alpha`` per alpha) and its augment network builds each cell from its
    own genotype (``augment_cnn.py``, ``AugmentCNN``: ``genotypes[cell_id]``)."""

    cells: tuple[tuple[Pair, ...], ...]
    concats: tuple[tuple[int, ...], ...]
    kinds: tuple[str, ...]

    @property
    def layers(self) -> int:
        return len(self.cells)

    @staticmethod
    def repeat(genotype: Genotype, layers: int) -> "PerCellGenotype":
        """Every cell of DARTS' ``layers``-cell network is ``genotype``'s cell of its kind
        (the per-cell form of a shared genotype: both build the same network)."""
        kinds = kinds_of_cells(layers)
        pick = {"normal": (genotype.normal, genotype.normal_concat),
                "reduce": (genotype.reduce, genotype.reduce_concat)}
        return PerCellGenotype(tuple(pick[k][0] for k in kinds),
                               tuple(pick[k][1] for k in kinds), kinds)

    def check(self) -> None:
        """As many concats and kinds as cells (at least one), every kind "normal" or
        "reduce", and every cell as ``Genotype.check`` wants it."""
        if not self.cells or not len(self.cells) == len(self.concats) == len(self.kinds):
            raise UserError(f"per-cell genotype: {len(self.cells)} cells, "
                            f"{len(self.concats)} concats, {len(self.kinds)} kinds; need as "
                            f"many of each (at least one)")
        for i, (pairs, concat, kind) in enumerate(zip(self.cells, self.concats, self.kinds)):
            if kind not in CELL_KINDS:
                raise UserError(f"genotype cell {i}: kind {kind!r}, not one of "
                                f"{', '.join(CELL_KINDS)}")
            _check_cell(f"cell {i} ({kind})", f"cell {i} concat", pairs, concat)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "PerCellGenotype":
        """From ``to_dict``'s form (other keys ignored), checked (``check``)."""
        try:
            cells = list(d["cells"])
            genotype = PerCellGenotype(
                cells=tuple(tuple((str(op), int(j)) for op, j in c["ops"]) for c in cells),
                concats=tuple(tuple(int(i) for i in c["concat"]) for c in cells),
                kinds=tuple(str(c["kind"]) for c in cells))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"not a per-cell genotype (need cells: a list of kind, ops, "
                            f"concat): {exc}") from None
        genotype.check()
        return genotype

    def to_dict(self) -> dict[str, Any]:
        return {"cells": [{"kind": k, "ops": [list(p) for p in pairs], "concat": list(concat)}
                          for pairs, concat, k in zip(self.cells, self.concats, self.kinds)]}

    def __str__(self) -> str:  # one line per cell: the logs show a 20-cell genotype readably
        lines = [f"  cell {i} ({k}): {list(pairs)}, concat={list(concat)}"
                 for i, (pairs, concat, k) in enumerate(zip(self.cells, self.concats,
                                                            self.kinds))]
        return "PerCellGenotype(\n" + "\n".join(lines) + "\n)"


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


def genotype_from_dict(d: dict[str, Any]) -> Genotype | PerCellGenotype:
    """A ``PerCellGenotype`` when ``d`` has "cells", else a ``Genotype`` (both checked)."""
    if isinstance(d, dict) and "cells" in d:
        return PerCellGenotype.from_dict(d)
    return Genotype.from_dict(d)


def load_genotype(name_or_path: str) -> Genotype | PerCellGenotype:
    """A registry name (``DARTS_V2``, ``c10_s5_pgd``) or a genotype JSON written by a search:
    a ``PerCellGenotype`` when the JSON's genotype has "cells", else a ``Genotype``."""
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
            return genotype_from_dict(data)
        except UserError as exc:
            raise UserError(f"genotype file {name_or_path!r}: {exc}") from None
    low = name_or_path.lower()
    close = [n for n in reg if n.lower() == low or low in n.lower()]
    hint = f" Did you mean: {', '.join(close[:5])}?" if close else ""
    raise UserError(f"unknown architecture {name_or_path!r}: not a registered genotype nor a "
                    f"genotype .json file. `python -m shared.genotypes list` shows the "
                    f"names.{hint}")


def save_genotype(genotype: Genotype | PerCellGenotype, path: str, **extra: Any) -> None:
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


def per_cell_genotype_from_alpha(weights: Sequence[torch.Tensor], space: PerCellSpace,
                                 steps: int = STEPS, multiplier: int = 4) -> PerCellGenotype:
    """DARTS' rule (``_parse_cell``) on every cell of a per-cell space: cell i's genotype from
    its own mixing weights ``weights[i]`` and candidates ``space.ops_of(i)``, as StacNAS
    derives one genotype per cell without ``--alpha_share`` (susan0199/StacNAS
    ``genotypes.py``, ``save_alphas``). The rule here is DARTS' (softmax weights, 'none'
    ignored); StacNAS' own ranking of raw logits is ``stacnas.spaces.stacnas_genotype``."""
    if len(weights) != space.layers:
        raise ValueError(f"{len(weights)} mixing-weight tensors for the {space.layers} cells "
                         f"of space {space.name}")
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return PerCellGenotype(
        cells=tuple(tuple(_parse_cell(w, space.ops_of(i), steps)) for i, w in enumerate(weights)),
        concats=(concat,) * space.layers, kinds=tuple(space.kinds))
