"""Λ-DARTS' RNN search (Lambda-DARTS ``sota/rnn``): stacked search cells sharing alpha, each
layer's gradient over the whole window, the ± passes' random-state replay, the architect's
per-layer validation gradients; and the door, as a user runs it
(cd lambda_darts/sota/rnn && bash run.sh --data embedded ...)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from shared.errors import UserError
from shared.models.rnn import RNNModel
from shared.models.search_rnn import RNNModelSearch
from shared.rnn_genotype import published_rnn
from shared.runtime import Precision
from shared.search.alignment import LayerAlignment
from shared.search.context import StepContext, capture_rng
from shared.search.rnn_architect import RNNArchitect
from shared.search.rnn_search import RNNSearchConfig, rnn_alignment
from tests.conftest import (
    ROOT,
    assert_lambda_run,
    door_env,
    kill_inside_checkpoint_write,
    run_door_here,
    search_runs,
)

NTOKEN = 30
DOOR_DIR = os.path.join(ROOT, "lambda_darts", "sota", "rnn")


def tiny(nlayers: int = 2, dropout: float = 0.3, seed: int = 0) -> RNNModelSearch:
    torch.manual_seed(seed)
    return RNNModelSearch(NTOKEN, 6, 6, 6, dropout, dropout, dropout, dropout, 0.0,
                          nlayers=nlayers).double().train()


def window(seq: int = 5, bsz: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, NTOKEN, (seq, bsz), generator=g),
            torch.randint(0, NTOKEN, (seq * bsz,), generator=g))


def leaves(model: RNNModelSearch) -> list[torch.Tensor]:
    """One leaf copy of softmax(alpha) per layer, as the search loop makes them."""
    return [w.detach().clone().requires_grad_()
            for w in model.expand_weights(model.mixing_weights())]


# -- the model ----------------------------------------------------------------------------------

def test_one_layer_is_the_model_as_it_was() -> None:
    """nlayers=1 (the default) computes what the one-layer model computed before the option
    existed: these numbers were printed by the code of commit ccd9611, same seeds, float64
    after a float32 initialisation, whose ``uniform_`` rounds the last bit otherwise on ATen's
    scalar kernels than on its AVX2/AVX-512 ones, half the draws 1 ulp apart: measured rel.
    1.2e-7 apart with ATEN_CPU_CAPABILITY=default, 8e-16 with AVX2, 0 with AVX-512."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, NTOKEN, (6, 4), generator=g), torch.randint(0, NTOKEN, (24,),
                                                                         generator=g)
    torch.manual_seed(0)
    search = RNNModelSearch(NTOKEN, 8, 8, 8, 0.3, 0.2, 0.3, 0.2, 0.1).double().train()
    torch.manual_seed(5)  # the dropout masks
    loss, hidden = search._loss(search.init_hidden(4), x, y)
    loss.backward()
    torch.manual_seed(0)
    final = RNNModel(NTOKEN, 8, 8, 8, 0.3, 0.2, 0.3, 0.2, 0.1,
                     genotype=published_rnn()["DARTS_V2"].genotype).double().train()
    torch.manual_seed(5)
    log_prob, final_hidden = final(x, final.init_hidden(4))
    got = (loss.item(), search.weights.grad.norm().item(), hidden[0].abs().sum().item(),
           log_prob.sum().item(), final_hidden[0].abs().sum().item())
    want = (3.4310289036302, 0.00039215407613374127, 26.75749551852524, -2448.9196529767532,
            4.761248360304052)
    assert got == pytest.approx(want, rel=1e-6)
    assert len(search.rnns) == len(final.rnns) == 1 and search.cell_kinds() == ("recurrent",)
    assert not any(k.startswith("rnns.1.") for k in search.state_dict())


