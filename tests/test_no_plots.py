"""``--no_plots``: a search draws no figure (the alpha trajectories, the curves, the cells,
Λ-DARTS' ``correlation.png``) and writes everything else; a resumed run keeps the setting it
was started with, and ``--no_plots`` on ``--resume`` turns the figures off; StacNAS'
``run_all.py`` passes it to its searches only."""
from __future__ import annotations

import json
import os

import pytest

from tests.conftest import ROOT, run_door_here, search_runs

PNG = ".png"


def files(run: str) -> set[str]:
    return set(os.listdir(run))


def door(family: str, script: str, args: list[str], root) -> str:
    out = run_door_here(os.path.join(ROOT, *family.split("/")), script,
                        [*args, "--experiments", str(root)])
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = search_runs(root)
    return run


# 'debug' in --save: one step (one window) per epoch, as the originals' debug runs
CNN = ["--dataset", "digits", "--layers", "5", "--init_channels", "4", "--batch_size", "256",
       "--gpu", "-1", "--no_progress", "--epochs", "2", "--save", "debug"]
RNN = ["--data", "embedded", "--emsize", "8", "--nhid", "8", "--nhidlast", "8", "--batch_size",
       "32", "--bptt", "10", "--gpu", "-1", "--no_progress", "--epochs", "1", "--save", "debug"]


OUTPUTS = {"genotype.json", "history.json", "log.txt", "runs", "checkpoint.pth.tar"}


@pytest.mark.slow  # runs the doors (their main, in this process)
@pytest.mark.parametrize("family,args,figures", [
    ("lambda_darts/sota/cnn", CNN, {"alpha_trajectories.png", "accuracy.png", "correlation.png",
                                    "genotype_normal.png", "genotype_reduce.png"}),
    ("sdarts/sota/rnn", RNN, {"alpha_trajectories.png", "perplexity.png",
                              "genotype_recurrent.png"}),
], ids=["lambda_darts-cnn", "sdarts-rnn"])
def test_a_search_without_plots_writes_everything_else(tmp_path, family, args, figures) -> None:
    """Λ-DARTS' CNN search (its regulariser records correlations, ``correlation.png`` when
    drawn) and the recurrent search: the same run folder but no PNG."""
    with_plots = door(family, "train_search.py", args, tmp_path / "with")
    without = door(family, "train_search.py", [*args, "--no_plots"], tmp_path / "without")
    assert files(with_plots) == OUTPUTS | figures
    assert files(without) == OUTPUTS
    history = [json.load(open(os.path.join(r, "history.json"))) for r in (with_plots, without)]
    assert [h["alphas"] for h in history[0]] == [h["alphas"] for h in history[1]]


@pytest.mark.slow  # runs the door (its main, in this process)
def test_a_resumed_run_keeps_its_setting_and_no_plots_turns_them_off(tmp_path) -> None:
    """Started with figures and ``--no_plots`` on ``--resume``: none drawn after the resume;
    started without and resumed bare: still none (the run's saved setting); started with and
    resumed bare: drawn."""
    cnn = os.path.join("sdarts", "sota", "cnn")
    args = [*CNN, "--layers", "3", "--search_space", "s3", "--epochs", "1"]
    for start, again, drawn in (([], ["--no_plots"], False), (["--no_plots"], [], False),
                                ([], [], True)):
        root = tmp_path / f"{len(start)}{len(again)}{drawn}"
        run = door(cnn, "train_search.py", [*args, *start], root)
        for png in [f for f in files(run) if f.endswith(PNG)]:
            os.remove(os.path.join(run, png))
        # a finished run resumed writes its final outputs again
        out = run_door_here(os.path.join(ROOT, cnn), "train_search.py", ["--resume", run, *again])
        assert out.returncode == 0, out.stderr[-3000:]
        assert any(f.endswith(PNG) for f in files(run)) == drawn, (start, again)


def test_run_all_passes_no_plots_to_its_searches_only() -> None:
    from stacnas import run_all

    args = run_all.build_parser().parse_args(["--dataset", "digits", "--no_plots", "--feature",
                                             "--test"])
    stages = {stage: argv for stage, _, argv in run_all.stage_commands(args)}
    assert [s for s, argv in stages.items() if "--no_plots" in argv] == ["search1", "search2"]
    args = run_all.build_parser().parse_args(["--dataset", "digits"])
    assert not any("--no_plots" in argv for _, _, argv in run_all.stage_commands(args))
