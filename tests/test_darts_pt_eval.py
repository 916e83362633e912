"""Tests for DARTS-PT's evaluation door ``darts_pt/sota/cnn/train.py`` and the shell wrappers
``exp_scripts/eval.sh``, ``eval-c100.sh``, ``eval-svhn.sh`` (with ``exp_scripts/_args.sh``).
CPU only, no network: 8x8 digits, tiny networks, 1-2 epochs, one thread per process.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from darts_pt.sota.cnn import train as door
from shared.errors import UserError
from shared.evaluation.config import CHECKPOINT, WEIGHTS
from shared.genotypes import published
from tests.conftest import DoorProcess, run_door_here

pytestmark = pytest.mark.slow  # runs the doors (subprocesses or their main)

REPO = Path(__file__).resolve().parents[1]
DOOR = REPO / "darts_pt" / "sota" / "cnn"
SCRIPTS = REPO / "exp_scripts"
TINY = ["--dataset", "digits", "--layers", "3", "--init_channels", "8", "--batch_size", "128",
        "--no_progress", "--gpu", "-1", "--num_workers", "0"]
E2E = TINY + ["--auxiliary", "--cutout", "--cutout_length", "4", "--arch", "darts_pt_s5_0",
              "--epochs", "2"]
RUN_NAME = "exp-darts_pt_s5_0-0-cutout-4-1.0-auxiliary-0.4"
# The scripts' small-run names, as a test (or a CPU user) passes them.
SMALL = ["--dataset", "digits", "--epochs", "1", "--layers", "3", "--init_channels", "8",
         "--batch_size", "64", "--gpu", "-1", "--num_workers", "0", "--no_progress", "1",
         "--cutout_length", "4", "--fast", "1"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHON=sys.executable, **extra)
    for key in ("WORLD_SIZE", "EXP_DRY_RUN"):
        if key not in extra:
            env.pop(key, None)
    return env


def _door(*args: str) -> subprocess.CompletedProcess:
    """The door in this process (conftest.run_door_here); killed runs are processes."""
    return run_door_here(str(DOOR), "train.py", list(args))


def _bash(script: str, *args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", script, *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=240)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different[:5]


def _copy_run(run: Path, root: Path, at_epoch_1: bool) -> Path:
    """A copy of ``run`` under ``root``'s eval folder; ``at_epoch_1``: as if killed after
    epoch 1 (rolling checkpoint = checkpoint_1, later outputs gone)."""
    copy = root / "sota" / "digits" / "eval" / run.name
    shutil.copytree(run, copy)
    if at_epoch_1:
        shutil.copy(copy / "checkpoint_1.pth.tar", copy / CHECKPOINT)
        for name in (WEIGHTS, "checkpoint_2.pth.tar"):
            (copy / name).unlink()
    return copy


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """One uninterrupted 2-epoch run with a numbered checkpoint after every epoch."""
    root = tmp_path_factory.mktemp("full")
    proc = _door(*E2E, "--ckpt_interval", "1", "--experiments", str(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = root / "sota" / "digits" / "eval" / RUN_NAME
    assert run.is_dir(), os.listdir(root / "sota" / "digits" / "eval")
    return run


# -- end to end -----------------------------------------------------------------------------------
def test_folder_log_and_checkpoints(full: Path) -> None:
    log = (full / "log.txt").read_text()
    assert "epoch 0 lr 2.500000e-02" in log and "epoch 1 lr 1.250000e-02" in log
    valid = re.findall(r"(?m)M valid_acc ([\d.]+)$", log)
    assert len(valid) == 2
    # The result is the last epoch; the running max of the test accuracy is labelled as such.
    assert f"final (last epoch 1) valid_acc {valid[-1]}" in log
    assert log.count("max test acc over epochs") == 2 and "best valid_acc" not in log
    for n in (1, 2):
        assert torch.load(full / f"checkpoint_{n}.pth.tar", weights_only=True)["epoch"] == n
    state = torch.load(full / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 2 and state["config"]["ckpt_interval"] == 1
    assert (full / WEIGHTS).is_file() and (full / "genotype.json").is_file()


def test_run_dir_names() -> None:
    parse = door.build_parser().parse_args
    args = parse(["--arch", "/some/where/my_cell.json", "--experiments", "E", "--seed", "3"])
    assert door.run_dir(args) == os.path.join("E", "sota", "cifar10", "eval", "exp-my_cell-3")
    args = parse(["--arch", "DARTS_V2", "--auxiliary", "--cutout", "--save", "eval"])
    assert door.run_dir(args).endswith(
        os.path.join("eval", "eval-DARTS_V2-0-cutout-16-1.0-auxiliary-0.4"))
    defaults = parse([])
    assert defaults.gpu == 0  # 'auto': the first GPU, or the CPU without CUDA
    assert defaults.arch in published()  # the original's default exists in our registry
    assert (defaults.epochs, defaults.init_channels, defaults.layers, defaults.batch_size,
            defaults.ckpt_interval) == (600, 36, 20, 96, 50)


# -- resume ---------------------------------------------------------------------------------------
def test_resume_epoch_and_expid_continue_bit_identically(full: Path, tmp_path: Path) -> None:
    copy = _copy_run(full, tmp_path / "exp", at_epoch_1=False)
    (copy / WEIGHTS).unlink()
    proc = _door("--resume_epoch", "1", "--resume_expid", RUN_NAME, "--dataset", "digits",
                 "--gpu", "-1", "--no_progress", "--experiments", str(tmp_path / "exp"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (copy / "log_resume_1.txt").read_text()
    assert "checkpoint_1.pth.tar at epoch 1" in log and "epoch 0 lr" not in log
    _assert_same_weights(copy / WEIGHTS, full / WEIGHTS)


def test_killed_and_resumed_run_equals_uninterrupted(full: Path, tmp_path: Path) -> None:
    root, snapshot = tmp_path / "killed", tmp_path / "epoch1.pth.tar"
    proc = DoorProcess(DOOR, "train.py", [*E2E, "--experiments", str(root)], env=_env())
    deadline = time.time() + 240
    try:  # the rolling checkpoint is published atomically: the first one seen is epoch 1's
        while not snapshot.exists():
            found = glob.glob(str(root / "sota" / "digits" / "eval" / "*" / CHECKPOINT))
            if found:
                shutil.copy(found[0], snapshot)
            elif proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"run ended without a checkpoint: {proc.output()[-3000:]}")
            else:
                time.sleep(0.02)
    finally:
        try:
            proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    run = root / "sota" / "digits" / "eval" / RUN_NAME
    shutil.copy(snapshot, run / CHECKPOINT)  # in case epoch 2 finished before the kill
    (run / WEIGHTS).unlink(missing_ok=True)
    assert torch.load(run / CHECKPOINT, weights_only=True)["epoch"] == 1

    resumed = _door("--resume_epoch", "-1", "--resume_expid", RUN_NAME, "--dataset", "digits",
                    "--gpu", "-1", "--no_progress", "--experiments", str(root))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in (run / "log_resume_1.txt").read_text()  # named after its epoch
    _assert_same_weights(run / WEIGHTS, full / WEIGHTS)


def test_engine_resume_flag_finds_the_run(full: Path, tmp_path: Path) -> None:
    copy = _copy_run(full, tmp_path / "exp", at_epoch_1=True)
    proc = _door("--resume", *E2E, "--experiments", str(tmp_path / "exp"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in (copy / "log.txt").read_text()
    _assert_same_weights(copy / WEIGHTS, full / WEIGHTS)


def test_resume_looks_in_eval_first_then_where_the_original_looked(tmp_path: Path) -> None:
    base = tmp_path / "sota" / "cifar10"
    for folder in (base / "eval" / "a", base / "a", base / "b"):
        folder.mkdir(parents=True)
        (folder / "checkpoint_50.pth.tar").write_bytes(b"")
    find = door.resume_checkpoint
    assert find(str(tmp_path), "cifar10", "a", 50) == str(base / "eval/a/checkpoint_50.pth.tar")
    assert find(str(tmp_path), "cifar10", "b", 50) == str(base / "b/checkpoint_50.pth.tar")
    with pytest.raises(UserError, match=r"has no checkpoint_100\.pth\.tar .*checkpoint_50"):
        find(str(tmp_path), "cifar10", "a", 100)
    with pytest.raises(UserError, match="has no checkpoint.pth.tar"):
        find(str(tmp_path), "cifar10", "b", -1)
    with pytest.raises(UserError, match="no run folder"):
        find(str(tmp_path), "cifar10", "c", 50)


# -- bad input: one message, exit 2 ---------------------------------------------------------------
def _refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        door.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_queue_is_refused(tmp_path: Path, capsys) -> None:
    err = _refused([*E2E, "--queue", "--experiments", str(tmp_path)], capsys)
    assert "--queue" in err and "--gpu" in err
    assert not list(tmp_path.iterdir())


def test_existing_folder_without_resume_flags(full: Path, capsys) -> None:
    err = _refused([*E2E, "--experiments", str(full.parents[3])], capsys)
    assert "already exists" in err
    assert f"--resume_epoch -1 --resume_expid {RUN_NAME}" in err and "--seed" in err


def test_missing_resume_checkpoint_and_half_resume_flags(full: Path, capsys) -> None:
    root = str(full.parents[3])
    err = _refused(["--resume_epoch", "7", "--resume_expid", RUN_NAME, "--dataset", "digits",
                    "--experiments", root], capsys)
    assert "has no checkpoint_7.pth.tar" in err and "checkpoint_2.pth.tar" in err
    err = _refused(["--resume_epoch", "7", "--resume_expid", "nothing", "--dataset", "digits",
                    "--experiments", root], capsys)
    assert "no run folder" in err
    assert "needs --resume_expid" in _refused(["--resume_epoch", "50"], capsys)
    assert "needs --resume_epoch" in _refused(["--resume_expid", RUN_NAME], capsys)
    err = _refused(["--resume_epoch", "1", "--resume_expid", RUN_NAME, "--dataset", "digits",
                    "--experiments", root, "--epochs", "9"], capsys)
    assert "--epochs 9 differs" in err


def test_unknown_arch_through_the_script(tmp_path: Path) -> None:
    """The door's exit status and single message come through eval.sh (exec)."""
    proc = _bash("exp_scripts/eval.sh", *SMALL, "--arch", "NO_SUCH_CELL",
                 "--experiments", str(tmp_path))
    assert proc.returncode == 2
    assert "unknown architecture 'NO_SUCH_CELL'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


