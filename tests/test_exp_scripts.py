"""Tests for DARTS-PT's 13 launch scripts ``exp_scripts/*.sh`` (on ``exp_scripts/_args.sh``).

* Dry runs (``EXP_DRY_RUN=1``) of all 13 from the repository root, from ``exp_scripts/`` and
  from elsewhere: the door, its folder and the exact flags, in the original's order, with the
  original's defaults (darts-pt ``exp_scripts/*.sh``) and the fixes listed in
  ``exp_scripts/README.md``; each proj script's default ``--resume_expid`` is the folder its
  search script makes (computed by the door's own naming function); bad arguments stop a script
  with exit 2 before anything runs.
* End to end on the embedded digits, CPU, tiny: ``darts-sota.sh`` -> ``darts-proj-sota.sh`` ->
  ``eval.sh`` (a genotype.json found by the projection, trained); ``blank-sota.sh`` ->
  ``blank-proj-sota.sh`` (stopped after its first projection: the full 17-epoch projection is
  the darts pipeline's); ``darts-201.sh`` -> ``darts-proj-201.sh``.
  The darts projection (s2, ``--proj_intv 1 --fast 1``: 17 tuning epochs) is most of the time.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "exp_scripts"
SOTA, NB201 = "darts_pt/sota/cnn", "darts_pt/nasbench201"

SOTA_SEARCH = ["--search_space", "s5", "--dataset", "cifar10", "--seed", "2"]
SOTA_PROJ = ["--dev", "proj", "--edge_decision", "random", "--proj_crit_normal", "acc",
             "--proj_crit_reduce", "acc", "--proj_crit_edge", "acc", "--proj_intv", "5"]


def _sota_proj(method: list[str], script: str, expid: str) -> list[str]:
    return [*method, *SOTA_SEARCH, "--save", script, "--gpu", "auto", "--resume_epoch", "50",
            "--resume_expid", expid, *SOTA_PROJ]


def _nb201_proj(method: str, script: str, expid: str) -> list[str]:
    return ["--method", method, "--dataset", "cifar10", "--save", script, "--gpu", "auto",
            "--seed", "0", "--resume_epoch", "100", "--resume_expid", expid, "--dev", "proj",
            "--edge_decision", "random", "--proj_crit", "acc", "--proj_intv", "5"]


# script -> (door folder, door script, the exact arguments with no option given)
EXPECTED: dict[str, tuple[str, str, list[str]]] = {
    "darts-201": (NB201, "train_search.py", ["--method", "darts", "--dataset", "cifar10",
                                             "--save", "darts-201", "--gpu", "auto",
                                             "--seed", "0"]),
    "blank-201": (NB201, "train_search.py", ["--method", "blank", "--dataset", "cifar10",
                                             "--save", "blank-201", "--gpu", "auto",
                                             "--seed", "0"]),
    # fix: the resume id matches the folder of the search script's default seed 0 (was -1)
    "darts-proj-201": (NB201, "train_search.py",
                       _nb201_proj("darts-proj", "darts-proj-201", "search-darts-201-0")),
    "blank-proj-201": (NB201, "train_search.py",
                       _nb201_proj("blank-proj", "blank-proj-201", "search-blank-201-0")),
    "darts-sota": (SOTA, "train_search.py", ["--method", "darts", *SOTA_SEARCH,
                                             "--save", "darts-sota", "--gpu", "auto"]),
    "blank-sota": (SOTA, "train_search.py", ["--method", "blank", *SOTA_SEARCH,
                                             "--save", "blank-sota", "--gpu", "auto"]),
    # fix: no active --expid_tag debug
    "sdarts-rs-sota": (SOTA, "train_search.py",
                       ["--method", "sdarts", "--perturb_alpha", "random", *SOTA_SEARCH,
                        "--save", "sdarts-rs-sota", "--gpu", "auto"]),
    "darts-proj-sota": (SOTA, "train_search.py",
                        _sota_proj(["--method", "darts-proj"], "darts-proj-sota",
                                   "search-darts-sota-s5-2")),
    # fix: --method blank-proj --dev proj (was blank-next / next)
    "blank-proj-sota": (SOTA, "train_search.py",
                        _sota_proj(["--method", "blank-proj"], "blank-proj-sota",
                                   "search-blank-sota-s5-2")),
    # fix: no active --fast
    "sdarts-rs-proj-sota": (SOTA, "train_search.py",
                            _sota_proj(["--method", "sdarts-proj", "--perturb_alpha", "random"],
                                       "sdarts-rs-proj-sota", "search-sdarts-rs-sota-s5-2")),
    "eval": (SOTA, "train.py", ["--arch", "ARCH", "--dataset", "cifar10", "--auxiliary",
                                "--cutout", "--seed", "2", "--save", "eval", "--gpu", "auto",
                                "--batch_size", "96", "--learning_rate", "0.025",
                                "--resume_expid", "none", "--resume_epoch", "0"]),
}
for _name, _dataset in (("eval-c100", "cifar100"), ("eval-svhn", "svhn")):
    _args = list(EXPECTED["eval"][2])
    _args[_args.index("cifar10")] = _dataset
    _args[_args.index("eval")] = _name
    EXPECTED[_name] = (SOTA, "train.py", [*_args, "--init_channels", "16", "--layers", "8"])
ALL = sorted(EXPECTED)
PAIRS = [("darts-201", "darts-proj-201"), ("blank-201", "blank-proj-201"),
         ("darts-sota", "darts-proj-sota"), ("blank-sota", "blank-proj-sota"),
         ("sdarts-rs-sota", "sdarts-rs-proj-sota")]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHON=sys.executable, **extra)
    if "EXP_DRY_RUN" not in extra:
        env.pop("EXP_DRY_RUN", None)
    return env


def _bash(script: str, *args: str, cwd: Path = REPO, timeout: int = 400,
          **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", script, *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def _dry(name: str, *args: str, where: str = "root", tmp: Path | None = None
         ) -> tuple[str, list[str]]:
    """(door folder, [door script, *arguments]) that ``name``.sh would run, started from the
    repository root, from exp_scripts/ or from ``tmp``."""
    if name.startswith("eval") and "--arch" not in args:
        args = ("--arch", "ARCH", *args)
    if where == "root":
        proc = _bash(f"exp_scripts/{name}.sh", *args, EXP_DRY_RUN="1")
    elif where == "exp_scripts":
        proc = _bash(f"{name}.sh", *args, cwd=SCRIPTS, EXP_DRY_RUN="1")
    else:
        proc = _bash(str(SCRIPTS / f"{name}.sh"), *args, cwd=tmp, EXP_DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    assert f"id: {name}" in proc.stdout  # the original's echo lines come first
    line = proc.stdout.splitlines()[-1]
    assert line.startswith("+ (cd ") and line.endswith(")"), line
    folder, command = line[len("+ (cd "):-1].split(" && ", 1)
    argv = shlex.split(command)
    assert argv[0] == sys.executable  # $PYTHON
    return folder, argv[1:]


# -- dry runs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_defaults_from_anywhere(name: str, tmp_path: Path) -> None:
    folder, script, args = EXPECTED[name]
    for where in ("root", "exp_scripts", "tmp"):
        assert _dry(name, where=where, tmp=tmp_path) == (folder, [script, *args]), where
    assert (REPO / folder / script).is_file()


def test_the_original_breakages_are_gone() -> None:
    flat = {name: " ".join(_dry(name)[1]) for name in ALL}
    assert "blank-next" not in flat["blank-proj-sota"] and "--dev next" not in flat[
        "blank-proj-sota"]
    assert "--expid_tag" not in flat["sdarts-rs-sota"]
    assert "--fast" not in flat["sdarts-rs-proj-sota"]
    for name, cmd in flat.items():
        if "--dev proj" in cmd:
            assert "--edge_decision random" in cmd, name  # the sota door's default was 'sgas'
        assert "-201-1" not in cmd, name


@pytest.mark.parametrize("search,proj", PAIRS)
def test_proj_default_resume_expid_is_the_search_folder(search: str, proj: str) -> None:
    """The folder the search script makes with its defaults, named by the door itself."""
    if search.endswith("-201"):
        _dry(search)  # skips while the NB201 door is not there
        from darts_pt.nasbench201 import train_search as door
    else:
        from darts_pt.sota.cnn import train_search as door
    folder = door.supernet_name(door.build_parser().parse_args(_dry(search)[1][1:]))
    proj_args = _dry(proj)[1]
    assert proj_args[proj_args.index("--resume_expid") + 1] == folder
    # the same through the door's own parser for the projection: nothing the door rejects
    parsed = door.build_parser().parse_args(proj_args[1:])
    assert parsed.resume_expid == folder and parsed.dev == "proj"
    assert parsed.method == door.build_parser().parse_args(_dry(search)[1][1:]).method + "-proj"


def test_original_names_and_additions_reach_the_door() -> None:
    _, args = _dry("darts-proj-sota", "--seed", "1", "--space", "s3", "--dataset", "cifar100",
                   "--resume_expid", "search-darts-sota-s3-1", "--resume_epoch", "40",
                   "--gpu", "0", "--crit", "loss")
    cmd = " ".join(args)
    for part in ("--search_space s3 --dataset cifar100 --seed 1", "--gpu 0",
                 "--resume_epoch 40 --resume_expid search-darts-sota-s3-1",
                 "--proj_crit_normal loss --proj_crit_reduce loss --proj_crit_edge loss"):
        assert part in cmd, part
    extra = ["--epochs", "2", "--init_channels", "4", "--layers", "3", "--batch_size", "8",
             "--data", "d", "--experiments", "e", "--num_workers", "0", "--ckpt_interval", "1",
             "--expid_tag", "t"]
    _, args = _dry("sdarts-rs-sota", *extra, "--fast", "1", "--no_progress", "1",
                   "--no_plots", "1", "--resume", "1")
    assert args[-len(extra) - 4:] == [*extra, "--fast", "--no_progress", "--no_plots",
                                      "--resume"]
    _, args = _dry("blank-proj-sota", "--proj_intv", "1", "--log_tag", "x", "--crit", "loss",
                   "--fast", "0")
    cmd = " ".join(args)
    assert "--proj_intv 1" in cmd and "--log_tag x" in cmd and "--fast" not in cmd
    assert "--proj_crit_edge loss" in cmd
    _, args = _dry("blank-proj-201", "--api_path", "a.pth", "--crit", "loss", "--seed", "1",
                   "--resume_expid", "search-blank-201-1", "--epochs", "3")
    cmd = " ".join(args)
    for part in ("--proj_crit loss", "--api_path a.pth", "--seed 1", "--epochs 3",
                 "--resume_expid search-blank-201-1"):
        assert part in cmd, part


@pytest.mark.parametrize("name", ALL)
def test_bad_arguments_stop_before_running(name: str) -> None:
    proc = _bash(f"exp_scripts/{name}.sh", "--foo", "1", EXP_DRY_RUN="1")
    assert proc.returncode == 2
    assert f"{name}: error: unknown option --foo" in proc.stderr and "--seed" in proc.stderr
    assert "+ (cd" not in proc.stdout  # nothing was started
    assert "Traceback" not in proc.stderr


def test_other_bad_arguments() -> None:
    for name in ("darts-201", "blank-proj-201"):  # the original ignored --space here
        proc = _bash(f"exp_scripts/{name}.sh", "--space", "s3", EXP_DRY_RUN="1")
        assert proc.returncode == 2 and "unknown option --space" in proc.stderr
    proc = _bash("exp_scripts/darts-201.sh", "--layers", "3", EXP_DRY_RUN="1")
    assert proc.returncode == 2  # NB201 has no --layers
    proc = _bash("exp_scripts/sdarts-rs-proj-sota.sh", "--fast", "maybe", EXP_DRY_RUN="1")
    assert proc.returncode == 2 and "--fast takes 1 or 0" in proc.stderr
    proc = _bash("exp_scripts/darts-sota.sh", "--seed", EXP_DRY_RUN="1")
    assert proc.returncode == 2 and "--seed needs a value" in proc.stderr
    proc = _bash("exp_scripts/darts-proj-sota.sh", "--help")
    assert proc.returncode == 0
    assert "--resume_expid" in proc.stdout and "search-darts-sota-s5-2" in proc.stdout


# -- end to end: digits, CPU, tiny ---------------------------------------------------------------
TINY = ["--dataset", "digits", "--epochs", "1", "--init_channels", "4", "--batch_size", "64",
        "--fast", "1", "--gpu", "-1", "--no_progress", "1", "--no_plots", "1", "--num_workers",
        "0"]
TINY_SOTA = [*TINY, "--layers", "3", "--space", "s2"]  # 2 ops per edge: a cheap projection
PROJ_LOG = "log_resume-1_dev-proj_intv-1_ED-random_PCN-acc_PCR-acc_seed-2"


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def sota_darts(tmp_path_factory) -> dict[str, Path | str]:
    """darts-sota.sh (from the root) -> darts-proj-sota.sh (from exp_scripts/) -> eval.sh (from
    elsewhere): the paper's pipeline search -> proj -> eval, tiny."""
    exp = tmp_path_factory.mktemp("sota_darts")
    t0 = time.time()
    search = _ok(_bash("exp_scripts/darts-sota.sh", *TINY_SOTA, "--ckpt_interval", "1",
                       "--experiments", str(exp)))
    t1 = time.time()
    proj = _ok(_bash("darts-proj-sota.sh", *TINY_SOTA, "--resume_epoch", "1", "--resume_expid",
                     "search-darts-sota-s2-2", "--proj_intv", "1", "--experiments", str(exp),
                     cwd=SCRIPTS))
    t2 = time.time()
    supernet = exp / "sota" / "digits" / "search-darts-sota-s2-2"
    arch = supernet / PROJ_LOG / "genotype.json"
    ev = _ok(_bash(str(SCRIPTS / "eval.sh"), "--arch", str(arch), "--dataset", "digits",
                   "--epochs", "1", "--layers", "3", "--init_channels", "8", "--batch_size",
                   "64", "--gpu", "-1", "--no_progress", "1", "--num_workers", "0",
                   "--fast", "1", "--cutout_length", "4", "--experiments", str(exp),
                   cwd=tmp_path_factory.mktemp("elsewhere")))
    print(f"darts-sota {t1 - t0:.0f}s, darts-proj-sota {t2 - t1:.0f}s, "
          f"eval {time.time() - t2:.0f}s")
    return {"exp": exp, "supernet": supernet, "arch": arch, "search": search, "proj": proj,
            "eval": ev}


