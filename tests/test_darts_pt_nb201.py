"""DARTS-PT on NAS-Bench-201 through its door, as a user runs it: cd darts_pt/nasbench201 &&
python train_search.py --method darts ..., then --method darts-proj --dev proj --resume_epoch N.

The first supernet run is a real subprocess (and one bad-input case); the other runs call the
door's ``main`` in this process (same code path, minus the interpreter start-up), with the
per-epoch plots switched off where a test does not look at them.
"""
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from darts_pt.nasbench201 import train_search as door
from shared.nb201_arch import NB201Arch
from shared.spaces import get_nb201_space
from tests.conftest import ROOT, DoorProcess, door_env, wait_for_checkpoint_epoch

pytestmark = pytest.mark.slow  # runs the doors (subprocesses or their main)

DOOR_DIR = os.path.join(ROOT, "darts_pt", "nasbench201")
TINY = ["--dataset", "digits", "--init_channels", "4", "--batch_size", "64", "--gpu", "-1",
        "--no_progress", "--epochs", "2"]
SUPERNET = [*TINY, "--fast", "--method", "darts", "--ckpt_interval", "1", "--save", "darts-201"]
EXPID = "search-darts-201-2-digits"
PROJ = [*TINY, "--fast", "--method", "darts-proj", "--dev", "proj", "--resume_epoch", "2",
        "--resume_expid", EXPID, "--proj_intv", "2", "--save", "darts-proj-201"]
PROJ_NAME = "log_resume-2_dev-proj_seed-2_intv-2"
TUNE_EPOCHS = 10  # proj_intv * (6 edges - 1)


def run_main(args, experiments):
    """The door's main in this process; returns its exit status (0 when it returns)."""
    try:
        door.main([*args, "--experiments", str(experiments)])
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    exp = tmp_path_factory.mktemp("nb201")
    out = subprocess.run([sys.executable, "train_search.py", *SUPERNET, "--experiments",
                          str(exp)], cwd=DOOR_DIR, env=door_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "genotype = |" in out.stdout
    return exp


@pytest.fixture(scope="module")
def projected(supernet):
    assert run_main(PROJ, supernet) == 0
    return supernet


def run_dir(exp):
    return os.path.join(str(exp), "nasbench201", EXPID)


def load(path):
    return torch.load(path, weights_only=True)


def test_supernet_folder_checkpoints_and_outputs(supernet):
    run = run_dir(supernet)
    for f in ("log.txt", "checkpoint.pth.tar", "checkpoint_1.pth.tar", "checkpoint_2.pth.tar",
              "genotype.json", "history.json", "alpha_trajectories.png", "accuracy.png",
              "genotype_cell.png"):
        assert os.path.isfile(os.path.join(run, f)), f
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(run, "runs")))
    ckpt = load(os.path.join(run, "checkpoint_1.pth.tar"))
    assert ckpt["epoch"] == 1 and ckpt["state_dict"]["alpha"].shape == (6, 5)
    assert ckpt["config"]["supernet"] == "nb201" and ckpt["config"]["layers"] == 5
    log = open(os.path.join(run, "log.txt")).read()
    for line in ("epoch 0 lr", "genotype = |", "softmax(alphas_cell)", "train_acc", "valid_acc",
                 "final genotype = |"):
        assert line in log, line
    assert "softmax(alphas_normal)" not in log and "NAS-Bench-201 file" not in log  # --fast
    history = json.load(open(os.path.join(run, "history.json")))
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(len(h["alphas"]) == 1 and len(h["alphas"][0]) == 6 for h in history)
    arch = NB201Arch.from_dict(json.load(open(os.path.join(run, "genotype.json"))))
    assert arch == NB201Arch.from_dict(history[-1]["genotype"])


def test_projection_makes_6_op_projections_and_an_nb201_cell(projected):
    run = run_dir(projected)
    log = open(os.path.join(run, PROJ_NAME + ".txt")).read()
    assert log.count("project op") == 6 and "project edge" not in log
    edges = [int(line.split("selected edge: ")[1].split()[0])
             for line in log.splitlines() if "selected edge: " in line]
    assert sorted(edges) == list(range(6))
    assert "projection finished" in log and "param size = " in log
    proj = os.path.join(run, PROJ_NAME)
    arch = NB201Arch.from_dict(json.load(open(os.path.join(proj, "genotype.json"))))
    assert f"genotype = {arch.tostr()}" in log
    # checkpoints before each projection (epochs 0, 2, 4, 6, 8 and the last one, 9), rolling
    events = [0, 2, 4, 6, 8, 9]
    assert all(os.path.isfile(os.path.join(proj, f"checkpoint_{e}.pth.tar")) for e in events)
    final = load(os.path.join(proj, "checkpoint.pth.tar"))
    assert final["epoch"] == TUNE_EPOCHS
    ops = final["extra"]["projection"]["proj_ops"]["cell"]
    assert arch.ops == tuple(get_nb201_space().ops[o] for o in ops)
    for f in ("history.json", "alpha_trajectories.png", "genotype_cell.png"):
        assert os.path.isfile(os.path.join(proj, f)), f


