"""Λ-DARTS on NAS-Bench-201 in AutoDL's layout: the data it searches on (AutoDL's files and
pairing), its door (``lambda_darts/NAS-Bench201/exps/algos/DARTS-V1.py``) and launcher
(``scripts-search/algos/DARTS-V1.sh``)."""
import hashlib
import json
import os
import subprocess

import pytest
import torch

from shared.errors import UserError
from tests.conftest import ROOT, door_env, kill_inside_checkpoint_write, run_door_here

HOME = os.path.join(ROOT, "lambda_darts", "NAS-Bench201")
SPLIT = os.path.join(HOME, "configs", "nas-benchmark", "cifar-split.txt")
# D-X-Y/AutoDL-Projects configs/nas-benchmark/cifar-split.txt at a84f483 (LF line endings)
SPLIT_SHA256 = "986da6174822048d4c5a25ee8ebdb7e754cd5372b51c633ffd4898ace8db9e32"
TINY = ["--dataset", "digits", "--channel", "2", "--num_cells", "1", "--batch_size", "256",
        "--workers", "0", "--gpu", "-1", "--no_progress", "--no_plots"]


def _write(path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


# -- AutoDL's files and pairing ---------------------------------------------------------------
def test_autodl_config_files_are_read_by_their_declared_types(tmp_path) -> None:
    from shared.data.autodl import read_autodl_config

    got = read_autodl_config(_write(tmp_path / "a.config", {
        "LR": ["float", "0.025"], "epochs": ["int", "100"], "nesterov": ["bool", "0"],
        "scheduler": ["str", "cos"], "train": ["int", ["3", "1"]]}))
    assert got == {"LR": 0.025, "epochs": 100, "nesterov": False, "scheduler": "cos",
                   "train": [3, 1]}
    for bad in ({"LR": 0.025}, {"LR": ["complex", "1"]}, {"epochs": ["int", "x"]}, []):
        with pytest.raises(UserError):
            read_autodl_config(_write(tmp_path / "b.config", bad))
    with pytest.raises(UserError, match="no such file"):
        read_autodl_config(tmp_path / "missing.config")


@pytest.mark.parametrize("train,valid,message", [
    ([0, 1], [1, 2], "overlap"), ([0, 1], [2, 10], "reach 10"), ([], [1], "non-empty"),
])
def test_a_split_file_must_fit_the_data_set(tmp_path, train, valid, message) -> None:
    from shared.data.autodl import load_split

    path = _write(tmp_path / "s.txt", {"train": ["int", [str(i) for i in train]],
                                       "valid": ["int", [str(i) for i in valid]]})
    with pytest.raises(UserError, match=message):
        load_split(path, 10)


def test_the_shipped_split_is_autodls_25k_25k_cifar_split() -> None:
    from shared.data.autodl import load_split

    with open(SPLIT, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    train, valid = load_split(SPLIT, 50000)
    assert len(train) == len(valid) == 25000
    assert sorted(train + valid) == list(range(50000))
    assert train[:5] == [0, 5, 7, 11, 13]
    assert digest == SPLIT_SHA256


def test_every_weight_batch_gets_a_random_valid_batch_of_its_size() -> None:
    from shared.data.autodl import RandomPairs

    valid = [100, 101, 102]
    pairs = RandomPairs(valid, batch_size=4, num_train=10, generator=torch.Generator()
                        .manual_seed(0))
    batches = list(pairs)
    assert [len(b) for b in batches] == [4, 4, 2] and len(pairs) == 3
    assert {i for b in batches for i in b} <= set(valid)
    assert any(len(set(b)) < len(b) for b in batches)  # with replacement, as random.choice
    again = RandomPairs(valid, 4, 10, generator=torch.Generator().manual_seed(0))
    assert list(again) == batches  # the seeded generator decides (checkpointed by the loop)


def test_the_config_must_say_what_the_engine_computes(tmp_path) -> None:
    from lambda_darts.nasbench201.darts_v1 import CONFIG, read_config

    config = read_config(CONFIG)
    assert (config["LR"], config["eta_min"], config["epochs"], config["batch_size"]) == (
        0.025, 0.001, 100, 64)
    raw = json.load(open(CONFIG))
    for key, value in (("nesterov", ["bool", "1"]), ("scheduler", ["str", "step"]),
                       ("warmup", ["int", "5"])):
        with pytest.raises(UserError, match=f"{key} = .* is not supported"):
            read_config(_write(tmp_path / "c.config", {**raw, key: value}))


# -- the door ---------------------------------------------------------------------------------
def run_sh(args, cwd=ROOT, timeout=600):
    return subprocess.run(["bash", os.path.join(HOME, "scripts-search", "algos", "DARTS-V1.sh"),
                           *args], cwd=cwd, env=door_env(), capture_output=True, text=True,
                          timeout=timeout)


def run_door(args, cwd=HOME):
    """The door in this process (conftest.run_door_here); the killed run is a process."""
    return run_door_here(str(cwd), os.path.join(HOME, "exps", "algos", "DARTS-V1.py"), args)


@pytest.mark.slow
def test_the_launcher_searches_digits_weights_first_with_the_regulariser(tmp_path) -> None:
    out = run_sh(["digits", "3", "--epochs", "2", "--channel", "2", "--num_cells", "1",
                  "--batch_size", "256", "--workers", "0", "--gpu", "-1", "--no_progress", "1",
                  "--save_dir", str(tmp_path / "out")])
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "out" / "seed-3"
    log = (run / "log.txt").read_text()
    for line in ("epoch 0 lambda_ 0.000000e+00", "epoch 1 lambda_ 2.500000e-01",
                 "[001-002] grad correlation: train=", "DARTS-V1 : run 2 epochs",
                 "no split file"):
        assert line in log, line
    assert "no NAS-Bench-201 file at ../../data/NAS-Bench-201-v1_0-e61699.pth" in out.stdout
    args = json.loads(log.split("args = ", 1)[1].split("\n", 1)[0].replace("'", '"')
                      .replace("True", "true").replace("False", "false").replace("None",
                                                                                 "null"))
    assert (args["step_order"], args["search_data"], args["dataset"], args["seed"]) == (
        "weights_first", "autodl", "digits", 3)
    assert (args["lambda_"], args["epsilon_0"], args["arch_learning_rate"]) == (
        0.25, 1e-4, 1e-4)
    history = json.load(open(run / "history.json"))
    assert [h["lambda"] for h in history] == [0.0, 0.25]
    assert all(-1 <= h[k] <= 1 for h in history for k in ("train_corr", "valid_corr"))
    final = json.load(open(run / "genotype.json"))
    assert final["arch"] == history[-1]["genotype"]["arch"]
    assert final["best_valid_epoch"] in (0, 1)
    assert (run / "correlation.png").read_bytes()[:4] == b"\x89PNG"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(run / "runs")).Reload().Tags()["scalars"]
    assert {"Corr/train", "Corr/valid"} <= set(tags)
    again = run_sh(["digits", "3", "--epochs", "2", "--save_dir", str(tmp_path / "out")])
    assert again.returncode == 2 and "holds a run of seed 3" in again.stderr


@pytest.mark.slow
def test_a_killed_search_resumes_bit_identically(tmp_path) -> None:
    args = [*TINY, "--corr_regularization", "--lambda_", "0.5", "--epochs", "2",
            "--rand_seed", "1"]
    whole = run_door([*args, "--save_dir", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = kill_inside_checkpoint_write(HOME, args, tmp_path / "killed", nth=2,
                                          script="exps/algos/DARTS-V1.py",
                                          root_flag="--save_dir", prefix="seed-")
    resumed = run_door([*args, "--save_dir", str(tmp_path / "killed"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "whole" / "seed-1" / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(os.path.join(killed, "checkpoint.pth.tar"), weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert [h["train_corr"] for h in a["history"]] == [h["train_corr"] for h in b["history"]]


@pytest.mark.parametrize("args,message", [
    (["--lambda", "0.5"], "--lambda: the flag is --lambda_"),
    (["--max_nodes", "5"], "the NAS-Bench-201 cell has 4 nodes"),
    (["--lambda_", "-1"], "--lambda_ must be >= 0"),
    (["--epsilon_0", "0"], "--epsilon_0 must be > 0"),
    (["--corr_regularization", "--epochs", "1"], "pass --epochs >= 2"),
    (["--arch_nas_dataset", "missing.pth"], "--arch_nas_dataset missing.pth: no such file"),
    (["--dataset", "ImageNet16-120"], "ImageNet16-120-split.txt: no such file"),
    (["--corr_regularization", "dot"], "invalid choice"),
    (["--step_capture", "cuda_graph"], "run it with --step_capture off"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, args,
                                                  message) -> None:
    from lambda_darts.nasbench201.darts_v1 import main
    from shared.errors import cli_entry

    monkeypatch.chdir(HOME)
    with pytest.raises(SystemExit) as exit_:
        cli_entry(main)([*TINY, *args, "--save_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err, err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_recorded_search_equals_the_eager_one(tmp_path, monkeypatch) -> None:
    """The door's search with its step recorded (the CPU's model of a CUDA graph, the
    ``emulate`` backend, in place of ``--step_capture cuda_graph``): weights first, the
    regulariser's passes, AutoDL's pairing on the device; the eager run's weights, alpha and
    train_/valid_corr bit for bit (alpha's Adam the capturable one in both: a recorded step
    makes it so, which is equal to rounding, not bit for bit)."""
    import dataclasses

    from lambda_darts.nasbench201 import darts_v1
    from shared.capture import make_capturable
    from shared.search.loop import SearchLoop

    to_config, post_init = darts_v1.to_config, SearchLoop.__post_init__

    def capturable_adam(self):
        post_init(self)
        make_capturable(self.alpha_update.optimizer)

    monkeypatch.setattr(SearchLoop, "__post_init__", capturable_adam)
    args = [*TINY, "--corr_regularization", "--lambda_", "0.5", "--epochs", "2",
            "--rand_seed", "1", "--data_on_device", "--batch_size", "64"]  # 14 steps an epoch
    runs = {}
    for capture in ("off", "emulate"):
        monkeypatch.setattr(darts_v1, "to_config", lambda *a, capture=capture:
                            dataclasses.replace(to_config(*a), step_capture=capture))
        out = run_door([*args, "--save_dir", str(tmp_path / capture)])
        assert out.returncode == 0, out.stderr[-3000:]
        runs[capture] = torch.load(tmp_path / capture / "seed-1" / "checkpoint.pth.tar",
                                   weights_only=True)
    a, b = runs["off"], runs["emulate"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert [(h["train_corr"], h["valid_corr"], h["genotype"]) for h in a["history"]] == \
        [(h["train_corr"], h["valid_corr"], h["genotype"]) for h in b["history"]]
    log = open(tmp_path / "emulate" / "seed-1" / "log.txt").read()
    assert "step capture = emulate" in log and "step capture: eager" not in log


@pytest.mark.slow
def test_the_benchmark_is_queried_every_epoch(tmp_path, monkeypatch) -> None:
    from tests.test_darts_pt_nb201 import S10, _benchmark

    api = tmp_path / "NAS-Bench-201-v1_0-e61699.pth"
    archs = _benchmark(api, monkeypatch)
    out = run_door([*TINY, "--search_space_name", S10, "--epochs", "2", "--rand_seed", "0",
                    "--arch_nas_dataset", str(api), "--save_dir", str(tmp_path / "out")])
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "out" / "seed-0"
    log = (run / "log.txt").read_text()
    assert log.count("cifar10 train ") == 3  # both epochs and the final cell
    history = json.load(open(run / "history.json"))
    assert all(h["genotype"]["arch"] in archs and "cifar10/test" in h["nasbench201"]
               for h in history)
    assert "cifar100/valid" in json.load(open(run / "genotype.json"))["nasbench201"]


@pytest.mark.slow
def test_the_launchers_refuse_what_they_cannot_run(tmp_path) -> None:
    out = run_sh(["digits"])
    assert out.returncode == 2 and "Need 2 parameters for dataset and seed" in out.stderr
    out = run_sh(["digits", "0", "--lambda", "1"])
    assert out.returncode == 2 and "unknown option --lambda" in out.stderr
    help_ = run_sh(["--help"])
    assert help_.returncode == 0 and "--lambda_" in help_.stdout
    pc = subprocess.run(["bash", os.path.join(HOME, "scripts-search", "algos", "PCDARTS.sh"),
                         "cifar10", "0"], env=door_env(), capture_output=True, text=True)
    assert pc.returncode == 2 and "partial-channel supernet" in pc.stderr
