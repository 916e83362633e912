"""The DARTS Architect: one alpha step on a validation batch, first or second order (DARTS,
Liu et al., ICLR'19, sec. 2.3; the released ``cnn/architect.py``).

Second order (``--unrolled``) follows DARTS' architect.py:
w' = w - eta (momentum_buffer * momentum + dL_trn/dw + wd w), then
grad_alpha = dL_val(w', alpha)/dalpha - eta * H v, where v = dL_val(w')/dw' and the
Hessian-vector product H v = d^2 L_trn / dalpha dw . v is a central finite difference with
R = 0.01 / ||v|| (eq. 8).

DARTS builds w' as a new model (``_construct_model_from_theta``); here the supernet's own weights
are moved to w' and back (:func:`virtual_model`), as its finite difference moves them to w ± R v:
the same forward on the same values, without swapping ~1,400 weights and ~2,800 buffers into
the modules by name (``torch.func.functional_call``: 56 ms of host time a step on the 2-core
CPU, for the 8-cell DARTS supernet, which an eager GPU step waits for).

It is the bilevel strategy of ``shared.search.alpha_update``: the loop calls ``step_alpha``
with the step's context, before the weight step (DARTS' order) or after it (AutoDL's).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator, Sequence

import torch

from shared.models import kernel_reuse
from shared.search.alpha_update import AlphaUpdate, arch_adam
from shared.search.data_parallel import ONE_PROCESS
from shared.search.tensor_lists import copies, mirrored, restored

if TYPE_CHECKING:
    from shared.search.context import StepContext


class Architect(AlphaUpdate):
    """``record_cell_grads``: keep the validation loss's gradient w.r.t. each search cell's
    mixing weights in ``cell_grads`` after every step (Λ-DARTS' ``valid_corr``); alpha's
    gradient is the same (the sum of the per-cell paths)."""

    moves_alpha = True
    graph_safe = True  # R and the clip stay tensors; eta is the epoch's lr
    record_cell_grads = False
    cell_grads: list[torch.Tensor] | None = None
    # a data-parallel search: every gradient averaged over the ranks (the global batch's)
    data_parallel = ONE_PROCESS

    def __init__(self, model: torch.nn.Module, arch_learning_rate: float = 3e-4,
                 arch_weight_decay: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 3e-4, unrolled: bool = False,
                 betas: tuple[float, float] = (0.5, 0.999), fd_step: float = 1e-2) -> None:
        self.model = model
        self.fd_step = fd_step  # DARTS' r in R = r / ||v||
        self.network_momentum = momentum
        self.network_weight_decay = weight_decay
        self.unrolled = unrolled
        self.name = "second_order" if unrolled else "first_order"
        self.optimizer = arch_adam(model, arch_learning_rate, arch_weight_decay, betas)

    def step_alpha(self, ctx: "StepContext") -> None:
        self.step(ctx.x, ctx.y, ctx.x_val, ctx.y_val, ctx.lr, ctx.loop.optimizer)

    def step(self, x_trn: torch.Tensor, y_trn: torch.Tensor, x_val: torch.Tensor,
             y_val: torch.Tensor, eta: float, network_optimizer: torch.optim.Optimizer) -> None:
        self.optimizer.zero_grad()
        if self.unrolled:
            grads = self.unrolled_gradient(x_trn, y_trn, x_val, y_val, eta, network_optimizer)
            for a, g in zip(self.model.arch_parameters(), grads):
                a.grad = g
        else:
            cells = self._cell_copies() if self.record_cell_grads else None
            self.first_order_backward(self.model.loss(x_val, y_val, cell_weights=cells), cells)
        self.optimizer.step()

    def first_order_backward(self, val_loss: torch.Tensor,
                             cells: list[torch.Tensor] | None) -> None:
        """alpha's gradient dL_val/dalpha (and, recording, each cell's copy's: ``cell_grads``),
        averaged over the ranks: the gradient of the global batch's validation loss.

        Only those: DARTS' architect.py calls ``loss.backward()``, which also fills every
        weight's gradient, which the weight step then zeroes unread. Here the backward is asked
        for alpha (and the cell copies) alone, so it skips every weight-gradient kernel (a
        conv's backward computes its input's gradient only) and the accumulation into the
        weights' ``.grad``; alpha's gradient is the same."""
        val_loss.backward(inputs=[*self.model.arch_parameters(), *(cells or ())])
        if cells is not None:
            self.cell_grads = list(self.data_parallel.averaged([c.grad for c in cells]))
        self.data_parallel.average_grads(self.model.arch_parameters())

    def _cell_copies(self) -> list[torch.Tensor]:
        """One copy of the mixing weights per search cell, its gradient kept."""
        cells = [w.clone() for w in self.model.expand_weights(self.model.mixing_weights())]
        for c in cells:
            c.retain_grad()
        return cells

    # -- second order -----------------------------------------------------------------------
    def unrolled_gradient(self, x_trn, y_trn, x_val, y_val, eta: float,
                          network_optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
        model = self.model
        weights = model.weight_parameters()
        alphas = model.arch_parameters()

        # a weight no candidate of this forward used (DARTS-PT's candidates at weight 0 do not
        # run) has gradient 0: its virtual step cannot reach the loss, and R v leaves it alone
        loss = model.loss(x_trn, y_trn)
        dtheta = self.data_parallel.averaged(
            torch.autograd.grad(loss, weights, allow_unused=True, materialize_grads=True))
        saved = copies(weights)  # w: restored after the unrolled forward and the difference
        step = self.virtual_step(weights, dtheta, eta, network_optimizer)
        cells = self._cell_copies() if self.record_cell_grads else []
        with virtual_model(model, weights, step, saved):
            unrolled_loss = model.loss(x_val, y_val, cell_weights=cells or None)
            grads = self.data_parallel.averaged(
                torch.autograd.grad(unrolled_loss, list(alphas) + weights + cells,
                                    allow_unused=True, materialize_grads=True))
        dalpha = grads[:len(alphas)]
        vector = grads[len(alphas):len(alphas) + len(weights)]
        if cells:
            self.cell_grads = list(grads[len(alphas) + len(weights):])

        implicit = self.hessian_vector_product(vector, x_trn, y_trn, self.fd_step, saved)
        return [g - eta * ig for g, ig in zip(dalpha, implicit)]

    def virtual_step(self, weights: Sequence[torch.Tensor], dtheta: Sequence[torch.Tensor],
                     eta: float, network_optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
        """w' - w = -eta (momentum_buffer * momentum + dL_trn/dw + wd w), DARTS'
        ``_compute_unrolled_model``, as the same element-wise operations in the same order
        over the whole list (``torch._foreach_*``: a few kernels, not ~6 per weight); w plus
        it is DARTS' w' bit for bit (IEEE addition commutes, negation is exact)."""
        detached = [p.detach() for p in weights]
        state = network_optimizer.state
        buffers = [state.get(p, {}).get("momentum_buffer") for p in weights]
        # one allocation per storage, not per weight (a group's kernels lie in one:
        # joined_weights), and the multi-tensor operations read alike-strided lists
        step = mirrored(detached)
        held = [i for i, b in enumerate(buffers) if b is not None]
        unheld = [i for i, b in enumerate(buffers) if b is None]
        if held:
            torch._foreach_copy_([step[i] for i in held], [buffers[i] for i in held])
            torch._foreach_mul_([step[i] for i in held], self.network_momentum)
        if unheld:
            torch._foreach_zero_([step[i] for i in unheld])
        torch._foreach_add_(step, list(dtheta))                       # moment + g
        torch._foreach_add_(step, torch._foreach_mul(detached, self.network_weight_decay))
        torch._foreach_mul_(step, -eta)                               # -eta (moment + g + wd w)
        return step

    def hessian_vector_product(self, vector: Sequence[torch.Tensor], x: torch.Tensor,
                               y: torch.Tensor, r: float = 1e-2,
                               saved: Sequence[torch.Tensor] | None = None
                               ) -> list[torch.Tensor]:
        """(dL/dalpha at w + R v  -  dL/dalpha at w - R v) / 2R, R = r / ||v||; ``saved``: a
        copy of w already made (else one is)."""
        weights = list(self.model.weight_parameters())
        alphas = self.model.arch_parameters()
        # R stays a tensor (no read back to the host): the step never waits for the device
        R = r / torch.cat([v.reshape(-1) for v in vector]).norm()
        saved = copies(weights) if saved is None else list(saved)
        with torch.no_grad():  # over the whole list at once (shared.search.tensor_lists)
            shift = torch._foreach_mul(list(vector), R)  # R v
            torch._foreach_add_(weights, shift)
        kernel_reuse.forget()  # each write of the weights: the kernels built of them are stale
        grads_p = self.data_parallel.averaged(torch.autograd.grad(self.model.loss(x, y), alphas))
        with torch.no_grad():
            torch._foreach_copy_(weights, saved)
            torch._foreach_sub_(weights, shift)
        kernel_reuse.forget()
        grads_n = self.data_parallel.averaged(torch.autograd.grad(self.model.loss(x, y), alphas))
        with torch.no_grad():  # restore w exactly, not by adding R v back (rounding drift)
            torch._foreach_copy_(weights, saved)
        kernel_reuse.forget()
        return [(gp - gn) / (2 * R) for gp, gn in zip(grads_p, grads_n)]


@contextlib.contextmanager
def virtual_model(model: torch.nn.Module, weights: Sequence[torch.Tensor],
                  step: Sequence[torch.Tensor], saved: Sequence[torch.Tensor]) -> Iterator[None]:
    """Inside, ``model``'s ``weights`` are w + ``step`` (DARTS' unrolled model w'); after, they
    are ``saved`` (w, bit for bit) and every buffer is as it was before: the unrolled forward's
    BN running statistics do not leak into the model (DARTS runs it on a copy). The kernels
    built of the weights (``kernel_reuse``) are dropped at each write. ``weights`` must be
    ``model``'s own parameters and ``saved`` a copy of them (``tensor_lists.copies``)."""
    weights = list(weights)
    with restored(model.buffer_list()):
        with torch.no_grad():
            torch._foreach_add_(weights, list(step))
        kernel_reuse.forget()
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(weights, list(saved))
            kernel_reuse.forget()
