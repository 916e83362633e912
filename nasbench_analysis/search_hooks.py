"""What an NB-1Shot1 search records after every epoch (SmoothDARTS
``optimizers/darts/train_search.py``): the discretised one-shot architecture, and its
NAS-Bench-101 numbers when the benchmark is given.

* ``one_shot_architecture_{e}.json``: the raw alphas, the discrete cell and its NB-101 matrix,
  ops and hash. The original pickled the alphas at the *start* of epoch e and queried them after
  training epoch e, so its curve lags one epoch; here file and numbers for epoch e are both
  those of the alphas *after* epoch e. JSON instead of pickle: loading needs no trust.
* the NB-101 look-up (mean over the 3 repeats, which nasbench-1shot1's ``NasbenchWrapper`` in
  ``nasbench_analysis/utils.py`` returns), logged as the original's
  ``TEST ERROR: ... | VALID ERROR: ... | RUNTIME: ... | PARAMS: ...`` line and stored in the
  epoch's history entry under ``nasbench101`` (TensorBoard: ``nasbench101/*``).
* ``epochs.jsonl``: one JSON line per finished epoch, rewritten from the history each time so a
  resumed run never repeats or loses a line.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from nasbench_analysis.one_shot import arch_to_spec
from shared.checkpoint import finite_json, write_json

Hook = Callable[[Any], None]  # an epoch-end hook of shared.search.loop: hook(EpochContext)


def hash_hook(ctx) -> None:
    """Epoch-end hook: the epoch's NB-101 cell hash into its history entry."""
    ctx.entry["nb101_hash"] = arch_to_spec(ctx.result.genotype).hash()


def architecture_hook(run_dir: str) -> Hook:
    """Publish hook (after the epoch's checkpoint): ``one_shot_architecture_{e}.json``."""
    def hook(ctx) -> None:
        loop, result = ctx.loop, ctx.result
        arch = result.genotype
        spec = arch_to_spec(arch)
        record = {
            "epoch": result.epoch, "search_space": arch.space,
            "names": list(loop.model.cell_types),
            "alphas": [a.detach().cpu().tolist() for a in loop.model.arch_parameters()],
            "arch": arch.to_dict(),
            "nb101": {"matrix": [list(r) for r in spec.matrix], "ops": list(spec.ops),
                      "hash": spec.hash()},
        }
        write_json(os.path.join(run_dir, f"one_shot_architecture_{result.epoch}.json"),
                   record)
    return hook


def benchmark_hook(benchmark, epochs: int = 108) -> Hook:
    """Query ``benchmark`` (an opened ``NB101Benchmark``) for the epoch's architecture."""
    from nasbench_analysis.nb101_benchmark import NotInBenchmark

    def hook(ctx) -> None:
        loop = ctx.loop
        spec = arch_to_spec(ctx.result.genotype)
        try:
            q = benchmark.query_mean(spec, epochs=epochs)
        except NotInBenchmark:
            loop.logger.info("NB-101: cell %s is not in the benchmark file", spec.hash())
            return
        numbers = {k: float(q[k]) for k in ("test_error", "valid_error", "training_time",
                                            "trainable_parameters")}
        loop.logger.info("TEST ERROR: %.3f | VALID ERROR: %.3f | RUNTIME: %f | PARAMS: %d",
                         numbers["test_error"], numbers["valid_error"],
                         numbers["training_time"], numbers["trainable_parameters"])
        ctx.entry["nasbench101"] = numbers
    return hook


def jsonl_hook(run_dir: str) -> Hook:
    keys = ("epoch", "lr", "train_acc", "train_loss", "valid_acc", "valid_loss",
            "hessian_eigenvalue", "nb101_hash", "nasbench101", "genotype")

    def hook(ctx) -> None:
        path = os.path.join(run_dir, "epochs.jsonl")
        try:
            with open(path + ".tmp", "w") as f:
                for entry in ctx.loop.history:
                    line = finite_json({k: entry[k] for k in keys if k in entry})
                    f.write(json.dumps(line, allow_nan=False) + "\n")  # nan/inf: null
            os.replace(path + ".tmp", path)
        except BaseException:
            if os.path.exists(path + ".tmp"):
                os.remove(path + ".tmp")
            raise
    return hook
