"""The bilevel search loop, written once for every method.

Per step (SDARTS order, reference sdarts.md §3.4): alpha step on a validation batch with the
unperturbed alpha, then a weight step on the training batch with mixing weights that a
method may replace. The moments a method can hook:

* ``architect``       -- the alpha step: first order, second order, or None (alpha fixed);
* ``perturbation``    -- before the weight step: replace softmax(alpha) (SDARTS);
* ``weight_grad_hooks`` -- after the weight backward, before clipping (Lambda-DARTS);
* ``epoch_start_hooks`` -- start of epoch, before any step (DARTS-PT projects here);
* ``epoch_end_hooks`` -- end of epoch: log, plot, query a benchmark;
* ``select``          -- genotype selection (argmax by default; DARTS-PT projects instead).

Each epoch ends with an atomic checkpoint holding everything needed to continue bit-identically
(``extra_state`` adds a method's own state, e.g. DARTS-PT's projection decisions); with
``numbered_checkpoints`` every N-th epoch is also kept as ``checkpoint_{epoch}.pth.tar``, the
files DARTS-PT's projection starts from.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch
import torch.nn.functional as F
from tqdm import tqdm

from shared.checkpoint import save_checkpoint
from shared.genotypes import Genotype
from shared.logs import AverageMeter, accuracy
from shared.runtime import Precision, rng_state, set_rng_state, to_device
from shared.search.architect import Architect

MixingWeights = tuple[torch.Tensor, ...]
DARTS_CELL_TYPES = ("normal", "reduce")


def cell_types(model: torch.nn.Module) -> tuple[str, ...]:
    """Names of the supernet's mixing-weight tensors, in ``mixing_weights()`` order: the
    model's ``cell_types`` (NB201: ("cell",)), else DARTS' ("normal", "reduce")."""
    return tuple(getattr(model, "cell_types", DARTS_CELL_TYPES))


class Perturbation(Protocol):
    """Returns the mixing weights the weight step uses instead of ``weights``."""

    def __call__(self, model: torch.nn.Module, weights: MixingWeights, x: torch.Tensor,
                 y: torch.Tensor, epoch: int) -> MixingWeights: ...


@dataclass
class EpochResult:
    epoch: int
    lr: float
    genotype: Genotype
    train_acc: float
    train_loss: float
    valid_acc: float
    valid_loss: float
    alphas: list[list[list[float]]]  # softmax(alpha) per alpha tensor, after the epoch
    metric: str = "acc"  # what train_acc / valid_acc hold: accuracy, or "ppl" for the RNN

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["genotype"] = self.genotype.to_dict()
        metric = d.pop("metric")
        d[f"train_{metric}"], d[f"valid_{metric}"] = d.pop("train_acc"), d.pop("valid_acc")
        return d


@dataclass
class SearchLoop:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    architect: Architect | None
    train_queue: Iterable
    valid_queue: Iterable       # one random alpha batch per weight step
    valid_eval_queue: Iterable  # the whole alpha half, for the epoch's valid accuracy
    epochs: int
    device: torch.device
    logger: logging.Logger
    checkpoint_path: str
    grad_clip: float = 5.0
    report_freq: int = 50
    warm_start_epochs: int = 0
    perturbation: Perturbation | None = None
    weight_grad_hooks: list[Callable[[torch.nn.Module], None]] = field(default_factory=list)
    epoch_start_hooks: list[Callable[["SearchLoop", int], None]] = field(default_factory=list)
    epoch_end_hooks: list[Callable[["SearchLoop", EpochResult], None]] = field(default_factory=list)
    extra_state: dict[str, Any] = field(default_factory=dict)  # name -> obj with (load_)state_dict
    numbered_checkpoints: int = 0  # keep checkpoint_{epoch}.pth.tar every N epochs (0: never)
    max_batches: int | None = None  # per epoch and per evaluation (DARTS-PT --fast: 1)
    select: Callable[[torch.nn.Module], Genotype] | None = None
    generators: tuple[torch.Generator, ...] = ()
    precision: Precision = field(default_factory=Precision)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    progress: bool = True
    last_valid_batch: tuple[torch.Tensor, torch.Tensor] | None = None
    metric: str = "acc"  # the epoch's quality number (train_epoch/infer's first value)

    # -- one epoch ----------------------------------------------------------------------------
    def mixing_weights_for_weight_step(self, x: torch.Tensor, y: torch.Tensor,
                                       epoch: int) -> MixingWeights:
        # Detached: the weight step never moves alpha (SDARTS discards those grads too).
        weights = tuple(w.detach() for w in self.model.mixing_weights())
        if self.perturbation is not None:
            weights = self.perturbation(self.model, weights, x, y, epoch)
        return weights

    def train_epoch(self, epoch: int, lr: float) -> tuple[float, float]:
        model, amp = self.model, self.precision.autocast(self.device)
        objs, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
        update_alpha = self.architect is not None and epoch >= self.warm_start_epochs
        total = len(self.train_queue)
        if self.max_batches is not None:
            total = min(total, self.max_batches)
        steps = zip(range(total), self.train_queue, self.valid_queue)
        bar = tqdm(steps, total=total, desc=f"epoch {epoch}", leave=False,
                   disable=not self.progress, dynamic_ncols=True)
        for step, batch, batch_s in bar:
            model.train()
            x, y = to_device(batch, self.device, self.precision)
            x_s, y_s = to_device(batch_s, self.device, self.precision)
            self.last_valid_batch = (x_s, y_s)  # end-of-epoch analyses use it (Hessian)
            if update_alpha:
                with amp:
                    self.architect.step(x, y, x_s, y_s, lr, self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)
            weights = self.mixing_weights_for_weight_step(x, y, epoch)
            model.train()
            with amp:
                logits = model(x, weights)
                loss = F.cross_entropy(logits, y)
            loss.backward()
            for hook in self.weight_grad_hooks:
                hook(model)
            torch.nn.utils.clip_grad_norm_(model.weight_parameters(), self.grad_clip)
            self.optimizer.step()
            for a in model.arch_parameters():  # grads the weight step left on alpha, if any
                a.grad = None

            prec1, prec5 = accuracy(logits.detach(), y, topk=(1, 5))
            n = x.size(0)
            objs.update(loss.item(), n)
            top1.update(prec1, n)
            top5.update(prec5, n)
            if step % self.report_freq == 0:
                self.logger.info("train %03d %e %f %f", step, objs.avg, top1.avg, top5.avg)
            bar.set_postfix(loss=f"{objs.avg:.3f}", acc=f"{top1.avg:.1f}")
        return top1.avg, objs.avg

    @torch.no_grad()
    def infer(self) -> tuple[float, float]:
        model = self.model
        model.eval()
        objs, top1 = AverageMeter(), AverageMeter()
        with self.precision.autocast(self.device):
            for i, batch in enumerate(self.valid_eval_queue):
                if self.max_batches is not None and i >= self.max_batches:
                    break
                x, y = to_device(batch, self.device, self.precision)
                logits = model(x)
                objs.update(F.cross_entropy(logits, y).item(), x.size(0))
                top1.update(accuracy(logits, y)[0], x.size(0))
        return top1.avg, objs.avg

    # -- the whole search ---------------------------------------------------------------------
    def genotype(self) -> Genotype:
        return self.select(self.model) if self.select is not None else self.model.genotype()

    def run(self) -> Genotype:
        model = self.model
        for epoch in range(self.start_epoch, self.epochs):
            lr = self.scheduler.get_last_lr()[0]
            self.logger.info("epoch %d lr %e", epoch, lr)
            for start_hook in self.epoch_start_hooks:
                start_hook(self, epoch)
            if self.perturbation is not None and hasattr(self.perturbation, "epsilon"):
                self.logger.info("epoch %d epsilon_alpha %e", epoch,
                                 self.perturbation.epsilon(epoch))
            self.logger.info("genotype = %s", self.genotype())
            for name, w in zip(cell_types(model), model.mixing_weights()):
                self.logger.info("softmax(alphas_%s) =\n%s", name, _fmt(w))

            train_acc, train_obj = self.train_epoch(epoch, lr)
            self.logger.info("train_%s %f", self.metric, train_acc)
            valid_acc, valid_obj = self.infer()
            self.logger.info("valid_%s %f", self.metric, valid_acc)
            self.scheduler.step()

            result = EpochResult(epoch, lr, self.genotype(), train_acc, train_obj, valid_acc,
                                 valid_obj, [w.detach().cpu().tolist()
                                             for w in model.mixing_weights()], self.metric)
            self.history.append(result.to_dict())
            for hook in self.epoch_end_hooks:
                hook(self, result)
            self.save(epoch + 1)
        genotype = self.genotype()
        self.logger.info("final genotype = %s", genotype)
        return genotype

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self, next_epoch: int) -> dict[str, Any]:
        return {
            "epoch": next_epoch,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "arch_optimizer": self.architect.state_dict() if self.architect else None,
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(*self.generators),
            "history": self.history,
            "config": self.config,
            "extra": {k: v.state_dict() for k, v in self.extra_state.items()},
        }

    def save(self, next_epoch: int) -> None:
        save_checkpoint(self.state_dict(next_epoch), self.checkpoint_path)
        if self.numbered_checkpoints and next_epoch % self.numbered_checkpoints == 0:
            numbered = os.path.join(os.path.dirname(self.checkpoint_path),
                                    f"checkpoint_{next_epoch}.pth.tar")
            shutil.copyfile(self.checkpoint_path, numbered + ".tmp")
            os.replace(numbered + ".tmp", numbered)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.architect is not None and state.get("arch_optimizer") is not None:
            self.architect.load_state_dict(state["arch_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], *self.generators)
        self.history = list(state.get("history", []))
        self.start_epoch = int(state["epoch"])
        for name, obj in self.extra_state.items():
            obj.load_state_dict(state.get("extra", {})[name])


def _fmt(w: torch.Tensor) -> str:
    return "\n".join(" ".join(f"{v:.4f}" for v in row) for row in w.detach().cpu().tolist())
