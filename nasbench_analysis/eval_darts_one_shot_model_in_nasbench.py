"""Evaluate NAS-Bench-1Shot1 search runs in NAS-Bench-101: each saved epoch's one-shot
architecture -> its NB-101 cell -> the benchmark's mean errors, regret plots and the Hessian
eigenvalue plot.

    python nasbench_analysis/eval_darts_one_shot_model_in_nasbench.py \\
        --dataset_file nasbench_only108.tfrecord --run_dir runs/ss1_*
    python -m nasbench_analysis.eval_darts_one_shot_model_in_nasbench --run_dir runs/

SmoothDARTS' script of this name has no CLI: it opens a hard-coded tfrecord at import and is
called from the search loop (SmoothDARTS ``optimizers/darts/train_search.py``). Here it is a
door of its own, run after the searches, over their run folders (the search writes
``one_shot_architecture_<epoch>.json``, ``config.json`` and ``history.json``):

* every architecture file's cell is recomputed from its ``arch`` (``arch_to_spec``) and must
  hash to the stored ``nb101.hash``: a mismatch means an edited file or another version of the
  conversion, whose numbers would be silently wrong;
* the cell is looked up in the benchmark (``--dataset_file``; mean over the 3 training repeats
  at ``--epochs``), and the per-epoch numbers plus regrets (error minus the space's best) go to
  ``RUN/nasbench_eval.json``; a cell that is not in the file is reported and skipped;
* ``OUT/anytime_test_regret.png``, ``OUT/anytime_valid_regret.png``: regret versus epoch, runs
  grouped by ``--label`` (seeds: mean and min-max band), one subplot per search space;
* ``OUT/eigenvalues.png``: ``hessian_eigenvalue`` of ``history.json`` versus epoch, the same
  grouping. Without ``--dataset_file`` only this plot is made.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Sequence

# the script form (python nasbench_analysis/eval_...py) has only this folder on sys.path
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nasbench_analysis.nb101_spec import NB101Spec  # noqa: E402
from nasbench_analysis.one_shot import arch_to_spec  # noqa: E402
from nasbench_analysis.plots import plot_anytime_regret, plot_eigenvalues  # noqa: E402
from shared.checkpoint import finite_json  # noqa: E402
from shared.cli.parser import ArgumentParser  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402
from shared.nb1shot1_arch import NB1Shot1Arch  # noqa: E402
from shared.spaces import NB1Shot1Space, get_nb1shot1_space  # noqa: E402

ARCH_FILE = re.compile(r"one_shot_architecture_(\d+)\.json")
EVAL_FILE = "nasbench_eval.json"
PLOTS = {"test": "anytime_test_regret.png", "valid": "anytime_valid_regret.png",
         "eigen": "eigenvalues.png"}
# perturb_alpha -> the method's name in the SmoothDARTS paper
METHODS = {"none": "DARTS", "random": "SDARTS-RS", "pgd_linf": "SDARTS-ADV"}
NB101_BUDGETS = (4, 12, 36, 108)
NUMBERS = ("test_error", "valid_error", "training_time", "trainable_parameters")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="eval_darts_one_shot_model_in_nasbench.py",
                       description="NAS-Bench-101 errors, regret and Hessian eigenvalue plots "
                                   "of NAS-Bench-1Shot1 search runs.")
    p.add_argument("--dataset_file", type=str, default=None,
                   help="NAS-Bench-101 tfrecord (nasbench_only108.tfrecord or "
                        "nasbench_full.tfrecord); without it only eigenvalues.png is made")
    p.add_argument("--run_dir", type=str, nargs="+", required=True,
                   help="run folders of train_search.py, or folders to search for them")
    p.add_argument("--out", type=str, default=None,
                   help="folder for the plots (default: the run folder, or the runs' common "
                        "parent)")
    p.add_argument("--label", choices=("perturb_alpha", "run"), default="perturb_alpha",
                   help="curve grouping: the method (DARTS / SDARTS-RS / SDARTS-ADV, '-2nd' "
                        "when unrolled; seeds averaged) or one curve per run folder")
    p.add_argument("--epochs", type=int, default=108, choices=NB101_BUDGETS,
                   help="NAS-Bench-101 training budget to look up")
    return p


# -- reading run folders ---------------------------------------------------------------------
@dataclass
class Epoch:
    epoch: int
    arch: NB1Shot1Arch
    spec: NB101Spec
    hash: str


@dataclass
class Run:
    path: str
    config: dict[str, Any]
    space: NB1Shot1Space
    epochs: list[Epoch]
    eigenvalues: dict[int, float] = field(default_factory=dict)
    label: str = ""


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def _arch_files(folder: str) -> dict[int, str]:
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    found = {}
    for name in names:
        m = ARCH_FILE.fullmatch(name)
        if m:
            found[int(m.group(1))] = os.path.join(folder, name)
    return dict(sorted(found.items()))


def _is_run(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json")) and bool(_arch_files(folder))


def find_runs(paths: Sequence[str]) -> list[str]:
    """The run folders among ``paths`` and below them (a run: config.json and at least one
    one_shot_architecture_<epoch>.json), each once, in the order given then sorted below."""
    runs: dict[str, str] = {}
    for path in paths:
        if not os.path.isdir(path):
            what = "is a file, not a folder" if os.path.exists(path) else "does not exist"
            raise UserError(f"--run_dir {path} {what}")
        found = [path] if _is_run(path) else sorted(
            root for root, _, _ in os.walk(path) if _is_run(root))
        if not found:
            if os.path.isfile(os.path.join(path, "config.json")):
                raise UserError(f"--run_dir {path} has no one_shot_architecture_<epoch>.json: "
                                "the search has not finished an epoch yet, or it is not an "
                                "NB-1Shot1 search (--search_space 1, 2 or 3)")
            raise UserError(f"--run_dir {path}: no NB-1Shot1 search run in it (a run folder "
                            "holds config.json and one_shot_architecture_<epoch>.json)")
        for run in found:
            runs.setdefault(os.path.realpath(run), run)
    return list(runs.values())


def _history(folder: str) -> list[dict[str, Any]]:
    """history.json, or the search's epochs.jsonl when a run was stopped before writing it;
    [] when neither is there (no eigenvalues then)."""
    path = os.path.join(folder, "history.json")
    if os.path.isfile(path):
        history = _read_json(path)
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise UserError(f"{path} is not a list of per-epoch objects")
        return history
    path = os.path.join(folder, "epochs.jsonl")
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
    return []


def _number(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def _load_epoch(path: str, epoch: int, space: NB1Shot1Space) -> Epoch:
    record = _read_json(path)
    if not isinstance(record, dict) or "arch" not in record or "nb101" not in record:
        raise UserError(f"{path} is not a one-shot architecture file (needs 'arch' and "
                        "'nb101')")
    try:
        arch = NB1Shot1Arch.from_dict(record["arch"])
    except (KeyError, TypeError, ValueError, AttributeError, UserError) as exc:
        raise UserError(f"{path}: 'arch' is not a valid NB-1Shot1 architecture ({exc})") from None
    if arch.space != space.name:
        raise UserError(f"{path}: architecture of search space {arch.space}, but the run's "
                        f"config.json says search space {space.name}")
    if "epoch" in record and record["epoch"] != epoch:
        raise UserError(f"{path} holds epoch {record['epoch']!r}, not {epoch}")
    spec = arch_to_spec(arch)
    computed = spec.hash()
    stored = record["nb101"].get("hash") if isinstance(record["nb101"], dict) else None
    if stored != computed:
        # the regret of a wrong cell would look as plausible as the right one's
        raise UserError(f"{path}: the stored NB-101 hash {stored!r} does not match the cell of "
                        f"its 'arch' ({computed}); the file was edited or written by another "
                        "version of the arch -> NB-101 conversion")
    return Epoch(epoch, arch, spec, computed)


def load_run(path: str) -> Run:
    config = _read_json(os.path.join(path, "config.json"))
    if not isinstance(config, dict):
        raise UserError(f"{os.path.join(path, 'config.json')} is not a JSON object")
    if "search_space" not in config:
        raise UserError(f"{os.path.join(path, 'config.json')} has no 'search_space': not an "
                        "NB-1Shot1 search run")
    try:
        space = get_nb1shot1_space(str(config["search_space"]))
    except UserError as exc:
        raise UserError(f"{os.path.join(path, 'config.json')}: {exc}") from None
    epochs = [_load_epoch(file, e, space) for e, file in _arch_files(path).items()]
    eigen = {}
    for i, h in enumerate(_history(path)):
        value = _number(h.get("hessian_eigenvalue"))
        if value is not None:
            eigen[int(h.get("epoch", i))] = value
    return Run(path, config, space, epochs, eigen)


def _method_label(config: dict[str, Any]) -> str:
    perturb = str(config.get("perturb_alpha", "none"))
    return METHODS.get(perturb, perturb) + ("-2nd" if config.get("unrolled") else "")


def assign_labels(runs: Sequence[Run], mode: str, parent: str) -> None:
    for run in runs:
        if mode == "perturb_alpha":
            run.label = _method_label(run.config)
        else:  # a path, so two runs named alike in different folders stay apart
            rel = os.path.relpath(run.path, parent)
            run.label = os.path.basename(os.path.abspath(run.path)) if rel == "." else rel


# -- benchmark look-ups ---------------------------------------------------------------------
def evaluate(run: Run, bench: Any, budget: int) -> list[dict[str, Any]]:
    """Per epoch: the cell's hash and mean NB-101 numbers (None when not in the benchmark),
    regrets against the space's best, and the epoch's Hessian eigenvalue."""
    from nasbench_analysis.nb101_benchmark import NotInBenchmark

    rows = []
    for ep in run.epochs:
        row: dict[str, Any] = {"epoch": ep.epoch, "hash": ep.hash}
        try:
            q = bench.query_mean(ep.spec, epochs=budget)
        except NotInBenchmark:
            row.update({k: None for k in NUMBERS}, in_benchmark=False,
                       test_regret=None, valid_regret=None)
        except ValueError as exc:  # a budget the file does not hold
            raise UserError(f"--epochs {budget}: {exc}") from None
        else:
            row.update({k: float(q[k]) for k in NUMBERS}, in_benchmark=True)
            row["trainable_parameters"] = int(q["trainable_parameters"])
            row["test_regret"] = row["test_error"] - run.space.test_min_error
            row["valid_regret"] = row["valid_error"] - run.space.valid_min_error
        row["hessian_eigenvalue"] = run.eigenvalues.get(ep.epoch)
        rows.append(row)
    return rows


def write_json_atomic(path: str, obj: Any) -> None:
    """A reader (or a killed writer) never leaves a half-written file behind; non-finite
    numbers are written as null, so the file is always valid JSON."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                               prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(finite_json(obj), f, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- output ----------------------------------------------------------------------------------
