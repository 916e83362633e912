"""DARTS-PT on the DARTS-style spaces through its door, as a user runs it: cd darts_pt/sota/cnn
&& python train_search.py --method darts ... then --method darts-proj --dev proj."""
import json
import os
import shutil
import signal

import pytest
import torch

from tests.conftest import ROOT, DoorProcess, run_door_here, wait_for_checkpoint_epoch

pytestmark = pytest.mark.slow  # runs the doors (subprocesses or their main)

DOOR_DIR = os.path.join(ROOT, "darts_pt", "sota", "cnn")
TINY = ["--dataset", "digits", "--layers", "3", "--init_channels", "4", "--batch_size", "64",
        "--gpu", "-1", "--no_progress", "--fast", "--search_space", "s2"]
SUPERNET = [*TINY, "--method", "darts", "--epochs", "2", "--ckpt_interval", "1",
            "--save", "darts-sota"]
EXPID = "search-darts-sota-s2-2"
PROJ = [*TINY, "--method", "darts-proj", "--dev", "proj", "--resume_epoch", "2",
        "--resume_expid", EXPID, "--proj_intv", "1", "--save", "darts-proj-sota", "--no_plots"]
# No --epochs: the projection takes the supernet's 2 from its checkpoint (not the default 50).
PROJ_NAME = "log_resume-2_dev-proj_intv-1_ED-random_PCN-acc_PCR-acc_seed-2"


def door(args, experiments):
    """The door in this process (conftest.run_door_here); the killed projection runs as a
    process."""
    return run_door_here(DOOR_DIR, "train_search.py", [*args, "--experiments", experiments])


@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    exp = tmp_path_factory.mktemp("pt")
    out = door(SUPERNET, exp)
    assert out.returncode == 0, out.stderr[-3000:]
    return exp


@pytest.fixture(scope="module")
def projected(supernet):
    out = door(PROJ, supernet)
    assert out.returncode == 0, out.stderr[-3000:]
    return supernet, out


def run_dir(exp):
    return os.path.join(str(exp), "sota", "digits", EXPID)


def test_supernet_folder_checkpoints_and_outputs(supernet):
    run = run_dir(supernet)
    for f in ("log.txt", "checkpoint.pth.tar", "checkpoint_1.pth.tar", "checkpoint_2.pth.tar",
              "genotype.json", "history.json", "alpha_trajectories.png"):
        assert os.path.isfile(os.path.join(run, f)), f
    assert torch.load(os.path.join(run, "checkpoint_1.pth.tar"), weights_only=True)["epoch"] == 1


def test_projection_makes_14_op_and_3_edge_decisions_per_cell(projected):
    exp, out = projected
    run = run_dir(exp)
    log = open(os.path.join(run, PROJ_NAME + ".txt")).read()
    assert log.count("project op") == 14 and log.count("project edge") == 3
    assert "epoch 2 lr" not in log.split("loaded supernet checkpoint")[1].split("epoch 0 lr")[0]
    assert log.count("selected edge:") == 28 and log.count("selected node:") == 6
    assert "projection finished" in log and "param size = " in log
    proj = os.path.join(run, PROJ_NAME)
    genotype = json.load(open(os.path.join(proj, "genotype.json")))["genotype"]
    for cell in ("normal", "reduce"):
        inputs = [j for _, j in genotype[cell]]
        assert len(inputs) == 8  # two inputs per node ...
        for node in range(4):
            a, b = inputs[2 * node: 2 * node + 2]
            assert a != b and max(a, b) < node + 2  # ... distinct, from earlier states
    assert all(os.path.isfile(os.path.join(proj, f"checkpoint_{e}.pth.tar")) for e in range(17))
    assert "genotype = Genotype(normal=" in out.stdout


def test_killed_projection_resumes_to_the_same_genotype(projected, tmp_path):
    exp, _ = projected
    ref = os.path.join(run_dir(exp), PROJ_NAME)
    # a second experiments root with the same supernet, projected again and killed midway
    cut_exp = tmp_path / "cut"
    shutil.copytree(run_dir(exp), run_dir(cut_exp),
                    ignore=shutil.ignore_patterns("log_resume-*"))
    proc = DoorProcess(DOOR_DIR, "train_search.py", [*PROJ, "--experiments", str(cut_exp)])
    cut = os.path.join(run_dir(cut_exp), PROJ_NAME)
    try:
        wait_for_checkpoint_epoch(os.path.join(cut, "checkpoint.pth.tar"), 4, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    refused = door(PROJ, cut_exp)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    out = door([*PROJ, "--resume"], cut_exp)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed projection from" in open(os.path.join(run_dir(cut_exp),
                                                          PROJ_NAME + ".txt")).read()
    assert json.load(open(os.path.join(cut, "genotype.json"))) == \
        json.load(open(os.path.join(ref, "genotype.json")))
    a = torch.load(os.path.join(cut, "checkpoint.pth.tar"), weights_only=True)
    b = torch.load(os.path.join(ref, "checkpoint.pth.tar"), weights_only=True)
    assert a["extra"] == b["extra"]
    assert all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())


def test_dev_resume_restarts_from_a_projection_checkpoint(projected):
    exp, _ = projected
    out = door([*PROJ, "--dev_resume_epoch", "14", "--dev_resume_log", PROJ_NAME], exp)
    assert out.returncode == 0, out.stderr[-3000:]
    new = os.path.join(run_dir(exp), PROJ_NAME.replace("_dev-proj", "_dev-resume-14_dev-proj"))
    assert json.load(open(os.path.join(new, "genotype.json"))) == \
        json.load(open(os.path.join(run_dir(exp), PROJ_NAME, "genotype.json")))


@pytest.mark.parametrize("args, message", [
    (["--method", "darts", "--dev", "proj", "--resume_epoch", "2", "--resume_expid", EXPID],
     "--method darts-proj"),
    (["--method", "darts-proj", "--dev", "proj", "--resume_epoch", "2", "--resume_expid",
      "search-nothing"], "no folder"),
    (["--method", "darts-proj", "--dev", "proj", "--resume_epoch", "7", "--resume_expid", EXPID],
     "checkpoint_7.pth.tar"),
    (["--method", "darts-proj", "--dev", "proj"], "--resume_epoch"),
    (["--method", "darts-proj", "--dev", "proj", "--resume_epoch", "2", "--resume_expid", EXPID,
      "--layers", "5"], "--layers 5 differs from the supernet"),
    (["--perturb_alpha", "random", "--method", "darts"], "sdarts"),
    ([], "--method is required"),
])
def test_bad_input_is_one_clear_message(supernet, args, message):
    out = door([*TINY, *args], supernet)
    assert out.returncode == 2, out.stderr[-2000:]
    assert message in out.stderr and "Traceback" not in out.stderr


def test_an_existing_supernet_is_not_overwritten(supernet):
    out = door(SUPERNET, supernet)
    assert out.returncode == 2 and "--resume" in out.stderr