@pytest.mark.slow
def test_darts_sota_leaves_the_checkpoint_the_projection_loads(sota_darts) -> None:
    supernet = sota_darts["supernet"]
    assert (supernet / "checkpoint_1.pth.tar").is_file()
    log = (supernet / "log.txt").read_text()
    assert "'method': 'darts'" in log and "'save': 'darts-sota'" in log


@pytest.mark.slow
def test_darts_proj_sota_ends_with_a_genotype(sota_darts) -> None:
    from shared.genotypes import load_genotype

    last = sota_darts["proj"].strip().splitlines()[-1]
    assert last.startswith("genotype = Genotype(normal=[")
    genotype = load_genotype(str(sota_darts["arch"]))
    assert last == f"genotype = {genotype}"
    log = (sota_darts["supernet"] / f"{PROJ_LOG}.txt").read_text()
    assert "loaded supernet checkpoint" in log and "checkpoint_1.pth.tar" in log
    assert "'method': 'darts-proj'" in log and "'edge_decision': 'random'" in log
    assert log.count("project op") == 14 and "projection finished" in log


@pytest.mark.slow
def test_eval_trains_the_projected_genotype(sota_darts) -> None:
    run = sota_darts["exp"] / "sota" / "digits" / "eval" / (
        "eval-search-darts-sota-s2-2-proj-2-cutout-4-1.0-auxiliary-0.4")
    log = (run / "log.txt").read_text()
    assert str(sota_darts["arch"]) in log and "valid_acc" in log
    assert "final (last epoch 0) valid_acc" in log


