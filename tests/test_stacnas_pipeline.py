"""StacNAS end to end through its doors (stacnas/run_all.py, augment.py, test.py) on digits:
stage 1 -> feature analysis -> stage 2 -> augment -> test; a kill inside stage 2 and
``--resume``; augment and test on their own."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import door_env, kill_inside_checkpoint_write, run_door_here

STACNAS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stacnas")
TINY = ["--dataset", "digits", "--gpu", "-1", "--num_workers", "0", "--num_cells_search1", "3",
        "--num_cells_search2", "3", "--num_cells_augment", "3", "--init_channels_search", "4",
        "--init_channels_augment", "4", "--batch_size_search", "256",
        "--batch_size_augment", "256", "--epochs_search", "2", "--epochs_augment", "1",
        "--aux_weight", "0", "--cutout_length", "0", "--no_progress", "--no_plots"]

pytestmark = pytest.mark.slow


def run_all(*args):
    return subprocess.run([sys.executable, "run_all.py", *TINY, *args], cwd=STACNAS,
                          env=door_env(), capture_output=True, text=True, timeout=600)


def read(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_all")
    out = run_all("--save_dir", str(root), "--test", "--feature", "--total_samples", "64")
    assert out.returncode == 0, out.stderr[-3000:]
    return root, out.stdout


def test_run_all_runs_every_stage_with_the_released_seeds(pipeline) -> None:
    root, stdout = pipeline
    stages = [line.split(":")[0][3:] for line in stdout.splitlines() if line.startswith("== ")]
    assert stages == ["search1", "feature", "search2", "augment", "test"]
    assert "--seed 1 " in stdout.split("== search2")[1].split("\n")[0]
    assert "--seed 3 " in stdout.split("== augment")[1].split("\n")[0]
    assert (root / "search1" / "features" / "clusters.json").is_file()
    genotype = read(root / "search2" / "genotype_best.json")["genotype"]
    assert read(root / "augment" / "genotype.json")["genotype"] == genotype
    assert (root / "augment" / "weights.pt").is_file()
    assert "test_acc" in stdout.split("== test")[1]


def test_run_all_resumes_stage_2_where_a_kill_stopped_it(pipeline, tmp_path) -> None:
    root, _ = pipeline
    other = tmp_path / "r"
    # stage 1 saves 2 checkpoints; the 4th torch.save is stage 2's second: killed inside it
    folder = kill_inside_checkpoint_write(STACNAS, [*TINY], other, nth=4, script="run_all.py",
                                          root_flag="--save_dir", prefix="search2")
    state = torch.load(os.path.join(folder, "checkpoint.pth.tar"), weights_only=True)
    assert state["epoch"] == 1
    again = run_all("--save_dir", str(other))
    assert again.returncode == 2 and "exists: continue with --resume" in again.stderr
    resumed = run_all("--save_dir", str(other), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "== search1: done, skipped" in resumed.stdout
    assert "--stage search2" in resumed.stdout and "--resume" in resumed.stdout
    for name in ("alphas.json", "alphas_best.json", "genotype_best.json"):
        assert read(other / "search2" / name) == read(root / "search2" / name), name
    assert (other / "augment" / "weights.pt").is_file()
    done = run_all("--save_dir", str(other), "--resume")
    assert done.returncode == 0
    assert [line for line in done.stdout.splitlines() if line.startswith("== ")] == [
        f"== {stage}: done, skipped" for stage in ("search1", "search2", "augment")]


def test_augment_keeps_the_best_held_out_epoch_and_test_reads_it(pipeline, tmp_path) -> None:
    root, _ = pipeline
    genotype = str(root / "search2" / "genotype_best.json")
    common = ["--name", "a", "--dataset", "digits", "--save_dir", str(tmp_path), "--gpu", "-1",
              "--num_workers", "0", "--alpha_share", "--no_progress"]
    out = subprocess.run(
        [sys.executable, "augment.py", *common, "--genotype", genotype, "--num_cells", "3",
         "--init_channels", "4", "--batch_size", "256", "--epochs", "2", "--cutout_length",
         "4", "--label_smooth", "0.1", "--train_ratio", "0.8", "--power_lr"],
        cwd=STACNAS, env=door_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    history = read(tmp_path / "augment" / "history.json")
    best = max(range(2), key=lambda e: (history[e]["holdout_acc"], -e))
    assert history[-1]["best_epoch"] == best
    # test.py in this process (conftest.run_door_here; run_all's "== test" stage runs it too)
    test = run_door_here(STACNAS, "test.py", [*common, "--load_model_dir",
                                              str(tmp_path / "augment" / "best_weights.pt")])
    assert test.returncode == 0, test.stderr[-3000:]
    assert f"test_acc {history[best]['valid_acc']:f}" in test.stdout


@pytest.mark.parametrize("door, argv, message", [
    ("augment.py", [], "no stage-2 result"),
    ("augment.py", ["--keep_zero"], "--keep_zero: keeping the search"),
    ("test.py", [], "no weights"),
    ("augment.py", ["--select_on_test", "--train_ratio", "0.5", "--genotype", "StacNAS_cifar10"],
     "select_on_test"),
    ("run_all.py", ["--epochs_search", "0"], "--epochs_search must be >= 1"),
])
def test_bad_input_is_one_line(tmp_path, door, argv, message) -> None:
    base = [] if door == "run_all.py" else ["--name", "x", "--alpha_share"]
    # in this process (conftest.run_door_here): refused before any work, the interpreter's
    # start would be the whole cost
    out = run_door_here(STACNAS, door, [*base, "--save_dir", str(tmp_path / "x"), *argv])
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, \
        out.stderr
    assert not (tmp_path / "x").exists()
