"""``python -m shared.genotypes``: list the published genotypes, show one with its parameter
count (the evaluation network of DARTS' protocol, C=36, 20 cells) and draw its cells."""
from __future__ import annotations

import argparse
from typing import Sequence

from shared.errors import cli_entry
from shared.genotypes import load_genotype, published
from shared.models.cnn import FINAL_DATASETS, build_final_network, count_parameters


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
    show.add_argument("--dataset", default="cifar10", choices=sorted(FINAL_DATASETS))
    show.add_argument("--init_channels", type=int, default=36)
    show.add_argument("--layers", type=int, default=20)
    show.add_argument("--plot", metavar="PREFIX", default="",
                      help="also draw the cells to PREFIX_normal.png / PREFIX_reduce.png")
    show.set_defaults(func=_cmd_show)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