def test_two_layers_stack_with_their_own_hidden_state() -> None:
    model = tiny(2).eval()
    assert model.cell_kinds() == ("recurrent", "recurrent")
    assert len(model.expand_weights(model.mixing_weights())) == 2
    hidden = model.init_hidden(3)
    assert [tuple(h.shape) for h in hidden] == [(1, 3, 6), (1, 3, 6)]
    # the first layer draws the one-layer model's initial weights (built in order)
    one = tiny(1)
    assert torch.equal(one.rnns[0]._W0, model.rnns[0]._W0)
    assert not torch.equal(model.rnns[0]._W0, model.rnns[1]._W0)

    x, _ = window()
    hidden = [torch.randn(1, 3, 6, dtype=torch.float64) for _ in range(2)]
    with torch.no_grad():
        _, new, raw, _ = model(x, hidden, return_h=True)
        # layer 1 reads layer 0's raw output (no dropout between them) from its own state
        out0, h0 = model.rnns[0](model.encoder(x), hidden[0], weights=model.mixing_weights()[0])
        out1, h1 = model.rnns[1](out0, hidden[1], weights=model.mixing_weights()[0])
        assert torch.allclose(new[0], h0) and torch.allclose(new[1], h1)
        assert torch.allclose(raw[0], out0) and torch.allclose(raw[1], out1)
        # layer 1's state changes layer 1 only
        _, other = model(x, [hidden[0], hidden[1] + 1])
        assert torch.equal(other[0], new[0]) and not torch.allclose(other[1], new[1])
    with pytest.raises(ValueError, match="2 layer"):
        model(x, hidden[:1])


def test_a_layers_leaf_gradient_is_the_sum_over_the_windows_time_steps() -> None:
    """The released code read each layer's gradient from the last time step only; the leaf
    the loop gives each layer is used at every step, so its gradient is their sum."""
    model = tiny(2)
    x, y = window(seq=6)
    cells = leaves(model)
    torch.manual_seed(3)
    model.loss((x, model.init_hidden(3)), y, cell_weights=cells).backward()

    per_step: list[list[torch.Tensor]] = [[], []]  # a fresh copy of A_l at every time step
    for layer, rnn in enumerate(model.rnns):
        def cell(*args, weights, _cell=rnn.cell, _mine=per_step[layer]):
            copy_ = weights.detach().clone().requires_grad_()
            _mine.append(copy_)
            return _cell(*args, weights=copy_)
        rnn.cell = cell
    torch.manual_seed(3)  # the same dropout masks
    model.loss((x, model.init_hidden(3)), y, cell_weights=leaves(model)).backward()
    for layer in range(2):
        assert len(per_step[layer]) == 6
        total = sum(c.grad for c in per_step[layer])
        assert torch.allclose(cells[layer].grad, total, rtol=1e-10, atol=1e-14)
        assert not torch.allclose(cells[layer].grad, per_step[layer][-1].grad)
    assert not torch.allclose(cells[0].grad, cells[1].grad)


def test_the_pm_passes_replay_the_base_pass_dropout_masks() -> None:
    """At zero perturbation a ± pass (NLL only, from the step's starting hidden state) gives
    exactly the base pass's NLL gradients: it replays the base pass's random state."""
    from shared.lm import regularised_loss

    model = tiny(2, dropout=0.5)
    x, y = window()
    hidden = model.init_hidden(3)
    cells = leaves(model)
    params = model.weight_parameters()
    loop = SimpleNamespace(device=torch.device("cpu"), precision=Precision())
    ctx = StepContext(loop, model, 0, 0, 1.0, (x, hidden), y, cell_weights=cells,
                      rng_state=capture_rng(loop.device))
    # the loop's base forward (return_h, for AR/TAR), NLL only here
    _, nll, _ = regularised_loss(model, x, y, hidden, 0.0, 0.0, cell_weights=cells)
    base = torch.autograd.grad(nll, params)
    torch.rand(100)  # the RNG moves on after the base pass
    align = LayerAlignment("corr", 0.1, 0.05, 2, cells="all", schedule=False)
    replayed = align._weight_grads(ctx, [c.detach() for c in cells], params)
    assert all(torch.equal(a, b) for a, b in zip(base, replayed))
    ctx.rng_state = None  # --fresh_noise: new masks, another gradient
    fresh = align._weight_grads(ctx, [c.detach() for c in cells], params)
    assert not all(torch.equal(a, b) for a, b in zip(base, fresh))


