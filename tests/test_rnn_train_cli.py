"""Training and testing a recurrent cell through the doors, as a user runs them:
cd sdarts/sota/rnn && python train.py --arch ... && python test.py --model_path ...
(on the embedded corpus)."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from tests.conftest import ROOT, kill_search_after_epoch, run_door_here, search_runs

pytestmark = pytest.mark.slow  # runs the doors (subprocesses or their main)

DOOR_DIR = os.path.join(ROOT, "sdarts", "sota", "rnn")
TINY = ["--data", "embedded", "--emsize", "8", "--nhid", "8", "--nhidlast", "8",
        "--batch_size", "64", "--bptt", "20", "--gpu", "-1", "--no_progress"]


def run(script, args, root=None):
    """The door in this process (conftest.run_door_here); the killed run is a process."""
    extra = ["--experiments", str(root)] if root is not None else []
    return run_door_here(DOOR_DIR, script, [*args, *extra])


def only_run(root):
    runs = search_runs(root, prefix="eval-")
    assert len(runs) == 1, runs
    return runs[0]


def test_train_then_test_a_searched_cell(tmp_path):
    """The README flow: a genotype.json from a search -> train.py -> test.py (and what
    test.py refuses)."""
    genotype = {"genotype": {"recurrent": [["tanh", 0], ["relu", 1], ["sigmoid", 1],
                                           ["identity", 2], ["tanh", 0], ["relu", 3],
                                           ["identity", 5], ["sigmoid", 4]],
                             "concat": list(range(1, 9))}}
    folder = tmp_path / "search-debug-x-3"
    folder.mkdir()
    (folder / "genotype.json").write_text(json.dumps(genotype))
    out = run("train.py", [*TINY, "--arch", str(folder / "genotype.json"), "--epochs", "2"],
              tmp_path / "exp")
    assert out.returncode == 0, out.stderr[-3000:]
    eval_dir = only_run(tmp_path / "exp")
    assert os.path.basename(eval_dir).startswith("eval-EXP-search-debug-x-3-1267-")
    assert os.path.dirname(eval_dir).endswith(os.path.join("sota", "penn"))
    history = json.load(open(os.path.join(eval_dir, "history.json")))
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["valid_ppl"] < history[0]["valid_ppl"] < 2000  # it learns
    result = json.load(open(os.path.join(eval_dir, "result.json")))
    assert result["best_epoch"] == 2 and result["rollbacks"] == []
    assert 1 < result["test_ppl"] < 2000
    log = open(os.path.join(eval_dir, "log.txt")).read()
    for line in ("| end of epoch   1 |", "Saving Normal!", "| End of training | test loss",
                 "Model total parameters:"):
        assert line in log, line
    for png in ("perplexity.png", "genotype_recurrent.png"):
        with open(os.path.join(eval_dir, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any(f.startswith("events.out.tfevents")
               for f in os.listdir(os.path.join(eval_dir, "runs")))
    best = torch.load(os.path.join(eval_dir, "model.pt"), weights_only=True)
    assert best["genotype"] == genotype["genotype"]

    # test.py by the run's name under the experiments root, and on model.pt
    for model_path, root in ((os.path.basename(eval_dir), tmp_path / "exp"),
                             (os.path.join(eval_dir, "model.pt"), None)):
        test = run("test.py", ["--data", "embedded", "--model_path", model_path, "--gpu", "-1"],
                   root)
        assert test.returncode == 0, test.stderr[-3000:]
        assert f"| End of training | test loss {result['test_loss']:5.2f} | test ppl " \
               f"{result['test_ppl']:8.2f}" in test.stdout

    # test.py refuses another corpus, the --resume checkpoint and sizes that disagree
    other = tmp_path / "other"
    other.mkdir()
    for split in ("train", "valid", "test"):
        (other / f"{split}.txt").write_text("the cat sat on the mat\n" * 20)
    for model_path, data, message in [
            (eval_dir, str(other), "its vocabulary is not the one"),
            (os.path.join(eval_dir, "checkpoint.pth.tar"), "embedded", "--resume checkpoint"),
            (eval_dir, "embedded --emsize 850", "holds a model with emsize 8")]:
        test = run("test.py", ["--model_path", model_path, "--data", *data.split(), "--gpu",
                               "-1"])
        assert test.returncode == 2, test.stderr
        assert message in test.stderr and "Traceback" not in test.stderr

def test_kill_and_resume_is_the_run_never_stopped(tmp_path):
    """Killed after the epoch in which SGD switched to ASGD (lr 40, nonmono 0 make the switch
    come early: epoch 2 with CPython 3.11's embedded corpus, 4 with 3.12's, whose text
    differs): the resumed run ends with the same weights, averages and numbers."""
    epochs = 5
    args = [*TINY, "--arch", "DARTS_V2", "--epochs", str(epochs), "--lr", "40", "--nonmono", "0"]
    ref_root, cut_root = tmp_path / "ref", tmp_path / "cut"
    assert run("train.py", args, ref_root).returncode == 0
    ref = torch.load(os.path.join(only_run(ref_root), "checkpoint.pth.tar"), weights_only=True)
    switched = [h["switched_to_asgd"] for h in ref["history"]]
    assert sum(switched) == 1 and not switched[-1], switched  # ASGD runs after the kill
    switch = 1 + switched.index(True)
    assert [h["optimizer"] for h in ref["history"]] == (["sgd"] * switch
                                                        + ["asgd"] * (epochs - switch))
    cut = kill_search_after_epoch(DOOR_DIR, args, cut_root, epoch=switch, script="train.py",
                                  prefix="eval-")
    out = run("train.py", ["--resume", cut, "--gpu", "-1", "--no_progress"], cut_root)
    assert out.returncode == 0, out.stderr[-3000:]
    got = torch.load(os.path.join(cut, "checkpoint.pth.tar"), weights_only=True)
    assert got["epoch"] == ref["epoch"] == epochs
    assert got["optimizer_kind"] == "asgd"
    assert all(torch.equal(got["state_dict"][k], v) for k, v in ref["state_dict"].items())
    for key in ("train_loss", "valid_loss", "best", "averaged"):
        assert [h[key] for h in got["history"]] == [h[key] for h in ref["history"]], key
    ref_ax = [s["ax"] for s in ref["optimizer"]["state"].values()]
    got_ax = [s["ax"] for s in got["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(ref_ax, got_ax))
    ref_result = json.load(open(os.path.join(only_run(ref_root), "result.json")))
    got_result = json.load(open(os.path.join(cut, "result.json")))
    assert got_result["test_ppl"] == ref_result["test_ppl"]
    assert "resumed from" in open(os.path.join(cut, "log.txt")).read()


def load_door(name):
    spec = importlib.util.spec_from_file_location(f"rnn_door_{name}",
                                                  os.path.join(DOOR_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_nan_injected_into_training_is_recovered_from(tmp_path, monkeypatch, capsys):
    """Weights poisoned in the middle of epoch 2 -> the NaN loss rolls back to model.pt of
    epoch 1 and the run finishes, saying so (the door's main, in this process)."""
    from shared import rnn_evaluation as RE

    real, count = RE.regularised_loss, [0]

    def poisoned(model, *a, **kw):
        count[0] += 1
        if count[0] == 50:  # epoch 1 has ~37 windows of ~20 rows
            with torch.no_grad():
                model.rnns[0]._Ws[3][0, 0] = float("inf")
        return real(model, *a, **kw)

    monkeypatch.setattr(RE, "regularised_loss", poisoned)
    train = load_door("train")
    train.main([*TINY, "--arch", "DARTS_V2", "--epochs", "3", "--experiments",
                str(tmp_path)])
    eval_dir = only_run(tmp_path)
    log = open(os.path.join(eval_dir, "log.txt")).read()
    assert "non-finite training loss at epoch 2" in log
    assert "rolling back to the best model (epoch 1" in log
    result = json.load(open(os.path.join(eval_dir, "result.json")))
    assert [r["to_epoch"] for r in result["rollbacks"]] == [1]
    assert result["epochs"] == 3 and torch.isfinite(torch.tensor(result["test_ppl"]))
    history = json.load(open(os.path.join(eval_dir, "history.json")))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert "test ppl" in capsys.readouterr().out


@pytest.mark.parametrize("script, args, message", [
    ("train.py", ["--data", "embedded", "--continue_train"], "use --resume"),
    ("train.py", ["--data", "embedded", "--single_gpu"], "not supported"),
    ("train.py", ["--data", "embedded", "--arch", "NOPE"], "neither a published RNN genotype"),
    ("train.py", ["--data", "embedded", "--small_batch_size", "48"], "must divide"),
    ("train.py", ["--data", "embedded", "--emsize", "300"], "--emsize = --nhid = --nhidlast"),
    ("train.py", [], "penn"),  # the default ../../data/penn/ is not there: where PTB comes from
    ("test.py", ["--model_path", "nowhere"], "no model.pt at nowhere"),
    ("test.py", ["--dropout", "0.3"], "unrecognized arguments: --dropout"),
])
def test_bad_input_is_one_clear_message(tmp_path, script, args, message):
    out = run(script, [*args, "--gpu", "-1"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not search_runs(tmp_path, prefix="eval-")  # no half-made run folder
