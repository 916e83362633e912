"""SDARTS CNN search through its door, as a user runs it:
cd sdarts/sota/cnn && python train_search.py."""
import json
import os
import subprocess
import sys
import urllib.request

import pytest
import torch

from tests.conftest import (
    ROOT,
    door_env,
    kill_inside_checkpoint_write,
    run_door_here,
    search_runs,
)

pytestmark = pytest.mark.slow  # runs the doors (subprocesses or their main)

DOOR_DIR = os.path.join(ROOT, "sdarts", "sota", "cnn")
TINY = ["--dataset", "digits", "--layers", "3", "--init_channels", "4", "--batch_size", "256",
        "--gpu", "-1", "--no_progress"]


def run_door(args, tmp_path):
    """The door in this process (conftest.run_door_here); the kill-and-resume test below runs
    it as processes."""
    return run_door_here(DOOR_DIR, "train_search.py", [*args, "--experiments", tmp_path])


def only_run(tmp_path):
    runs = search_runs(tmp_path)
    assert len(runs) == 1, runs
    return runs[0]


def test_sdarts_adv_search_on_digits_end_to_end(tmp_path):
    # a tenth of the digits to train on, in batches of 64: 2 steps an epoch
    out = run_door([*TINY, "--search_space", "s5", "--perturb_alpha", "pgd_linf", "--epochs", "2",
                    "--save", "e2e", "--batch_size", "64", "--train_portion", "0.1"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = only_run(tmp_path)
    name = os.path.basename(run)
    assert name.startswith("search-e2e-") and "-s5-2-alpha-pgd_linf-0.3-" in name
    log = open(os.path.join(run, "log.txt")).read()
    for line in ("epoch 0 lr", "epoch 1 epsilon_alpha", "genotype = Genotype(", "train_acc",
                 "valid_acc", "softmax(alphas_normal)", "final genotype"):
        assert line in log, line
    assert "genotype = Genotype(normal=" in out.stdout
    genotype = json.load(open(os.path.join(run, "genotype.json")))["genotype"]
    assert len(genotype["normal"]) == 8 and genotype["normal_concat"] == [2, 3, 4, 5]
    history = json.load(open(os.path.join(run, "history.json")))
    assert [h["epoch"] for h in history] == [0, 1]
    for png in ("alpha_trajectories.png", "accuracy.png", "genotype_normal.png",
                "genotype_reduce.png"):
        with open(os.path.join(run, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(run, "runs")))
    ckpt = torch.load(os.path.join(run, "checkpoint.pth.tar"), weights_only=True)
    assert ckpt["epoch"] == 2 and "alphas_normal" in ckpt["state_dict"]


def test_kill_and_resume_gives_the_same_alpha_and_genotype(tmp_path):
    """Killed inside its second checkpoint write, then resumed on a full disk (a file-size
    limit below the checkpoint's size), then resumed: the run never stopped, bit for bit."""
    args = [*TINY, "--search_space", "s3", "--perturb_alpha", "random", "--epochs", "2",
            "--save", "resume", "--batch_size", "64", "--train_portion", "0.1", "--no_plots"]
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    assert run_door(args, ref_dir).returncode == 0
    run = kill_inside_checkpoint_write(DOOR_DIR, args, cut_dir, nth=2)
    assert any(".tmp." in name for name in os.listdir(run))
    assert len(json.load(open(os.path.join(run, "history.json")))) == 1
    resume = ["--resume", run, "--gpu", "-1", "--no_progress", "--experiments", str(cut_dir)]
    full = subprocess.run(["bash", "-c", 'ulimit -f 128 && exec "$@"', "bash", sys.executable,
                           "train_search.py", *resume], cwd=DOOR_DIR, env=door_env(),
                          capture_output=True, text=True, timeout=600)
    assert full.returncode == 2, full.stderr[-2000:]
    line = full.stderr.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("error: cannot write ") and \
        "checkpoint.pth.tar" in line[0] and "--resume" in line[0], full.stderr
    assert not any(".tmp" in name for name in os.listdir(run)), os.listdir(run)
    assert len(json.load(open(os.path.join(run, "history.json")))) == 1  # epoch 1 unpublished
    assert torch.load(os.path.join(run, "checkpoint.pth.tar"), weights_only=True)["epoch"] == 1
    out = run_door(resume[:-2], cut_dir)  # in this process: no interpreter to start
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in open(os.path.join(run, "log.txt")).read()
    assert not any(".tmp" in name for name in os.listdir(run))
    assert len(json.load(open(os.path.join(run, "history.json")))) == 2
    ref = torch.load(os.path.join(only_run(ref_dir), "checkpoint.pth.tar"), weights_only=True)
    got = torch.load(os.path.join(run, "checkpoint.pth.tar"), weights_only=True)
    assert got["epoch"] == ref["epoch"] == 2
    for key in ("alphas_normal", "alphas_reduce"):
        assert torch.equal(got["state_dict"][key], ref["state_dict"][key])
    assert all(torch.equal(got["state_dict"][k], v) for k, v in ref["state_dict"].items())
    assert got["history"][-1]["genotype"] == ref["history"][-1]["genotype"]


def test_resume_refuses_a_changed_setting(tmp_path):
    out = run_door([*TINY, "--search_space", "s2", "--epochs", "1", "--save", "x"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    run = only_run(tmp_path)
    out = run_door(["--resume", run, "--learning_rate", "0.1", "--gpu", "-1"], tmp_path)
    assert out.returncode == 2
    assert "--learning_rate 0.1" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--search_space", "s9"], "invalid choice: 's9'"),
    (["--perturb_alpha", "gauss"], "invalid choice: 'gauss'"),
    (["--train_portion", "1.5", "--dataset", "digits"], "--train_portion must be in (0, 1)"),
    (["--resume", "/nonexistent/run"], "does not exist"),
])
def test_bad_input_is_one_clear_message(tmp_path, args, message):
    out = run_door(args, tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_corrupt_checkpoint_is_one_clear_message(tmp_path):
    run = tmp_path / "sota" / "digits" / "search-exp-x-s5-2"
    run.mkdir(parents=True)
    (run / "checkpoint.pth.tar").write_bytes(b"this is not a checkpoint")
    out = run_door(["--resume", str(run)], tmp_path)
    assert out.returncode == 2
    assert "corrupt" in out.stderr and "Traceback" not in out.stderr


def test_missing_cifar10_explains_where_to_get_it(tmp_path, monkeypatch, capsys):
    """The flagship command without CIFAR-10: one message naming the folder and the source."""
    def offline(*a, **k):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    sys.path.insert(0, DOOR_DIR)
    try:
        import importlib

        door = importlib.import_module("train_search")
        with pytest.raises(SystemExit) as exc:
            door.main(["--perturb_alpha=pgd_linf", "--data", str(tmp_path / "data"), "--gpu",
                       "-1", "--experiments", str(tmp_path / "exp")])
    finally:
        sys.path.remove(DOOR_DIR)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "data") in err and "cifar-10" in err.lower()
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in err


def test_a_grouped_search_killed_and_resumed_is_the_one_that_never_stopped(tmp_path):
    """``--grouped_edges``: the wide kernels (each group's weights in shared buffers, laid out
    again when the resumed run builds its supernet and loads the checkpoint into it)."""
    # 'debug' in --save: one step an epoch (the original's debug runs)
    args = [*TINY, "--search_space", "s5", "--epochs", "2", "--save", "debug-grouped",
            "--batch_size", "128", "--grouped_edges", "--no_plots"]
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    assert run_door(args, ref_dir).returncode == 0
    run = kill_inside_checkpoint_write(DOOR_DIR, args, cut_dir, nth=2)
    assert len(json.load(open(os.path.join(run, "history.json")))) == 1
    out = run_door(["--resume", run, "--gpu", "-1", "--no_progress"], cut_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    log = open(os.path.join(run, "log.txt")).read()
    assert "resumed from" in log and "'grouped_edges': True" in log
    ref = torch.load(os.path.join(only_run(ref_dir), "checkpoint.pth.tar"), weights_only=True)
    got = torch.load(os.path.join(run, "checkpoint.pth.tar"), weights_only=True)
    assert got["epoch"] == ref["epoch"] == 2
    assert all(torch.equal(got["state_dict"][k], v) for k, v in ref["state_dict"].items())
