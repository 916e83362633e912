"""Genotypes: the discrete cell a search ends with.

* ``Genotype``: DARTS' (op, input) pairs per node plus the concat list, JSON (de)serialisable.
* the registry of every published CNN genotype (``published_genotypes.json``), with source,
  search dataset/space and the numbers the paper reports,
* ``genotype_from_alpha``: the DARTS derivation rule,
* ``python -m shared.genotypes list|show NAME``.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import torch

from shared.errors import UserError, cli_entry
from shared.spaces import CellSpace, STEPS

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
        try:
            return Genotype(
                normal=tuple((str(op), int(j)) for op, j in d["normal"]),
                normal_concat=tuple(int(i) for i in d["normal_concat"]),
                reduce=tuple((str(op), int(j)) for op, j in d["reduce"]),
                reduce_concat=tuple(int(i) for i in d["reduce_concat"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"not a CNN genotype (need normal, normal_concat, reduce, "
                            f"reduce_concat): {exc}") from None

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
        return Genotype.from_dict(data)
    close = [n for n in reg if n.lower() == name_or_path.lower() or name_or_path.lower() in n.lower()]
    hint = f" Did you mean: {', '.join(close[:5])}?" if close else ""
    raise UserError(f"unknown architecture {name_or_path!r}: not a registered genotype nor a "
                    f"genotype .json file. `python -m shared.genotypes list` shows the names.{hint}")


def save_genotype(genotype: Genotype, path: str, **extra: Any) -> None:
    """Write ``{"genotype": ..., **extra}`` atomically (a killed writer leaves the old file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"genotype": genotype.to_dict(), **extra}, f, indent=1)
    os.replace(tmp, path)


def _parse_cell(probs: torch.Tensor, ops: Sequence[Sequence[str]], steps: int) -> list[Pair]:
    """DARTS rule for one cell: per node keep the 2 strongest inputs, each with its best op.

    Edge strength is the largest non-'none' probability (reference sdarts.md §3.6); the sort is
    stable so ties keep the lower input index, and the first maximal op wins. Op names come
    from the edge's own candidate list, so per-edge spaces (S1) parse correctly.
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


NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "imagenet": 1000, "digits": 10}


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters as DARTS counts them: everything but the auxiliary head."""
    return sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n)


def build_final_network(genotype: Genotype, dataset: str, init_channels: int, layers: int,
                        auxiliary: bool = False) -> torch.nn.Module:
    """The evaluation network for ``dataset`` (ImageNet gets NetworkImageNet)."""
    from shared.models.cnn import NetworkCIFAR, NetworkImageNet

    if dataset not in NUM_CLASSES:
        raise UserError(f"unknown dataset {dataset!r}; choose from {', '.join(NUM_CLASSES)}")
    if dataset == "imagenet":
        return NetworkImageNet(init_channels, NUM_CLASSES[dataset], layers, auxiliary, genotype)
    in_ch = 1 if dataset == "digits" else 3
    return NetworkCIFAR(init_channels, NUM_CLASSES[dataset], layers, auxiliary, genotype,
                        in_channels=in_ch)


def _cmd_list(_: argparse.Namespace) -> None:
    rows = [("name", "method", "space", "dataset", "reported params (M)", "reported error (%)")]
    for g in published().values():
        rows.append((g.name, g.method or "-", g.search_space or "-", g.search_dataset or "-",
                     str(g.reported.get("params_M", "-")),
                     str(g.reported.get("test_error", "-")).split(" (")[0]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _cmd_show(args: argparse.Namespace) -> None:
    genotype = load_genotype(args.name)
    entry = published().get(args.name)
    print(f"name: {args.name}")
    if entry is not None:
        print(f"source: {entry.source}")
        for key in ("method", "search_space", "search_dataset", "alias_of", "note"):
            if getattr(entry, key):
                print(f"{key}: {getattr(entry, key)}")
        for key, value in entry.reported.items():
            print(f"reported {key}: {value}")
    print(f"genotype: {genotype}")
    model = build_final_network(genotype, args.dataset, args.init_channels, args.layers)
    print(f"params: {count_parameters(model)}")
    if args.plot:
        from shared.plots import plot_genotype

        for path in plot_genotype(genotype, args.plot):
            print(f"cell diagram: {path}")


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.genotypes",
                                     description="Published DARTS-family genotypes.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="table of all registered genotypes").set_defaults(func=_cmd_list)
    show = sub.add_parser("show", help="print a genotype and its parameter count")
    show.add_argument("name", help="registry name or a genotype .json file")
    show.add_argument("--dataset", default="cifar10", choices=sorted(NUM_CLASSES))
    show.add_argument("--init_channels", type=int, default=36)
    show.add_argument("--layers", type=int, default=20)
    show.add_argument("--plot", metavar="PREFIX", default="",
                      help="also draw the cells to PREFIX_normal.png / PREFIX_reduce.png")
    show.set_defaults(func=_cmd_show)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
