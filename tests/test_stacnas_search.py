"""StacNAS' search doors (stacnas/search.py, feature.py): stage 1 -> stage 2 on digits, the
best epoch's α, resume without the stage-1 folder, the feature analysis, bad input."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from shared.genotypes import load_genotype
from shared.spaces import CellSpace
from stacnas import feature, search, search_stage
from stacnas.spaces import stacnas_genotype, stage1_space, stage2_space

TINY = ["--name", "t", "--dataset", "digits", "--num_cells", "5", "--init_channels", "4",
        "--batch_size", "256", "--alpha_share", "--gpu", "-1", "--no_progress",
        "--num_workers", "0"]


def run(argv):
    search.main([*TINY, *argv])


def read(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("stacnas")
    run(["--save_dir", str(root), "--stage", "search1", "--epochs", "1"])
    return root


@pytest.mark.slow  # the search door's main, end to end
def test_stage1_writes_its_alpha_space_and_best_genotype(stage1) -> None:
    folder = stage1 / "search1"
    for name in ("checkpoint.pth.tar", "history.json", "genotype.json", "genotype_best.json",
                 "alphas.json", "alphas_best.json", "space.json", "alpha_trajectories.png"):
        assert (folder / name).is_file(), name
    best = read(folder / "alphas_best.json")
    space = CellSpace.from_dict(read(folder / "space.json"))
    assert space == stage1_space("groups") == CellSpace.from_dict(best["space"])
    # train_ratio 1: no validation split, the last epoch is the best
    assert best["epoch"] == 0 and best["valid_acc"] is None
    assert best["alphas"] == read(folder / "alphas.json")["alphas"]
    history = read(folder / "history.json")
    assert history[-1]["valid_acc"] is None and history[-1]["best_epoch"] == 0
    expected = stacnas_genotype(torch.tensor(best["alphas"]["normal"]),
                                torch.tensor(best["alphas"]["reduce"]), space)
    assert load_genotype(str(folder / "genotype_best.json")) == expected


@pytest.mark.slow  # the search door's main, end to end
def test_stage2_searches_the_groups_stage1_chose_and_resumes_without_stage1(
        stage1, tmp_path) -> None:
    run(["--save_dir", str(stage1), "--stage", "search2", "--epochs", "2", "--no_plots"])
    full = stage1 / "search2"
    best1 = read(stage1 / "search1" / "alphas_best.json")
    space = stage2_space(torch.tensor(best1["alphas"]["normal"]),
                         torch.tensor(best1["alphas"]["reduce"]), stage1_space())
    assert CellSpace.from_dict(read(full / "space.json")) == space
    genotype = load_genotype(str(full / "genotype_best.json"))
    for cell, rows in ((genotype.normal, space.normal), (genotype.reduce, space.reduce)):
        allowed = {op for row in rows for op in row} - {"none"}
        assert {op for op, _ in cell} <= allowed

    # the same stage 2, stopped after its first epoch (Ctrl-C), then resumed with the stage-1
    # folder gone: its space comes from its own checkpoint; the result is the same
    other = tmp_path / "other"
    shutil.copytree(stage1 / "search1", other / "search1")
    publish = search_stage.publish_alphas

    def stop_after_first_epoch(*a):
        hook = publish(*a)

        def wrapped(ctx):
            hook(ctx)
            raise KeyboardInterrupt
        return wrapped
    search_stage.publish_alphas = stop_after_first_epoch
    try:
        with pytest.raises(SystemExit) as stopped:
            run(["--save_dir", str(other), "--stage", "search2", "--epochs", "2",
                 "--no_plots"])
    finally:
        search_stage.publish_alphas = publish
    assert stopped.value.code == 130
    assert read(other / "search2" / "alphas.json")["epoch"] == 0
    shutil.rmtree(other / "search1")
    run(["--save_dir", str(other), "--stage", "search2", "--epochs", "2", "--resume"])
    for name in ("alphas.json", "alphas_best.json", "genotype_best.json", "genotype.json"):
        assert read(other / "search2" / name) == read(full / name), name


class _Ctx(SimpleNamespace):
    @property
    def entry(self):
        return self.loop.history[-1]


def test_the_best_epoch_is_the_first_of_the_highest_validation_accuracy() -> None:
    model = torch.nn.Module()
    model.cell_types = ("normal", "reduce")
    a = [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(2, 3))]
    model.arch_parameters = lambda: a
    loop = SimpleNamespace(model=model, history=[])
    best = search_stage.BestAlpha()
    for epoch, acc in enumerate([10.0, 30.0, 20.0, 30.0]):
        a[0].data.fill_(epoch)
        loop.history.append({})
        best.update(_Ctx(loop=loop, epoch=epoch, result=SimpleNamespace(valid_acc=acc)))
    assert (best.epoch, best.valid_acc) == (1, 30.0)
    assert best.alphas["normal"] == [[1.0] * 3] * 2
    assert [h["best_epoch"] for h in loop.history] == [0, 1, 1, 1]
    restored = search_stage.BestAlpha()
    restored.load_state_dict(best.state_dict())
    assert vars(restored) == vars(best)


@pytest.mark.slow  # the search door's main, end to end
def test_feature_analysis_of_stage1(stage1, capsys) -> None:
    feature.main(["--name", "t", "--dataset", "digits", "--save_dir", str(stage1),
                  "--alpha_share", "--gpu", "-1", "--num_workers", "0", "--total_samples", "40",
                  "--batch_size", "16"])
    out = stage1 / "search1" / "features"
    summary = read(out / "clusters.json")
    keys = [f"cell{c}_node{n}_edge{e}" for c in range(5) for n, e in ((0, 0), (3, 4))]
    assert sorted(summary["edges"]) == sorted(keys)
    entry = summary["edges"]["cell0_node0_edge0"]
    assert entry["samples"] == 40 and entry["op_names"] == list(stage1_space().normal[0][:-1])
    corr = np.loadtxt(out / "corr_cell0_node0_edge0.txt", delimiter=",", skiprows=1)
    assert corr.shape == (4, 4) and np.allclose(np.diag(corr), 1.0)
    for name in ("corr_cell0_node0_edge0.png", "dist_cell0_node0_edge0_group2.png",
                 "dist_cell0_node0_edge0_group4.png"):
        assert (out / name).is_file(), name
    assert "features in" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--stage", "search2"], "no stage-1 result"),
    (["--stage", "search1", "--typo", "1"], "unrecognized arguments: --typo"),
    (["--stage", "search1", "--train_ratio", "0"], "--train_ratio must be in (0, 1]"),
    (["--stage", "search1", "--train_ratio", "1.5"], "--train_ratio must be in (0, 1]"),
    (["--stage", "search1", "--num_nodes", "5"], "4 intermediate nodes"),
    (["--stage", "search1", "--gpu", "0,1"], "one GPU"),
    (["--stage", "search1", "--aux_weight", "0.4"], "auxiliary head in search"),
    (["--stage", "search2", "--ops", "all"], "--ops is stage 1's choice"),
    (["--stage", "search3"], "invalid choice: 'search3'"),
])
def test_bad_input_is_one_line_and_leaves_no_folder(tmp_path, capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["--save_dir", str(tmp_path / "r"), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_a_stage2_from_a_stage1_over_all_ops_is_refused(tmp_path, capsys) -> None:
    folder = tmp_path / "search1"
    folder.mkdir()
    space = stage1_space("all")
    alphas = {"normal": [[0.0] * 8] * 14, "reduce": [[0.0] * 8] * 14}
    (folder / "alphas_best.json").write_text(json.dumps(
        search_stage.alpha_file(alphas, space, 0, None)))
    with pytest.raises(SystemExit):
        run(["--save_dir", str(tmp_path), "--stage", "search2"])
    assert "needs a stage 1 run with --ops groups" in capsys.readouterr().err
    assert not (tmp_path / "search2").exists()


@pytest.mark.slow  # the search door's main, end to end
def test_without_alpha_share_every_cell_searches_alone_and_stages_keep_their_depth(
        tmp_path, capsys) -> None:
    per_cell = [a for a in TINY if a != "--alpha_share"]
    search.main([*per_cell, "--save_dir", str(tmp_path), "--stage", "search1", "--epochs", "1",
                 "--no_plots"])
    best = read(tmp_path / "search1" / "alphas_best.json")
    assert sorted(best["alphas"]) == [f"cell{i}" for i in range(5)]
    genotype = load_genotype(str(tmp_path / "search1" / "genotype_best.json"))
    assert genotype.layers == 5 and genotype.kinds[1] == "reduce"
    capsys.readouterr()
    for argv, message in (([*per_cell, "--num_cells", "8"], "stage 2 needs --num_cells 5"),
                          (TINY, "run stage 2 without --alpha_share too")):
        with pytest.raises(SystemExit):
            search.main([*argv, "--save_dir", str(tmp_path), "--stage", "search2"])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "search2").exists()
    from stacnas.augment import check_sharing

    with pytest.raises(Exception, match="drop --alpha_share"):
        check_sharing(genotype, True, "g.json")



@pytest.mark.slow
def test_a_recorded_stage_equals_the_eager_one(tmp_path, monkeypatch) -> None:
    """Stage 1 (one-level, alpha shared) with its step recorded (the CPU's model of a CUDA
    graph, the ``emulate`` backend, in place of ``--step_capture cuda_graph``): the eager
    run's weights and alpha bit for bit (alpha's Adam the capturable one in both)."""
    import dataclasses

    from shared.capture import make_capturable
    from shared.search.loop import SearchLoop

    config, post_init = search.search_config, SearchLoop.__post_init__

    def capturable_adam(self):
        post_init(self)
        make_capturable(self.alpha_update.optimizer)

    monkeypatch.setattr(SearchLoop, "__post_init__", capturable_adam)
    states = {}
    for capture in ("off", "emulate"):
        monkeypatch.setattr(search, "search_config", lambda *a, capture=capture:
                            dataclasses.replace(config(*a), step_capture=capture))
        # 7 steps: 3 eager, the recording, 3 replays
        run(["--save_dir", str(tmp_path / capture), "--stage", "search1", "--epochs", "1",
             "--batch_size", "256", "--no_plots"])
        states[capture] = torch.load(tmp_path / capture / "search1" / "checkpoint.pth.tar",
                                     weights_only=True)["state_dict"]
        log = (tmp_path / capture / "search1" / "log.txt").read_text()
        assert ("step capture = emulate" in log) == (capture == "emulate")
        assert "step capture: eager" not in log
    assert states["off"].keys() == states["emulate"].keys()
    for key, value in states["off"].items():
        assert torch.equal(value, states["emulate"][key]), key
