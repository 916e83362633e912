"""The search loop, written once for every method of the DARTS family.

One step (``SearchLoop.step``), in the order DARTS and SDARTS use (``step_order="alpha_first"``;
AutoDL's DARTS-V1 on NAS-Bench-201, which Lambda-DARTS builds on, uses ``"weights_first"``):

1. the **alpha update** (``alpha_update``, a strategy of ``shared.search.alpha_update``):
   ``step_alpha`` on the validation batch for bilevel first/second order (``Architect``),
   nothing for a fixed alpha (Blank-PT) or before ``warm_start_epochs``; one-level updates
   act in the weight step instead (7.);
2. the **weight step** (``weight_step``): mixing weights = softmax(alpha), through the
   supernet's **mixing_transform** when a method set one (DARTS-PT's projected edges),
   detached unless the update is one-level;
3. **perturbation** (one callable, ``perturbation(ctx) -> weights``): replaces those mixing
   weights for the weight step only (SDARTS' random smoothing / PGD, selected by name);
4. the forward and backward of the training loss (``forward_loss``; the recurrent loop adds
   AR/TAR and carries the hidden state); with a hook that asks for it (``needs_cell_grads``),
   every search cell gets its own leaf copy of its mixing weights, whose gradient is
   dL/dA_l, and ``needs_rng_state`` records the RNG state the forward drew from;
5. **weight_grad_hooks** (``hook(ctx)``): after the backward, before clipping; may add to the
   weights' gradients (Lambda-DARTS);
6. gradient clipping of the weights and the weight optimiser's step;
7. ``alpha_update.after_weight_backward`` (one-level: alpha steps on the same backward);
8. **step_end_hooks** (``hook(ctx)``): after both updates;
9. **step_report_hooks** (``hook(ctx)``): after the step, outside it when it is recorded as a
   graph (whose replays run no Python): they fold what the step's hooks left in
   ``ctx.records`` into their epoch's numbers, with device operations only.

Around the epochs: **epoch_start_hooks** (``hook(EpochContext)``, before any step: DARTS-PT
projects here), **epoch_end_hooks** (``hook(EpochContext)`` with ``ctx.result``: log, plot,
query a benchmark, Hessian eigenvalue; they may add numbers to ``ctx.entry``), **publish_hooks**
(the same, after the epoch's checkpoint is written: TensorBoard, ``history.json``, plots, so no
file ever shows an epoch a resume would redo), and **select** (``select(model) -> genotype``:
argmax by default, DARTS-PT's projection instead). A non-finite loss or alpha stops the search
before its epoch is checkpointed (``check_finite``): no genotype is derived from a diverged run.

Data parallelism (``data_parallel``, ``shared.search.data_parallel``): each process computes its
shard of every batch; the weight step's gradients (and one-level alpha's) are averaged over the
ranks after the backward, before the hooks and the clipping, the meters are summed over the
ranks when read, and only rank 0 writes the checkpoint and runs the publish hooks.

Recording (``step_capture``, ``shared.search.step_capture``): the whole step recorded as a
CUDA graph once per epoch and replayed; the per-epoch numbers (lr, SDARTS' epsilon, whether alpha
moves) are what a step may read on the host. A part of the step, or a hook, declares itself
``graph_safe``; anything else keeps the step eager, with the reason logged.

Compiling (``compile_mode``, ``shared.compile``): the supernet compiled in place with
``torch.compile`` (fused kernels for its forward and backward); the loop's optimisers and alpha
update run around it as they are. With ``step_capture`` the recorded step launches the compiled
kernels.

Each epoch ends with an atomic checkpoint holding everything needed to continue bit-identically:
model, both optimisers, scheduler, RNG states, history and ``extra_state`` (a method's own
state, e.g. DARTS-PT's projection decisions); with ``numbered_checkpoints`` every N-th epoch is
also kept as ``checkpoint_{epoch}.pth.tar``, the files DARTS-PT's projection starts from.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

import torch
import torch.nn.functional as F
from tqdm import tqdm

from shared.checkpoint import copy_file, save_checkpoint
from shared.compile import check_compile_flags, compile_network
from shared.data.on_device import check_data_path
from shared.distributed import SAME_BATCHES, note_world_size
from shared.errors import UserError
from shared.models import kernel_reuse
from shared.models.mode import set_mode
from shared.runtime import Precision, rng_state, set_rng_state, to_device
from shared.search.alpha_update import AlphaUpdate, FixedAlpha
from shared.search.context import (
    EpochContext,
    MixingWeights,
    StepContext,
    capture_rng,
    hook_owner,
)
from shared.search.data_parallel import ONE_PROCESS, DataParallel
from shared.search.meters import DeviceMeters
from shared.search.step_capture import STEP_CAPTURES, LoopStepCapture

STEP_ORDERS = ("alpha_first", "weights_first")


class Perturbation(Protocol):
    """Returns the mixing weights the weight step uses instead of ``ctx.weights``."""

    def __call__(self, ctx: StepContext) -> MixingWeights: ...


StepHook = Callable[[StepContext], None]
EpochHook = Callable[[EpochContext], None]


@dataclass
class EpochResult:
    epoch: int
    lr: float
    genotype: Any
    train_acc: float
    train_loss: float
    valid_acc: float | None   # None: no validation split (one-level search on all data)
    valid_loss: float | None
    alphas: list[list[list[float]]]  # softmax(alpha) per alpha tensor, after the epoch
    metric: str = "acc"  # what train_acc / valid_acc hold: accuracy, or "ppl" for the RNN

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["genotype"] = self.genotype.to_dict()
        metric = d.pop("metric")
        d[f"train_{metric}"], d[f"valid_{metric}"] = d.pop("train_acc"), d.pop("valid_acc")
        return d


def _leaf(w: Any, keep_graph: bool) -> Any:
    """A per-cell copy of mixing weights whose ``.grad`` the backward fills (tuple-aware)."""
    if isinstance(w, (tuple, list)):
        return tuple(_leaf(t, keep_graph) for t in w)
    if keep_graph:  # one-level: alpha's gradient still flows through the copy
        copy = w.clone()
        copy.retain_grad()
        return copy
    return w.detach().clone().requires_grad_()


@dataclass
class SearchLoop:
    model: torch.nn.Module          # a shared.models.supernet.Supernet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    alpha_update: AlphaUpdate | None
    train_queue: Iterable
    valid_queue: Iterable | None       # one random alpha batch per weight step
    valid_eval_queue: Iterable | None  # the whole alpha half, for the epoch's valid accuracy
    epochs: int
    device: torch.device
    logger: logging.Logger
    checkpoint_path: str
    grad_clip: float = 5.0
    report_freq: int = 50
    warm_start_epochs: int = 0
    step_order: str = "alpha_first"
    perturbation: Perturbation | None = None
    weight_grad_hooks: list[StepHook] = field(default_factory=list)
    step_end_hooks: list[StepHook] = field(default_factory=list)
    step_report_hooks: list[StepHook] = field(default_factory=list)  # after step(), outside it
    epoch_start_hooks: list[EpochHook] = field(default_factory=list)
    epoch_end_hooks: list[EpochHook] = field(default_factory=list)
    publish_hooks: list[EpochHook] = field(default_factory=list)  # after the checkpoint
    extra_state: dict[str, Any] = field(default_factory=dict)  # name -> obj with (load_)state_dict
    # history key -> TensorBoard tag, where a method keeps its paper's tag (Λ-DARTS:
    # Corr/train); other numbers of the history go to analysis/{key}
    scalar_tags: dict[str, str] = field(default_factory=dict)
    numbered_checkpoints: int = 0  # keep checkpoint_{epoch}.pth.tar every N epochs (0: never)
    max_batches: int | None = None  # per epoch and per evaluation (DARTS-PT --fast: 1)
    select: Callable[[torch.nn.Module], Any] | None = None
    generators: tuple[torch.Generator, ...] = ()
    precision: Precision = field(default_factory=Precision)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    progress: bool = True
    last_valid_batch: tuple[torch.Tensor, torch.Tensor] | None = None
    metric: str = "acc"  # the epoch's quality number (train_epoch/infer's first value)
    # several processes, each its shard of every batch (shared.search.data_parallel)
    data_parallel: DataParallel = ONE_PROCESS
    supports_data_parallel = True  # a class attribute: a loop whose step differs says False
    # the step recorded as a CUDA graph and replayed (shared.search.step_capture): "off",
    # "cuda_graph", or "emulate" (the same bookkeeping, a graph's replay modelled by
    # shared.op_replay, on any device)
    step_capture: str = "off"
    supports_step_capture = True  # a class attribute: a loop with host state per step says False
    capture: LoopStepCapture | None = field(default=None, init=False, repr=False)
    # the supernet compiled with torch.compile (shared.compile): "off", one of its modes, or
    # "aot_eager" (traced, no kernels generated: the CPU tests)
    compile_mode: str = "off"

    def __post_init__(self) -> None:
        if self.alpha_update is None:
            self.alpha_update = FixedAlpha()
        if self.step_order not in STEP_ORDERS:
            raise ValueError(f"step_order {self.step_order!r}: one of {', '.join(STEP_ORDERS)}")
        if self.alpha_update.one_level and self.perturbation is not None:
            raise ValueError("a perturbation of the mixing weights needs a bilevel alpha update: "
                             "in one-level search alpha's gradient would pass through it")
        if self.alpha_update.needs_valid_batch and self.valid_queue is None:
            raise ValueError(f"the {self.alpha_update.name} alpha update needs a validation "
                             f"queue")
        if self.data_parallel.enabled:
            self.share_data_parallel()
        if self.step_capture not in (*STEP_CAPTURES, "emulate"):
            raise ValueError(f"step_capture {self.step_capture!r}: one of "
                             f"{', '.join(STEP_CAPTURES)}")
        check_compile_flags(self.compile_mode, self.step_capture)
        if self.step_capture != "off":  # cuda_graph off CUDA: refused, by name
            self.capture = LoopStepCapture(self, self.step_capture)
        compile_network(self.model, self.compile_mode, self.logger,
                        data_parallel=self.data_parallel.enabled)

    def share_data_parallel(self) -> None:
        """Hand the process group to every part of the step that computes a gradient or a
        BatchNorm statistic; refuse the parts that cannot take it yet.

        A step hook (a function, an object, or a bound method: then its object) takes part
        when it declares ``supports_data_parallel = True``; it gets ``data_parallel`` and
        averages what it computes itself (Λ-DARTS' ``shared.search.alignment``). Idempotent:
        whoever adds hooks after the loop is built (``LayerAlignment.attach``) calls it again."""

        from shared.models.global_batch_norm import use_global_batch_norm

        hooks = self.weight_grad_hooks + self.step_end_hooks
        unsupported = [getattr(h, "__name__", type(h).__name__) for h in hooks
                       if not getattr(hook_owner(h), "supports_data_parallel", False)]
        for part in (self, self.alpha_update, self.perturbation):
            if part is not None and not getattr(part, "supports_data_parallel", False):
                unsupported.append(type(part).__name__)
        if unsupported:
            raise UserError(f"a data-parallel search does not support {', '.join(unsupported)} "
                            "yet: run it as one process")
        for part in (self.alpha_update, self.perturbation, *map(hook_owner, hooks)):
            if part is not None:
                part.data_parallel = self.data_parallel
        use_global_batch_norm(self.model, self.data_parallel)

    # -- one step ------------------------------------------------------------------------------
    def step(self, ctx: StepContext) -> None:
        """One search step: the alpha and weight updates in ``step_order``, then the hooks;
        kernels built from unchanged weights once (``kernel_reuse``)."""
        set_mode(self.model)
        with kernel_reuse.within_step():
            if self.step_order == "alpha_first":
                self.alpha_step(ctx)
            self.weight_step(ctx)
            if self.step_order == "weights_first":
                self.alpha_step(ctx)
            for hook in self.step_end_hooks:
                hook(ctx)

    def after_step(self, ctx: StepContext) -> None:
        """What follows a step outside it (a recorded step's replays run no Python): the
        ``step_report_hooks``."""
        for hook in self.step_report_hooks:
            hook(ctx)

    def alpha_step(self, ctx: StepContext) -> None:
        if ctx.update_alpha and not self.alpha_update.one_level:
            set_mode(self.model)
            with self.precision.autocast(self.device):
                self.alpha_update.step_alpha(ctx)

    def weight_step(self, ctx: StepContext) -> None:
        model = self.model
        one_level = ctx.update_alpha and self.alpha_update.one_level
        # Dropped, not zeroed: a weight this step's forward does not reach (an op DARTS-PT skips
        # at weight 0) is not stepped at all, as with darts-pt on PyTorch >= 2.0. Zeroed grads
        # would make it take weight decay and momentum only in a process that had once given it
        # a gradient, which a resumed run could not reproduce.
        self.optimizer.zero_grad(set_to_none=True)
        ctx.weights = self.mixing_weights_for_weight_step(ctx, one_level)
        set_mode(model)
        if any(getattr(h, "needs_cell_grads", False) for h in self.weight_grad_hooks):
            ctx.cell_weights = [_leaf(w, one_level) for w in model.expand_weights(ctx.weights)]
        if any(getattr(h, "needs_rng_state", False) for h in self.weight_grad_hooks):
            ctx.rng_state = capture_rng(self.device)
        with self.precision.autocast(self.device):
            ctx.loss = self.forward_loss(ctx)
        ctx.loss.backward()
        # the gradient of the global batch's mean loss (one process: nothing to do)
        self.data_parallel.average_grads(itertools.chain(
            model.weight_parameters(), model.arch_parameters() if one_level else ()))
        for hook in self.weight_grad_hooks:
            hook(ctx)
        torch.nn.utils.clip_grad_norm_(model.weight_parameters(), self.grad_clip)
        self.optimizer.step()
        kernel_reuse.forget()  # a fused optimiser moves no version counter
        if one_level:
            self.alpha_update.after_weight_backward(ctx)
        for a in model.arch_parameters():  # grads the weight step left on alpha, if any
            a.grad = None

    def mixing_weights_for_weight_step(self, ctx: StepContext, one_level: bool = False
                                       ) -> MixingWeights:
        weights = self.model.mixing_weights()
        if not one_level:  # the bilevel weight step never moves alpha (SDARTS drops its grads)
            weights = tuple(w.detach() for w in weights)
        if self.perturbation is not None:
            ctx.weights = weights
            with self.precision.autocast(self.device):  # SDARTS-ADV's forwards as the step's
                weights = self.perturbation(ctx)
        return weights

    def forward_loss(self, ctx: StepContext) -> torch.Tensor:
        """The weight step's training loss (cross-entropy of the logits, kept in ``ctx``)."""
        if ctx.cell_weights is not None:
            ctx.logits = ctx.model(ctx.x, cell_weights=ctx.cell_weights)
        else:
            ctx.logits = ctx.model(ctx.x, ctx.weights)
        return F.cross_entropy(ctx.logits, ctx.y)

    # -- one epoch -----------------------------------------------------------------------------
    def batches(self, epoch: int, lr: float, update_alpha: bool) -> Iterator[StepContext]:
        """The epoch's steps: a training batch and, where the alpha update needs one, a random
        validation batch."""
        total = self.steps_per_epoch()
        valid = (self.valid_queue if self.alpha_update.needs_valid_batch
                 else itertools.repeat(None))
        for step, batch, batch_s in zip(range(total), self.train_queue, valid):
            x, y = to_device(batch, self.device, self.precision)
            x_s = y_s = None
            if batch_s is not None:
                x_s, y_s = to_device(batch_s, self.device, self.precision)
                self.last_valid_batch = (x_s, y_s)  # end-of-epoch analyses use it (Hessian)
            yield StepContext(self, self.model, epoch, step, lr, x, y, x_s, y_s, update_alpha)

    def steps_per_epoch(self) -> int:
        total = len(self.train_queue)
        return total if self.max_batches is None else min(total, self.max_batches)

    def new_meters(self) -> Any:
        return DeviceMeters(self.device)

    def report(self, ctx: StepContext, meters: Any) -> dict[str, str] | None:
        """Accumulate the step's numbers (on the device: no host synchronisation), and every
        ``report_freq`` steps read them once, log them and return the bar's postfix."""
        meters.update(ctx.loss, ctx.logits, ctx.y)
        if ctx.step % self.report_freq:
            return None
        objs, top1, top5 = self.averages(meters)
        self.logger.info("train %03d %e %f %f", ctx.step, objs, top1, top5)
        return {"loss": f"{objs:.3f}", "acc": f"{top1:.1f}"}

    def summarize(self, meters: Any) -> tuple[float, float]:
        """(the epoch's quality number, its mean loss)."""
        objs, top1, _ = self.averages(meters)
        return top1, objs

    def averages(self, meters: DeviceMeters) -> list[float]:
        """The meters' means over every rank's batches (one process: its own)."""
        return meters.averages(self.data_parallel)

    def train_epoch(self, epoch: int, lr: float) -> tuple[float, float]:
        update_alpha = self.alpha_update.moves_alpha and epoch >= self.warm_start_epochs
        meters = self.new_meters()
        bar = tqdm(self.batches(epoch, lr, update_alpha), total=self.steps_per_epoch(),
                   desc=f"epoch {epoch}", leave=False, disable=not self.progress,
                   dynamic_ncols=True)
        step = (self.step if self.capture is None
                else self.capture.for_epoch(epoch, lr, update_alpha))
        for ctx in bar:
            step(ctx)
            self.after_step(ctx)
            postfix = self.report(ctx, meters)
            if postfix is not None:
                bar.set_postfix(postfix)
        bar.close()
        if self.capture is not None:
            self.capture.end_epoch(epoch)
        return self.summarize(meters)

    @torch.no_grad()
    def infer(self) -> tuple[float | None, float | None]:
        """The epoch's validation numbers; (None, None) without a validation split."""
        if self.valid_eval_queue is None:
            return None, None
        model = self.model
        model.eval()
        meters = DeviceMeters(self.device, topk=(1,))
        with self.precision.autocast(self.device):
            for i, batch in enumerate(self.valid_eval_queue):
                if self.max_batches is not None and i >= self.max_batches:
                    break
                x, y = to_device(batch, self.device, self.precision)
                logits = model(x)
                meters.update(F.cross_entropy(logits, y), logits, y)
        objs, top1 = self.averages(meters)
        return top1, objs

    # -- the whole search ----------------------------------------------------------------------
    def genotype(self) -> Any:
        return self.select(self.model) if self.select is not None else self.model.genotype()

    def run(self) -> Any:
        model = self.model
        for epoch in range(self.start_epoch, self.epochs):
            lr = self.scheduler.get_last_lr()[0]
            self.logger.info("epoch %d lr %e", epoch, lr)
            for start_hook in self.epoch_start_hooks:
                start_hook(EpochContext(self, epoch, lr))
            if self.perturbation is not None and hasattr(self.perturbation, "epsilon"):
                self.logger.info("epoch %d epsilon_alpha %e", epoch,
                                 self.perturbation.epsilon(epoch))
            self.logger.info("genotype = %s", self.genotype())
            for name, w in zip(model.cell_types, model.mixing_weights()):
                self.logger.info("softmax(alphas_%s) =\n%s", name, format_rows(w))

            train_acc, train_obj = self.train_epoch(epoch, lr)
            self.logger.info("train_%s %f", self.metric, train_acc)
            valid_acc, valid_obj = self.infer()
            if valid_acc is None:
                self.logger.info("valid_%s skipped (no validation split)", self.metric)
            else:
                self.logger.info("valid_%s %f", self.metric, valid_acc)
            self.check_finite(epoch, train_obj, valid_obj)
            self.scheduler.step()

            result = EpochResult(epoch, lr, self.genotype(), train_acc, train_obj, valid_acc,
                                 valid_obj, [w.detach().cpu().tolist()
                                             for w in model.mixing_weights()], self.metric)
            self.history.append(result.to_dict())
            for hook in self.epoch_end_hooks:
                hook(EpochContext(self, epoch, lr, result))
            self.save(epoch + 1)
            if self.data_parallel.is_main:  # rank 0 writes; every rank computed the same
                for hook in self.publish_hooks:
                    hook(EpochContext(self, epoch, lr, result))
        genotype = self.genotype()
        self.logger.info("final genotype = %s", genotype)
        return genotype

    def check_finite(self, epoch: int, train_loss: float, valid_loss: float | None) -> None:
        """Stop a diverged search before its epoch is saved (nothing of it is published)."""
        bad = [f"{name} loss {value}" for name, value in (("training", train_loss),
                                                          ("validation", valid_loss))
               if value is not None and not math.isfinite(value)]
        if not all(bool(torch.isfinite(w).all()) for w in self.model.mixing_weights()):
            bad.append("alpha")
        if not bad:
            return
        saved = f"the checkpoint holds epochs 0-{epoch - 1}" if epoch else "no epoch is saved"
        message = (f"the search diverged in epoch {epoch} ({', '.join(bad)} not finite): "
                   f"stopped before saving it ({saved}) and no genotype is written; lower the "
                   "learning rates or check the data, then start a new run")
        self.logger.info("error: %s", message)
        raise UserError(message)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self, next_epoch: int) -> dict[str, Any]:
        return {
            "epoch": next_epoch,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "arch_optimizer": self.alpha_update.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(*self.generators),
            "history": self.history,
            "config": self.config,
            "world_size": self.data_parallel.world_size,
            "extra": {k: v.state_dict() for k, v in self.extra_state.items()},
        }

    def save(self, next_epoch: int) -> None:
        if not self.data_parallel.is_main:
            self.data_parallel.barrier()  # rank 0 writes the checkpoint every rank would write
            return
        try:
            save_checkpoint(self.state_dict(next_epoch), self.checkpoint_path)
            if self.numbered_checkpoints and next_epoch % self.numbered_checkpoints == 0:
                numbered = os.path.join(os.path.dirname(self.checkpoint_path),
                                        f"checkpoint_{next_epoch}.pth.tar")
                copy_file(self.checkpoint_path, numbered)
        except UserError as exc:
            self.logger.info("error: epoch %d was not checkpointed: %s", next_epoch - 1, exc)
            raise
        self.data_parallel.barrier()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "data_on_device" in self.config:
            check_data_path(state.get("config", {}), self.config["data_on_device"],
                            self.data_parallel.enabled)
        note_world_size(self.logger, int(state.get("world_size", 1)),
                        self.data_parallel.world_size, SAME_BATCHES)
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.alpha_update.load_state_dict(state.get("arch_optimizer"))
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], *self.generators)
        self.history = list(state.get("history", []))
        self.start_epoch = int(state["epoch"])
        for name, obj in self.extra_state.items():
            obj.load_state_dict(state.get("extra", {})[name])


def format_rows(w: torch.Tensor) -> str:
    """A matrix of mixing weights as the logs print it: one row per edge, 4 decimals."""
    return "\n".join(" ".join(f"{v:.4f}" for v in row) for row in w.detach().cpu().tolist())