def test_killed_projection_resumes_to_the_same_arch(projected, capsys):
    cut_args = [*PROJ, "--log_tag", "_cut", "--no_plots"]
    cut = os.path.join(run_dir(projected), PROJ_NAME + "_cut")
    proc = DoorProcess(DOOR_DIR, "train_search.py", [*cut_args, "--experiments", str(projected)])
    try:
        wait_for_checkpoint_epoch(os.path.join(cut, "checkpoint.pth.tar"), 3, proc, timeout=300,
                                  poll=0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert load(os.path.join(cut, "checkpoint.pth.tar"))["epoch"] < TUNE_EPOCHS
    assert run_main(cut_args, projected) == 2  # refused: it says how to continue
    assert "--resume" in capsys.readouterr().err
    assert run_main([*cut_args, "--resume"], projected) == 0
    assert "resumed projection from" in open(cut + ".txt").read()
    ref = os.path.join(run_dir(projected), PROJ_NAME)
    assert json.load(open(os.path.join(cut, "genotype.json")))["arch"] == \
        json.load(open(os.path.join(ref, "genotype.json")))["arch"]
    a = load(os.path.join(cut, "checkpoint.pth.tar"))
    b = load(os.path.join(ref, "checkpoint.pth.tar"))
    assert a["extra"] == b["extra"]
    assert all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())


def test_blank_never_moves_alpha(tmp_path):
    import logging

    from shared.search.cnn_search import build_cnn_search

    args = [*TINY, "--fast", "--ckpt_interval", "1", "--save", "blank-201", "--no_plots"]
    assert run_main([*args, "--method", "blank"], tmp_path) == 0
    run = os.path.join(tmp_path, "nasbench201", "search-blank-201-2-digits")
    assert run_main([*args, "--method", "blank-proj", "--dev", "proj", "--resume_epoch", "-1",
                     "--resume_expid", os.path.basename(run), "--proj_intv", "2"], tmp_path) == 0
    # alpha as the door initialises it (same config, same seed), before any training
    parsed = door.build_parser().parse_args([*args, "--method", "blank"])
    initial = build_cnn_search(door.to_config(parsed), str(tmp_path / "init"),
                               logging.getLogger("blank-init")).model.alpha
    proj = os.path.join(run, "log_resume--1_dev-proj_seed-2_intv-2")
    paths = [os.path.join(run, f) for f in ("checkpoint_1.pth.tar", "checkpoint_2.pth.tar")]
    paths += [os.path.join(proj, f) for f in ("checkpoint_0.pth.tar", "checkpoint.pth.tar")]
    for path in paths:
        ckpt = load(path)
        assert ckpt["arch_optimizer"] is None
        assert torch.equal(ckpt["state_dict"]["alpha"], initial.detach()), path
    assert load(paths[-1])["epoch"] == TUNE_EPOCHS
    assert json.load(open(os.path.join(proj, "genotype.json")))["arch"].count("~") == 6


S10 = "nas-bench-201-s10"  # 'none' or 'nor_conv_3x3' per edge: 64 cells, a small benchmark


def _benchmark(path: Path, monkeypatch) -> list[str]:
    """A benchmark file (tests/test_nb201.py's writer, real nas_201_api classes) holding every
    cell of S10; returns the cells' strings in file order."""
    from tests import test_nb201 as nb201

    ops = get_nb201_space(S10).ops
    archs = [NB201Arch(cell).tostr() for cell in itertools.product(ops, repeat=6)]
    monkeypatch.setattr(nb201, "API_ARCHS", archs)
    nb201._write_benchmark(path)
    return archs


