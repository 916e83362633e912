"""The NAS-Bench-1Shot1 search through its door, as a user runs it:
cd sdarts/optimizers/darts && python train_search.py --search_space N --perturb_alpha pgd_linf."""
from __future__ import annotations

import json
import os

import pytest
import torch

from tests.conftest import ROOT, kill_inside_checkpoint_write, run_door_here, search_runs

pytestmark = pytest.mark.slow  # runs the doors (subprocesses or their main)

DOOR_DIR = os.path.join(ROOT, "sdarts", "optimizers", "darts")
# a tenth of the digits to train on, in batches of 64: 2 steps an epoch (and the Hessian of
# the epoch's last alpha batch, row by row, on 64 images)
TINY = ["--dataset", "digits", "--layers", "3", "--init_channels", "4", "--batch_size", "64",
        "--train_portion", "0.1", "--gpu", "-1", "--no_progress"]


def run_door(args, tmp_path):
    """The door in this process (conftest.run_door_here); the kill-and-resume test runs it as
    processes."""
    return run_door_here(DOOR_DIR, "train_search.py", [*args, "--experiments", tmp_path])


def only_run(root):
    runs = search_runs(root)
    assert len(runs) == 1, runs
    return runs[0]


def adv_search_args(space: str) -> list[str]:
    return [*TINY, "--search_space", space, "--perturb_alpha", "pgd_linf", "--epochs", "2",
            "--save", "e2e"]


