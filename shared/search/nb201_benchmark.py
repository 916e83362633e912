"""NAS-Bench-201 numbers during a search, for every door that searches the NB201 cell
(DARTS-PT's ``nasbench201/train_search.py``, Λ-DARTS' AutoDL ``DARTS-V1.py``): the checks on
the benchmark path before any folder is made, opening the file (weights-only,
``shared.nb201_api``), the per-epoch query into the history and its log lines.

The released codes print ``api.query_by_arch(genotype)`` each epoch; here the numbers are read
structurally (``hp='200'``) and logged in darts-pt's lines (``cifar10 train %f test %f``, ...,
plus ``cifar10-valid train %f valid %f``), kept under ``BENCHMARK_KEY`` in ``history.json`` and
TensorBoard (``nasbench201/...``).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from shared.errors import UserError
from shared.nb201_api import BENCHMARK_FILE, BENCHMARK_URL

BENCHMARK_KEY = "nasbench201"  # history entry / TensorBoard prefix of the query results


def check_benchmark_path(path: str, required: bool, flag: str = "--api_path") -> None:
    """Refuse a benchmark path that cannot be the file before any folder or log is made (the
    file is loaded later, once the search is built); ``required``: the user named the path, so
    a missing file is an error rather than "run without benchmark numbers"."""
    full = os.path.expanduser(path)
    if os.path.isdir(full):
        raise UserError(f"{flag} {path} is a directory; pass the benchmark file "
                        f"{BENCHMARK_FILE} itself")
    if not os.path.exists(full) and required:
        raise UserError(f"{flag} {path}: no such file; download {BENCHMARK_FILE} from "
                        f"{BENCHMARK_URL} and pass its path (or drop {flag} to run without "
                        "benchmark numbers)")


def open_benchmark(path: str, logger: logging.Logger, required: bool = False,
                   flag: str = "--api_path") -> Any:
    """The benchmark (``shared.nb201_api.NB201Benchmark``), or None when there is no file at a
    path the user did not name (said once, with where to get it)."""
    if not required and not os.path.exists(os.path.expanduser(path)):
        logger.info("NAS-Bench-201 file %s not found: benchmark numbers are skipped. Download "
                    "%s from %s and put it there (or pass %s).", path, BENCHMARK_FILE,
                    BENCHMARK_URL, flag)
        return None
    from shared.nb201_api import NB201Benchmark

    logger.info("loading NAS-Bench-201 from %s", path)
    return NB201Benchmark.open(path, required=required)


def query(bench: Any, arch: Any, logger: logging.Logger) -> dict[str, float]:
    """The cell's benchmark accuracies, logged in darts-pt's lines (plus cifar10-valid); keys
    as ``shared.nb201_api.QUERY_KEYS``."""
    r = bench.query(arch)
    logger.info("cifar10-valid train %f valid %f", r["cifar10-valid/train"],
                r["cifar10-valid/valid"])
    logger.info("cifar10 train %f test %f", r["cifar10/train"], r["cifar10/test"])
    logger.info("cifar100 train %f valid %f test %f", r["cifar100/train"], r["cifar100/valid"],
                r["cifar100/test"])
    logger.info("imagenet16 train %f valid %f test %f", r["ImageNet16-120/train"],
                r["ImageNet16-120/valid"], r["ImageNet16-120/test"])
    return r


def benchmark_hook(bench: Any) -> Callable[[Any], None]:
    """Epoch-end hook: query the epoch's cell into its history entry (before the outputs
    hooks, which write it to history.json and TensorBoard)."""
    def hook(ctx) -> None:
        ctx.entry[BENCHMARK_KEY] = query(bench, ctx.result.genotype, ctx.loop.logger)
    return hook


def final_query(bench: Any, arch: Any, logger: logging.Logger, writer: Any,
                step: int) -> dict[str, Any]:
    """The final cell's numbers for ``genotype.json`` (and TensorBoard at ``step``); {} without
    a benchmark."""
    if bench is None:
        return {}
    numbers = query(bench, arch, logger)
    for key, value in numbers.items():
        writer.add_scalar(f"{BENCHMARK_KEY}/{key}", value, step)
    writer.flush()
    return {BENCHMARK_KEY: numbers}
