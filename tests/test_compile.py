"""The network compiled with ``torch.compile`` (``--compile``, ``shared.compile``).

Inductor's kernels are what a GPU run measures (``bench/capture_check.py``); Inductor on this
CPU compiles a 3-cell supernet for over 10 minutes, so here the network is traced and run
without generated kernels (``aot_eager``: TorchDynamo's graph, AOTAutograd's backward) and
must give the eager numbers bit for bit: the supernet traces whole, its BN running statistics
(buffer mutations) and every gradient come out as in the eager run, the second-order step's
``functional_call`` goes through it, and a compiled network runs inside a recorded step.
Each compilation takes ~20-30 s here: these tests are ``slow``.
"""
from __future__ import annotations

import logging

import pytest
import torch
from test_step_capture import assert_same, run

from shared.compile import (
    TRACE_ONLY,
    check_compile_flags,
    compile_blockers,
    compile_network,
    compiled,
    reset_compiled,
)
from shared.errors import UserError
from shared.models.search_cnn import Network
from shared.search.hessian import alpha_hessian
from shared.spaces import get_space


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    reset_compiled()
    yield
    reset_compiled()


def recompiles() -> int:
    from torch._dynamo.utils import counters

    return sum(counters["recompiles"].values()) if "recompiles" in counters else 0


@pytest.mark.slow
def test_compiled_search_equals_eager(tmp_path) -> None:
    """Second order (the weights moved to the unrolled w' and back, the finite-difference
    passes) with SDARTS-ADV's 7-step attack, over two epochs, compiled, and compiled inside a
    recorded step: the same alpha, weights, BN statistics and losses as the eager run. The
    recorded run reuses the graphs the first traced run made (the guards hold for a new
    network of the same shapes): one set of compilations for both."""
    # cells of one node: each compilation traces 2 edges a cell, not 14, and every edge still
    # mixes every kind of candidate (s3: none, skip, a conv stack)
    case = dict(kind="second_order", tmp_path=tmp_path, nodes=1, perturb="pgd_linf")
    eager = run(capture="off", **case)
    traced = run(capture="off", compile_mode=TRACE_ONLY, **case)
    assert compiled(traced[3].model)
    assert_same(eager, traced)
    before = recompiles()
    assert_same(eager, run(capture="emulate", compile_mode=TRACE_ONLY, **case))
    assert recompiles() == before


@pytest.mark.slow
def test_compiled_evaluation_equals_eager(tmp_path) -> None:
    """Evaluation training (auxiliary head, drop-path rising per epoch): the same weights and
    history, and drop-path's per-epoch probability does not recompile the network each epoch
    (600 epochs would exhaust TorchDynamo's recompile limit and fall back to eager)."""
    import json

    from shared.evaluation.config import EvalConfig
    from shared.evaluation.run import run_evaluation
    from shared.genotypes import load_genotype

    def train(mode: str) -> str:
        cfg = EvalConfig(dataset="digits", epochs=3, layers=3, init_channels=4, batch_size=32,
                         gpu=-1, auxiliary=True, progress=False, num_workers=0,
                         data_on_device=True, steps_per_epoch=2, drop_path_prob=0.3,
                         compile=mode)
        run_evaluation(cfg, load_genotype("DARTS_V2"), str(tmp_path / mode))
        return str(tmp_path / mode)

    eager = train("off")
    before = recompiles()
    traced = train(TRACE_ONLY)
    a, b = (torch.load(f"{d}/weights.pt", weights_only=True) for d in (eager, traced))
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(open(f"{d}/history.json").read()) for d in (eager, traced)]
    assert history[0] == history[1]
    assert "compile = aot_eager" in open(f"{traced}/log.txt").read()
    # train mode, eval mode, the last partial test batch: a few graphs, not one per epoch
    assert recompiles() - before <= 3


@pytest.mark.slow
@pytest.mark.parametrize("embed", [True, False])
def test_a_grouped_supernet_traces_whole(embed, monkeypatch) -> None:
    """``--grouped_edges`` compiled: the network traces without a graph break (the copies'
    backward, ``grouped_edges._Copies``, sums each run of copies through a plain view there,
    not a strided one, whose storage offset TorchDynamo cannot trace: it broke the graph at
    every group and fell back to eager piece by piece), and its gradients and BN statistics
    are the eager ones bit for bit; the kernel sizes of a kind in one group as on CUDA
    (``embed``, the cell's kernels built at once) or a group per size. The trace reads what
    each candidate is (``candidate.learn``, asked before compiling) and never works it out."""
    from torch._dynamo.utils import counters

    from shared.models import candidate, fast_mixed

    traced_questions = []
    is_dil = candidate._is_dil
    monkeypatch.setattr(candidate, "_is_dil", lambda op: (
        traced_questions.append(torch.compiler.is_compiling()), is_dil(op))[1])
    results = []
    counters["graph_break"].clear()
    with fast_mixed.embedded("cpu", embed), fast_mixed.undilated("cpu", False):
        for mode in ("off", TRACE_ONLY):
            torch.manual_seed(0)
            net = Network(4, 10, 1, get_space("s5"), steps=1, multiplier=1,
                          grouped_edges=True).double()
            compile_network(net, mode, logging.getLogger("compile"))
            x, y = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1])
            torch.nn.functional.cross_entropy(net(x), y).backward()
            results.append({**{n: p.grad for n, p in net.named_parameters()},
                            **dict(net.named_buffers())})
    assert not counters["graph_break"]
    assert traced_questions and not any(traced_questions)  # asked eagerly only
    for key, want in results[0].items():
        got = results[1][key]
        assert (got is None and want is None) or torch.equal(got, want), key


