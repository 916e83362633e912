"""The search step recorded as a CUDA graph (``--step_capture cuda_graph``; ``shared.capture``).

The whole ``SearchLoop.step`` is recorded: the alpha step (first order, or second order with
its unrolled step and both finite-difference passes), SDARTS' perturbation (random smoothing
or the 7-step PGD attack, its keep-or-undo a ``torch.where``), the weight step's forward and
backward, the clipping and both optimisers' steps. One graph per epoch: the learning rate (the
unrolled step's eta too), SDARTS' epsilon and whether alpha moves are per-epoch numbers the
graph bakes in.

DARTS-PT's supernet, which skips the candidates of weight exactly 0, runs a recorded epoch with
the pattern of zeros read at its start, and checks on the device that it held
(``shared.models.live``): ``end_epoch`` stops the run before the epoch's checkpoint if not.

What cannot be recorded runs eagerly, and the log says why (``capture_blockers``): a part of
the step that reads the device on the host (DARTS-PT's skip of zero-weight candidates under an
SDARTS perturbation, whose clamp moves the zeros step by step), a hook
that is not declared ``graph_safe`` (Λ-DARTS' regulariser where the supernet's forward draws
random numbers, S4's noise: its ± passes put the RNG state back), a data-parallel step (its
all-reduces), a loop whose step carries host state between steps (the recurrent search's hidden
state).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from shared.capture import EpochCaptures, make_capturable
from shared.errors import UserError
from shared.models.live import HeldLive
from shared.search.context import StepContext, hook_owner

if TYPE_CHECKING:
    from shared.search.loop import SearchLoop

STEP_CAPTURES = ("off", "cuda_graph")


def _name(part: object) -> str:
    return getattr(part, "__name__", type(part).__name__)


def capture_blockers(loop: "SearchLoop") -> list[str]:
    """Why this loop's step cannot be recorded (empty: it can)."""
    reasons = []
    if not getattr(loop, "supports_step_capture", False):
        reasons.append(f"{type(loop).__name__} carries host state from step to step")
    if loop.data_parallel.enabled:
        reasons.append("a data-parallel step all-reduces outside the graph")
    for part in (loop.alpha_update, loop.perturbation):
        if part is not None and not getattr(part, "graph_safe", False):
            reasons.append(f"{_name(part)} is not graph-safe")
    owners: list[object] = []
    for hook in loop.weight_grad_hooks + loop.step_end_hooks:
        owner = hook_owner(hook)
        if not getattr(owner, "graph_safe", False) and not any(o is owner for o in owners):
            owners.append(owner)
            why = getattr(owner, "graph_unsafe_reason", None)
            reasons.append(f"the hook {_name(owner)} is not graph-safe"
                           + (f": {why}" if why else ""))
    if getattr(loop.model, "skip_zero_weights", False) and loop.perturbation is not None:
        reasons.append("the skip of zero-weight candidates reads the device on the host: "
                       "SDARTS' perturbation clamps mixing weights to 0 at random, so which "
                       "candidates run changes from step to step")
    return reasons


class LoopStepCapture(EpochCaptures):
    """The search loop's steps, recorded per epoch (``shared.capture.EpochCaptures``)."""

    def blockers(self) -> list[str]:
        return capture_blockers(self.owner)

    def prepare(self) -> None:
        """Alpha's Adam made capturable (its step count on the device)."""
        optimizer = self.owner.alpha_update.optimizer
        stepped = optimizer is not None and bool(optimizer.state)
        if optimizer is not None and make_capturable(optimizer) and stepped:
            self.owner.logger.info("note: alpha's Adam continues fused (its step count on the "
                                   "device), as a recorded step needs: equal to rounding, not "
                                   "bit for bit")

    def for_epoch(self, epoch: int, lr: float, update_alpha: bool
                  ) -> Callable[[StepContext], None]:
        """The epoch's step function: ``run(ctx)`` steps and leaves the step's weights, loss
        and logits in ``ctx`` (a recorded step's outputs, valid until the next step)."""
        loop = self.owner

        def step(x, y, x_val, y_val) -> StepContext:
            # a recorded step is replayed for every step of the epoch: it has no step number
            ctx = StepContext(loop, loop.model, epoch, -1, lr, x, y, x_val, y_val,
                              update_alpha)
            loop.step(ctx)
            return ctx

        captured = self.captured(step)
        if captured is None:
            return loop.step
        if getattr(loop.model, "skip_zero_weights", False):  # outside any recording
            with torch.no_grad():
                loop.model.held_live = HeldLive(loop.model.per_cell_weights())

        def run(ctx: StepContext) -> None:
            out = captured(ctx.x, ctx.y, ctx.x_val, ctx.y_val)
            ctx.weights, ctx.cell_weights = out.weights, out.cell_weights
            ctx.loss, ctx.logits, ctx.records = out.loss, out.logits, out.records
        return run

    def end_epoch(self, epoch: int) -> None:
        """After the epoch's last step: a supernet that skips zero weights must have kept the
        pattern held for the epoch (one read), else the run stops before its checkpoint."""
        model = self.owner.model
        held = getattr(model, "held_live", None)
        if held is None:
            return
        model.held_live = None
        if held.broken():
            raise UserError(
                f"step capture: a mixing weight became 0, or stopped being 0, during epoch "
                f"{epoch}, whose recorded steps ran the candidates of its start (DARTS-PT's "
                f"skip of zero weights); that epoch is not the eager one and was not saved: "
                f"rerun it with --resume --step_capture off")
