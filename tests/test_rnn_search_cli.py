"""The recurrent-cell search through its door, as a user runs it:
cd sdarts/sota/rnn && python train_search.py --perturb_alpha pgd_linf (on the embedded corpus)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from tests.conftest import ROOT, kill_inside_checkpoint_write, run_door_here, search_runs

pytestmark = pytest.mark.slow  # runs the doors (subprocesses or their main)

DOOR_DIR = os.path.join(ROOT, "sdarts", "sota", "rnn")
# 'debug' in --save: one training window per epoch, as the original's debug runs
TINY = ["--data", "embedded", "--emsize", "8", "--nhid", "8", "--nhidlast", "8",
        "--batch_size", "32", "--bptt", "10", "--gpu", "-1", "--no_progress"]


def run_door(args, root):
    """The door in this process (conftest.run_door_here); the killed run is a process."""
    return run_door_here(DOOR_DIR, "train_search.py", [*args, "--experiments", root])


def only_run(root):
    runs = search_runs(root)
    assert len(runs) == 1, runs
    return runs[0]


def test_sdarts_adv_rnn_search_on_the_embedded_corpus(tmp_path):
    out = run_door([*TINY, "--perturb_alpha", "pgd_linf", "--epochs", "2", "--save",
                    "debug-e2e"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = only_run(tmp_path)
    assert os.path.dirname(run).endswith(os.path.join("sota", "penn"))
    assert "-3-alpha-pgd_linf-0.3-" in os.path.basename(run)
    history = json.load(open(os.path.join(run, "history.json")))
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(h["valid_ppl"] > 1 and h["train_ppl"] > 1 for h in history)
    genotype = json.load(open(os.path.join(run, "genotype.json")))
    assert len(genotype["recurrent"]) == 8 and genotype["concat"] == list(range(1, 9))
    from shared.rnn_genotype import load_rnn_genotype  # train.py --arch reads this file
    assert load_rnn_genotype(os.path.join(run, "genotype.json")).steps == 8
    log = open(os.path.join(run, "log.txt")).read()
    for line in ("epoch 1 epsilon_alpha", "genotype = Genotype(recurrent=", "train_ppl",
                 "valid_ppl", "softmax(alphas_recurrent)", "final genotype"):
        assert line in log, line
    for png in ("alpha_trajectories.png", "perplexity.png", "genotype_recurrent.png"):
        with open(os.path.join(run, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(run, "runs")))
    assert "genotype = Genotype(recurrent=" in out.stdout


def test_kill_and_resume_gives_the_same_alpha(tmp_path):
    args = [*TINY, "--perturb_alpha", "random", "--epochs", "3", "--save", "debug-resume",
            "--no_plots"]
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    assert run_door(args, ref_dir).returncode == 0
    run = kill_inside_checkpoint_write(DOOR_DIR, args, cut_dir, nth=2)  # holds epoch 0
    out = run_door(["--resume", run, "--gpu", "-1", "--no_progress"], cut_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not any(".tmp" in name for name in os.listdir(run))  # the cut write's is gone
    ref = torch.load(os.path.join(only_run(ref_dir), "checkpoint.pth.tar"), weights_only=True)
    got = torch.load(os.path.join(run, "checkpoint.pth.tar"), weights_only=True)
    assert got["epoch"] == ref["epoch"] == 3
    assert all(torch.equal(got["state_dict"][k], v) for k, v in ref["state_dict"].items())
    assert [h["valid_ppl"] for h in got["history"]] == [h["valid_ppl"] for h in ref["history"]]


@pytest.mark.parametrize("args, message", [
    (["--small_batch_size", "16", "--data", "embedded"], "--small_batch_size must equal"),
    (["--continue_train", "--data", "embedded"], "use --resume"),
    (["--perturb_alpha", "gauss"], "invalid choice: 'gauss'"),
    ([], "penn"),  # the default ../../data/penn/ is not there: where PTB comes from
])
def test_bad_input_is_one_clear_message(tmp_path, args, message):
    out = run_door(args, tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
