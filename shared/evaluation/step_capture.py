"""The evaluation training step recorded as a CUDA graph (``--step_capture cuda_graph``).

The step (``EvalTrainer.train_step``: forward with the auxiliary head and drop-path, backward,
clipping, SGD) is recorded once per epoch (``shared.capture``): the learning rate, a warm-up
epoch's factor and the drop-path probability are per-epoch numbers the graph bakes in, and
drop-path's masks come from the default generator, whose offsets a replay advances. It runs
eagerly, with the reason logged, under DDP (its gradient all-reduce hooks) and with fp16's
GradScaler (its skip of a step with non-finite gradients reads the device on the host); bf16
autocast has no scaler and is recorded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from shared.capture import EpochCaptures

if TYPE_CHECKING:
    from shared.evaluation.trainer import EvalTrainer

Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def capture_blockers(trainer: "EvalTrainer") -> list[str]:
    """Why this trainer's step cannot be recorded (empty: it can)."""
    reasons = []
    if trainer.ctx.enabled:
        reasons.append("a data-parallel (DDP) step all-reduces outside the graph")
    if trainer.scaler.is_enabled():
        reasons.append("fp16's GradScaler reads the device to skip non-finite steps")
    return reasons


class TrainStepCapture(EpochCaptures):
    """The evaluation trainer's steps, recorded per epoch (``shared.capture.EpochCaptures``)."""

    def blockers(self) -> list[str]:
        return capture_blockers(self.owner)

    def for_epoch(self) -> Step:
        """This epoch's step function (a recorded step's outputs are valid until the next)."""
        return self.captured(self.owner.train_step) or self.owner.train_step
