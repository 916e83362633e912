import os
import sys

# One thread per test process (and its subprocesses): on a busy 2-core machine OpenMP threads
# spin against each other and a tiny step takes seconds instead of milliseconds.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def door_env() -> dict:
    """Environment for running a door script as a subprocess from its own folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_door_here(door_dir: str, script: str, args: list[str], run=None):
    """``cd door_dir && python script args``, run in this process: the script's ``__main__``
    through runpy, its stdout, stderr and exit status captured as ``subprocess.run`` returns
    them. A new Python process first spends ~5 s importing torch, TorchDynamo (torch.optim's
    first optimiser imports it) and matplotlib, which this process has already done: the tests
    that only read a door's outputs run it here, and each door keeps tests that run it as a
    process (killed, resumed, under torchrun). ``run``: what to call in place of running
    ``script`` (``run_module_here``)."""
    import contextlib
    import io
    import runpy
    import subprocess
    import traceback

    out, err, code = io.StringIO(), io.StringIO(), 0
    cwd, argv, path = os.getcwd(), sys.argv, list(sys.path)
    try:
        os.chdir(door_dir)
        sys.argv = [script, *map(str, args)]
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python script` does
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if run is None:
                    runpy.run_path(script, run_name="__main__")
                else:
                    run()
            except SystemExit as exit_:
                if isinstance(exit_.code, int) or exit_.code is None:
                    code = exit_.code or 0
                else:  # sys.exit("message"): the message on stderr, status 1
                    print(exit_.code, file=sys.stderr)
                    code = 1
            except BaseException:  # noqa: BLE001 - a traceback, as the process would print
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(cwd)
        sys.argv = argv
        sys.path[:] = path
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def run_module_here(module: str, args: list[str]):
    """``python -m module args`` as ``run_door_here`` runs a script: in this process, through
    runpy, from the repository root; the interpreter's start is most of a command line's cost
    where it refuses its input or answers from a file."""
    import runpy

    return run_door_here(ROOT, module, args,
                         run=lambda: runpy.run_module(module, run_name="__main__", alter_sys=True))


def wait_for_checkpoint_epoch(path: str, epoch: int, proc, timeout: float = 600,
                              poll: float = 0.1) -> None:
    """Block until the checkpoint at ``path`` has reached ``epoch`` (the run a test is about to
    kill); fails when ``proc`` ended first or nothing came in time."""
    import time

    start = time.time()
    while time.time() - start < timeout:
        if os.path.exists(path):
            try:
                if torch.load(path, weights_only=True)["epoch"] >= epoch:
                    return
            except Exception:  # noqa: BLE001 - caught mid-replace; poll again
                pass
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(poll)
    raise AssertionError(f"no checkpoint of epoch {epoch} in {timeout} s: {path}")


def search_runs(root, prefix: str = "search-") -> list[str]:
    """Every ``search-*`` (or ``{prefix}*``) run folder under ``root``."""
    return [os.path.join(dp, d) for dp, dirs, _ in os.walk(root) for d in dirs
            if d.startswith(prefix)]


class FakeDigraph:
    """Records what plot_genotype asks graphviz to draw; render writes a PNG."""

    made: list["FakeDigraph"] = []

    def __init__(self, **kwargs):
        self.kwargs, self.body, self.nodes, self.edges = kwargs, [], [], []
        FakeDigraph.made.append(self)

    def node(self, name, **attrs):
        self.nodes.append(name)

    def edge(self, u, v, label=None, **attrs):
        self.edges.append((u, v, label))

    def render(self, filename, cleanup=False, **kwargs):
        out = f"{filename}.png"
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(1, 1))
        fig.savefig(out)
        plt.close(fig)
        return out


def wait_for_run(root, proc, timeout: float = 300, prefix: str = "search-") -> str:
    """The one ``{prefix}*`` folder a just-started door (``proc``) creates under ``root``."""
    import time

    start = time.time()
    while time.time() - start < timeout:
        found = search_runs(root, prefix)
        if found:
            return found[0]
        assert proc.poll() is None, "the run ended before its folder appeared"
        time.sleep(0.1)
    raise AssertionError(f"no run folder under {root} in {timeout} s")


# What a door imports before its first step (torch, TorchDynamo through torch.optim, matplotlib,
# the search and training engines): ~7 s of CPU in a new interpreter. The processes a test
# kills, and the ranks of ``run_ranks``, are forked from a server that imported these once
# (multiprocessing's forkserver: a single-threaded process, so a fork is safe), so each starts
# where a new ``python`` would be after its imports.
PRELOAD = ["pytest", "torch", "torch._dynamo", "matplotlib.pyplot", "shared.plots",
           "shared.logs", "shared.search.cnn_search", "shared.search.rnn_search",
           "shared.rnn_evaluation", "shared.evaluation.run", "tests.conftest"]


def _forkserver():
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _door_child(door_dir: str, script: str, argv: list[str], env: dict, log: str,
                nth: int) -> None:
    """``cd door_dir && python script argv`` in a forked process with the environment ``env``
    (the starting test's, not the server's), its output in ``log``; with ``nth`` > 0, its
    ``nth`` ``torch.save`` writes a few bytes and SIGKILLs the process."""
    import runpy
    import signal

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.clear()
    os.environ.update(env)
    if nth > 0:
        real, calls = torch.save, []

        def save(obj, f, *a, **k):
            calls.append(f)
            if len(calls) == nth:
                with open(f, "wb") as half:
                    half.write(b"PK half a checkpoint")
                os.kill(os.getpid(), signal.SIGKILL)
            return real(obj, f, *a, **k)
        torch.save = save
    os.chdir(door_dir)
    sys.argv = [script, *map(str, argv)]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python script` does
    runpy.run_path(script, run_name="__main__")


class DoorProcess:
    """A door started as a process forked from the preloaded server (``PRELOAD``), with the
    part of ``subprocess.Popen`` the kill helpers use: ``pid``, ``poll``, ``send_signal``,
    ``wait``."""

    def __init__(self, door_dir: str, script: str, argv: list[str], nth: int = 0,
                 env: dict | None = None) -> None:
        import tempfile
        import weakref

        self.log = tempfile.NamedTemporaryFile(prefix="door-", suffix=".log", delete=False).name
        weakref.finalize(self, os.unlink, self.log)  # the output lives as long as the object
        env = door_env() if env is None else env
        self.proc = _forkserver().Process(target=_door_child, args=(
            door_dir, script, list(argv), env, self.log, nth))
        self.proc.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return None if self.proc.is_alive() else self.proc.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        self.proc.join(timeout)
        return self.proc.exitcode

    def output(self) -> str:
        with open(self.log) as f:
            return f.read()


def kill_search_after_epoch(door_dir: str, args: list[str], root, epoch: int = 1,
                            script: str = "train_search.py", prefix: str = "search-") -> str:
    """Start ``python SCRIPT ARGS --experiments ROOT`` in ``door_dir`` (``DoorProcess``),
    SIGKILL it once its checkpoint has reached ``epoch``, and return the run folder
    (``{prefix}*``) it left (to ``--resume``)."""
    import signal

    proc = DoorProcess(door_dir, script, [*args, "--experiments", str(root)])
    try:
        run = wait_for_run(root, proc, prefix=prefix)
        wait_for_checkpoint_epoch(os.path.join(run, "checkpoint.pth.tar"), epoch, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    return run


def kill_inside_checkpoint_write(door_dir: str, args: list[str], root, nth: int = 2,
                                 script: str = "train_search.py",
                                 root_flag: str = "--experiments", prefix: str = "search-"
                                 ) -> str:
    """Run ``python SCRIPT ARGS --experiments ROOT`` (``root_flag``) in ``door_dir``
    (``DoorProcess``) with its ``nth`` ``torch.save`` cut half-way (a few bytes written) by a
    SIGKILL; returns the run folder (``{prefix}*``) it left, holding the temp file of the
    interrupted write."""
    proc = DoorProcess(door_dir, script, [*args, root_flag, str(root)], nth=nth)
    assert proc.wait(600) == -9, proc.output()[-2000:]
    runs = search_runs(root, prefix)
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture
def no_open_figures():
    """Fails a test whose plot function left a matplotlib figure open (use per module with
    ``pytestmark = pytest.mark.usefixtures("no_open_figures")``)."""
    import matplotlib.pyplot as plt

    yield
    assert plt.get_fignums() == [], "a plot function left a figure open"


@pytest.fixture
def no_graphviz(monkeypatch):
    """Plots as on a machine without graphviz (the matplotlib fallback). The cell modules look
    ``_graphviz_available`` up in ``shared.plots.dot`` at call time, so that is where it is
    patched."""
    from shared.plots import dot

    monkeypatch.setattr(dot, "_graphviz_available", lambda: False)


def perturb(perturbation, model, weights, x, y, epoch: int = 0):
    """Apply a perturbation moment (``perturbation(ctx)``) outside a loop, as the loop does."""
    from shared.search.context import StepContext

    ctx = StepContext(loop=None, model=model, epoch=epoch, step=0, lr=0.0, x=x, y=y,
                      weights=tuple(weights))
    return perturbation(ctx)


def assert_lambda_run(run: str, log_lines: tuple[str, ...], lambdas: list[float],
                      plots: bool = True) -> str:
    """What every Λ-DARTS search leaves (2+ epochs): the log lines, λ per epoch and
    train_corr/valid_corr in [-1, 1] in history.json, and correlation.png (``plots``: a run
    without ``--no_plots``); returns the log."""
    import json

    log = open(os.path.join(run, "log.txt")).read()
    for line in ("train_corr ", " valid_corr ", *log_lines):
        assert line in log, line
    history = json.load(open(os.path.join(run, "history.json")))
    assert [h["lambda"] for h in history] == lambdas
    assert all(-1 <= h[k] <= 1 for h in history for k in ("train_corr", "valid_corr"))
    if plots:
        with open(os.path.join(run, "correlation.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    else:
        assert not os.path.exists(os.path.join(run, "correlation.png"))
    return log


def run_ranks(work, tmp, world: int = 2) -> list:
    """``work(dp, folder)`` in ``world`` processes joined in a gloo group (``dp`` the process's
    ``DataParallel``, ``folder`` = ``tmp``, one thread each); every rank's result, in rank
    order. ``work`` is a module-level function (the forkserver pickles it by name)."""
    out, init = str(tmp / "ranks.pt"), str(tmp / "init")
    ctx = _forkserver()  # forked from the preloaded server: no new interpreter per rank
    procs = [ctx.Process(target=_rank, args=(work, r, world, init, out)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return torch.load(out, weights_only=True)


def _rank(work, rank: int, world: int, init: str, out: str) -> None:
    """One rank of ``run_ranks``: rank 0 saves every rank's result to ``out``."""
    import torch
    import torch.distributed as dist

    from shared.search.data_parallel import DataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        result = work(DataParallel(rank=rank, world_size=world), os.path.dirname(out))
        ranks: list = [None] * world
        dist.all_gather_object(ranks, result)
        if rank == 0:
            torch.save(ranks, out)
    finally:
        dist.destroy_process_group()