@pytest.fixture(scope="module")
def space_2_run(tmp_path_factory) -> str:
    """Space 2's search, run once: checked end to end and the reference of the killed one."""
    root = tmp_path_factory.mktemp("space2") / "exp"
    out = run_door(adv_search_args("2"), root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "NAS-Bench-101 columns skipped: no --nasbench_file given" in out.stdout
    return only_run(root)


@pytest.mark.parametrize("space", ["1", "2", "3"])
def test_sdarts_adv_search_on_each_space_end_to_end(tmp_path, space, request):
    """Space 1 is also given a benchmark file (``bench_lookups``); the others say they skip it.
    Space 2 draws its figures; 1 and 3 run with ``--no_plots`` (the same figures, seconds
    each)."""
    bench = ["--nasbench_file", space_1_benchmark(tmp_path)] if space == "1" else []
    if space == "2":
        run = request.getfixturevalue("space_2_run")
    else:
        out = run_door([*adv_search_args(space), *bench, "--no_plots"], tmp_path / "exp")
        assert out.returncode == 0, out.stderr[-3000:]
        if not bench:
            assert "NAS-Bench-101 columns skipped: no --nasbench_file given" in out.stdout
        run = only_run(tmp_path / "exp")
    if bench:
        bench_lookups(run, bench[1])
    assert os.path.dirname(run).endswith(os.path.join("darts", f"search_space_{space}"))
    assert f"-2-{space}-digits-alpha-pgd_linf-0.3-" in os.path.basename(run)
    history = json.load(open(os.path.join(run, "history.json")))
    assert [h["epoch"] for h in history] == [0, 1]
    for h in history:
        assert h["hessian_eigenvalue"] > 0
        assert ("nasbench101" in h) == bool(bench)
    from nasbench_analysis.one_shot import arch_to_spec
    from shared.nb1shot1_arch import NB1Shot1Arch
    for epoch in (0, 1):
        record = json.load(open(os.path.join(run, f"one_shot_architecture_{epoch}.json")))
        arch = NB1Shot1Arch.from_dict(record["arch"])
        assert arch.space == space and record["epoch"] == epoch
        assert arch_to_spec(arch).hash() == record["nb101"]["hash"]
        assert len(record["alphas"]) == len(record["names"]) == 2 + {"1": 2, "2": 3, "3": 4}[space]
    lines = open(os.path.join(run, "epochs.jsonl")).read().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    log = open(os.path.join(run, "log.txt")).read()
    for line in ("epoch 1 epsilon_alpha", "eigenvalue", "softmax(alphas_mixed_op)",
                 "softmax(alphas_output)", "final genotype"):
        assert line in log, line
    assert json.load(open(os.path.join(run, "config.json")))["search_space"] == space
    for png in ("alpha_trajectories.png", "accuracy.png", "genotype_cell.png"):
        if space != "2":
            assert not os.path.exists(os.path.join(run, png))
            continue
        with open(os.path.join(run, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(run, "runs")))


def test_kill_and_resume_gives_the_same_alpha(tmp_path, space_2_run):
    cut_dir = tmp_path / "cut"
    run = kill_inside_checkpoint_write(DOOR_DIR, [*adv_search_args("2"), "--no_plots"], cut_dir,
                                       nth=2)  # holds epoch 0
    out = run_door(["--resume", run, "--gpu", "-1", "--no_progress"], cut_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not any(".tmp" in name for name in os.listdir(run))  # the cut write's is gone
    ref = torch.load(os.path.join(space_2_run, "checkpoint.pth.tar"), weights_only=True)
    got = torch.load(os.path.join(run, "checkpoint.pth.tar"), weights_only=True)
    assert got["epoch"] == ref["epoch"] == 2
    assert all(torch.equal(got["state_dict"][k], v) for k, v in ref["state_dict"].items())
    for key in ("hessian_eigenvalue", "genotype", "nb101_hash"):
        assert [h[key] for h in got["history"]] == [h[key] for h in ref["history"]]
    lines = open(os.path.join(run, "epochs.jsonl")).read().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]


def space_1_benchmark(tmp_path) -> str:
    """A tfrecord (a toy fixture in the real format) holding the cells a space-1 search visits,
    among 20 others: the search run once without it (the benchmark is only read, never acted
    on: the run given it looks each of its epochs' cells up there, ``bench_lookups``).
    Writing every cell of space 1 (2,685) took ~15 s."""
    from tests.nb101_fixture import random_valid_specs, run_specs, write_toy_benchmark

    out = run_door([*adv_search_args("1"), "--no_plots"], tmp_path / "plain")
    assert out.returncode == 0, out.stderr[-3000:]
    visited = run_specs([only_run(tmp_path / "plain")])
    assert visited
    tfrecord = str(tmp_path / "nasbench_only108.tfrecord")
    write_toy_benchmark(tfrecord, visited + random_valid_specs(20, seed=4))
    return tfrecord


def bench_lookups(run: str, tfrecord: str) -> None:
    """Each epoch's architecture was looked up in the benchmark file, its mean errors in the
    log, the history and the JSON lines."""
    from nasbench_analysis.nb101_benchmark import NB101Benchmark
    from nasbench_analysis.one_shot import arch_to_spec
    from shared.nb1shot1_arch import NB1Shot1Arch

    history = json.load(open(os.path.join(run, "history.json")))
    bench = NB101Benchmark.open(tfrecord, progress=False)
    for h in history:
        record = json.load(open(os.path.join(run, f"one_shot_architecture_{h['epoch']}.json")))
        expected = bench.query_mean(arch_to_spec(NB1Shot1Arch.from_dict(record["arch"])))
        assert h["nasbench101"]["test_error"] == pytest.approx(expected["test_error"])
        assert h["nasbench101"]["valid_error"] == pytest.approx(expected["valid_error"])
    assert "TEST ERROR:" in open(os.path.join(run, "log.txt")).read()


@pytest.mark.parametrize("args, message", [
    (["--search_space", "4"], "invalid choice: '4'"),
    (["--output_weights", "False"], "--output_weights False is not supported"),
    (["--nasbench_file", "/nonexistent/nasbench_only108.tfrecord", "--dataset", "digits"],
     "nasbench_only108.tfrecord"),
])
def test_bad_input_is_one_clear_message(tmp_path, args, message):
    out = run_door(args, tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
