"""Look up one NAS-Bench-101 cell and print its results as JSON.

    python -m nasbench_analysis.query --dataset_file nasbench_only108.tfrecord \\
        --matrix '[[0,1,1],[0,0,1],[0,0,0]]' --ops input,conv3x3-bn-relu,output
    python -m nasbench_analysis.query --dataset_file nasbench_full.tfrecord \\
        --hash 2bd05a35a814d8771bc0a0593bfd1800 --epochs 36

Prints {"module_hash", "epochs", "module_adjacency", "module_operations",
"trainable_parameters", "mean": {...}, "repeats": [{...}, ...]}: the mean over the training
repeats (valid_error = mean(1 - validation_accuracy), ...) and each repeat's final and halfway
numbers. The first run on a file indexes it (see nasbench_analysis.nb101_benchmark).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from typing import Sequence

from nasbench_analysis.nb101_benchmark import NB101Benchmark, NotInBenchmark
from nasbench_analysis.nb101_spec import AVAILABLE_OPS, INPUT, OUTPUT, NB101Spec
from shared.cli.parser import ArgumentParser
from shared.errors import UserError, cli_entry


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m nasbench_analysis.query",
                       description="NAS-Bench-101 results of one cell, as JSON.")
    p.add_argument("--dataset_file", required=True,
                   help="nasbench_only108.tfrecord or nasbench_full.tfrecord")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--hash", help="the cell's module hash (32 hex digits)")
    which.add_argument("--matrix", help="adjacency matrix as JSON, e.g. '[[0,1],[0,0]]'")
    p.add_argument("--ops", help="comma-separated vertex labels for --matrix: input, "
                   + ", ".join(AVAILABLE_OPS) + ", output")
    p.add_argument("--epochs", type=int, default=108, help="training budget (default 108)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar when indexing")
    return p.parse_args(argv)


def spec_from_args(matrix: str, ops: str | None) -> NB101Spec:
    """A spec from the --matrix JSON and --ops list; every mistake is a UserError."""
    if ops is None:
        raise UserError("--matrix needs --ops (comma-separated labels, 'input' first)")
    try:
        a = json.loads(matrix)
    except json.JSONDecodeError as exc:
        raise UserError(f"--matrix is not valid JSON ({exc}): {matrix!r}") from None
    labels = [s.strip() for s in ops.split(",")]
    known = (INPUT, OUTPUT, *AVAILABLE_OPS)
    unknown = [s for s in labels if s not in known]
    if unknown:
        raise UserError(f"unknown op(s) {unknown} in --ops; known: {', '.join(known)}")
    try:
        return NB101Spec.create(a, labels)
    except (ValueError, TypeError) as exc:
        raise UserError(f"--matrix/--ops do not describe a cell: {exc}") from None


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.hash is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{32}", args.hash):
            raise UserError(f"--hash {args.hash!r} is not 32 hex digits")
        key: NB101Spec | str = args.hash.lower()
    else:
        key = spec_from_args(args.matrix, args.ops)
    bench = NB101Benchmark.open(args.dataset_file, progress=not args.no_progress)
    try:
        mean = bench.query_mean(key, args.epochs)
        repeats = bench.query(key, args.epochs)
    except NotInBenchmark as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:  # an epoch budget the file does not have
        raise UserError(f"--epochs: {exc}") from None
    fixed = bench.fixed(key)
    out = {"module_hash": fixed["module_hash"], "epochs": args.epochs,
           "module_adjacency": fixed["module_adjacency"].tolist(),
           "module_operations": fixed["module_operations"],
           "trainable_parameters": fixed["trainable_parameters"], "mean": mean,
           "repeats": [{k: v for k, v in r.items()
                        if k not in ("module_adjacency", "module_operations",
                                     "trainable_parameters")} for r in repeats]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
