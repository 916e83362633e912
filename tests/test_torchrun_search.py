"""Searches under torchrun. SDARTS' DARTS-space door runs data-parallel (each rank a shard of
every global batch: ``shared.search.data_parallel``) and moves alpha as one process with the
whole batch, StacNAS' stages too (the other methods: tests/test_torchrun_methods.py); doors
that would run one whole job per process (the test doors) refuse, on every rank (before either,
``torchrun --nproc_per_node 2 train_search.py`` ran two independent searches into two
folders)."""
import os
import signal
import subprocess
import sys

import pytest
import torch

from shared.errors import UserError
from shared.search.cnn_search import CNNSearchConfig, build_cnn_search
from tests.conftest import (
    ROOT,
    door_env,
    run_door_here,
    search_runs,
    wait_for_checkpoint_epoch,
    wait_for_run,
)

SDARTS = os.path.join(ROOT, "sdarts", "sota", "cnn")
TINY = ["--dataset", "digits", "--gpu", "-1", "--layers", "3", "--init_channels", "4",
        "--batch_size", "64", "--epochs", "2", "--no_progress", "--no_plots"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2"]


def _env() -> dict:
    return dict(door_env(), OMP_NUM_THREADS="1")


def test_build_refuses_more_than_one_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="data-parallel search is not implemented yet"):
        build_cnn_search(CNNSearchConfig(dataset="digits", gpu=-1), str(tmp_path), None)


@pytest.mark.slow
@pytest.mark.parametrize("rank", ["0", "1"])
def test_the_test_doors_refuse_more_than_one_process_on_every_rank(tmp_path, monkeypatch,
                                                                    rank) -> None:
    """Each process of ``torchrun ... test.py`` would test the whole model: every rank stops,
    before it reads anything (as torchrun starts it: WORLD_SIZE and its RANK set)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    for door, args in ((os.path.join(ROOT, "sdarts", "sota", "rnn"), ["--data", "embedded"]),
                       (SDARTS, ["--dataset", "digits"])):
        out = run_door_here(door, "test.py", [*args, "--model_path", str(tmp_path / "none")])
        assert out.returncode != 0
        assert "data-parallel test is not implemented yet" in out.stderr, out.stderr


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its ranks in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.mark.slow
def test_two_ranks_search_as_one_process_and_resume_as_one(tmp_path) -> None:
    """``torchrun --nproc_per_node 2`` (gloo): one run folder, and after its first epoch the
    alpha of a one-process search of the same global batch (float32: rounding, grown over the
    epoch); killed then and resumed as ONE process (the same global batches), it finishes.
    (Float32 rounding differences grow, as between any two summation orders; the float64
    comparison of tests/test_data_parallel_search.py holds them to 1e-12.)"""
    root = tmp_path / "dp"
    proc = subprocess.Popen([*TORCHRUN, "train_search.py", *TINY, "--experiments", str(root)],
                            cwd=SDARTS, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        run = wait_for_run(root, proc)
        wait_for_checkpoint_epoch(os.path.join(run, "checkpoint.pth.tar"), 1, proc)
        for pid in [proc.pid, *_descendants(proc.pid)]:  # torchrun and both ranks, at once
            os.kill(pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert len(search_runs(root)) == 1
    log = open(os.path.join(run, "log.txt")).read()
    assert "data-parallel search: 2 processes, batch 64 = 32 per process" in log
    first_epoch = _history(run)[0]

    # the one-process runs in this process (conftest.run_door_here): no interpreter to start;
    # its first epoch only (its learning rate is the 2-epoch schedule's first)
    one = run_door_here(SDARTS, "train_search.py", [*TINY, "--epochs", "1", "--data_on_device",
                                                    "--experiments", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    (single,) = search_runs(tmp_path / "one")
    reference = _history(single)
    # float32: the ranks' shard sums round otherwise than one process's whole-batch sums, and
    # the alpha optimiser (Adam) steps by a gradient's sign first, so over an epoch the
    # difference grows past rounding: measured 4% of alpha's distance from uniform on an
    # AVX-512 CPU (bitwise 0 with AVX2 kernels), against 50% when the ranks leave alpha's
    # gradients unaveraged; 2 of 704 training predictions flipped (the float64 equality:
    # tests/test_data_parallel_search.py)
    alphas, ref = torch.tensor(first_epoch["alphas"]), torch.tensor(reference[0]["alphas"])
    assert (alphas - ref).norm() <= 0.15 * (ref - 1 / ref.shape[-1]).norm()
    for acc in ("train_acc", "valid_acc"):
        assert first_epoch[acc] == pytest.approx(reference[0][acc], abs=1.0)

    resumed = run_door_here(SDARTS, "train_search.py", ["--resume", run, "--gpu", "-1",
                                                        "--no_progress"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed with 1 process(es), saved with 2" in open(os.path.join(run, "log.txt")).read()
    assert len(_history(run)) == 2 and os.path.isfile(os.path.join(run, "genotype.json"))


def _history(run: str) -> list[dict]:
    return torch.load(os.path.join(run, "checkpoint.pth.tar"), weights_only=True)["history"]