# -- exp_scripts ----------------------------------------------------------------------------------
def _only_run(root: Path) -> Path:
    runs = glob.glob(str(root / "sota" / "digits" / "eval" / "*"))
    assert len(runs) == 1, runs
    return Path(runs[0])


def test_eval_sh_from_the_repository_root(tmp_path: Path) -> None:
    proc = _bash("exp_scripts/eval.sh", "--arch", "darts_pt_s5_0", *SMALL,
                 "--experiments", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "id: eval" in proc.stdout and "seed: 2" in proc.stdout
    run = _only_run(tmp_path)
    assert run.name == "eval-darts_pt_s5_0-2-cutout-4-1.0-auxiliary-0.4"
    log = (run / "log.txt").read_text()
    # --fast 1: one batch per loop
    assert "steps_per_epoch = 1" in log and "train 000" in log and "train 001" not in log
    assert (run / WEIGHTS).is_file()


def test_eval_sh_from_exp_scripts(tmp_path: Path) -> None:
    proc = _bash("eval.sh", "--arch", "blank_pt_s5_0", *SMALL, "--seed", "5",
                 "--experiments", str(tmp_path), cwd=SCRIPTS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _only_run(tmp_path).name == "eval-blank_pt_s5_0-5-cutout-4-1.0-auxiliary-0.4"


def _dry(script: str, *args: str, cwd: Path = REPO) -> str:
    proc = _bash(script, *args, cwd=cwd, EXP_DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()[-1]


def test_scripts_keep_the_original_defaults(tmp_path: Path) -> None:
    cmd = _dry("exp_scripts/eval.sh", "--arch", "darts_pt_s5_0")
    assert cmd.startswith("+ (cd darts_pt/sota/cnn && ") and " train.py " in cmd
    for part in ("--arch darts_pt_s5_0", "--dataset cifar10", "--auxiliary --cutout",
                 "--seed 2", "--save eval", "--gpu auto", "--batch_size 96",
                 "--learning_rate 0.025", "--resume_expid none", "--resume_epoch 0"):
        assert part in cmd, part
    assert "--layers" not in cmd and "--fast" not in cmd  # train.py's C=36, 20 cells
    for script, dataset in (("eval-c100.sh", "cifar100"), ("eval-svhn.sh", "svhn")):
        cmd = _dry(str(SCRIPTS / script), "--arch", "x", cwd=tmp_path)  # from anywhere
        for part in (f"--dataset {dataset}", f"--save {script[:-3]}", "--init_channels 16",
                     "--layers 8"):
            assert part in cmd, (script, part)
    cmd = _dry("exp_scripts/eval-c100.sh", "--arch", "x", "--layers=3", "--no_progress", "0")
    assert "--layers 3" in cmd and "--no_progress" not in cmd
    assert sys.executable in cmd  # $PYTHON first


def test_scripts_refuse_bad_arguments() -> None:
    proc = _bash("exp_scripts/eval.sh", "--arch", "darts_pt_s5_0", "--foo", "1")
    assert proc.returncode == 2
    assert "unknown option --foo" in proc.stderr and "--arch" in proc.stderr
    assert "+ (cd" not in proc.stdout  # nothing was started
    proc = _bash("exp_scripts/eval.sh", "--seed", "--arch", "darts_pt_s5_0")
    assert proc.returncode == 2 and "--seed needs a value" in proc.stderr
    proc = _bash("exp_scripts/eval.sh", "--arch")
    assert proc.returncode == 2 and "--arch needs a value" in proc.stderr
    proc = _bash("exp_scripts/eval-svhn.sh", "--dataset", "digits")
    assert proc.returncode == 2 and "pass --arch NAME" in proc.stderr
    proc = _bash("exp_scripts/eval.sh", "--arch", "x", "--fast", "maybe")
    assert proc.returncode == 2 and "--fast takes 1 or 0" in proc.stderr
    proc = _bash("exp_scripts/eval.sh", "stray")
    assert proc.returncode == 2 and "--NAME VALUE" in proc.stderr
