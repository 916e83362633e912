"""Λ-DARTS' regulariser (``shared.search.alignment_terms``, ``shared.search.alignment``): the
closed-form directions against autograd, the finite-difference weight gradient against the exact
-dΛ/dw (a smooth supernet, float64), and the regulariser in the engine's loop: no change at
λ = 0, the random state replayed in the ± passes, resume bit-identical."""
from __future__ import annotations

import copy
import itertools
from types import SimpleNamespace

import pytest
import torch

from shared.errors import UserError
from shared.runtime import Precision
from shared.search.alignment import LayerAlignment, regularised_cells
from shared.search.alignment_terms import REGULARIZERS, corr
from shared.search.context import StepContext
from tests.test_search_loop import TRAIN, TinySupernet, make_loop, params


def _grads(L: int = 4, shape=(14, 7), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(L)]


@pytest.mark.parametrize("name", list(REGULARIZERS))
def test_directions_are_the_gradient_of_lambda(name) -> None:
    value, directions = REGULARIZERS[name]
    grads = [g.requires_grad_() for g in _grads()]
    auto = torch.autograd.grad(value(grads), grads)
    for p, a in zip(directions([g.detach() for g in grads]), auto):
        torch.testing.assert_close(p, a, rtol=1e-12, atol=1e-14)


def test_corr_is_the_mean_pairwise_cosine_and_needs_two_cells() -> None:
    grads = _grads(L=5)
    pairs = [torch.nn.functional.cosine_similarity(a.reshape(-1), b.reshape(-1), dim=0)
             for a, b in itertools.combinations(grads, 2)]
    torch.testing.assert_close(corr(grads), torch.stack(pairs).mean())
    assert float(corr([grads[0], 3 * grads[0]])) == pytest.approx(1.0)
    with pytest.raises(UserError, match="at least 2 cells"):
        corr(grads[:1])
    with pytest.raises(UserError, match="zero gradient"):
        corr([grads[0], torch.zeros_like(grads[0])])


def test_which_cells_are_aligned() -> None:
    darts = ("normal", "normal", "reduce", "normal", "reduce", "normal")
    assert regularised_cells(darts, "normal") == [0, 1, 3, 5]  # the released choice
    assert regularised_cells(darts, "all") == list(range(6))
    assert regularised_cells(("cell",) * 15, "normal") == list(range(15))  # NAS-Bench-201
    with pytest.raises(UserError, match="--lambda_cells all"):
        regularised_cells(("normal", "reduce", "reduce"), "normal")


def _context(model, x, y) -> StepContext:
    """A weight step's context after its backward, as the loop hands it to the hook."""
    loop = SimpleNamespace(device=torch.device("cpu"), precision=Precision())
    cells = [w.detach().clone().requires_grad_() for w in model.expand_weights(
        tuple(w.detach() for w in model.mixing_weights()))]
    ctx = StepContext(loop, model, 0, 0, 0.1, x, y, weights=model.mixing_weights(),
                      cell_weights=cells)
    ctx.loss = model.loss(x, y, cell_weights=cells)
    ctx.loss.backward()
    return ctx


@pytest.mark.parametrize("name", list(REGULARIZERS))
def test_the_finite_difference_is_minus_lambda_times_the_gradient_of_lambda(name) -> None:
    torch.manual_seed(0)
    model = TinySupernet().double()
    x, y = TRAIN[0][0].double(), TRAIN[0][1]
    # exact: -dΛ(g(w))/dw by double backward
    cells = [w.detach().clone().requires_grad_() for w in model.expand_weights(
        tuple(w.detach() for w in model.mixing_weights()))]
    g = torch.autograd.grad(model.loss(x, y, cell_weights=cells), cells, create_graph=True)
    chosen = regularised_cells(model.cell_kinds(), "normal")
    lam = REGULARIZERS[name][0]([g[i] for i in chosen])
    exact = torch.autograd.grad(lam, list(model.weight_parameters()), allow_unused=True)
    # the hook: the base gradient plus λ (g₋ - g₊)/2ε
    hook = LayerAlignment(name, lambda_=0.5, epsilon_0=1e-6, epochs=2, schedule=False)
    ctx = _context(model, x, y)
    base = [p.grad.clone() for p in model.weight_parameters()]
    hook(ctx)
    for p, b, e in zip(model.weight_parameters(), base, exact):
        e = torch.zeros_like(p) if e is None else e
        torch.testing.assert_close((p.grad - b) / 0.5, -e, rtol=1e-5, atol=1e-9)


