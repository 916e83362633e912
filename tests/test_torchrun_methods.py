"""The method doors under torchrun, beyond SDARTS' DARTS-space search
(tests/test_torchrun_search.py): DARTS-PT's projection, SDARTS on NAS-Bench-1Shot1 (its
Hessian monitor) and StacNAS' run_all.py, each data-parallel with rank 0 writing, and the
one-process tools refused (the recurrent doors: tests/test_torchrun_rnn.py). That N ranks
compute what one process does is the float64 tests' (tests/test_data_parallel_search.py,
tests/test_data_parallel_projection.py); here the doors run it."""
import os
import subprocess

import pytest
import torch

from darts_pt.projection import projection_schedule
from tests.conftest import ROOT, run_door_here, search_runs
from tests.test_torchrun_search import TORCHRUN, _env, _history

DARTS_PT = os.path.join(ROOT, "darts_pt", "sota", "cnn")
PT_TINY = ["--dataset", "digits", "--layers", "3", "--init_channels", "4", "--batch_size", "64",
           "--gpu", "-1", "--no_progress", "--no_plots", "--fast", "--search_space", "s2",
           "--data_on_device"]
PT_PROJ = [*PT_TINY, "--method", "darts-proj", "--dev", "proj", "--resume_epoch", "1",
           "--resume_expid", "search-darts-sota-s2-2", "--proj_intv", "1"]


def _scores(log: str, event: str, last: bool) -> list[str]:
    """The numbers of a projection event in a log (its first or last ``project {event}``):
    the picked edge or node, then one accuracy and one loss per masked candidate."""
    parts = log.split(f" project {event}")
    lines = (parts[-1] if last else parts[1]).split("best opid")[0].split("top2 edges")[0]
    return [ln.split()[-1] for ln in lines.splitlines()
            if " valid_" in ln or " selected " in ln]


