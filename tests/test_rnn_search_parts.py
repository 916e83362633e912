"""The RNN search's Architect and SDARTS' perturbations on the recurrent search model
(DARTS ``rnn/architect.py``; SmoothDARTS ``attacker/perturb.py``)."""
from __future__ import annotations

import pytest
import torch

from shared.models.search_rnn import RNNModelSearch
from shared.search.perturbation import LinfPGD, RandomSmoothing
from shared.search.rnn_architect import RNNArchitect
from tests.conftest import perturb

NTOKEN = 30


def tiny_model(dropout: float = 0.0, dtype=torch.float64) -> RNNModelSearch:
    torch.manual_seed(0)
    return RNNModelSearch(NTOKEN, 6, 6, 6, dropout, dropout, dropout, dropout, 0.0).to(dtype)


def batch(seq: int = 5, bsz: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, NTOKEN, (seq, bsz), generator=g),
            torch.randint(0, NTOKEN, (seq * bsz,), generator=g))


def test_first_order_step_moves_alpha_and_returns_the_valid_hidden_state() -> None:
    model = tiny_model()
    arch = RNNArchitect(model, unrolled=False)
    (x, y), (xv, yv) = batch(seed=1), batch(seed=2)
    h = model.init_hidden(3)
    before = model.weights.detach().clone()
    _, expected = model._loss(h, xv, yv)  # dropout 0: the state the step will continue from
    hidden_next = arch.step(h, x, y, h, xv, yv, eta=20.0)
    assert not torch.equal(before, model.weights)
    assert torch.allclose(hidden_next[0], expected[0]) and not hidden_next[0].requires_grad
    assert arch.optimizer.defaults["betas"] == (0.9, 0.999)
    assert arch.optimizer.defaults["lr"] == 3e-3


def test_second_order_gradient_matches_the_exact_hypergradient() -> None:
    """With clipping out of the way (clip huge): dL_val(w')/dalpha - eta * d2L_trn/dalpha dw v,
    the mixed second derivative by double backward instead of the finite difference."""
    model = tiny_model().train()  # dropout 0: deterministic
    eta, wd = 0.5, 5e-7
    arch = RNNArchitect(model, unrolled=True, clip=1e9, wdecay=wd)
    arch.fd_step = 1e-6  # float64: a small finite-difference step, so only the formula shows
    (x, y), (xv, yv) = batch(seed=1), batch(seed=2)
    h = model.init_hidden(3)
    got, _ = arch.unrolled_rnn_gradient(h, x, y, h, xv, yv, eta)

    names, weights = zip(*model.named_weight_parameters())
    alpha = model.weights
    g = torch.autograd.grad(model._loss(h, x, y)[0], weights, create_graph=True)
    w_prime = [w - eta * (gi + wd * w) for w, gi in zip(weights, g)]
    from torch.func import functional_call

    class LossOf(torch.nn.Module):  # model._loss as a forward, for functional_call
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model._loss(*args)

    params = {f"model.{n}": w for n, w in zip(names, w_prime)}
    params.update({f"model.{n}": b.clone() for n, b in model.named_buffers()})
    val_loss, _ = functional_call(LossOf(), params, (h, xv, yv))
    exact = torch.autograd.grad(val_loss, alpha)[0]  # through w'(alpha) exactly
    assert torch.allclose(got[0], exact, rtol=1e-5, atol=1e-9)


def test_second_order_clips_the_training_gradient() -> None:
    model = tiny_model()
    (x, y), (xv, yv) = batch(seed=1), batch(seed=2)
    h = model.init_hidden(3)
    loose = RNNArchitect(model, unrolled=True, clip=1e9).unrolled_rnn_gradient(
        h, x, y, h, xv, yv, 1.0)[0][0]
    tight = RNNArchitect(model, unrolled=True, clip=1e-6).unrolled_rnn_gradient(
        h, x, y, h, xv, yv, 1.0)[0][0]
    first = torch.autograd.grad(model._loss(h, xv, yv)[0], model.weights)[0]
    # a vanishing step: w' = w, and the implicit term is scaled by the tiny clip coefficient
    assert torch.allclose(tight, first, atol=1e-6)
    assert not torch.allclose(loose, first, atol=1e-6)


def _perturbation_inputs(model):
    x, y = batch(seed=3)
    weights = tuple(w.detach() for w in model.mixing_weights())
    return (x, model.init_hidden(3)), y, weights


def test_random_smoothing_stays_in_the_ball_on_the_simplex() -> None:
    model = tiny_model(dtype=torch.float32)
    x, y, weights = _perturbation_inputs(model)
    rs = RandomSmoothing(0.3, 10)
    eps = rs.epsilon(5)
    (p,) = perturb(rs, model, weights, x, y, epoch=5)
    assert torch.allclose(p.sum(-1), torch.ones(36), atol=1e-6) and (p >= 0).all()
    # clamp-and-renormalise can move a row slightly beyond eps; before it, noise is <= eps
    assert (p - weights[0]).abs().max() <= 2 * eps
    assert not torch.equal(p, weights[0])


def test_pgd_does_not_lower_the_training_loss() -> None:
    model = tiny_model(dropout=0.0, dtype=torch.float32)
    x, y, weights = _perturbation_inputs(model)
    pgd = LinfPGD(0.3, 10, steps=3)
    adv, before, after = pgd.attack(model, weights, x, y, eps=0.3)
    assert after >= before
    with torch.no_grad():  # the attack's numbers are in eval mode (BN running statistics)
        assert model.eval().loss(x, y, adv).item() == pytest.approx(float(after), rel=1e-5)
    assert torch.allclose(adv[0].sum(-1), torch.ones(36), atol=1e-5)
