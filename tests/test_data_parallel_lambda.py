"""Λ-DARTS' doors under ``torchrun``: a data-parallel search (each rank a shard of every global
batch, the regulariser's gradients averaged: ``shared.search.alignment``), one run folder
written by rank 0, on the DARTS space and on NAS-Bench-201 (AutoDL's pairing drawn on the
device). That N ranks move alpha and the weights as one process does is
tests/test_data_parallel_search.py's float64 comparison; here the doors run it."""
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, assert_lambda_run, door_env, run_door_here, search_runs

DOOR_DIR = os.path.join(ROOT, "lambda_darts", "sota", "cnn")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2"]


@pytest.mark.slow
def test_torchrun_runs_the_lambda_darts_search_data_parallel(tmp_path) -> None:
    # 'debug' in --save: one step per epoch; 2 epochs, as the λ ramp needs
    cmd = [*TORCHRUN, "train_search.py", "--dataset", "digits", "--gpu", "-1", "--layers", "5",
           "--init_channels", "4", "--batch_size", "32", "--epochs", "2", "--save", "debug",
           "--corr_regularization", "corr", "--no_progress", "--experiments", str(tmp_path)]
    out = subprocess.run(cmd, cwd=DOOR_DIR, env=dict(door_env(), OMP_NUM_THREADS="1"),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = search_runs(tmp_path)
    log = assert_lambda_run(run, ("epoch 0 lambda_ 0.000000e+00", "epoch 1 lambda_ 1.250000e-01",
                                  "final genotype"), [0.0, 0.125])
    assert "data-parallel search: 2 processes, batch 32 = 16 per process" in log
    # rank 0 speaks for the run (the door's own lines; the log's go to stdout too)
    lines = out.stdout.splitlines()
    for door_line in ("experiment folder: ", "genotype = "):
        assert sum(ln.startswith(door_line) for ln in lines) == 1, door_line


NB201_DOOR = os.path.join(ROOT, "lambda_darts", "NAS-Bench201")
NB201 = [os.path.join("exps", "algos", "DARTS-V1.py"), "--dataset", "digits", "--gpu", "-1",
         "--channel", "2", "--num_cells", "1", "--batch_size", "512", "--workers", "0",
         "--epochs", "2", "--corr_regularization", "--rand_seed", "1", "--no_progress",
         "--no_plots"]


@pytest.mark.slow
def test_torchrun_runs_the_lambda_darts_nb201_search_data_parallel(tmp_path) -> None:
    """Two ranks against one process holding the data on the device: epoch 0's training
    numbers (accuracy, Λ's train_corr) agree to float32 rounding. An epoch is one step (batch
    512 of the 898 training images): its numbers are read before α's first step. α itself is
    not compared, nor a later step: Adam's first steps move each α by about ±lr whatever its
    gradient's size, so an α whose gradient is ~0 moves by the sign of the rounding (measured:
    1e-4 apart after 2 steps, with or without the regulariser; with batch 256, 3 steps an
    epoch, epoch 0's train_corr -0.0787 against -0.0818 with ATen's scalar kernels,
    ATEN_CPU_CAPABILITY=default); tests/test_data_parallel_search.py compares α in float64,
    and on this NB201 supernet in float64 the ranks and one process agree to ~1e-16."""
    env = dict(door_env(), OMP_NUM_THREADS="1")
    two = subprocess.run([*TORCHRUN, *NB201, "--save_dir", str(tmp_path / "two")],
                         cwd=NB201_DOOR, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_door_here(NB201_DOOR, NB201[0], [*NB201[1:], "--data_on_device", "--save_dir",
                                               str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    assert os.listdir(tmp_path / "two") == ["seed-1"]
    run = str(tmp_path / "two" / "seed-1")
    log = assert_lambda_run(run, ("[000-002] grad correlation", "final genotype"), [0.0, 0.125],
                            plots=False)
    assert "data-parallel search: 2 processes, batch 512 = 256 per process" in log
    assert sum(ln.startswith("genotype = ") for ln in two.stdout.splitlines()) == 1
    first = [torch.load(os.path.join(str(tmp_path / d), "seed-1", "checkpoint.pth.tar"),
                        weights_only=True)["history"] for d in ("one", "two")]
    assert first[0][0]["train_acc"] == first[1][0]["train_acc"]
    assert first[0][0]["train_corr"] == pytest.approx(first[1][0]["train_corr"], abs=1e-5)


def test_a_drawn_seed_is_refused_under_torchrun(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    seed = NB201.index("--rand_seed")
    args = NB201[1:seed] + NB201[seed + 2:]
    out = run_door_here(NB201_DOOR, NB201[0], [*args, "--save_dir", str(tmp_path / "runs")])
    assert out.returncode != 0 and "needs --rand_seed" in out.stderr
    assert not (tmp_path / "runs").exists()