def _run(tmp_path, hook: LayerAlignment | None, **loop_kw):
    loop = make_loop(tmp_path, epochs=2, **loop_kw)
    if hook is not None:
        hook.attach(loop)
    loop.run()
    return loop


def test_at_lambda_zero_the_search_is_bit_identical_to_plain_darts(tmp_path) -> None:
    """λ = 0 (the ramp's first epoch): the same seed gives bit-identical weights, alpha and
    optimiser states as plain DARTS; the ± passes replay the base pass's random state, so
    they leave the RNG where it was."""
    torch.manual_seed(0)
    plain = _run(tmp_path / "a", None)
    torch.manual_seed(0)
    aligned = _run(tmp_path / "b", LayerAlignment("corr", lambda_=0.0, epsilon_0=1e-4,
                                                  epochs=2))
    for k, v in plain.model.state_dict().items():
        assert torch.equal(aligned.model.state_dict()[k], v), k
    assert str(aligned.optimizer.state_dict()) == str(plain.optimizer.state_dict())
    for entry in aligned.history:  # recorded every step, averaged per epoch
        assert -1 <= entry["train_corr"] <= 1 and -1 <= entry["valid_corr"] <= 1
        assert entry["lambda"] == 0.0


def test_at_lambda_zero_only_batchnorm_statistics_differ_on_the_real_supernet() -> None:
    """On the DARTS supernet one weight step at λ = 0 gives bit-identical weight gradients;
    what differs are BatchNorm's running statistics, which the two extra train-mode passes
    update as in the released code (the search reads batch statistics, so the steps agree;
    only evaluation-mode numbers see it)."""
    model, _ = _real_supernet("darts")
    model.train()
    twin = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(
        0, 10, (8,), generator=g)
    twin.loss(x, y, weights=tuple(w.detach() for w in twin.mixing_weights())).backward()
    LayerAlignment("corr", lambda_=0.0, epsilon_0=1e-3, epochs=2)(_context(model, x, y))
    for (name, p), q in zip(model.named_weight_parameters(), twin.weight_parameters()):
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad), name
    means = [(a, b) for (n, a), b in zip(model.named_buffers(), twin.buffers())
             if n.endswith("running_mean")]
    assert means and any(not torch.equal(a, b) for a, b in means)


def test_a_positive_lambda_raises_the_alignment_the_weights_reach(tmp_path) -> None:
    plain = _run(tmp_path / "a", LayerAlignment(None, 0.0, 1e-4, epochs=2))
    aligned = _run(tmp_path / "b", LayerAlignment("corr", 50.0, 1e-4, epochs=2,
                                                  schedule=False))
    assert aligned.history[-1]["train_corr"] > plain.history[-1]["train_corr"]
    assert "lambda" not in plain.history[-1]  # --corr_regularization none: only recorded


def test_the_passes_replay_the_base_pass_noise_unless_fresh(tmp_path) -> None:
    """With dropout, a zero perturbation must give back the base pass's gradient exactly when
    the random state is replayed; fresh noise (the released CNN code) gives another."""
    seen = {}
    for fresh in (False, True):
        torch.manual_seed(0)
        model = TinySupernet(dropout=0.5)
        hook = LayerAlignment("corr", 1.0, 0.0 + 1e-300, epochs=2, fresh_noise=fresh)
        loop = make_loop(tmp_path / str(fresh), model=model)
        hook.attach(loop)
        original = hook._weight_grads

        def spy(ctx, cell_weights, params_, original=original, fresh=fresh):
            grads = original(ctx, [c.detach() for c in ctx.cell_weights], params_)
            seen.setdefault(fresh, []).append(grads)
            return original(ctx, cell_weights, params_)

        hook._weight_grads = spy
        ctx = next(loop.batches(0, 0.1, True))
        loop.weight_step(ctx)
        base = seen[fresh][0]
        again = seen[fresh][1]
        same = all(torch.equal(a, b) for a, b in zip(base, again) if a is not None)
        assert same != fresh


