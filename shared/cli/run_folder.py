"""A run's folder: inside ``--experiments``, created by exactly one process, written by one
process at a time, and gone again when the run could not even start.

* **Inside the root.** The folder's path is resolved (``..``, absolute parts, symlinks) and must
  lie under ``--experiments`` (``inside``): ``--save "x/../../victim"`` is refused, not written.
* **Created once.** ``os.mkdir`` (never ``exist_ok``): two runs started in the same second with
  the same settings cannot share a folder. Names with a timestamp get ``-2``, ``-3`` ... when
  the name is taken (``unique``); fixed names (DARTS-PT's) refuse an existing folder.
* **One writer.** A run holds ``run.lock`` (``fcntl.flock``, exclusive, non-blocking) for as long
  as it runs, resumed runs too; a second process is refused with the holder's PID. The kernel
  drops the lock when its process dies (kill -9 included), so a lock is never stale: a killed
  run's folder can be resumed at once.
* **Nothing left by a failed start.** A new folder that holds no checkpoint when the run stops
  on a user error (a refused flag, a missing data set, a full disk) is removed, with the parent
  folders this run created, so a failed start leaves no trace. Only a folder this process
  created is ever removed; an existing folder is never deleted.
* **No half-written files.** Files are written to ``NAME.tmp[.PID]`` and renamed; a kill leaves
  such temp files behind, and the next run that takes the lock removes them (nobody else can be
  writing them then).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from typing import Iterator

from shared.errors import UserError

LOCK = "run.lock"
# Files every long run writes when it has something to resume from.
RESUMABLE = ("checkpoint.pth.tar", "model.pt")
_TEMP = re.compile(r"\.tmp(\.\d+)?$")


def inside(path: str, root: str, what: str = "the run folder") -> str:
    """``path`` if it resolves (symlinks and ``..`` followed) to a place under ``root``."""
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise UserError(f"{what} {path} resolves to {real}, outside --experiments {real_root}: "
                        "names may not contain '..', absolute paths or links that lead out")
    return path


class RunLock:
    """An exclusive ``flock`` on ``folder/run.lock`` holding the owner's PID."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, LOCK)
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise UserError(f"{os.path.dirname(self.path)} is in use by process {holder} "
                                "(a run or a --resume of it); wait until it ends or stop it, "
                                "then resume") from None
            # The previous holder unlinks the file on release: if it did so between our open
            # and our flock, we hold a lock on a dead file; take the new one instead.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)  # closing drops the flock
        self.fd = None


def holder(folder: str) -> str | None:
    """The PID of the process running in ``folder`` (holding its lock), or None."""
    try:
        fd = os.open(os.path.join(folder, LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 32).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return None


def remove_temp_files(folder: str) -> list[str]:
    """Delete ``*.tmp`` / ``*.tmp.PID`` files a killed or failed writer left in ``folder`` (not
    below it: a DARTS-PT projection folder inside a supernet folder is another run's).
    Call with the folder's lock held."""
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if _TEMP.search(name) and os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed


def _missing_ancestors(path: str) -> list[str]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    missing, parent = [], os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return missing


def create(path: str, root: str | None, *, unique: bool, taken: str = "") -> tuple[str, list[str]]:
    """Make the new run folder (``-2``, ``-3`` ... appended when ``unique`` and the name is
    taken; else ``taken``'s refusal); returns it and the parent folders it had to create."""
    if root is not None:
        inside(path, root)
    made = _missing_ancestors(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if root is not None:  # a symlink met on the way resolves only now
            inside(path, root)
    except (OSError, UserError):
        _remove_empty(made)
        raise
    candidate, n = path, 1
    while True:
        try:
            os.mkdir(candidate)
            return candidate, made
        except FileExistsError:
            if not unique:
                _remove_empty(made)
                raise UserError(taken or f"run folder {candidate} already exists: continue it "
                                "with --resume, or start another run with a different --save "
                                "or --seed") from None
            n += 1
            candidate = f"{path}-{n}"
        except OSError:  # a name too long, a full disk: no parent folder left behind
            _remove_empty(made)
            raise


def _remove_empty(folders: list[str]) -> None:
    for folder in folders:  # deepest first; one another run writes to is not empty
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def has_checkpoint(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, name)) for name in RESUMABLE)


def main_process() -> bool:
    """Whether this process is rank 0 of a torchrun launch, or not launched by torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def claim_run(path: str, *, root: str | None, new: bool, unique: bool = True,
              taken: str = "", data_parallel: bool = False, what: str = "search"
              ) -> Iterator[str]:
    """Own the run folder for the ``with`` block (see the module docstring): a new one is
    created (inside ``root``), an existing one (``new=False``, a resume) must exist. Yields
    the folder (a new one may have a ``-N`` suffix).

    Under ``torchrun`` only rank 0 owns it: the other ranks write no file, and the engine
    hands them rank 0's folder name (``shared.distributed.broadcast_object``). A run that is
    not ``data_parallel`` (every search) refuses more than one process here, on every rank,
    before rank 0 makes a folder another rank's failure could leave behind."""
    if not data_parallel:
        from shared.distributed import refuse_more_processes

        refuse_more_processes(what)
    if not main_process():
        yield path
        return
    made: list[str] = []
    if new:
        folder, made = create(path, root, unique=unique, taken=taken)
    else:
        if not os.path.isdir(path):
            raise UserError(f"run folder {path} does not exist")
        folder = path
    lock = RunLock(folder)
    try:
        lock.acquire()
    except UserError:
        if new:
            _discard(folder, made)
        raise
    remove_temp_files(folder)
    try:
        yield folder
    except (UserError, OSError):
        if new and not has_checkpoint(folder):
            lock.release()
            _discard(folder, made)
        raise
    finally:
        lock.release()


def _discard(folder: str, made: list[str]) -> None:
    """Remove a new run folder this process created and that holds nothing to resume."""
    shutil.rmtree(folder, ignore_errors=True)
    _remove_empty(made)