@pytest.mark.parametrize("name", ["corr", "signcorr"])
def test_the_weight_step_adds_minus_lambda_dlambda_dw(name: str) -> None:
    """The hook's finite difference on the 2-layer RNN (float64, no dropout) equals the exact
    -λ dΛ(g_1(w), g_2(w))/dw by double backward, g_l the NLL's gradient w.r.t. layer l's
    mixing weights over the whole window, from the step's hidden state."""
    from shared.search.alignment_terms import REGULARIZERS

    model = tiny(2, dropout=0.0)
    x, y = window(seq=4)
    hidden = [torch.randn(1, 3, 6, dtype=torch.float64) for _ in range(2)]
    cells = leaves(model)
    g = torch.autograd.grad(model.loss((x, hidden), y, cell_weights=cells), cells,
                            create_graph=True)
    exact = torch.autograd.grad(REGULARIZERS[name][0](g), model.weight_parameters(),
                                allow_unused=True)

    cells = leaves(model)
    model.zero_grad(set_to_none=True)
    model.loss((x, hidden), y, cell_weights=cells).backward()
    base = [p.grad.clone() for p in model.weight_parameters()]
    loop = SimpleNamespace(device=torch.device("cpu"), precision=Precision())
    ctx = StepContext(loop, model, 0, 0, 1.0, (x, hidden), y, cell_weights=cells)
    LayerAlignment(name, lambda_=0.5, epsilon_0=1e-4, epochs=2, cells="all",
                   schedule=False)(ctx)
    for p, b, e in zip(model.weight_parameters(), base, exact):
        e = torch.zeros_like(p) if e is None else e
        torch.testing.assert_close((p.grad - b) / 0.5, -e, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("unrolled", [False, True])
def test_the_architect_records_each_layers_validation_gradient(unrolled: bool) -> None:
    """Recording per-layer gradients leaves alpha's gradient and step as they were (to
    rounding); first order, the layers' gradients are the parts of alpha's
    (J_softmax^T sum_l g_l = dL/dalpha)."""
    (x, y), (xv, yv) = window(seed=1), window(seed=2)
    results = []
    for record in (False, True):
        model = tiny(2)
        arch = RNNArchitect(model, unrolled=unrolled)
        arch.record_cell_grads = record
        h = model.init_hidden(3)
        torch.manual_seed(7)
        arch.step(h, x, y, h, xv, yv, eta=1.0)
        results.append((model, arch))
    (plain, plain_arch), (rec, rec_arch) = results
    assert plain_arch.cell_grads is None
    # the same sum, the layers' paths added in another order: equal to rounding
    torch.testing.assert_close(rec.weights.grad, plain.weights.grad, rtol=1e-12, atol=1e-18)
    torch.testing.assert_close(rec.weights, plain.weights, rtol=1e-12, atol=1e-18)
    grads = rec_arch.cell_grads
    assert len(grads) == 2 and grads[0].shape == rec.weights.shape
    assert not torch.allclose(grads[0], grads[1])
    if not unrolled:
        alpha = tiny(2).weights.detach().requires_grad_()  # alpha before the step
        back = torch.autograd.grad(torch.softmax(alpha, -1), alpha, grad_outputs=sum(grads))[0]
        assert torch.allclose(back, rec.weights.grad, rtol=1e-10, atol=1e-16)


def test_the_config_attaches_the_alignment_or_refuses_in_one_line() -> None:
    on = rnn_alignment(RNNSearchConfig(nlayers=2, corr_regularization="corr", epochs=3))
    assert on.regularizer == "corr" and on.cells == "all" and not on.schedule
    assert on.lambda_at(2) == on.lambda_ == 0.1 and on.epsilon_0 == 0.05
    ramp = rnn_alignment(RNNSearchConfig(nlayers=2, corr_regularization="signcorr", epochs=3,
                                         lambda_=0.25, lambda_scheduling=True))
    assert [ramp.lambda_at(e) for e in range(3)] == [0.0, 0.125, 0.25]
    assert rnn_alignment(RNNSearchConfig()) is None  # SDARTS' search: nothing attached
    with pytest.raises(UserError, match="--nlayers 2"):
        rnn_alignment(RNNSearchConfig(corr_regularization="corr"))
    with pytest.raises(UserError, match="pass --epochs >= 2"):
        rnn_alignment(RNNSearchConfig(nlayers=2, corr_regularization="corr", epochs=1,
                                      lambda_scheduling=True))
    with pytest.raises(UserError, match="corr_regularization 'cos'"):
        rnn_alignment(RNNSearchConfig(nlayers=2, corr_regularization="cos"))


# -- the door -----------------------------------------------------------------------------------

TINY = ["--data", "embedded", "--emsize", "16", "--nhid", "16", "--nhidlast", "16",
        "--batch_size", "8", "--bptt", "8", "--gpu", "-1", "--no_progress"]


def load_door():
    spec = importlib.util.spec_from_file_location("lambda_rnn_train_search",
                                                  os.path.join(DOOR_DIR, "train_search.py"))
    door = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(door)
    return door


@pytest.mark.parametrize("args,message", [
    (["--lambda", "0.5"], "--lambda: the flag is --lambda_"),
    (["--lambda_sch"], "unrecognized arguments: --lambda_sch"),  # no prefix matching
    (["--lambda_scheduling", "--epochs", "1"], "pass --epochs >= 2"),
    (["--nlayers", "1"], "pass --nlayers 2"),
    (["--nlayers", "0", "--corr_regularization", "none"], "--nlayers must be >= 1"),
    (["--epsilon_0", "0"], "--epsilon_0 must be > 0"),
    (["--lambda_", "-1"], "--lambda_ must be >= 0"),
    (["--corr_regularization", "cos"], "invalid choice: 'cos'"),
])
def test_bad_flags_are_one_line_and_leave_nothing(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_door().main([*TINY, *args, "--experiments", str(tmp_path / "exp")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "exp").exists()


def run_door(args, root):
    """The door in this process (conftest.run_door_here); the killed run is a process."""
    return run_door_here(DOOR_DIR, "train_search.py", [*args, "--experiments", root])


def run_sh(args, root):
    """``bash run.sh``, a process that calls the ``python`` on PATH."""
    env = door_env()
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run(["bash", "run.sh", *args, "--experiments", str(root)], cwd=DOOR_DIR,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_run_sh_searches_the_embedded_corpus_end_to_end(tmp_path):
    out = run_sh([*TINY, "--epochs", "2", "--save", "debug-e2e"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "genotype = Genotype(recurrent=" in out.stdout
    (run,) = search_runs(tmp_path)
    assert os.path.dirname(run).endswith(os.path.join("sota", "penn"))
    name = os.path.basename(run)
    assert "-lmdaSch-" in name and name.endswith("-lmda0.25-epszero0.001"), name
    assert_lambda_run(run, ("epoch 0 lambda_ 0.000000e+00", "epoch 1 lambda_ 2.500000e-01",
                            "final genotype = Genotype(recurrent="), [0.0, 0.25])
    saved = json.load(open(os.path.join(run, "genotype.json")))
    assert len(saved["recurrent"]) == 8


@pytest.mark.slow
def test_killed_in_a_checkpoint_write_and_resumed_is_the_run_never_stopped(tmp_path):
    """With SDARTS-RS, second order and dropout (the ± passes replay its masks)."""
    args = [*TINY, "--perturb_alpha", "random", "--unrolled", "--lambda_scheduling",
            "--epochs", "2", "--save", "debug-resume", "--no_plots"]
    assert run_door(args, tmp_path / "ref").returncode == 0
    run = kill_inside_checkpoint_write(DOOR_DIR, args, tmp_path / "cut", nth=2)
    out = run_door(["--resume", run, "--gpu", "-1", "--no_progress"], tmp_path / "cut")
    assert out.returncode == 0, out.stderr[-3000:]
    assert not any(".tmp" in name for name in os.listdir(run))
    (ref,) = search_runs(tmp_path / "ref")
    want = torch.load(os.path.join(ref, "checkpoint.pth.tar"), weights_only=True)
    got = torch.load(os.path.join(run, "checkpoint.pth.tar"), weights_only=True)
    assert got["epoch"] == want["epoch"] == 2
    assert all(torch.equal(got["state_dict"][k], v) for k, v in want["state_dict"].items())
    keys = ("train_corr", "valid_corr", "lambda", "train_ppl", "valid_ppl")
    assert [[h[k] for k in keys] for h in got["history"]] == \
        [[h[k] for k in keys] for h in want["history"]]
    assert all(h["valid_corr"] is not None for h in got["history"])