def test_benchmark_queries_each_epoch_and_after_projection(tmp_path, monkeypatch):
    from tests import test_nb201 as nb201

    api = tmp_path / "NAS-Bench-201-v1_0-e61699.pth"
    base = [*TINY, "--batch_size", "512", "--search_space", S10, "--ckpt_interval", "1",
            "--save", "bench", "--data_on_device", "--no_plots"]
    # blank (no alpha step) is the cheapest method; what is tested is the query path (not
    # --fast, which skips the benchmark, so every epoch is whole: the data on the device, not
    # augmented one image at a time by DataLoader's transforms, ~7 s here). No file
    # yet at the default --api_path (untyped): the run goes on without benchmark numbers.
    monkeypatch.setattr(door, "DEFAULT_API_PATH", str(api))
    assert run_main([*base, "--method", "blank"], tmp_path) == 0
    run = os.path.join(tmp_path, "nasbench201", "search-bench-2-digits")
    log = open(os.path.join(run, "log.txt")).read()
    assert log.count("benchmark numbers are skipped") == 1 and "drive.google.com" in log
    assert "cifar10 train" not in log
    archs = _benchmark(api, monkeypatch)
    # from epoch 1: the supernet trains its last epoch (queried), then projects (queried)
    assert run_main([*base, "--method", "blank-proj", "--dev", "proj", "--resume_epoch", "1",
                     "--resume_expid", os.path.basename(run), "--proj_intv", "2",
                     "--api_path", str(api)], tmp_path) == 0
    name = "log_resume-1_dev-proj_seed-2_intv-2"
    log = open(os.path.join(run, name + ".txt")).read()
    assert log.count("cifar10 train ") == 2 and log.count("imagenet16 train ") == 2
    history = json.load(open(os.path.join(run, "history.json")))
    entry = history[-1]
    assert entry["epoch"] == 1 and "nasbench201" not in history[0]
    arch = NB201Arch.from_dict(entry["genotype"])
    index = archs.index(arch.tostr())
    got = entry["nasbench201"]
    assert got["cifar10/test"] == pytest.approx(nb201._expected(index, "cifar10", "ori-test"))
    assert got["cifar10-valid/valid"] == pytest.approx(
        nb201._expected(index, "cifar10-valid", "x-valid"))
    assert got["ImageNet16-120/test"] == pytest.approx(
        nb201._expected(index, "ImageNet16-120", "x-test"))
    line = "cifar100 train %f valid %f test %f" % tuple(
        got[f"cifar100/{k}"] for k in ("train", "valid", "test"))
    assert line in log
    final = json.load(open(os.path.join(run, name, "genotype.json")))
    index = archs.index(final["arch"])
    assert final["nasbench201"]["cifar100/valid"] == pytest.approx(
        nb201._expected(index, "cifar100", "x-valid"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for folder in (run, os.path.join(run, name)):
        events = EventAccumulator(os.path.join(folder, "runs")).Reload()
        assert "nasbench201/cifar10/test" in events.Tags()["scalars"], folder


@pytest.mark.slow
def test_a_typed_api_path_must_be_the_file_before_any_folder_is_made(tmp_path, capsys):
    experiments = tmp_path / "experiments"
    missing = tmp_path / "NAS-Bench-201-v1_0-e61699.pth"
    args = [*TINY, "--method", "darts", "--save", "api"]
    assert run_main([*args, "--api_path", str(missing)], experiments) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --api_path ") and err.count("\n") == 1, err
    assert str(missing) in err and "no such file" in err and "drive.google.com" in err
    assert run_main([*args, "--api_path", str(tmp_path)], experiments) == 2  # a folder
    err = capsys.readouterr().err
    assert "is a directory; pass the benchmark file" in err and err.count("\n") == 1, err
    assert not experiments.exists() or os.listdir(experiments) == []


def test_bad_input_through_the_cli_is_one_clear_message(tmp_path):
    out = subprocess.run([sys.executable, "train_search.py", *TINY, "--method", "darts-proj",
                          "--dev", "proj", "--resume_epoch", "2", "--resume_expid", "search-x",
                          "--experiments", str(tmp_path)], cwd=DOOR_DIR, env=door_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no folder" in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--method", "darts", "--dev", "proj", "--resume_epoch", "2", "--resume_expid", EXPID],
     "--method darts-proj"),
    (["--method", "darts-proj", "--dev", "proj", "--resume_epoch", "7", "--resume_expid", EXPID],
     "checkpoint_7.pth.tar"),
    (["--method", "darts-proj", "--dev", "proj", "--resume_epoch", "2", "--resume_expid", EXPID,
      "--proj_intv", "1"], "5 op projections for 6 edges"),
    (["--method", "darts-proj", "--dev", "proj"], "--resume_epoch"),
    (["--method", "darts", "--perturb_alpha", "random"], "sdarts"),
    (["--method", "darts", "--layers", "8"], "unrecognized arguments: --layers"),
    (["--method", "darts", "--dataset", "imagenet16-120", "--cutout"], "drop --cutout"),
    ([], "--method is required"),
])
def test_bad_input_is_one_clear_message(supernet, capsys, args, message):
    assert run_main([*TINY, *args], supernet) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


def test_an_existing_supernet_is_not_overwritten(supernet, capsys):
    assert run_main(SUPERNET, supernet) == 2
    assert "--resume" in capsys.readouterr().err
