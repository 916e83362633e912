"""SDARTS' perturbations of the mixing weights, for the weight step only (Chen & Hsieh,
"Stabilizing Differentiable Architecture Search via Perturbation-based Regularization",
ICML'20, sec. 3; the released SmoothDARTS ``sota/cnn/train_search.py`` and ``utils.py``).

The loop's ``perturbation`` moment: selected by name (``--perturb_alpha``) from a search's
config, so the flag goes door -> config -> this hook, and every method that perturbs (SDARTS,
DARTS-PT's ``sdarts`` and ``sdarts-proj``) uses the one implementation here.

Both act on softmax(alpha) (probabilities), not on the logits, and project each row back
onto the simplex by clamp-and-renormalise, as the released code does. The alpha step never
sees them.

* SDARTS-RS  (``random``):   p + Uniform(-eps, eps).
* SDARTS-ADV (``pgd_linf``): 7-step sign-gradient ascent on the training loss inside the
  L-inf ball of radius eps around p, random start, model in eval mode; the attack is
  discarded when it did not raise the loss.

eps rises linearly per epoch from 0.03 to ``epsilon_alpha`` (``ramp=False``: constant
``epsilon_alpha``, as DARTS-PT's tuning phase uses it). The loss attacked is the supernet's own
``loss(x, y, weights)``: cross-entropy for the CNN supernets, and for the recurrent search model
(x = (words, hidden)) the NLL from the training batch's hidden state, as the original's
``*_RNN`` variants; the same code serves both.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from shared.errors import UserError
from shared.models.mode import set_mode
from shared.search.data_parallel import ONE_PROCESS

if TYPE_CHECKING:
    from shared.search.context import StepContext

Weights = tuple[torch.Tensor, ...]

EPSILON_START = 0.03


def epsilon_at(epoch: int, epochs: int, epsilon_alpha: float) -> float:
    """The CNN/NB-1Shot1 schedule: 0.03 + (eps_max - 0.03) * epoch / epochs, epoch from 0."""
    return EPSILON_START + (epsilon_alpha - EPSILON_START) * epoch / epochs


def clip_to_simplex(p: torch.Tensor) -> torch.Tensor:
    """Row-wise: clamp to [0, 1], give an all-zero row a 1 at its pre-clamp argmax, renormalise."""
    top = p.argmax(dim=-1, keepdim=True)
    q = p.clamp(0.0, 1.0)
    dead = q.sum(dim=-1, keepdim=True) == 0
    q = torch.where(dead, torch.zeros_like(q).scatter(-1, top, 1.0), q)
    return q / q.sum(dim=-1, keepdim=True)


def _uniform_like(t: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.empty_like(t).uniform_(-eps, eps)


class _Perturbation:
    """The epsilon both perturbations share: ramped per epoch (SDARTS' search) or constant."""

    # a data-parallel search: RS draws the same noise on every rank (the global RNG); ADV
    # averages each attack gradient and the losses it compares over the ranks
    data_parallel = ONE_PROCESS
    supports_data_parallel = True
    # recordable as a CUDA graph: epsilon is per epoch, the noise comes from the default
    # generator (whose offsets a replay advances), PGD's keep-or-undo is a torch.where
    graph_safe = True

    def __init__(self, epsilon_alpha: float, epochs: int, ramp: bool = True) -> None:
        self.epsilon_alpha, self.epochs, self.ramp = epsilon_alpha, epochs, ramp

    def epsilon(self, epoch: int) -> float:
        if not self.ramp:
            return self.epsilon_alpha
        return epsilon_at(epoch, self.epochs, self.epsilon_alpha)


class RandomSmoothing(_Perturbation):
    """SDARTS-RS (the original's ``Random_alpha``)."""

    def __call__(self, ctx: "StepContext") -> Weights:
        eps = self.epsilon(ctx.epoch)
        return tuple(clip_to_simplex(w + _uniform_like(w, eps)) for w in ctx.weights)


class LinfPGD(_Perturbation):
    """SDARTS-ADV (the original's ``Linf_PGD_alpha``)."""

    def __init__(self, epsilon_alpha: float, epochs: int, ramp: bool = True, steps: int = 7,
                 random_start: bool = True) -> None:
        super().__init__(epsilon_alpha, epochs, ramp)
        self.steps, self.random_start = steps, random_start

    def _loss(self, model: torch.nn.Module, weights: Sequence[torch.Tensor], x, y: torch.Tensor
              ) -> torch.Tensor:
        # The supernet's own training loss under the given mixing weights: cross-entropy for
        # the CNN supernets; for the RNN search model x = (words, hidden) and it is the NLL
        # from the training hidden state (the original's Linf_PGD_alpha_RNN).
        return model.loss(x, y, tuple(weights))

    def attack(self, model: torch.nn.Module, weights: Weights, x: torch.Tensor,
               y: torch.Tensor, eps: float) -> tuple[Weights, torch.Tensor, torch.Tensor]:
        """Returns (perturbed weights, loss before, loss after); the losses are 0-dim tensors
        and the original's "keep the attack only if it raised the loss" is a ``torch.where``,
        so the attack never waits for the device (no host synchronisation)."""
        was_training = model.training
        set_mode(model, False)  # BN on running statistics during the attack, as the original
        try:
            saved = tuple(w.detach() for w in weights)
            with torch.no_grad():
                loss_before = self.data_parallel.mean(self._loss(model, saved, x, y))
            adv = saved
            if self.random_start:
                adv = tuple(clip_to_simplex(w + _uniform_like(w, eps)) for w in adv)
            step_size = 2 * eps / self.steps
            for _ in range(self.steps):
                adv = tuple(w.detach().requires_grad_() for w in adv)
                grads = self.data_parallel.averaged(
                    torch.autograd.grad(self._loss(model, adv, x, y), adv))
                with torch.no_grad():  # ascent on the loss, sign of the gradient (Linf_SGD)
                    adv = tuple(s + (w + step_size * g.sign() - s).clamp(-eps, eps)
                                for w, g, s in zip(adv, grads, saved))
                    adv = tuple(clip_to_simplex(w) for w in adv)
            with torch.no_grad():
                loss_after = self.data_parallel.mean(self._loss(model, adv, x, y))
                keep = loss_before > loss_after  # the attack lowered the loss: undo it
                adv = tuple(torch.where(keep, s, a) for s, a in zip(saved, adv))
                loss_after = torch.where(keep, loss_before, loss_after)
            return adv, loss_before, loss_after
        finally:
            set_mode(model, was_training)

    def __call__(self, ctx: "StepContext") -> Weights:
        return self.attack(ctx.model, ctx.weights, ctx.x, ctx.y, self.epsilon(ctx.epoch))[0]


PERTURBATIONS = {"none": None, "random": RandomSmoothing, "pgd_linf": LinfPGD}


def make_perturbation(name: str, epsilon_alpha: float, epochs: int, ramp: bool = True):
    """``--perturb_alpha`` to a perturbation (None for 'none')."""
    if name not in PERTURBATIONS:
        raise UserError(f"--perturb_alpha {name!r}: choose from {', '.join(PERTURBATIONS)}")
    if epsilon_alpha < 0:
        raise UserError("--epsilon_alpha must be >= 0")
    cls = PERTURBATIONS[name]
    return None if cls is None else cls(epsilon_alpha, epochs, ramp)
