"""Tests for the NAS-Bench-1Shot1 analysis: the evaluation door
(nasbench_analysis/eval_darts_one_shot_model_in_nasbench.py), its figures
(nasbench_analysis.plots) and the NB-1Shot1 figures of shared.plots.

Run folders are faked in the search's format from random alphas, discretised by the real
``NB1Shot1Arch.from_weights`` and converted by the real ``arch_to_spec``; the benchmark is a toy
tfrecord in the real format (tests/nb101_fixture.py) holding all those cells but one, and the
expected numbers come from the fixture's own ``toy_metrics``, not from the reader. Indexing the
toy file imports TensorFlow once (a few seconds), so the end-to-end run is a module fixture."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import pytest
import torch

from nasbench_analysis import eval_darts_one_shot_model_in_nasbench as door
from nasbench_analysis import plots as nb_plots
from nasbench_analysis.one_shot import arch_to_spec
from shared import plots
from shared.nb1shot1_arch import NB1Shot1Arch
from shared.spaces import get_nb1shot1_space
from tests.conftest import ROOT, door_env
from tests.nb101_fixture import toy_metrics, write_toy_benchmark

SCRIPT = os.path.join(ROOT, "nasbench_analysis", "eval_darts_one_shot_model_in_nasbench.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCHS = 3
SEEDS = {"ss1_s0": 0, "ss1_s1": 1, "adv/ss3": 2}


# -- fake run folders --------------------------------------------------------------------------
def random_alphas(space, gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(space.steps, len(space.ops), generator=gen),
            torch.randn(1, space.steps + 1, generator=gen),
            *(torch.randn(1, n, generator=gen) for n in space.input_choice_nodes)]


def make_run(folder: Path, space_name: str, perturb: str = "none", seed: int = 0,
             epochs: int = EPOCHS, unrolled: bool = False, eigen: bool = True) -> list:
    """A run folder as train_search.py writes it; returns the NB-101 spec of every epoch."""
    space = get_nb1shot1_space(space_name)
    gen = torch.Generator().manual_seed(1000 * seed + int(space_name))
    folder.mkdir(parents=True)
    config = {"search_space": space_name, "perturb_alpha": perturb, "epsilon_alpha": 0.3,
              "unrolled": unrolled, "seed": seed, "dataset": "cifar10"}
    (folder / "config.json").write_text(json.dumps(config))
    history, specs = [], []
    for e in range(epochs):
        alphas = random_alphas(space, gen)
        arch = NB1Shot1Arch.from_weights(space, alphas)
        spec = arch_to_spec(arch)
        specs.append(spec)
        record = {"epoch": e, "search_space": space_name,
                  "names": ["mixed_op", "output",
                            *(f"inputs_node{n}" for n in space.input_choice_nodes)],
                  "alphas": [a.tolist() for a in alphas], "arch": arch.to_dict(),
                  "nb101": {"matrix": [list(r) for r in spec.matrix], "ops": list(spec.ops),
                            "hash": spec.hash()}}
        (folder / f"one_shot_architecture_{e}.json").write_text(json.dumps(record))
        entry = {"epoch": e, "train_acc": 50.0 + e, "valid_acc": 48.0 + e,
                 "alphas": [torch.softmax(a, dim=-1).tolist() for a in alphas]}
        if eigen:
            entry["hessian_eigenvalue"] = 0.05 * (e + 1) * (seed + 1)
        history.append(entry)
    (folder / "history.json").write_text(json.dumps(history))
    return specs


def expected_means(module_hash: str) -> dict[str, float]:
    """The fixture's numbers for a cell, averaged over its 3 repeats, as NB-101 errors."""
    finals = [toy_metrics(module_hash, r, 108)["evaluation_data"][2] for r in range(3)]
    return {"test_error": sum(1 - f["test_accuracy"] for f in finals) / 3,
            "valid_error": sum(1 - f["validation_accuracy"] for f in finals) / 3,
            "training_time": sum(f["training_time"] for f in finals) / 3}


def assert_png(path: str | Path, min_bytes: int = 8000) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"
    image = mpimg.imread(str(path))
    assert image[..., :3].std() > 0.02, f"{path} is (nearly) blank"