def test_hessian_of_a_compiled_supernet_is_eager() -> None:
    """SDARTS' eigenvalue monitor differentiates twice, which a compiled backward cannot: its
    forward runs eagerly, and the Hessian is the eager network's."""
    torch.manual_seed(0)
    model = Network(4, 10, 3, get_space("s3"), in_channels=1, steps=2, multiplier=2).double()
    x, y = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,))
    eager = alpha_hessian(model, x, y, 1e-3)
    compile_network(model, TRACE_ONLY, logging.getLogger("compile"))
    assert compiled(model)
    assert torch.equal(alpha_hessian(model, x, y, 1e-3), eager)


def test_compile_flags_and_blockers() -> None:
    check_compile_flags("default", "cuda_graph")  # fused kernels inside the recorded step
    check_compile_flags("reduce-overhead", "off")
    with pytest.raises(UserError, match="records CUDA graphs of its own"):
        check_compile_flags("reduce-overhead", "cuda_graph")
    with pytest.raises(UserError, match="one of off, default"):
        check_compile_flags("fast", "off")
    model = Network(4, 10, 2, get_space("s3"), in_channels=1, skip_zero_weights=True)
    assert "zero-weight candidates" in compile_blockers(model, False)[0]
    assert "all-reduces" in compile_blockers(Network(4, 10, 2, get_space("s3")), True)[0]
    assert not compile_network(model, "default", logging.getLogger("compile"))
    assert not compiled(model)


def test_door_flag_reaches_the_config(tmp_path, capsys, monkeypatch) -> None:
    """``--compile`` is a choice of torch.compile's modes, checked before any folder is made."""
    from sdarts.sota.cnn import train_search as module

    monkeypatch.chdir(tmp_path)
    argv = ["--dataset", "digits", "--gpu", "-1", "--experiments", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as info:
        module.main([*argv, "--compile", "fastest"])
    assert info.value.code == 2
    assert "invalid choice: 'fastest'" in capsys.readouterr().err
    from shared.cli.search_door import search_config

    args = module.build_parser().parse_args([*argv, "--compile", "max-autotune-no-cudagraphs"])
    assert search_config(args, "darts").compile == "max-autotune-no-cudagraphs"
    assert not (tmp_path / "run").exists()


def test_stacnas_run_all_hands_compile_to_its_stages() -> None:
    """StacNAS' pipeline passes ``--compile`` to both searches and augment, whose own parsers
    take it."""
    from shared.cli.parser import parse
    from stacnas import augment, run_all, search

    args, _ = parse(run_all.build_parser(), ["--compile", "default", "--test"])
    args.save_dir = "x"
    stages = {stage: argv for stage, _, argv in run_all.stage_commands(args)}
    for stage in ("search1", "search2", "augment"):
        at = stages[stage].index("--compile")
        assert stages[stage][at + 1] == "default"
    assert "--compile" not in stages["test"]
    for door in (search, augment):
        assert door.build_parser().parse_args(["--name", "x", "--compile", "default"]) \
            .compile == "default"


def test_evaluation_door_flag_reaches_the_config() -> None:
    from shared.cli.config import config_from_args
    from shared.evaluation.cli import build_train_door_parser
    from shared.evaluation.config import EvalConfig

    args = build_train_door_parser().parse_args(["--compile", "reduce-overhead"])
    assert config_from_args(EvalConfig, args).compile == "reduce-overhead"


def test_darts_pt_supernet_door_refuses_compile(tmp_path, capsys, monkeypatch) -> None:
    """DARTS-PT's DARTS-space supernet always skips zero-weight candidates: ``--compile``
    there is refused before any folder is made, not accepted and left eager."""
    from darts_pt.sota.cnn import train_search as module

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        module.main(["--method", "darts", "--dataset", "digits", "--gpu", "-1",
                     "--experiments", str(tmp_path / "run"), "--compile", "default"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "run it with --compile off" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