def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_table(run: Run, rows: list[dict[str, Any]] | None) -> None:
    print(f"\n{run.path}  ({run.label}, search space {run.space.name}, "
          f"{len(run.epochs)} epoch(s))")
    if rows is None:  # no benchmark: the cells and the eigenvalues only
        print(f"{'epoch':>5}  {'cell (NB-101 hash)':<32}  {'eigenvalue':>10}")
        for ep in run.epochs:
            print(f"{ep.epoch:>5}  {ep.hash:<32}  "
                  f"{_fmt(run.eigenvalues.get(ep.epoch), '10.4f'):>10}")
        return
    print(f"{'epoch':>5}  {'cell':<8}  {'test error':>10}  {'test regret':>11}  "
          f"{'eigenvalue':>10}")
    for r in rows:
        eigen = _fmt(r["hessian_eigenvalue"], "10.4f")
        if r["in_benchmark"]:
            numbers = f"{r['test_error']:>10.4f}  {r['test_regret']:>11.4f}"
        else:
            numbers = f"{'not in benchmark':>23}"
        print(f"{r['epoch']:>5}  {r['hash'][:8]:<8}  {numbers}  {eigen:>10}")


def _try_plot(what: str, plot: Any, *args: Any) -> str | None:
    """Make one figure; when no run has its numbers, say so and go on."""
    try:
        path = plot(*args)
    except ValueError as exc:
        print(f"{what} not made: {exc}")
        return None
    print(f"wrote {path}")
    return path


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args: argparse.Namespace = build_parser().parse_args(argv)
    paths = find_runs(args.run_dir)
    runs = [load_run(p) for p in paths]
    parent = (os.path.abspath(paths[0]) if len(paths) == 1
              else os.path.commonpath([os.path.abspath(p) for p in paths]))
    assign_labels(runs, args.label, parent)
    out = args.out or parent
    os.makedirs(out, exist_ok=True)

    bench = None
    if args.dataset_file:
        from nasbench_analysis.nb101_benchmark import NB101Benchmark
        bench = NB101Benchmark.open(args.dataset_file, progress=True)
        if args.epochs not in bench.epochs_available:
            raise UserError(f"--epochs {args.epochs}: {args.dataset_file} holds the budgets "
                            f"{', '.join(map(str, bench.epochs_available))}")
    else:
        print("no --dataset_file: the cells are not looked up in NAS-Bench-101; only "
              "eigenvalues.png is made")

    results: list[list[dict[str, Any]]] = []
    for run in runs:
        rows = evaluate(run, bench, args.epochs) if bench is not None else None
        if rows is not None:
            write_json_atomic(os.path.join(run.path, EVAL_FILE), rows)
            results.append(rows)
        print_table(run, rows)
    print()

    written = []
    if bench is not None:
        for which in ("test", "valid"):
            regret_runs = [(run.label, run.space, [r["epoch"] for r in rows],
                            [r[f"{which}_error"] for r in rows])
                           for run, rows in zip(runs, results)]
            written.append(_try_plot(f"{PLOTS[which]}", plot_anytime_regret, regret_runs,
                                     os.path.join(out, PLOTS[which]), which))
    eigen_runs = [(run.label, run.space, list(run.eigenvalues), list(run.eigenvalues.values()))
                  for run in runs]
    written.append(_try_plot(PLOTS["eigen"], plot_eigenvalues, eigen_runs,
                             os.path.join(out, PLOTS["eigen"])))
    if bench is not None:
        total = sum(len(rows) for rows in results)
        missing = sum(not r["in_benchmark"] for rows in results for r in rows)
        print(f"{total - missing} of {total} architecture(s) found in {args.dataset_file}"
              + (f"; {missing} not in the benchmark file" if missing else ""))
    elif not any(written):
        raise UserError("nothing to show: no --dataset_file, and no run's history.json has "
                        "a hessian_eigenvalue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