@pytest.mark.slow
def test_darts_pt_projects_data_parallel(tmp_path) -> None:
    """DARTS-PT under torchrun: a projection one process began (the data on the device too),
    restarted by 2 ranks from its checkpoint before the last event (``--dev_resume_epoch``),
    scores that event's masked supernets as the one process did, each rank its shard of every
    scoring pass (``darts_pt.tuning``), to float32 rounding; rank 0 writes the folder."""
    exp = str(tmp_path)
    out = run_door_here(DARTS_PT, "train_search.py", [
        *PT_TINY, "--method", "darts", "--epochs", "1", "--ckpt_interval", "1", "--save",
        "darts-sota", "--experiments", exp])
    assert out.returncode == 0, out.stderr[-2000:]
    one = run_door_here(DARTS_PT, "train_search.py", [*PT_PROJ, "--experiments", exp])
    assert one.returncode == 0, one.stderr[-2000:]
    last = projection_schedule(14, 3, 1)[0] - 1  # s2's DARTS cell: 14 edges, 3 nodes to decide
    name = "log_resume-1{}_dev-proj_intv-1_ED-random_PCN-acc_PCR-acc_seed-2"
    two = subprocess.run([*TORCHRUN, "train_search.py", *PT_PROJ, "--experiments", exp,
                          "--dev_resume_epoch", str(last), "--dev_resume_log", name.format("")],
                         cwd=DARTS_PT, env=_env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    supernet = os.path.join(exp, "sota", "digits", "search-darts-sota-s2-2")
    logs = [open(os.path.join(supernet, name.format(tag) + ".txt")).read()
            for tag in ("", f"_dev-resume-{last}")]
    assert "data-parallel search: 2 processes, batch 64 = 32 per process" in logs[1]
    assert "resumed with 2 process(es), saved with 1" in logs[1]
    ones, twos = _scores(logs[0], "edge", last=True), _scores(logs[1], "edge", last=False)
    assert len(ones) >= 1 + 2 * 3 and len(ones) == len(twos)  # a node: 3+ inputs masked
    assert ones[0] == twos[0]  # the same node
    for a, b in zip(ones[1:], twos[1:]):
        assert float(a) == pytest.approx(float(b), rel=1e-5)
    folder = os.path.join(supernet, name.format(f"_dev-resume-{last}"))
    assert os.path.isfile(os.path.join(folder, "genotype.json"))
    saved = torch.load(os.path.join(folder, "checkpoint.pth.tar"), weights_only=True)
    assert saved["world_size"] == 2 and saved["extra"]["projection"]["selected_eids"]["normal"]
    assert sum(ln.startswith("genotype = ") for ln in two.stdout.splitlines()) == 1


def two_ranks_and_one(door: str, common: list[str], tmp_path, *, one_extra: tuple = (),
                      prefix: str = "search-", line: str = "genotype = ") -> tuple[str, str]:
    """``common`` under torchrun with 2 ranks, then as one process (in this process, with
    ``one_extra``): (the 2-rank run folder, the 1-process one). One folder each, and the door's
    ``line`` printed once (rank 0's)."""
    two = subprocess.run([*TORCHRUN, *common, "--experiments", str(tmp_path / "two")],
                         cwd=door, env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert sum(ln.startswith(line) for ln in two.stdout.splitlines()) == 1
    one = run_door_here(door, common[0], [*common[1:], *one_extra, "--experiments",
                                          str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    (run,) = search_runs(tmp_path / "two", prefix=prefix)
    (single,) = search_runs(tmp_path / "one", prefix=prefix)
    return run, single


@pytest.mark.slow
def test_nb1shot1_searches_data_parallel(tmp_path) -> None:
    """SDARTS' NAS-Bench-1Shot1 door under torchrun: one run folder from rank 0, and the Hessian
    monitor's eigenvalue of one process on the whole batch (every rank computes it on the
    gathered global batch: ``shared.search.hessian``). The epoch is a warm-start one (weights
    only): Adam's first α steps are about ±lr whatever the gradient's size, so float32 rounding
    would move an α of gradient ~0 either way (exactness is the float64 test's,
    tests/test_data_parallel_search.py)."""
    common = ["train_search.py", "--dataset", "digits", "--gpu", "-1", "--layers", "3",
              "--init_channels", "4", "--batch_size", "256", "--epochs", "1", "--no_progress",
              "--no_plots", "--search_space", "2", "--warm_start_epochs", "1"]
    run, single = two_ranks_and_one(os.path.join(ROOT, "sdarts", "optimizers", "darts"),
                                    common, tmp_path, one_extra=("--data_on_device",),
                                    line="architecture = ")
    assert "data-parallel search: 2 processes" in open(os.path.join(run, "log.txt")).read()
    assert os.path.isfile(os.path.join(run, "config.json"))
    eigenvalues = [_history(r)[0]["hessian_eigenvalue"] for r in (single, run)]
    # the weights the epoch left round otherwise on the ranks, and the eigenvalue of the float32
    # Hessian moves more than they do: measured rel. 2.8e-5 apart with ATen's scalar kernels
    # (ATEN_CPU_CAPABILITY=default), under 1e-5 with AVX2's and AVX-512's
    assert eigenvalues[0] > 0 and eigenvalues[0] == pytest.approx(eigenvalues[1], rel=1e-4)


STACNAS = os.path.join(ROOT, "stacnas")
RUN_ALL = ["run_all.py", "--dataset", "digits", "--gpu", "-1", "--num_workers", "0",
           "--num_cells_search1", "3", "--num_cells_search2", "3", "--num_cells_augment", "3",
           "--init_channels_search", "4", "--init_channels_augment", "4",
           "--batch_size_search", "256", "--batch_size_augment", "256", "--epochs_search", "1",
           "--epochs_augment", "1", "--aux_weight", "0", "--cutout_length", "0",
           "--no_progress", "--no_plots"]


@pytest.mark.slow
def test_stacnas_run_all_runs_every_stage_data_parallel(tmp_path) -> None:
    """StacNAS' run_all.py under torchrun: both searches and augment data-parallel in one
    process group, each stage reading what rank 0 wrote at the end of the one before, and
    every line of the run once (rank 0's). Stage 1 as one process with the whole batch takes
    the same first step (later steps differ by float32 rounding only: see
    tests/test_data_parallel_search.py's one-level case)."""
    out = subprocess.run([*TORCHRUN, *RUN_ALL, "--save_dir", str(tmp_path / "dp")],
                         cwd=STACNAS, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "dp")) == ["augment", "search1", "search2"]
    for stage in ("search1", "search2"):
        log = open(tmp_path / "dp" / stage / "log.txt").read()
        assert "data-parallel search: 2 processes, batch 256 = 128 per process" in log, stage
    assert "processes = 2" in open(tmp_path / "dp" / "augment" / "log.txt").read()
    assert (tmp_path / "dp" / "augment" / "weights.pt").is_file()
    lines = out.stdout.splitlines()
    commands = [ln for ln in lines if ln.startswith("== ")]
    assert [ln.split(":")[0] for ln in commands] == ["== search1", "== search2", "== augment"]
    assert sum(ln.startswith("genotype = ") for ln in lines) == 2  # one per search stage

    argv = commands[0].split(": search.py ", 1)[1].split()
    argv[argv.index("--save_dir") + 1] = str(tmp_path / "one")
    one = run_door_here(STACNAS, "search.py", [*argv, "--data_on_device"])
    assert one.returncode == 0, one.stderr[-2000:]

    def first_step(run: str) -> list[float]:
        """The first training line's loss, top-1 and top-5 (``train 000 %e %f %f``)."""
        log = open(tmp_path / run / "search1" / "log.txt").read()
        return next(list(map(float, line.split(" train 000 ")[1].split()))
                    for line in log.splitlines() if " train 000 " in line)

    # the same batch and weights: the loss to float32 rounding (the ranks' shard means
    # averaged, against one mean: printed to 7 digits, a last digit may differ), the same
    # predictions
    (loss, *accs), (loss_one, *accs_one) = first_step("dp"), first_step("one")
    assert loss == pytest.approx(loss_one, rel=1e-5) and accs == accs_one


def test_run_all_refuses_its_one_process_stages_under_torchrun(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = run_door_here(STACNAS, RUN_ALL[0], [*RUN_ALL[1:], "--feature", "--save_dir",
                                              str(tmp_path / "runs")])
    assert out.returncode != 0 and "--feature and --test run as one process" in out.stderr
    assert not (tmp_path / "runs").exists()
    for door in ("feature.py", "test.py"):
        out = run_door_here(STACNAS, door, ["--name", "x", "--save_dir", str(tmp_path / "runs")])
        assert out.returncode != 0
        assert "started as 2 processes" in out.stderr, out.stderr