def test_a_resumed_aligned_search_is_bit_identical(tmp_path) -> None:
    def fresh_loop(root, epochs):
        torch.manual_seed(0)
        loop = make_loop(root, epochs=epochs, model=TinySupernet(dropout=0.3))
        LayerAlignment("signcorr", 0.25, 1e-3, epochs=3).attach(loop)
        return loop

    whole = fresh_loop(tmp_path / "whole", 3)
    whole.run()
    cut = fresh_loop(tmp_path / "cut", 3)
    cut.epochs = 1
    cut.run()
    state = copy.deepcopy(torch.load(cut.checkpoint_path, weights_only=True))
    resumed = fresh_loop(tmp_path / "cut", 3)
    resumed.load_state_dict(state)
    resumed.run()
    for k, v in params(whole.model).items():
        assert torch.equal(params(resumed.model)[k], v), k
    assert [h["train_corr"] for h in resumed.history] == [h["train_corr"] for h in whole.history]


@pytest.mark.parametrize("order", ["first_order", "second_order"])
def test_recording_cell_grads_leaves_the_alpha_step_as_it_was(tmp_path, order) -> None:
    alphas = []
    for record in (False, True):
        loop = make_loop(tmp_path / str(record), order)
        loop.alpha_update.record_cell_grads = record
        ctx = next(loop.batches(0, 0.1, True))
        loop.alpha_step(ctx)
        alphas.append([a.detach().clone() for a in loop.model.arch_parameters()])
        grads = loop.alpha_update.cell_grads
        assert (grads is not None) == record
        if record:
            assert len(grads) == len(loop.model.cell_kinds())
    for a, b in zip(*alphas):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    hook = LayerAlignment("corr", 0.1, 1e-3, epochs=2)
    history = _run(tmp_path / "run", hook, alpha_update=order).history
    assert all(h["valid_corr"] is not None for h in history)


def test_tensorboard_gets_the_released_tags(tmp_path) -> None:
    from shared.search.outputs import _tensorboard_hook

    loop = _run(tmp_path, LayerAlignment("corr", 0.1, 1e-4, epochs=2))
    tags = []
    writer = SimpleNamespace(add_scalar=lambda tag, *a: tags.append(tag),
                             add_histogram=lambda *a: None, flush=lambda: None)
    ctx = SimpleNamespace(loop=loop, result=SimpleNamespace(
        metric="acc", train_acc=1.0, train_loss=0.0, valid_acc=None, valid_loss=None, lr=0.1,
        epoch=1, alphas=loop.history[-1]["alphas"]))
    _tensorboard_hook(writer)(ctx)
    assert {"Corr/train", "Corr/valid", "analysis/lambda"} <= set(tags)
    assert not any(t.startswith("analysis/") and "corr" in t for t in tags)


def test_a_zero_direction_leaves_the_weights_alone(monkeypatch) -> None:
    """p = 0 (nothing to align) adds nothing (the released RNN code skips there; ε = ε₀/‖p‖
    would be infinite). The ± passes still run, at A itself, and are discarded on the device
    (``tests/test_no_host_sync.py``: bit for bit the step without the regulariser)."""
    import shared.search.alignment as alignment

    monkeypatch.setitem(alignment.REGULARIZERS, "corr",
                        (corr, lambda gs, **kw: [torch.zeros_like(g) for g in gs]))
    torch.manual_seed(0)
    model = TinySupernet()
    ctx = _context(model, *TRAIN[0])
    before = [p.grad.clone() for p in model.weight_parameters()]
    hook = LayerAlignment("corr", 1.0, 1e-4, epochs=2)
    hook(ctx)
    assert all(torch.equal(p.grad, b) for p, b in zip(model.weight_parameters(), before))
    assert torch.equal(ctx.records["train_corr"],
                       corr([ctx.cell_weights[i].grad for i in (0, 2)]))


