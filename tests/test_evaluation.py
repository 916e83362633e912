"""Tests for evaluation training (shared/evaluation) through the SDARTS doors
``sdarts/sota/cnn/train.py``, ``test.py`` and ``train_imagenet.py``. CPU only, no network:
8x8 digits, tiny networks, 1-2 epochs.

Every process is pinned to one thread: on a loaded 2-core machine OpenMP threads spin
against each other and a tiny step takes seconds instead of milliseconds.
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
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from sdarts.sota.cnn import test as test_door
from sdarts.sota.cnn import train as train_door
from sdarts.sota.cnn import train_imagenet as imagenet_door
from shared.evaluation.config import CHECKPOINT, WEIGHTS
from shared.evaluation.trainer import linear_lr_factor
from shared.genotypes import load_genotype, save_genotype
from shared.models.cnn import build_final_network
from tests.conftest import DoorProcess, run_door_here

pytestmark = pytest.mark.slow  # runs the doors (subprocesses or their main)

REPO = Path(__file__).resolve().parents[1]
DOORS = REPO / "sdarts" / "sota" / "cnn"
TINY = ["--dataset", "digits", "--layers", "3", "--init_channels", "8", "--batch_size", "128",
        "--no_progress", "--gpu", "-1", "--num_workers", "0"]
# The end-to-end run: auxiliary head, cutout, and a registry genotype.
E2E = TINY + ["--auxiliary", "--cutout", "--cutout_length", "4", "--arch", "DARTS_V2",
              "--epochs", "2"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _door(script: str, *args: str) -> DoorProcess:
    """The door started as a process (forked from the preloaded server) to be killed."""
    return DoorProcess(str(DOORS), script, list(args), env=_env())


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    """The door in this process (conftest.run_door_here); killed runs and torchrun's are
    processes."""
    return run_door_here(str(DOORS), script, list(args))


def _only_run_dir(root: Path, dataset: str = "digits") -> Path:
    runs = glob.glob(str(root / "sota" / dataset / "eval" / "eval-*"))
    assert len(runs) == 1, runs
    return Path(runs[0])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One uninterrupted 2-epoch run, shared: end-to-end checks, test.py, resume reference."""
    root = tmp_path_factory.mktemp("full")
    proc = _run("train.py", *E2E, "--experiments", str(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _only_run_dir(root)


# -- end to end -----------------------------------------------------------------------------------
def test_train_writes_log_checkpoint_and_weights(trained: Path) -> None:
    assert re.search(r"eval-exp-DARTS_V2-0-\d{8}-\d{6}-cutout-4-1.0-auxiliary-0.4$",
                     trained.name)
    log = (trained / "log.txt").read_text()
    for line in ("epoch 0 lr 2.500000e-02", "epoch 1 lr 1.250000e-02", "train 000 ",
                 "train_acc ", "valid_acc ", "param size = "):
        assert line in log, line
    assert len(re.findall(r"(?m)M valid_acc [\d.]+$", log)) == 2  # per epoch
    state = torch.load(trained / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["auxiliary"] is True
    weights = _weights(trained / WEIGHTS)
    assert any(k.startswith("auxiliary_head.") for k in weights)
    assert all(torch.equal(weights[k], state["state_dict"][k]) for k in weights)
    assert glob.glob(str(trained / "runs" / "events.out.tfevents.*"))


def test_test_py_reports_the_final_test_accuracy(trained: Path) -> None:
    proc = _run("test.py", "--dataset", "digits", "--layers", "3", "--init_channels", "8",
                "--arch", "DARTS_V2", "--auxiliary", "--gpu", "-1", "--num_workers", "0",
                "--model_path", str(trained / WEIGHTS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    test_acc = float(re.search(r"test_acc ([\d.]+)", proc.stdout).group(1))
    last_valid = float(re.findall(r"valid_acc ([\d.]+)", (trained / "log.txt").read_text())[-1])
    assert test_acc == pytest.approx(last_valid)  # same weights, same test split


def test_test_py_takes_a_checkpoint_too(trained: Path, capsys) -> None:
    test_door.main(["--dataset", "digits", "--layers", "3", "--init_channels", "8",
                    "--arch", "DARTS_V2", "--gpu", "-1", "--num_workers", "0",
                    "--model_path", str(trained / CHECKPOINT)])
    assert "test_acc " in capsys.readouterr().out


def test_arch_from_genotype_json(tmp_path: Path, capsys) -> None:
    path = tmp_path / "my_cell.json"
    save_genotype(load_genotype("DARTS_V1"), str(path), search_space="s5")
    train_door.main(["--dataset", "digits", "--layers", "3", "--init_channels", "4",
                     "--batch_size", "128", "--epochs", "1", "--no_progress", "--gpu", "-1",
                     "--num_workers", "0", "--arch", str(path),
                     "--experiments", str(tmp_path / "exp")])
    run = _only_run_dir(tmp_path / "exp")
    assert run.name.startswith("eval-exp-my_cell-0-")
    assert str(load_genotype("DARTS_V1")) in (run / "log.txt").read_text()
    assert load_genotype(str(run / "genotype.json")) == load_genotype("DARTS_V1")
    assert (run / WEIGHTS).is_file()


# -- kill and resume ------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (torchrun's workers), read from /proc."""
    kids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            kids.append(int(Path(stat).parent.name))
    return kids


def _kill_after_epoch_1(proc: subprocess.Popen | DoorProcess, root: Path,
                        snapshot: Path) -> Path:
    """SIGKILL the started ``proc`` (and its workers) once its first checkpoint appears, and
    leave its run folder as a run killed after epoch 1. Returns the run folder."""
    deadline = time.time() + 240
    try:
        # The checkpoint is published atomically after each epoch, so the first file seen is
        # epoch 1's; keep a copy in case the run gets through epoch 2 before the kill lands.
        while not snapshot.exists():
            ckpts = glob.glob(str(root / "sota/digits/eval/*" / Path(CHECKPOINT)))
            if ckpts:
                shutil.copy(ckpts[0], snapshot)
            elif proc.poll() is not None or time.time() > deadline:
                errors = proc.output() if isinstance(proc, DoorProcess) else proc.stderr.read()
                pytest.fail(f"run ended without a checkpoint: {errors[-3000:]}")
            else:
                time.sleep(0.02)
    finally:
        for pid in [*_children(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    assert torch.load(snapshot, weights_only=True)["epoch"] == 1
    run = _only_run_dir(root)
    shutil.copy(snapshot, run / CHECKPOINT)
    (run / WEIGHTS).unlink(missing_ok=True)
    return run


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different[:5]


def test_killed_and_resumed_run_equals_uninterrupted(trained: Path, tmp_path: Path) -> None:
    root = tmp_path / "killed"
    run = _kill_after_epoch_1(_door("train.py", *E2E, "--experiments", str(root)),
                              root, tmp_path / "epoch1.pth.tar")
    # Bare --resume finds the newest matching run; typed flags equal to the saved ones pass.
    resumed = _run("train.py", "--resume", "--experiments", str(root), "--dataset", "digits",
                   "--arch", "DARTS_V2", "--gpu", "-1", "--no_progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in (run / "log.txt").read_text()
    _assert_same_weights(run / WEIGHTS, trained / WEIGHTS)


def test_resume_refuses_a_changed_setting(trained: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        train_door.main(["--resume", str(trained), "--epochs", "5", "--gpu", "-1"])
    assert info.value.code == 2
    assert "--epochs 5 differs" in capsys.readouterr().err


# -- bad input ------------------------------------------------------------------------------------
def test_unknown_arch_is_one_line_error(tmp_path: Path) -> None:
    proc = _run("train.py", *TINY, "--arch", "NO_SUCH_CELL", "--experiments", str(tmp_path))
    assert proc.returncode == 2
    assert "NO_SUCH_CELL" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # no run folder left behind


def test_test_py_corrupt_weights(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a torch file")
    with pytest.raises(SystemExit) as info:
        test_door.main(["--dataset", "digits", "--model_path", str(bad), "--gpu", "-1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and str(bad) in err


def test_test_py_weights_of_another_network(tmp_path: Path, capsys) -> None:
    net = build_final_network(load_genotype("DARTS_V2"), "digits", 8, 3)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(SystemExit) as info:
        test_door.main(["--dataset", "digits", "--layers", "3", "--init_channels", "16",
                        "--arch", "DARTS_V2", "--gpu", "-1", "--num_workers", "0",
                        "--model_path", str(tmp_path / "weights.pt")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "do not match" in err and "--init_channels" in err


def test_resume_corrupt_checkpoint(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / CHECKPOINT).write_bytes(b"\x00" * 64)
    with pytest.raises(SystemExit) as info:
        train_door.main(["--resume", str(run), "--gpu", "-1"])
    assert info.value.code == 2
    assert "corrupt" in capsys.readouterr().err


def test_missing_cifar_without_network(tmp_path: Path, monkeypatch, capsys) -> None:
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(SystemExit) as info:
        train_door.main(["--dataset", "cifar10", "--data", str(tmp_path / "nodata"),
                         "--experiments", str(tmp_path / "exp"), "--gpu", "-1",
                         "--arch", "DARTS_V2", "--epochs", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "CIFAR-10 not found" in err and "--dataset digits" in err
    assert not (tmp_path / "exp").exists()  # data is checked before the run folder is made


# -- ImageNet door --------------------------------------------------------------------------------
def _fake_imagenet(root: Path) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")


def test_train_imagenet_one_epoch(tmp_path: Path) -> None:
    _fake_imagenet(tmp_path / "imagenet")
    imagenet_door.main(["--data", str(tmp_path / "imagenet"), "--experiments",
                        str(tmp_path / "exp"), "--gpu", "-1", "--epochs", "1",
                        "--init_channels", "8", "--layers", "3", "--batch_size", "4",
                        "--num_workers", "0", "--no_progress", "--auxiliary",
                        "--lr_scheduler", "cosine"])
    run = _only_run_dir(tmp_path / "exp", "imagenet")
    log = (run / "log.txt").read_text()
    for line in ("epoch 0 lr 1.000000e-01", "train_acc ", "valid_acc_top1 ", "valid_acc_top5 "):
        assert line in log, line
    assert (run / WEIGHTS).is_file()


def test_train_imagenet_missing_folder(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        imagenet_door.main(["--data", str(tmp_path / "none"), "--gpu", "-1",
                            "--experiments", str(tmp_path / "exp")])
    assert info.value.code == 2
    assert "ImageNet folder" in capsys.readouterr().err


def test_train_imagenet_parallel_outside_torchrun_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        imagenet_door.main(["--parallel", "--gpu", "-1", "--experiments", str(tmp_path)])
    assert info.value.code == 2
    assert "torchrun" in capsys.readouterr().err


def test_test_py_auxiliary_flag_is_checked(tmp_path: Path, capsys) -> None:
    net = build_final_network(load_genotype("DARTS_V2"), "digits", 8, 3, auxiliary=False)
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(SystemExit) as info:
        test_door.main(["--dataset", "digits", "--arch", "DARTS_V2", "--init_channels", "8",
                        "--layers", "3", "--model_path", str(path), "--auxiliary", "--gpu", "-1"])
    assert info.value.code == 2
    assert "no auxiliary head" in capsys.readouterr().err


def _refused_by_test_py(capsys, path: Path, *flags: str) -> str:
    with pytest.raises(SystemExit) as info:
        test_door.main(["--dataset", "digits", "--arch", "DARTS_V2", "--init_channels", "8",
                        "--layers", "3", "--model_path", str(path), "--gpu", "-1", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights_only" not in err, err
    return err


def test_test_py_names_a_search_checkpoint(tmp_path: Path, capsys) -> None:
    """A search's checkpoint (a supernet, alpha and all) is named as such, before the
    --auxiliary check could call it weights trained without --auxiliary."""
    from tests.test_search_loop import TinySupernet, make_loop

    loop = make_loop(tmp_path)
    loop.save(1)
    err = _refused_by_test_py(capsys, Path(loop.checkpoint_path), "--auxiliary")
    assert "is a search (supernet) checkpoint, not a trained network's weights: evaluate a " \
           "genotype with train.py first" in err and "auxiliary" not in err, err
    torch.save(TinySupernet().state_dict(), tmp_path / "supernet.pt")  # bare supernet weights
    err = _refused_by_test_py(capsys, tmp_path / "supernet.pt", "--auxiliary")
    assert "holds a supernet's weights" in err and "evaluate a genotype with train.py" in err


def test_test_py_names_a_recurrent_model_and_foreign_files(tmp_path: Path, capsys) -> None:
    torch.save({"kind": "rnn_model", "epoch": 1, "state_dict": {"w": torch.zeros(2)}},
               tmp_path / "model.pt")
    err = _refused_by_test_py(capsys, tmp_path / "model.pt")
    assert "is a 'rnn_model' checkpoint (a recurrent cell's: test it with " \
           "sdarts/sota/rnn/test.py)" in err, err
    truncated = tmp_path / "weights.pt"
    truncated.write_bytes(b"PK\x03\x04")
    err = _refused_by_test_py(capsys, truncated)
    assert err.startswith("error: --model_path: expected a checkpoint written by this project")
    assert "not a complete PyTorch file (truncated or corrupt)" in err, err


def test_imagenet_schedules_and_warmup() -> None:
    # Linear (PC-DARTS/SDARTS): to ~0 at epochs-5, then a gentler slope to exactly 0.
    assert linear_lr_factor(0, 250) == 1.0
    assert linear_lr_factor(244, 250) == pytest.approx(1 / 245)
    assert linear_lr_factor(245, 250) == pytest.approx(1 / 245)
    assert linear_lr_factor(250, 250) == 0.0
    assert linear_lr_factor(1, 2) == 0.5
    args = imagenet_door.build_parser().parse_args(["--batch_size", "1024"])
    assert imagenet_door.to_config(args).warmup_epochs == 5
    args = imagenet_door.build_parser().parse_args([])
    cfg = imagenet_door.to_config(args)
    assert (cfg.warmup_epochs, cfg.lr_scheduler, cfg.label_smooth) == (0, "step", 0.1)


def test_warmup_scales_only_the_warmup_epochs(tmp_path: Path) -> None:
    _fake_imagenet(tmp_path / "imagenet")
    imagenet_door.main(["--data", str(tmp_path / "imagenet"), "--experiments",
                        str(tmp_path / "exp"), "--gpu", "-1", "--epochs", "3",
                        "--init_channels", "4", "--layers", "1", "--batch_size", "258",
                        "--num_workers", "0", "--no_progress", "--warmup_epochs", "2",
                        "--lr_scheduler", "step", "--gamma", "0.5"])
    log = (_only_run_dir(tmp_path / "exp", "imagenet") / "log.txt").read_text()
    lrs = [float(v) for v in re.findall(r"epoch \d lr ([\d.e+-]+)", log)]
    assert lrs == pytest.approx([0.1 * 0.5, 0.05 * 1.0, 0.025])


# -- data parallel --------------------------------------------------------------------------------
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
DDP_RUN = ["train.py", *TINY, "--arch", "DARTS_V2", "--epochs", "2", "--cutout",
           "--cutout_length", "4"]


def test_torchrun_two_cpu_processes_and_resume(tmp_path: Path) -> None:
    """DDP over gloo: rank 0 alone writes; a killed DDP run resumes bit-identically."""
    proc = subprocess.run([*TORCHRUN, *DDP_RUN, "--experiments", str(tmp_path / "full")],
                          cwd=DOORS, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _only_run_dir(tmp_path / "full")  # one folder: rank 0's name was broadcast
    log = (run / "log.txt").read_text()
    assert "processes = 2" in log and len(re.findall(r"(?m)M valid_acc [\d.]+$", log)) == 2
    state = torch.load(run / CHECKPOINT, weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not any(k.startswith("module.") for k in _weights(run / WEIGHTS))

    launch = subprocess.Popen([*TORCHRUN, *DDP_RUN, "--experiments", str(tmp_path / "k")],
                              cwd=DOORS, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    killed = _kill_after_epoch_1(launch, tmp_path / "k", tmp_path / "epoch1.pth.tar")
    resumed = subprocess.run([*TORCHRUN, "train.py", "--resume", str(killed)], cwd=DOORS,
                             env=_env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in (killed / "log.txt").read_text()
    _assert_same_weights(killed / WEIGHTS, run / WEIGHTS)


def test_a_search_genotype_json_is_named_by_its_search_folder() -> None:
    from shared.evaluation.cli import arch_label

    assert arch_label("DARTS_V2") == "DARTS_V2"
    assert arch_label("cells/my_cell.json") == "my_cell"
    assert arch_label("exp/sota/c10/search-e2e-20261126-s5-2-7/genotype.json") == \
        "search-e2e-20261126-s5-2-7"
    assert arch_label("exp/sota/c10/search-darts-sota-s2-2/log_resume-50_dev-proj_intv-5"
                      "_ED-random_PCN-acc_PCR-acc_seed-2/genotype.json") == \
        "search-darts-sota-s2-2-proj"


def test_a_grouped_run_killed_and_resumed_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    """``--grouped_ops`` (each normal cell's five separable convs as one group, their
    parameters and running statistics in shared buffers, laid out again when the resumed run
    builds its network and loads the checkpoint): saved with the run's flags, kept on
    resume, bit for bit the run that never stopped."""
    grouped = [*E2E, "--grouped_ops"]
    ref_root, root = tmp_path / "ref", tmp_path / "killed"
    assert _run("train.py", *grouped, "--experiments", str(ref_root)).returncode == 0
    ref = _only_run_dir(ref_root)
    run = _kill_after_epoch_1(_door("train.py", *grouped, "--experiments", str(root)), root,
                              tmp_path / "epoch1.pth.tar")
    resumed = _run("train.py", "--resume", str(run), "--gpu", "-1", "--no_progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert "resumed from" in log and "'grouped_ops': True" in log
    state = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["config"]["grouped_ops"] is True
    _assert_same_weights(run / WEIGHTS, ref / WEIGHTS)
