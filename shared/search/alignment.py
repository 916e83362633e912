"""Λ-DARTS' weight step: the layer-alignment regulariser added to the weights' gradient
(Movahedi et al., ICLR'23, sec. 3-4; the released ``sota/cnn/train_search.py`` and
``model_search.py``: ``get_perturbations``, ``get_reg_grads``), as hooks of the engine's
search step (``shared.search.loop``), composable with any alpha update and SDARTS'
perturbation; a search turns it on by configuration (``corr_regularization``), so every door
that builds a DARTS-space or NAS-Bench-201 search can (Λ-DARTS' own, DARTS-PT's supernet).

Per weight step, after the backward of the training loss (which gives every cell's
g_l = dL/dA_l through its own leaf copy of the mixing weights A_l):

1. ``train_corr`` = Λ_cos of the regularised cells' g_l (recorded every step);
2. p_l = dΛ/dg_l (``shared.search.alignment_terms``), ε = ε₀ / ‖concat p‖ (unregularised cells
   count as zeros, as in the released code);
3. two more forward/backward passes on the same training batch, every regularised cell at
   A_l - εp_l, then at A_l + εp_l (the others at A_l), in train mode, so BatchNorm's running
   statistics move with them as in the released code;
4. ``w.grad += λ_t (g₋ - g₊) / 2ε`` ≈ -λ_t dΛ/dw: the step descends on L_train - λ_t Λ, i.e.
   it raises the alignment; then the loop clips and steps as always.

λ_t = λ · e / (E - 1) at epoch e (the released linear ramp; ``schedule=False``: constant λ, the
RNN search without ``--lambda_scheduling``). ``valid_corr`` is Λ_cos of the per-cell gradients
of the alpha step's validation loss (the architect records them). Both are averaged per epoch
into the history (``train_corr``, ``valid_corr``, ``lambda``) and logged as the original:
``epoch %d lambda_ %e`` and ``train_corr %f valid_corr %f``.

Randomness in the ± passes (S4's noise op, dropout): by default both replay the random state of
the base pass, so (g₋ - g₊) / 2ε is a clean finite difference; ``fresh_noise`` draws new noise
as the released CNN code did (a noise term of order 1/ε then enters the weight gradient). A
supernet whose forward draws nothing (``forward_draws_random``: every CNN space but S4) has
nothing to replay, and the state is left alone (the same numbers).

The step can be recorded as a CUDA graph (``--step_capture cuda_graph``,
``shared.search.step_capture``), whose replays run none of this Python: the hooks leave the
step's correlations and zero-gradient flags in ``ctx.records``, and ``step_report``, which the
loop runs after the step, outside the graph, folds them into the epoch's (``graph_safe``; not
where the RNG state is put back, which a graph cannot).

Nothing here reads a tensor back to the host inside a step (``tests/test_no_host_sync.py``):
* whether to align at all (p = 0: the cells' gradients are already parallel, ε = ε₀/‖p‖ would
  be infinite; the released RNN code skips the step's regulariser there) is a device flag,
  ``apply = ‖p‖ > 0``: the ± passes always run, at A ± εp where it is set and at A exactly
  where not, and where it is not the weights' gradients and every buffer (BatchNorm's running
  statistics, which the two train-mode passes move) are put back as they were, so the step
  ends as the early return it replaces ended (the RNG too: the passes replay the base pass's
  random state; only with ``fresh_noise`` do they draw new numbers a skipped step did not);
* a regularised cell whose gradient is zero (or NaN) has no direction (``alignment_terms``):
  the step's Λ and p are NaN there and ``apply`` is False; the refusal (``UserError``) comes
  at the end of the epoch, from a flag kept on the device, before the epoch is checkpointed,
  where it used to come from the step itself.

Data parallel (``shared.search.data_parallel``; the loop hands its ``DataParallel`` to the
hooks, ``supports_data_parallel``): N ranks with b rows each step as one process with N·b rows.
Each rank's loss is its shard's mean, and BatchNorm's statistics are the global batch's
(``shared.models.global_batch_norm``), so a gradient of the global mean loss is the mean over
the ranks of the per-rank gradients. Three kinds of numbers enter the regulariser:

* g_l = dL/dA_l: every rank's leaf copies get its shard's share; they are averaged before Λ,
  p_l, ε, ``apply`` and the zero-gradient flag are computed, so those are the global batch's
  and bit-identical on every rank (an all-reduce gives every rank the same sum): the ranks
  perturb A_l by the same εp_l and take the same decisions. Λ and p are not linear in g_l: a
  rank-local Λ (of its shard's g_l) would be another regulariser, not a share of this one;
* the ± passes' weight gradients g₋, g₊ are each rank's share, as the base pass's; the loop
  averaged the base gradient before the hooks, so the hook averages g₋ - g₊ (one all-reduce,
  linear: the mean of the differences is the difference of the means) before adding
  λ_t (g₋ - g₊) / 2ε. The passes run in train mode through the global BatchNorm, so every rank
  moves the running statistics by the global batch's, as one process does (and puts them back
  together where ``apply`` is False);
* ``valid_corr``'s per-cell gradients come from the Architect (``record_cell_grads``), which
  averages them with alpha's (first order, and second order's unrolled pass).

The RNG: every rank is seeded alike, and the ± passes replay the rank's own base pass's state
(``restore_rng``, captured per rank), so each rank's finite difference is as clean as one
process's. A noise op (S4's) draws on each rank for its shard's shape from that same stream,
so its noise is not the one process's draw: as in every data-parallel search of this engine,
the equality holds for spaces without random ops. ``tests/test_data_parallel_search.py`` runs
2 gloo ranks against one process in float64 (corr, signcorr, corr with SDARTS-ADV).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

import torch

from shared.errors import UserError
from shared.search.alignment_terms import REGULARIZERS, ZERO_GRADIENT, corr, undefined
from shared.search.context import EpochContext, StepContext, restore_rng
from shared.search.data_parallel import ONE_PROCESS, DataParallel
from shared.search.outputs import PLOT_INTERVAL_S
from shared.search.tensor_lists import assign_where, copies

CELLS = ("normal", "all")
# The released code's TensorBoard tags (sota/cnn/train_search.py: ``writer.add_scalar``).
TENSORBOARD_TAGS = {"train_corr": "Corr/train", "valid_corr": "Corr/valid"}


def regularised_cells(kinds: Sequence[str], which: str) -> list[int]:
    """Indices of the cells Λ aligns: ``normal`` the DARTS space's normal cells (the released
    code zeroes the reduce cells' perturbation), or every cell where there is one kind
    (NAS-Bench-201's 15 cells, the RNN's layers); ``all`` every search cell."""
    if which not in CELLS:
        raise ValueError(f"cells {which!r}: one of {', '.join(CELLS)}")
    chosen = [i for i, k in enumerate(kinds) if which == "all" or k == "normal"
              or len(set(kinds)) == 1]
    if len(chosen) < 2:
        raise UserError(f"Λ-DARTS aligns at least 2 cells; this supernet has {len(chosen)} "
                        f"{'' if which == 'all' else 'normal '}cell(s) to align (more --layers"
                        f"{'' if which == 'all' else ', or --lambda_cells all'})")
    return chosen


class LayerAlignment:
    """The regulariser (``regularizer`` None: only ``train_corr``/``valid_corr`` are recorded,
    the released code's ``--corr_regularization none``). ``attach(loop)`` plugs it in;
    ``plot``: it also draws them, ``correlation.png`` (False: ``--no_plots``)."""

    needs_cell_grads = True
    # a data-parallel search (``shared.search.data_parallel``): the loop hands its process
    # group here (``SearchLoop.share_data_parallel``); g_l and the ± passes' weight gradients
    # are averaged over the ranks (see the module's docstring)
    supports_data_parallel = True
    data_parallel: DataParallel = ONE_PROCESS

    def __init__(self, regularizer: str | None, lambda_: float, epsilon_0: float, epochs: int,
                 cells: str = "normal", fresh_noise: bool = False,
                 schedule: bool = True, plot: bool = True) -> None:
        if regularizer is not None and regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer {regularizer!r}: one of {', '.join(REGULARIZERS)}")
        if regularizer is not None and schedule and epochs < 2:
            raise UserError("Λ-DARTS' λ ramps as λ·e/(epochs-1): pass --epochs >= 2")
        self.regularizer, self.lambda_, self.epsilon_0 = regularizer, lambda_, epsilon_0
        self.epochs, self.cells, self.schedule = epochs, cells, schedule
        self.fresh_noise, self.draws_plot = fresh_noise, plot
        self.needs_rng_state = regularizer is not None and not fresh_noise
        self.lam = self.lambda_at(0) if regularizer is not None else 0.0  # epoch_start sets it
        self._drawn = time.monotonic()  # as the other live plots (shared.search.outputs)
        self._cells: list[int] = []
        self._train: list[torch.Tensor] = []
        self._valid: list[torch.Tensor] = []
        self._undefined: torch.Tensor | None = None  # a zero cell gradient seen this epoch

    def attach(self, loop: Any) -> None:
        """Add the hooks to ``loop`` and have its alpha update record per-cell gradients.
        Without a regulariser and fewer than 2 cells there is nothing to record: no hooks."""
        try:
            self._cells = regularised_cells(loop.model.cell_kinds(), self.cells)
        except UserError:
            if self.regularizer is None:
                return
            raise
        # the ± passes replay the base pass's random draws: nothing to replay where the
        # forward draws none (every space but S4), and then the step can be recorded
        self.needs_rng_state = (self.regularizer is not None and not self.fresh_noise
                                and getattr(loop.model, "forward_draws_random", lambda: True)())
        loop.weight_grad_hooks.append(self)
        loop.epoch_start_hooks.append(self.epoch_start)
        loop.step_end_hooks.append(self.step_end)
        loop.step_report_hooks.append(self.step_report)
        loop.epoch_end_hooks.append(self.epoch_end)
        if self.draws_plot:
            loop.publish_hooks.append(self.plot)
        loop.scalar_tags.update(TENSORBOARD_TAGS)
        if hasattr(loop.alpha_update, "record_cell_grads"):
            loop.alpha_update.record_cell_grads = True
        if loop.data_parallel.enabled:  # the loop shared its group before these hooks came
            loop.share_data_parallel()

    @property
    def graph_safe(self) -> bool:
        """The step can be recorded as a graph (``shared.search.step_capture``): everything it
        computes stays on the device, and its numbers reach the epoch through ``ctx.records``
        (``step_report``); not where the ± passes restore an RNG state, which a graph cannot."""
        return not self.needs_rng_state

    graph_unsafe_reason = ("its ± passes put back the RNG state the forward drew from (a noise "
                           "op, dropout), which a graph cannot")

    # -- epochs ----------------------------------------------------------------------------------
    def lambda_at(self, epoch: int) -> float:
        return self.lambda_ * epoch / (self.epochs - 1) if self.schedule else self.lambda_

    def epoch_start(self, ctx: EpochContext) -> None:
        self.lam = self.lambda_at(ctx.epoch)
        self._train, self._valid, self._undefined = [], [], None
        if self.regularizer is not None:
            ctx.loop.logger.info("epoch %d lambda_ %e", ctx.epoch, self.lam)

    def epoch_end(self, ctx: EpochContext) -> None:
        if self._undefined is not None and bool(self._undefined):  # once per epoch
            raise UserError(f"{ZERO_GRADIENT}; seen in epoch {ctx.epoch}, which is not saved")
        train = float(torch.stack(self._train).mean()) if self._train else None
        valid = float(torch.stack(self._valid).mean()) if self._valid else None
        ctx.entry.update(train_corr=train, valid_corr=valid)
        if self.regularizer is not None:
            ctx.entry["lambda"] = self.lam
        _log_corr(ctx.loop.logger, train, valid)

    def plot(self, ctx: EpochContext) -> None:
        """``correlation.png`` next to the alpha trajectories (after the epoch's checkpoint),
        drawn at most every ``PLOT_INTERVAL_S`` seconds and after the last epoch."""
        now = time.monotonic()
        if now - self._drawn < PLOT_INTERVAL_S and ctx.epoch < ctx.loop.epochs - 1:
            return
        from shared.plots import plot_curves

        folder = os.path.dirname(ctx.loop.checkpoint_path)
        plot_curves(ctx.loop.history, os.path.join(folder, "correlation.png"),
                    keys=("train_corr", "valid_corr"), anytime=False)
        self._drawn = time.monotonic()

    # -- steps -----------------------------------------------------------------------------------
    def step_end(self, ctx: StepContext) -> None:
        grads = getattr(ctx.loop.alpha_update, "cell_grads", None)
        if ctx.update_alpha and grads is not None:
            chosen = [grads[i] for i in self._cells]
            ctx.records["valid_corr"] = corr(chosen, check=False).detach()
            ctx.records["valid_undefined"] = undefined(chosen)
            ctx.loop.alpha_update.cell_grads = None

    def step_report(self, ctx: StepContext) -> None:
        """After the step (outside it where it is recorded): the step's correlations into the
        epoch's lists (copies: a recorded step's outputs are overwritten by the next replay)
        and its zero-gradient flags into the epoch's, all on the device."""
        for key, values in (("train", self._train), ("valid", self._valid)):
            if f"{key}_corr" in ctx.records:
                values.append(ctx.records[f"{key}_corr"].clone())
                flag = ctx.records[f"{key}_undefined"]
                self._undefined = flag.clone() if self._undefined is None \
                    else self._undefined | flag

    def __call__(self, ctx: StepContext) -> None:
        """The weight-gradient hook: after the training backward, before the clip."""
        cells = self._cells or regularised_cells(ctx.model.cell_kinds(), self.cells)
        # g_l of the global batch: each rank's leaf copies hold its shard's share (averaged in
        # place, as the loop averages the weights' gradients; one process: nothing to do), so
        # Λ, p, ε and the flags below are the same numbers on every rank
        grads = list(self.data_parallel.averaged([ctx.cell_weights[i].grad for i in cells]))
        ctx.records["train_corr"] = corr(grads, check=False).detach()
        ctx.records["train_undefined"] = undefined(grads)
        if self.regularizer is None:
            return
        directions = REGULARIZERS[self.regularizer][1](grads, check=False)
        norm = torch.cat([d.reshape(-1) for d in directions]).norm()
        # False: nothing to align (p = 0: the cells' gradients are already parallel; or p
        # undefined, NaN). Decided on the device: see the module's docstring.
        apply = norm > 0
        eps = self.epsilon_0 / torch.where(apply, norm, torch.ones_like(norm))
        base = [w.detach() for w in ctx.cell_weights]
        pert = [torch.zeros_like(w) for w in base]
        for i, d in zip(cells, directions):
            pert[i] = torch.where(apply, eps * d, 0.0)
        buffers = _Snapshot(ctx.model.buffers())
        params = list(ctx.model.weight_parameters())
        minus = self._weight_grads(ctx, [b - p for b, p in zip(base, pert)], params)
        plus = self._weight_grads(ctx, [b + p for b, p in zip(base, pert)], params)
        with torch.no_grad():
            buffers.restore_unless(apply)
            diffs = _differences(params, minus, plus)
            # the loop averaged the base gradients before this hook: the added term is each
            # rank's shard's share too, so g₋ - g₊ is averaged (once, not g₋ and g₊ apart)
            self.data_parallel.average(diffs)
            del minus, plus
            # λ (g₋ - g₊) / 2ε over the whole list (shared.search.tensor_lists: a few launches,
            # not ~6 per weight), the same element-wise operations in the same order
            reached = [i for i, d in enumerate(diffs) if d is not None]
            regs = torch._foreach_div([diffs[i] for i in reached], 2 * eps)
            torch._foreach_mul_(regs, self.lam)
            added = []
            for i, reg in zip(reached, regs):
                if params[i].grad is None:  # reached by a ± pass only: not where ``apply`` is
                    params[i].grad = reg    # False, whose passes run at the base pass's weights
                else:
                    added.append((params[i].grad, reg))
            if added:
                grads = [g for g, _ in added]
                assign_where(apply, grads, torch._foreach_add(grads, [r for _, r in added]))

    def _weight_grads(self, ctx: StepContext, cell_weights: list[torch.Tensor],
                      params: list[torch.nn.Parameter]) -> tuple[torch.Tensor | None, ...]:
        """dL_train/dw on the step's training batch with the given per-cell mixing weights."""
        loop = ctx.loop
        if ctx.rng_state is not None:  # the base pass's noise and masks again
            restore_rng(ctx.rng_state, loop.device)
        with loop.precision.autocast(loop.device):
            loss = ctx.model.loss(ctx.x, ctx.y, cell_weights=cell_weights)
        return torch.autograd.grad(loss, params, allow_unused=True)


def _differences(params: Sequence[torch.Tensor], minus: Sequence[torch.Tensor | None],
                 plus: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """g₋ - g₊ per weight (None: neither pass reached it; a missing one counts as 0), the
    weights both passes reached as one multi-tensor subtraction."""
    diffs: list[torch.Tensor | None] = [None] * len(params)
    both = [i for i, (m, q) in enumerate(zip(minus, plus)) if m is not None and q is not None]
    if both:
        for i, d in zip(both, torch._foreach_sub([minus[i] for i in both],
                                                 [plus[i] for i in both])):
            diffs[i] = d
    for i, (p, g_m, g_p) in enumerate(zip(params, minus, plus)):
        if (g_m is None) != (g_p is None):
            diffs[i] = (torch.zeros_like(p) if g_m is None else g_m) - \
                (torch.zeros_like(p) if g_p is None else g_p)
    return diffs


class _Snapshot:
    """The values of some tensors (a model's buffers), to be put back by
    ``restore_unless(flag)`` where a device flag says so, without reading it."""

    def __init__(self, tensors) -> None:
        self.tensors = [t.detach() for t in tensors]
        self.saved = copies(self.tensors)

    def restore_unless(self, keep: torch.Tensor) -> None:
        """Each tensor as it is where ``keep``, else as it was (bit for bit either way)."""
        assign_where(~keep, self.tensors, self.saved)


def _log_corr(logger: logging.Logger, train: float | None, valid: float | None) -> None:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:f}"
    logger.info("train_corr %s valid_corr %s", fmt(train), fmt(valid))