@pytest.fixture(autouse=True)
def no_open_figures():
    yield
    assert plt.get_fignums() == [], "a plot function left a figure open"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three runs (space 1: DARTS seeds 0 and 1; space 3: SDARTS-ADV, in a sub-folder), a toy
    benchmark without the cell of one epoch, and one in-process run of the door over them."""
    tmp = tmp_path_factory.mktemp("nb1shot1")
    runs = tmp / "runs"
    specs = {name: make_run(runs / name, "3" if "ss3" in name else "1",
                            "pgd_linf" if "adv" in name else "none", seed=seed)
             for name, seed in SEEDS.items()}
    hashes = {name: [s.hash() for s in ss] for name, ss in specs.items()}
    every = [h for hs in hashes.values() for h in hs]
    # leave out one epoch whose cell no other epoch shares, so exactly one look-up fails
    missing = next(h for h in hashes["adv/ss3"] if every.count(h) == 1)
    bench = tmp / "toy.tfrecord"
    write_toy_benchmark(bench, [s for ss in specs.values() for s in ss if s.hash() != missing])
    argv = ["--dataset_file", str(bench), "--run_dir", str(runs)]
    return {"tmp": tmp, "runs": runs, "hashes": hashes, "missing": missing, "bench": bench,
            "argv": argv, "rc": door.main(argv)}


# -- the door, end to end ----------------------------------------------------------------------
def test_eval_json_has_the_benchmark_means_and_regrets(study):
    assert study["rc"] == 0
    for name, hashes in study["hashes"].items():
        run = study["runs"] / name
        space = get_nb1shot1_space("3" if "ss3" in name else "1")
        rows = json.loads((run / "nasbench_eval.json").read_text())
        assert [r["epoch"] for r in rows] == list(range(EPOCHS))
        assert [r["hash"] for r in rows] == hashes
        for r in rows:
            if r["hash"] == study["missing"]:
                assert r["in_benchmark"] is False
                assert r["test_error"] is None and r["test_regret"] is None
                continue
            want = expected_means(r["hash"])
            assert r["in_benchmark"] is True
            for key, value in want.items():
                assert r[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
            assert isinstance(r["trainable_parameters"], int) and r["trainable_parameters"] > 0
            assert r["test_regret"] == pytest.approx(r["test_error"] - space.test_min_error)
            assert r["valid_regret"] == pytest.approx(r["valid_error"] - space.valid_min_error)
            assert r["hessian_eigenvalue"] == pytest.approx(
                0.05 * (r["epoch"] + 1) * (SEEDS[name] + 1))
        assert not list(run.glob("*.tmp")), "the atomic write left a temporary file"


def test_plots_land_in_the_common_parent(study):
    for name in ("anytime_test_regret.png", "anytime_valid_regret.png", "eigenvalues.png"):
        assert_png(study["runs"] / name)


def test_table_and_missing_count_are_printed(study, capsys):
    door.main(study["argv"] + ["--out", str(study["tmp"] / "again")])
    out = capsys.readouterr().out
    assert "not in benchmark" in out
    assert "8 of 9 architecture(s) found" in out and "1 not in the benchmark file" in out
    assert "SDARTS-ADV" in out and "DARTS" in out
    assert "test regret" in out and "eigenvalue" in out


@pytest.mark.slow
def test_script_form_runs_as_a_subprocess(study):
    out = study["tmp"] / "script_out"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--dataset_file", str(study["bench"]),
         "--run_dir", str(study["runs"] / "ss1_s0"), str(study["runs"] / "ss1_s1"),
         "--out", str(out), "--label", "run"],
        cwd=ROOT, env=door_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ss1_s0" in proc.stdout and "ss1_s1" in proc.stdout
    for name in ("anytime_test_regret.png", "anytime_valid_regret.png", "eigenvalues.png"):
        assert_png(out / name)


def test_without_dataset_file_only_the_eigenvalue_plot(study, capsys):
    out = study["tmp"] / "no_bench"
    assert door.main(["--run_dir", str(study["runs"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("no --dataset_file") == 1
    assert sorted(p.name for p in out.iterdir()) == ["eigenvalues.png"]


def test_labels_from_perturb_alpha_and_unrolled():
    assert door._method_label({"perturb_alpha": "none"}) == "DARTS"
    assert door._method_label({"perturb_alpha": "random", "unrolled": True}) == "SDARTS-RS-2nd"
    assert door._method_label({"perturb_alpha": "pgd_linf"}) == "SDARTS-ADV"


# -- the door's user errors --------------------------------------------------------------------
def run_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        door.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_missing_and_empty_run_dirs(tmp_path, capsys):
    assert "does not exist" in run_error(capsys, ["--run_dir", str(tmp_path / "nope")])
    assert "no NB-1Shot1 search run" in run_error(capsys, ["--run_dir", str(tmp_path)])
    (tmp_path / "config.json").write_text("{}")
    assert "has not finished an epoch" in run_error(capsys, ["--run_dir", str(tmp_path)])


def test_unreadable_json_and_unknown_space(tmp_path, capsys):
    make_run(tmp_path / "bad_json", "2", epochs=1)
    (tmp_path / "bad_json" / "one_shot_architecture_0.json").write_text("{not json")
    assert "cannot read" in run_error(capsys, ["--run_dir", str(tmp_path / "bad_json")])
    make_run(tmp_path / "bad_space", "2", epochs=1)
    (tmp_path / "bad_space" / "config.json").write_text(json.dumps({"search_space": "s5"}))
    err = run_error(capsys, ["--run_dir", str(tmp_path / "bad_space")])
    assert "unknown NAS-Bench-1Shot1 search space 's5'" in err


def test_hash_mismatch_is_an_error(tmp_path, capsys):
    make_run(tmp_path / "run", "1", epochs=2)
    path = tmp_path / "run" / "one_shot_architecture_1.json"
    record = json.loads(path.read_text())
    record["nb101"]["hash"] = "0" * 32
    path.write_text(json.dumps(record))
    assert "does not match the cell" in run_error(capsys, ["--run_dir", str(tmp_path / "run")])


def test_nothing_to_show_is_an_error(tmp_path, capsys):
    make_run(tmp_path / "run", "1", epochs=1, eigen=False)
    assert "nothing to show" in run_error(capsys, ["--run_dir", str(tmp_path / "run")])


# -- nasbench_analysis.plots -------------------------------------------------------------------
def test_regret_and_eigenvalue_plots(tmp_path):
    runs = [("DARTS", "1", [0, 1, 2], [0.09, None, 0.07]),
            ("DARTS", "1", [0, 1, 2], [0.08, 0.075, 0.0544]),  # regret 0 -> drawn at the floor
            ("SDARTS-ADV", "nb1shot1-3", [0, 1], [0.07, 0.06]),
            ("SDARTS-RS", "2", [0, 1], [None, None])]  # skipped: no numbers
    path = str(tmp_path / "new" / "regret.png")
    assert nb_plots.plot_anytime_regret(runs, path, which="valid") == path
    assert_png(path, min_bytes=5000)
    path = str(tmp_path / "eigen.png")
    assert nb_plots.plot_eigenvalues([(label, space, epochs, [0.1 * (e + 1) for e in epochs])
                                      for label, space, epochs, _ in runs], path) == path
    assert_png(path, min_bytes=5000)


def test_regret_plot_errors(tmp_path):
    with pytest.raises(ValueError, match="none of the 1 run"):
        nb_plots.plot_anytime_regret([("DARTS", "1", [0], [None])], str(tmp_path / "a.png"))
    with pytest.raises(ValueError, match="2 epochs but 1 values"):
        nb_plots.plot_eigenvalues([("DARTS", "1", [0, 1], [0.1])], str(tmp_path / "a.png"))
    with pytest.raises(ValueError, match="which"):
        nb_plots.plot_anytime_regret([("DARTS", "1", [0], [0.1])], str(tmp_path / "a.png"),
                                     which="train")
    assert not list(tmp_path.iterdir())


# -- shared.plots, NB-1Shot1 -------------------------------------------------------------------
@pytest.mark.parametrize("space_name", ["1", "2", "3"])
def test_plot_genotype_nb1shot1(tmp_path, space_name):
    space = get_nb1shot1_space(space_name)
    arch = NB1Shot1Arch.from_weights(space, random_alphas(space, torch.Generator().manual_seed(5)))
    prefix = str(tmp_path / "sub" / "arch")
    assert plots.plot_genotype(arch, prefix) == [f"{prefix}_cell.png"]
    assert_png(f"{prefix}_cell.png")


def test_plot_genotype_nb1shot1_with_loose_ends(tmp_path):
    # space 3: node 2 and 3 feed nobody, so they and their edges are loose ends
    arch = NB1Shot1Arch("3", ("conv3x3-bn-relu",) * 5, ((0,), (1,), (2,), (0, 1), (1, 4), (0, 5)))
    assert set(arch.used_blocks()) == {1, 4, 5}
    assert_png(plots.plot_genotype(arch, str(tmp_path / "loose"))[0])


def test_plot_alpha_trajectories_nb1shot1(tmp_path):
    run = tmp_path / "run"
    make_run(run, "2", epochs=4)
    history = json.loads((run / "history.json").read_text())
    for space in (get_nb1shot1_space("2"), "nb1shot1-2"):
        path = str(tmp_path / "figs" / "alphas.png")
        assert plots.plot_alpha_trajectories(history, space, path) == path
        assert_png(path)
    one_epoch = history[:1]
    assert_png(plots.plot_alpha_trajectories(one_epoch, get_nb1shot1_space("2"),
                                             str(tmp_path / "one.png")))


def test_plot_alpha_trajectories_nb1shot1_rejects_wrong_shapes(tmp_path):
    run = tmp_path / "run"
    make_run(run, "1", epochs=2)
    history = json.loads((run / "history.json").read_text())
    with pytest.raises(ValueError, match="needs 6 alpha tensors"):  # space 3: 4 input nodes
        plots.plot_alpha_trajectories(history, get_nb1shot1_space("3"), str(tmp_path / "a.png"))
    history[1]["alphas"][0] = history[1]["alphas"][0][:-1]  # a choice block short
    with pytest.raises(ValueError, match="expected 4 x 3"):
        plots.plot_alpha_trajectories(history, get_nb1shot1_space("1"), str(tmp_path / "a.png"))
    with pytest.raises(ValueError, match="empty"):
        plots.plot_alpha_trajectories([], "nb1shot1-1", str(tmp_path / "a.png"))
    assert not (tmp_path / "a.png").exists()
