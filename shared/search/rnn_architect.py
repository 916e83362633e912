"""The DARTS Architect for the recurrent search (DARTS ``rnn/architect.py``, identical in
SmoothDARTS ``sota/rnn/architect.py``).

The same bilevel step as the CNN Architect (``shared.search.architect``), with what a language
model adds: every loss starts from a hidden state and returns the next one, and the alpha step
returns the *validation* hidden state the next step continues from. Second order differs from
the CNN version as released:

* Adam with PyTorch's default betas (0.9, 0.999), lr ``--arch_lr`` 3e-3, wd ``--arch_wdecay``;
* no momentum term in the virtual step, and the training gradient is clipped to ``--clip``
  (0.25) by global norm first: w' = w - eta (clip_coef * g + wd * w);
* the vector v = dL_val(w')/dw' is norm-clipped to ``--clip`` too, and
  grad_alpha = dL_val/dalpha - eta * clip_coef * (H v), H v by the inherited central finite
  difference (R = 0.01 / ||v||) on the training batch and hidden state.

Inputs are passed as x = (words, hidden), the RNN search model's ``loss(x, y, weights)``.

Data parallel (``shared.search.data_parallel``): every gradient is averaged over the ranks
before it is used (alpha's, the virtual step's dtheta before its clip coefficient, the unrolled
loss's, the finite difference's), as the CNN Architect does; each rank carries the hidden
states of its own columns.

``record_cell_grads`` (Λ-DARTS' ``valid_corr``, set by ``shared.search.alignment``): the step
also keeps each layer's gradient of the validation loss w.r.t. its mixing weights in
``cell_grads``, from one copy of softmax(alpha) per layer, so alpha's gradient is the same
sum of the layers' paths (to rounding: the paths are added in another order); second order
takes them from the unrolled validation loss L_val(w'), as the CNN Architect does. (The
released Λ-DARTS RNN code records no validation correlation.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from shared.search.architect import Architect, virtual_model
from shared.search.tensor_lists import copies

if TYPE_CHECKING:
    from shared.search.context import StepContext

Hidden = Sequence[torch.Tensor]


def _clip_coef(grads: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_``'s factor: min(1, max_norm / (||g|| + 1e-6)), a 0-dim float64 tensor
    on the gradients' device (no host read inside the step).

    Bit-identical to the Python float it replaces (``norm.item()``, then the arithmetic in
    double): the norm is widened to float64 exactly as ``.item()`` did, the same IEEE double
    operations follow, and ``torch.where(c < 1, c, 1)`` is ``min(1.0, c)`` (a NaN gives 1.0 in
    both). Multiplying a float32 tensor by this 0-dim tensor rounds it to float32 first, as a
    Python float scalar is."""
    norm = torch.cat([g.reshape(-1) for g in grads]).norm().double()
    # a true division (``float / tensor`` would be ``reciprocal() * float``: other rounding)
    coef = torch.full_like(norm, max_norm) / (norm + 1e-6)
    return torch.where(coef < 1.0, coef, torch.ones_like(coef))


class RNNArchitect(Architect):
    graph_safe = False  # its loop is not recorded (the hidden state goes step to step)

    def __init__(self, model: torch.nn.Module, arch_lr: float = 3e-3, arch_wdecay: float = 1e-3,
                 wdecay: float = 5e-7, clip: float = 0.25, unrolled: bool = False) -> None:
        super().__init__(model, arch_learning_rate=arch_lr, arch_weight_decay=arch_wdecay,
                         momentum=0.0, weight_decay=wdecay, unrolled=unrolled,
                         betas=(0.9, 0.999))
        self.clip = clip

    def step_alpha(self, ctx: "StepContext") -> None:
        """The step's x = (words, hidden), x_val likewise; the validation hidden state the next
        step continues from goes to ``ctx.extra["hidden_valid"]``."""
        (words, hidden), (words_val, hidden_val) = ctx.x, ctx.x_val
        ctx.extra["hidden_valid"] = self.step(hidden, words, ctx.y, hidden_val, words_val,
                                              ctx.y_val, ctx.lr, ctx.loop.optimizer)

    def step(self, hidden_trn: Hidden, x_trn: torch.Tensor, y_trn: torch.Tensor,
             hidden_val: Hidden, x_val: torch.Tensor, y_val: torch.Tensor, eta: float,
             network_optimizer: torch.optim.Optimizer | None = None) -> list[torch.Tensor]:
        """One alpha step; returns the validation hidden state after ``x_val``."""
        self.optimizer.zero_grad()
        if self.unrolled:
            grads, hidden_next = self.unrolled_rnn_gradient(hidden_trn, x_trn, y_trn,
                                                            hidden_val, x_val, y_val, eta)
            for a, g in zip(self.model.arch_parameters(), grads):
                a.grad = g
        else:
            cells = self._cell_copies() if self.record_cell_grads else None
            loss, hidden_next = self.model._loss(hidden_val, x_val, y_val, cell_weights=cells)
            self.first_order_backward(loss, cells)
        self.optimizer.step()
        return [h.detach() for h in hidden_next]

    def unrolled_rnn_gradient(self, hidden_trn: Hidden, x_trn, y_trn, hidden_val: Hidden,
                              x_val, y_val, eta: float
                              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        model = self.model
        weights = model.weight_parameters()
        alphas = model.arch_parameters()

        loss, _ = model._loss(hidden_trn, x_trn, y_trn)
        dtheta = self.data_parallel.averaged(torch.autograd.grad(loss, weights))
        coef = _clip_coef(dtheta, self.clip)
        # the virtual model w' = w - eta (coef g + wd w) (the original builds a copy; here the
        # weights move there and back, and its BN statistics are restored: virtual_model)
        step = [-(eta * (coef * g + self.network_weight_decay * p.detach()))
                for p, g in zip(weights, dtheta)]
        saved = copies(weights)
        cells = self._cell_copies() if self.record_cell_grads else []
        with virtual_model(model, weights, step, saved):
            unrolled_loss, hidden_next = model._loss(hidden_val, x_val, y_val,
                                                     cell_weights=cells or None)
            grads = self.data_parallel.averaged(
                torch.autograd.grad(unrolled_loss, list(alphas) + weights + cells))
        dalpha = grads[:len(alphas)]
        vector = list(grads[len(alphas):len(alphas) + len(weights)])
        if cells:  # each layer's dL_val(w')/dA_l (Λ-DARTS' valid_corr)
            self.cell_grads = list(grads[len(alphas) + len(weights):])
        v_coef = _clip_coef(vector, self.clip)
        vector = [v * v_coef for v in vector]

        implicit = self.hessian_vector_product(vector, (x_trn, hidden_trn), y_trn, self.fd_step,
                                               saved)
        return [g - eta * coef * ig for g, ig in zip(dalpha, implicit)], list(hidden_next)
