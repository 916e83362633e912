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

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

import torch

from shared.capture import FIRST_WARMUP, CapturedStep, check_capture_device

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


class TrainStepCapture:
    """One ``CapturedStep`` of ``trainer.train_step`` per epoch; eager for good once a blocker
    or a failed recording says so."""

    def __init__(self, trainer: "EvalTrainer") -> None:
        self.trainer = trainer
        self.backend = trainer.cfg.step_capture
        if self.backend == "cuda_graph":
            check_capture_device(trainer.device)
        self.reason: str | None = None
        self.recorded_epochs = 0
        self.checked = False
        self.current: CapturedStep | None = None

    def check(self) -> None:
        if self.checked:
            return
        self.checked = True
        blockers = capture_blockers(self.trainer)
        if blockers:
            self.reason = "; ".join(blockers)
            self.trainer.logger.info("step capture: eager (%s)", self.reason)
            return
        # autocast's weight cast cache must be off while recording (torch.cuda.graph's notes)
        self.trainer.precision = replace(self.trainer.precision, autocast_cache=False)
        self.trainer.logger.info("step capture = %s", self.backend)

    def for_epoch(self) -> Step:
        """This epoch's step function (a recorded step's outputs are valid until the next)."""
        self.check()
        if self.current is not None and self.current.reason is not None:
            self.reason = self.current.reason  # the last epoch's recording failed
        if self.reason is not None:
            return self.trainer.train_step
        warmup = FIRST_WARMUP if self.recorded_epochs == 0 else 1
        self.recorded_epochs += 1
        self.current = CapturedStep(self.trainer.train_step, self.trainer.device, self.backend,
                                    warmup, self.trainer.logger)
        return self.current
