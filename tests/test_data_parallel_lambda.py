"""Λ-DARTS' DARTS-space door under ``torchrun``: a data-parallel search (each rank a shard of
every global batch, the regulariser's gradients averaged: ``shared.search.alignment``), one run
folder written by rank 0. That N ranks move alpha and the weights as one process does is
tests/test_data_parallel_search.py's float64 comparison; here the door runs it."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, assert_lambda_run, door_env, search_runs

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