@pytest.mark.slow
def test_blank_sota_then_blank_proj_sota(tmp_path: Path) -> None:
    """The fixed blank-proj-sota.sh projects the folder blank-sota.sh made, with alpha fixed."""
    exp = tmp_path / "exp"
    _ok(_bash(str(SCRIPTS / "blank-sota.sh"), *TINY_SOTA, "--ckpt_interval", "1",
              "--experiments", str(exp), cwd=tmp_path))
    supernet = exp / "sota" / "digits" / "search-blank-sota-s2-2"
    assert (supernet / "checkpoint_1.pth.tar").is_file()
    assert "'method': 'blank'" in (supernet / "log.txt").read_text()
    out = _ok(_bash("exp_scripts/blank-proj-sota.sh", *TINY_SOTA, "--resume_epoch", "1",
                    "--proj_intv", "1", "--resume_expid", "search-blank-sota-s2-2",
                    "--experiments", str(exp)))
    assert out.strip().splitlines()[-1].startswith("genotype = Genotype(normal=[")
    log = (supernet / f"{PROJ_LOG}.txt").read_text()
    assert "'method': 'blank-proj'" in log and "'dev': 'proj'" in log
    assert log.count("project op") == 14 and log.count("project edge") == 3
    assert (supernet / PROJ_LOG / "genotype.json").is_file()
    # alpha never moved: the supernet's initial alpha is the one the projection ends with
    first = torch.load(supernet / "checkpoint_1.pth.tar", weights_only=True)["state_dict"]
    last = torch.load(supernet / PROJ_LOG / "checkpoint.pth.tar", weights_only=True)
    assert torch.equal(first["alphas_normal"], last["state_dict"]["alphas_normal"])


@pytest.mark.slow
def test_darts_201_then_darts_proj_201(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    _ok(_bash("exp_scripts/darts-201.sh", *TINY, "--ckpt_interval", "1",
              "--experiments", str(exp)))
    supernet = exp / "nasbench201" / "search-darts-201-0-digits"  # -{dataset} unless cifar10
    assert (supernet / "checkpoint_1.pth.tar").is_file()
    # --proj_intv 2: the released NB201 schedule needs >= 2 (5 projections x 2 = 10 epochs)
    out = _ok(_bash(str(SCRIPTS / "darts-proj-201.sh"), *TINY, "--resume_epoch", "1",
                    "--resume_expid", "search-darts-201-0-digits", "--proj_intv", "2",
                    "--experiments", str(exp), cwd=tmp_path))
    last = out.strip().splitlines()[-1]
    assert last.startswith("genotype = |") and last.count("~") == 6  # 6 edges, one op each
    name = "log_resume-1_dev-proj_seed-0_intv-2"
    log = (supernet / f"{name}.txt").read_text()
    assert "'method': 'darts-proj'" in log
    assert (supernet / name / "genotype.json").is_file()
