"""Run folders: inside --experiments, one per run, one writer at a time, never deleted when not
ours, never continued by the wrong command (``shared.cli.run_folder``, ``shared.cli.resume``).

The unit tests exercise the pieces; the door tests (``slow``) replay each case as it was found:
a traversal path with a debug tag, two runs started together, two resumes at once, a seed that
is a prefix of another, a foreign folder, a crafted benchmark file, a diverging search. Every
door test hashes the tree before and after to show that nothing but the run's own folder
changed. A kill inside the checkpoint write and a full disk: tests/test_sdarts_search_cli.py."""
from __future__ import annotations

import argparse
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from shared.checkpoint import save_checkpoint
from shared.cli import door as door_module
from shared.cli.resume import find_run
from shared.cli.run_folder import LOCK, RunLock, claim_run, holder, inside
from shared.errors import UserError, cli_entry
from tests.conftest import (
    ROOT,
    DoorProcess,
    door_env,
    run_door_here,
    search_runs,
    wait_for_checkpoint_epoch,
)


def tree(root) -> dict[str, str]:
    """Every file under ``root`` with its SHA-256 (folders as 'dir')."""
    out = {}
    for dp, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dp, d), root)] = "dir"
        for f in files:
            path = os.path.join(dp, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


# -- the pieces ------------------------------------------------------------------------------
def test_inside_refuses_dotdot_absolute_and_links_out(tmp_path) -> None:
    root = tmp_path / "exp"
    root.mkdir()
    assert inside(str(root / "a" / "b"), str(root))
    for bad in (root / "x" / ".." / ".." / "victim", "/etc/passwd-run"):
        with pytest.raises(UserError, match="outside --experiments"):
            inside(str(bad), str(root))
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(UserError, match="outside --experiments"):
        inside(str(root / "link" / "run"), str(root))


def test_two_new_runs_of_one_name_get_two_folders_and_one_lock_each(tmp_path) -> None:
    root, path = str(tmp_path), str(tmp_path / "sota" / "eval-x-1")
    with claim_run(path, root=root, new=True) as first, \
            claim_run(path, root=root, new=True) as second:
        assert (first, second) == (path, path + "-2")
        assert open(os.path.join(first, LOCK)).read().strip() == str(os.getpid())
        assert holder(first) == str(os.getpid())
        with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
            with claim_run(first, root=None, new=False):
                pass
    assert not os.path.exists(os.path.join(first, LOCK))  # released on exit
    assert holder(first) is None
    with claim_run(first, root=None, new=False):  # and free again
        pass


def test_a_fixed_name_is_refused_when_taken(tmp_path) -> None:
    path = str(tmp_path / "search-a-1")
    os.mkdir(path)
    with pytest.raises(UserError, match="already exists"):
        with claim_run(path, root=str(tmp_path), new=True, unique=False):
            pass
    assert os.path.isdir(path)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    code = (f"import sys, time; sys.path.insert(0, {ROOT!r})\n"
            "from shared.cli.run_folder import RunLock\n"
            f"RunLock({str(folder)!r}).acquire(); print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        lock = RunLock(str(folder))
        with pytest.raises(UserError, match=f"in use by process {proc.pid}"):
            lock.acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lock.acquire()  # the kernel dropped the dead process's lock
        lock.release()
    finally:
        proc.kill()
        proc.wait()


def test_a_failed_start_leaves_no_folder_but_a_resumable_one_stays(tmp_path) -> None:
    root = tmp_path / "exp"
    root.mkdir()
    with pytest.raises(UserError, match="outside --experiments"):  # refused before any mkdir
        with claim_run(str(root / "a" / ".." / ".." / "x"), root=str(root), new=True):
            pass
    with pytest.raises(OSError):  # a name the file system refuses: no parent left either
        with claim_run(str(root / "sota" / ("x" * 300)), root=str(root), new=True):
            pass
    assert list(root.iterdir()) == []
    with pytest.raises(UserError, match="no data"):
        with claim_run(str(root / "sota" / "digits" / "run"), root=str(root), new=True) as f:
            open(os.path.join(f, "log.txt"), "w").write("started\n")
            raise UserError("no data")
    assert list(root.iterdir()) == []  # the folders it created are gone, the root it found not
    with pytest.raises(UserError):
        with claim_run(str(root / "run"), root=str(root), new=True) as f:
            save_checkpoint({"epoch": 1}, os.path.join(f, "checkpoint.pth.tar"))
            raise UserError("disk full")
    assert (root / "run" / "checkpoint.pth.tar").is_file()
    with pytest.raises(UserError):  # a resumed run's folder is never removed
        with claim_run(str(root / "run"), root=None, new=False):
            os.remove(root / "run" / "checkpoint.pth.tar")
            raise UserError("x")
    assert (root / "run").is_dir()


def test_claiming_removes_temp_files_a_killed_writer_left(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pth.tar.tmp.123", "history.json.tmp.9", "epochs.jsonl.tmp",
                 "log.txt"):
        (run / name).write_text("x")
    (run / "proj").mkdir()
    (run / "proj" / "checkpoint.pth.tar.tmp.5").write_text("another run's")
    with claim_run(str(run), root=None, new=False):
        assert sorted(os.listdir(run)) == sorted([LOCK, "log.txt", "proj"])
    assert (run / "proj" / "checkpoint.pth.tar.tmp.5").exists()


def _fake_run(folder, door: str | None = None, **flags) -> str:
    os.makedirs(folder)
    extra = {"flags": flags, **({"door": door} if door else {})}
    torch.save({"epoch": 1, "config": {"extra": extra}}, os.path.join(folder, "checkpoint.pth.tar"))
    return str(folder)


def test_bare_resume_matches_the_saved_flags_exactly(tmp_path, monkeypatch) -> None:
    here = "sdarts/sota/cnn/train_search.py"
    monkeypatch.setattr(door_module, "_door", here)
    two = _fake_run(tmp_path / "search-b1-t-s1-2-11", here, save="b1", seed=2)
    _fake_run(tmp_path / "search-b1-t-s1-23-12", here, save="b1", seed=23)
    _fake_run(tmp_path / "search-b1-other-t-s1-2-13", here, save="b1-other", seed=2)
    _fake_run(tmp_path / "search-b1-t-2-14", "sdarts/sota/rnn/train_search.py", save="b1",
              seed=2)  # another door's run with the same flags
    pattern = str(tmp_path / "search-b1-*")
    assert find_run(pattern, {"save": "b1", "seed": 2}) == two
    with pytest.raises(UserError, match="no run with --save b1 --seed 3"):
        find_run(pattern, {"save": "b1", "seed": 3})
    again = _fake_run(tmp_path / "search-b1-u-s1-2-15", here, save="b1", seed=2)
    with pytest.raises(UserError, match="2 runs have --save b1 --seed 2") as err:
        find_run(pattern, {"save": "b1", "seed": 2})
    assert two in str(err.value) and again in str(err.value)


def test_a_failed_checkpoint_write_keeps_the_previous_and_no_temp(tmp_path, monkeypatch) -> None:
    path = str(tmp_path / "checkpoint.pth.tar")
    save_checkpoint({"epoch": 1}, path)
    before = open(path, "rb").read()

    def full_disk(obj, f, *a, **k):
        open(f, "wb").write(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match="cannot write .*checkpoint.pth.tar.*--resume") as err:
        save_checkpoint({"epoch": 2}, path)
    assert "\n" not in str(err.value)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["checkpoint.pth.tar"]


# -- through the doors -----------------------------------------------------------------------
SEARCH_DIR = os.path.join(ROOT, "sdarts", "sota", "cnn")
TINY = ["--dataset", "digits", "--layers", "3", "--init_channels", "4", "--batch_size", "256",
        "--gpu", "-1", "--no_progress", "--no_plots"]
PT_DIR = os.path.join(ROOT, "darts_pt", "sota", "cnn")
PT_TINY = ["--dataset", "digits", "--layers", "3", "--init_channels", "4", "--batch_size", "256",
           "--no_progress", "--no_plots", "--method", "darts", "--epochs", "1", "--fast"]


def door(where: str, args: list[str], experiments, script: str = "train_search.py",
         prefix: list[str] = ()) -> subprocess.CompletedProcess:
    """A door run in this process (conftest.run_door_here), or as a process under ``prefix``;
    the busy-run tests below start theirs as processes."""
    if not prefix:
        return run_door_here(where, script, [*args, "--experiments", experiments])
    return subprocess.run([*prefix, sys.executable, script, *args, "--experiments",
                           str(experiments)], cwd=where, env=door_env(), capture_output=True,
                          text=True, timeout=600)


def refused(out, message: str) -> str:
    assert out.returncode == 2, out.stdout[-1000:] + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.stderr
    assert message in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_a_debug_tag_with_a_traversal_path_deletes_nothing(tmp_path) -> None:
    exp = tmp_path / "a" / "b" / "exp"
    victim = tmp_path / "victim-debug-s5-2"
    victim.mkdir()
    (victim / "checkpoint.pth.tar").write_bytes(b"someone else's")
    before = tree(tmp_path)
    out = door(PT_DIR, [*PT_TINY, "--save", "x/../../../../../victim", "--expid_tag", "debug"],
               exp)
    refused(out, "outside --experiments")
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_a_debug_tag_restarts_in_a_new_folder(tmp_path) -> None:
    assert door(PT_DIR, [*PT_TINY, "--expid_tag", "debug"], tmp_path).returncode == 0
    first = tmp_path / "sota" / "digits" / "search-exp-debug-s5-2"
    kept = tree(first)
    out = door(PT_DIR, [*PT_TINY, "--expid_tag", "debug"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert tree(first) == kept
    assert (tmp_path / "sota" / "digits" / "search-exp-debug-s5-2-2" / "checkpoint.pth.tar")\
        .is_file()


@pytest.mark.slow
def test_two_evaluations_started_together_get_their_own_folders(tmp_path) -> None:
    args = ["train.py", "--dataset", "digits", "--layers", "3", "--init_channels", "4",
            "--batch_size", "256", "--epochs", "1", "--arch", "DARTS_V2", "--gpu", "-1",
            "--no_progress", "--num_workers", "0", "--experiments", str(tmp_path)]
    procs = [DoorProcess(SEARCH_DIR, args[0], args[1:]) for _ in range(2)]
    codes = [p.wait(600) for p in procs]
    outs = [p.output() for p in procs]
    assert codes == [0, 0], [o[-2000:] for o in outs]
    runs = sorted(search_runs(tmp_path, prefix="eval-"))
    assert len(runs) == 2, runs
    weights = {line.split("weights: ")[1] for o in outs for line in o.splitlines()
               if "weights: " in line}
    assert weights == {os.path.abspath(os.path.join(r, "weights.pt")) for r in runs}
    for run in runs:  # one run per log
        assert open(os.path.join(run, "log.txt")).read().count("param size") == 1


@pytest.mark.slow
def test_a_second_resume_of_a_running_search_is_refused(tmp_path) -> None:
    args = [*TINY, "--epochs", "500", "--save", "busy"]  # interrupted below, never finishes
    proc = subprocess.Popen([sys.executable, "train_search.py", *args, "--experiments",
                             str(tmp_path)], cwd=SEARCH_DIR, env=door_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            # a background job inherits SIGINT ignored; Ctrl-C must reach it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while not search_runs(tmp_path):
            assert proc.poll() is None
            time.sleep(0.1)
        run = search_runs(tmp_path)[0]
        wait_for_checkpoint_epoch(os.path.join(run, "checkpoint.pth.tar"), 1, proc)
        out = door(SEARCH_DIR, ["--resume", run, "--gpu", "-1"], tmp_path)
        refused(out, f"is in use by process {proc.pid}")
        out = door(SEARCH_DIR, ["--resume", "--save", "busy", "--dataset", "digits"], tmp_path)
        refused(out, f"is in use by process {proc.pid}")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: "interrupted; resume with --resume"
        proc.wait(timeout=600)
    assert proc.returncode == 130
    assert not os.path.exists(os.path.join(run, LOCK))


@pytest.mark.slow
def test_bare_resume_never_continues_another_seed_or_save(tmp_path) -> None:
    # 'debug' in --save: one step per epoch (as the original), all this test needs
    for save, seed in (("b1debug", "2"), ("b1debug", "23"), ("b1debug-other", "2")):
        out = door(SEARCH_DIR, [*TINY, "--epochs", "1", "--save", save, "--seed", seed],
                   tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
    runs = {os.path.basename(r): r for r in search_runs(tmp_path)}
    mine = next(r for n, r in runs.items() if n.startswith("search-b1debug-2") and "-s1-2-" in n)
    others = {r: tree(r) for r in runs.values() if r != mine}
    out = door(SEARCH_DIR, ["--resume", "--save", "b1debug", "--seed", "2", "--dataset",
                            "digits", "--gpu", "-1", "--no_progress"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"experiment folder: {mine}" in out.stdout
    assert {r: tree(r) for r in others} == others  # several matches: the unit test above


@pytest.mark.slow
def test_another_doors_run_is_refused_by_name_and_left_untouched(tmp_path) -> None:
    assert door(SEARCH_DIR, [*TINY, "--epochs", "1"], tmp_path).returncode == 0
    run = search_runs(tmp_path)[0]
    before = tree(tmp_path)
    rnn = door(os.path.join(ROOT, "sdarts", "sota", "rnn"), ["--resume", run, "--gpu", "-1"],
               tmp_path)
    refused(rnn, "was written by sdarts/sota/cnn/train_search.py, not by "
                 "sdarts/sota/rnn/train_search.py")
    nb1 = door(os.path.join(ROOT, "sdarts", "optimizers", "darts"), ["--resume", run],
               tmp_path)
    refused(nb1, "was written by sdarts/sota/cnn/train_search.py")
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_a_diverging_search_stops_without_a_genotype(tmp_path) -> None:
    out = door(SEARCH_DIR, [*TINY, "--epochs", "2", "--learning_rate", "1e30"], tmp_path)
    refused(out, "the search diverged in epoch 0")
    assert not tmp_path.exists() or tree(tmp_path) == {}


@pytest.mark.parametrize("code,hint", [(errno.EACCES, "choose an --experiments folder"),
                                       (errno.EROFS, "choose an --experiments folder"),
                                       (errno.ENOSPC, "the disk is full")])
def test_a_file_system_error_is_one_line_not_a_traceback(code, hint, capsys) -> None:
    @cli_entry
    def main() -> None:
        raise OSError(code, os.strerror(code), "/exp/sota/run/log.txt")

    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: /exp/sota/run/log.txt: ") and hint in err[0]


def test_checkpoints_record_the_door_and_other_doors_refuse_them(tmp_path, monkeypatch) -> None:
    import dataclasses

    from shared.cli.config import config_from_args
    from shared.cli.resume import load_resumed

    @dataclasses.dataclass
    class Config:
        seed: int = 0
        extra: dict = dataclasses.field(default_factory=dict)

    @cli_entry
    def main() -> None:  # a door: its config records it, and so its checkpoint
        cfg = config_from_args(Config, argparse.Namespace(seed=3, resume=None))
        save_checkpoint({"epoch": 1, "config": dataclasses.asdict(cfg)},
                        str(tmp_path / "checkpoint.pth.tar"))

    main()
    written = torch.load(tmp_path / "checkpoint.pth.tar", weights_only=True)
    assert written["config"]["extra"]["door"] == "tests/test_run_folders.py"
    monkeypatch.setattr(door_module, "_door", "sdarts/sota/rnn/train_search.py")
    with pytest.raises(UserError, match="was written by tests/test_run_folders.py, not by "
                                        "sdarts/sota/rnn/train_search.py"):
        load_resumed(argparse.Namespace(resume=str(tmp_path)), set(),
                     str(tmp_path / "checkpoint.pth.tar"))


class _Payload:
    """Unpickled in full, this would run ``command`` (the hostile NAS-Bench-201 file)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.slow
def test_a_crafted_benchmark_file_runs_nothing_and_leaves_nothing(tmp_path) -> None:
    marker, payload = tmp_path / "ran", tmp_path / "NAS-Bench-201-v1_0-e61699.pth"
    torch.save({"meta_archs": _Payload(f"touch {marker}")}, payload)
    exp = tmp_path / "exp"
    out = door(os.path.join(ROOT, "darts_pt", "nasbench201"),
               ["--dataset", "digits", "--method", "darts", "--epochs", "1", "--init_channels",
                "4", "--batch_size", "256", "--no_progress", "--api_path", str(payload)], exp)
    refused(out, "holds the Python object posix.system, which is never unpickled")
    assert not marker.exists()
    assert not exp.exists() or tree(exp) == {}