# -- parity with a literal transcription of the released formulas, on the real supernets ------
def _literal_directions(name: str, gs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The released ``get_perturbations`` written out as it reads (Lambda-DARTS
    ``sota/cnn/model_search.py``): corr with the explicit (I - u uᵀ)/‖g‖ matrix, signcorr with
    the pairwise sum; weight 1/P, P = L(L-1)/2."""
    L = len(gs)
    weight = 1.0 / (L * (L - 1) / 2)
    flat = [g.reshape(-1) for g in gs]
    if name == "corr":
        units = [g / g.norm() for g in flat]
        total = sum(units)
        out = []
        for g, u in zip(flat, units):
            matrix = (torch.eye(len(g), dtype=g.dtype) - torch.outer(u, u)) / g.norm()
            out.append(weight * matrix @ total)
    else:
        out = []
        for i, gi in enumerate(flat):
            p = torch.zeros_like(gi)
            for j, gj in enumerate(flat):
                if j == i:
                    continue
                norm = (gi.abs() * gj.abs()).sum()
                p += (1 - (gi @ gj) / norm * gi.sign() * gj.sign()) * gj / norm
            out.append(weight * p)
    return [p.reshape(g.shape) for p, g in zip(out, gs)]


def _literal_weight_grads(model, x, y, name: str, lam: float, eps0: float, cells: list[int]):
    """The released step: base backward, perturbations of the aligned cells (the others 0),
    ε = ε₀/‖concat‖, ∇w CE at A - εp ("forward") and at A + εp ("backward"), w.grad +=
    λ (forward - backward)/2ε."""
    params = list(model.weight_parameters())
    leaves = [w.detach().clone().requires_grad_() for w in model.expand_weights(
        tuple(w.detach() for w in model.mixing_weights()))]
    base = torch.autograd.grad(model.loss(x, y, cell_weights=leaves), params + leaves,
                               allow_unused=True)
    g_cells = base[len(params):]
    directions = _literal_directions(name, [g_cells[i] for i in cells])
    pert = [torch.zeros_like(w) for w in leaves]
    for i, d in zip(cells, directions):
        pert[i] = d
    eps = eps0 / torch.cat([p.reshape(-1) for p in pert]).norm()
    pert = [eps * p for p in pert]

    def grads(sign: float):
        loss = model.loss(x, y, cell_weights=[w.detach() - sign * p
                                              for w, p in zip(leaves, pert)])
        return torch.autograd.grad(loss, params, allow_unused=True)

    forward, backward = grads(1.0), grads(-1.0)
    out = []
    for p, b, f, bw in zip(params, base[:len(params)], forward, backward):
        z = torch.zeros_like(p)
        out.append((z if b is None else b) + lam * ((z if f is None else f)
                                                     - (z if bw is None else bw)) / (2 * eps))
    return out, pert


def _real_supernet(kind: str):
    from shared.models.search_cnn import Network
    from shared.models.search_nb201 import TinyNetworkDarts
    from shared.spaces import get_nb201_space, get_space

    torch.manual_seed(0)
    if kind == "darts":
        return Network(4, 10, 5, get_space("s5"), in_channels=1).double(), "normal"
    return TinyNetworkDarts(4, 10, 1, get_nb201_space(), in_channels=1).double(), "all"


@pytest.mark.parametrize("kind", ["darts", "nb201"])
@pytest.mark.parametrize("name", list(REGULARIZERS))
def test_the_hook_equals_a_literal_port_of_the_released_step(kind, name) -> None:
    """At the paper's ε₀ on the ReLU supernets, where the finite difference legitimately
    differs from -∇_w Λ (units cross zero), the hook must still compute exactly what the
    released formulas do: DARTS' 3 normal cells aligned and its reduce cells unperturbed,
    NAS-Bench-201's every cell. float64, train mode (BN running statistics move in every pass,
    as released, so each side starts from a copy of the same model)."""
    model, which = _real_supernet(kind)
    model.train()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(
        0, 10, (8,), generator=g)
    cells = regularised_cells(model.cell_kinds(), which)
    twin = copy.deepcopy(model)
    expected, pert = _literal_weight_grads(twin, x, y, name, lam=0.25, eps0=1e-3, cells=cells)
    if kind == "darts":
        reduce = [i for i, k in enumerate(model.cell_kinds()) if k == "reduce"]
        assert reduce and all(not pert[i].any() for i in reduce)  # released: reduce cells 0
        assert len(cells) == 3
    else:
        assert len(cells) == 3  # N = 1: all 3 search cells
    torch.testing.assert_close(torch.cat([p.reshape(-1) for p in pert]).norm(),
                               torch.tensor(1e-3, dtype=torch.float64))
    hook = LayerAlignment(name, lambda_=0.25, epsilon_0=1e-3, epochs=2, schedule=False,
                          cells=which)
    hook(_context(model, x, y))
    for (n, p), e in zip(model.named_weight_parameters(), expected):
        got = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(got, e, rtol=1e-9, atol=1e-12, msg=n)
