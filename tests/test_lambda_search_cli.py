"""Λ-DARTS' CNN search through its door, as a user runs it:
cd lambda_darts/sota/cnn && python train_search.py --corr_regularization corr."""
import importlib.util
import json
import os
import subprocess

import pytest

from tests.conftest import ROOT, assert_lambda_run, door_env, run_door_here, search_runs

pytestmark = pytest.mark.slow  # runs the door

DOOR_DIR = os.path.join(ROOT, "lambda_darts", "sota", "cnn")
TINY = ["--dataset", "digits", "--layers", "5", "--init_channels", "4", "--batch_size", "256",
        "--gpu", "-1", "--no_progress"]


def run_door(args, root):
    """The door in this process (conftest.run_door_here); the killed run is a process."""
    return run_door_here(DOOR_DIR, "train_search.py", [*args, "--experiments", root])


def test_lambda_darts_with_sdarts_rs_on_digits_end_to_end(tmp_path):
    out = run_door([*TINY, "--search_space", "s4", "--corr_regularization", "signcorr",
                    "--lambda_", "0.25", "--epsilon_0", "0.001", "--perturb_alpha", "random",
                    "--epochs", "2"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = search_runs(tmp_path)
    assert "-s4-2-alpha-random-0.3-" in os.path.basename(run)
    assert_lambda_run(run, ("epoch 0 lambda_ 0.000000e+00", "epoch 1 lambda_ 2.500000e-01",
                            "epoch 1 epsilon_alpha", "final genotype"), [0.0, 0.25])
    flags = json.load(open(os.path.join(run, "genotype.json")))
    assert flags["search_space"] == "s4"


@pytest.mark.parametrize("args,message", [
    (["--lambda", "0.5"], "--lambda: the flag is --lambda_"),
    (["--corr_regularization", "corr", "--epochs", "1"], "pass --epochs >= 2"),
    (["--corr_regularization", "corr", "--layers", "3"], "or --lambda_cells all"),
    (["--epsilon_0", "0"], "--epsilon_0 must be > 0"),
    (["--lambda_", "-1"], "--lambda_ must be >= 0"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, args, message, capsys):
    spec = importlib.util.spec_from_file_location("lambda_cnn_train_search",
                                                  os.path.join(DOOR_DIR, "train_search.py"))
    door = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(door)
    with pytest.raises(SystemExit) as exit_:
        door.main([*TINY, *args, "--experiments", str(tmp_path / "exp")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "exp").exists()


def _dry(script, *args):
    env = {**door_env(), "EXP_DRY_RUN": "1"}
    out = subprocess.run(["bash", os.path.join(ROOT, "lambda_darts", script), *args], env=env,
                         capture_output=True, text=True, timeout=60)
    return out, next((ln for ln in out.stdout.splitlines() if ln.startswith("+ ")), "")


def test_the_released_scripts_keep_their_defaults_and_refuse_unknown_names():
    out, cmd = _dry("run_search.sh")
    assert out.returncode == 0, out.stderr
    assert cmd.startswith("+ (cd lambda_darts/sota/cnn && ")
    for part in ("train_search.py --batch_size 96 --dataset svhn --corr_regularization corr "
                 "--lambda_ 0.25 --epsilon_0 0.001 --epochs 50 --arch_learning_rate 0.0003 "
                 "--gpu 0 --seed 0 --search_space s4",):
        assert part in cmd, cmd
    out, cmd = _dry("run_eval_cifar.sh", "--seed", "3", "--resume", "1")
    assert out.returncode == 0, out.stderr
    assert ("train.py --init_channels 16 --layers 8 --dataset svhn --drop_path_prob 0.2 "
            "--auxiliary --cutout --arch svhn_s3_lambdadarts_corr --gpu 0 --seed 3 "
            "--resume") in cmd, cmd
    out, _ = _dry("run_search.sh", "--lambda", "0.5")
    assert out.returncode == 2 and "unknown option --lambda" in out.stderr


def test_a_darts_pt_supernet_takes_the_regulariser_by_configuration(tmp_path):
    """Λ in front of DARTS-PT: the supernet script passes the flags, the door turns the
    engine's regulariser on; its checkpoint is what the projection scripts load."""
    env = {**door_env(), "EXP_DRY_RUN": "1"}
    script = os.path.join(ROOT, "exp_scripts", "darts-sota.sh")
    dry = subprocess.run(["bash", script, "--corr_regularization", "signcorr", "--lambda_",
                          "0.25", "--fresh_noise", "1"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "--corr_regularization signcorr --lambda_ 0.25 --fresh_noise" in dry.stdout
    out = subprocess.run(["bash", script, "--dataset", "digits", "--space", "s2", "--epochs",
                          "2", "--layers", "5", "--init_channels", "4", "--batch_size", "256",
                          "--gpu", "-1", "--fast", "1", "--no_progress", "1", "--no_plots", "1",
                          "--expid_tag",
                          "lambda", "--corr_regularization", "corr", "--ckpt_interval", "1",
                          "--experiments",
                          str(tmp_path)], env=door_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "sota" / "digits" / "search-darts-sota-lambda-s2-2"
    history = json.load(open(run / "history.json"))
    assert [h["lambda"] for h in history] == [0.0, 0.125]
    assert all(-1 <= h["train_corr"] <= 1 for h in history)
    assert (run / "checkpoint_2.pth.tar").is_file()


def test_killed_in_a_checkpoint_write_and_resumed_is_the_run_never_stopped(tmp_path):
    import torch

    from tests.conftest import kill_inside_checkpoint_write

    args = [*TINY, "--search_space", "s4", "--corr_regularization", "corr", "--epochs", "3",
            "--save", "debug-resume", "--no_plots"]  # 'debug': one step per epoch
    assert run_door(args, tmp_path / "ref").returncode == 0
    run = kill_inside_checkpoint_write(DOOR_DIR, args, tmp_path / "cut", nth=2)
    out = run_door(["--resume", run, "--gpu", "-1", "--no_progress"], tmp_path / "cut")
    assert out.returncode == 0, out.stderr[-3000:]
    (ref,) = search_runs(tmp_path / "ref")
    want = torch.load(os.path.join(ref, "checkpoint.pth.tar"), weights_only=True)
    got = torch.load(os.path.join(run, "checkpoint.pth.tar"), weights_only=True)
    assert got["epoch"] == want["epoch"] == 3
    assert all(torch.equal(got["state_dict"][k], v) for k, v in want["state_dict"].items())
    assert [(h["train_corr"], h["valid_corr"]) for h in got["history"]] == \
        [(h["train_corr"], h["valid_corr"]) for h in want["history"]]
