"""The evaluation training loop (DARTS ``cnn/train.py``): epochs, its schedules and loaders,
atomic checkpoints with every RNG, data parallelism through ``shared.distributed``; optionally
a held-out split of the training set that picks ``best_weights.pt`` (or, as StacNAS'
``augment.py`` does, the test set: ``select_on_test``)."""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from shared import data as D
from shared import distributed as dist_utils
from shared.checkpoint import save_checkpoint
from shared.compile import check_compile_flags, compile_network
from shared.data.on_device import (
    EpochBatches,
    OrderedBatches,
    Shard,
    batch_augment,
    check_data_path,
    to_device_images,
)
from shared.distributed import DistContext
from shared.evaluation.config import KIND, NUMBERED_CHECKPOINT, EvalConfig
from shared.evaluation.step_capture import TrainStepCapture
from shared.genotypes import Genotype
from shared.lr_schedules import cosine_power_scheduler
from shared.models.cast_once import forward_cast_once
from shared.runtime import Precision, rng_state, set_rng_state, to_device
from shared.search.meters import DeviceMeters


@dataclass
class EpochStats:
    epoch: int
    lr: float
    train_acc: float
    train_loss: float
    valid_acc: float
    valid_top5: float
    valid_loss: float
    holdout_acc: float | None = None  # train_ratio < 1 only: top-1 on the held-out split


def linear_lr_factor(epoch: int, epochs: int, tail: int = 5) -> float:
    """PC-DARTS' linear decay (used by SDARTS' ImageNet script): to ~0 at epochs - tail, then a
    5x gentler slope for the last ``tail`` epochs so they are not all ~0. Runs of <= tail
    epochs decay plainly, (epochs - epoch) / epochs."""
    if epochs <= tail:
        return (epochs - epoch) / epochs
    if epochs - epoch > tail:
        return (epochs - tail - epoch) / (epochs - tail)
    return (epochs - epoch) / ((epochs - tail) * tail)


def make_scheduler(optimizer: torch.optim.Optimizer,
                   cfg: EvalConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(cfg.epochs),
                                                          eta_min=0.0)
    if cfg.lr_scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, cfg.decay_period, gamma=cfg.gamma)
    if cfg.lr_scheduler == "cosine_power":  # StacNAS' augment --power_lr: to 0, as its cosine
        return cosine_power_scheduler(optimizer, cfg.epochs, 0.0)
    epochs = cfg.epochs
    return torch.optim.lr_scheduler.LambdaLR(optimizer,
                                             lambda e: linear_lr_factor(e, epochs))


def _loader_kwargs(cfg: EvalConfig, device: torch.device) -> dict[str, Any]:
    return {"num_workers": cfg.num_workers, "pin_memory": device.type == "cuda",
            "persistent_workers": False}


def make_loaders(cfg: EvalConfig, train: Dataset, valid: Dataset, ctx: DistContext,
                 generator: torch.Generator, device: torch.device
                 ) -> tuple[DataLoader, DataLoader, DistributedSampler | None]:
    """Shuffled train loader and in-order test loader; each rank gets 1/world of both.

    The generator drives the shuffle and the worker seeds, and is checkpointed, so a
    resumed run draws the same batches. Under DDP the sampler's order is a function of
    (seed, epoch) instead. The test split is sharded without padding (rank r takes items
    r, r+world, ...) so the summed counts are exactly the test set.
    """
    per_rank = cfg.batch_size // ctx.world_size
    common = _loader_kwargs(cfg, device)
    sampler = None
    if ctx.enabled:
        sampler = DistributedSampler(train, ctx.world_size, ctx.rank, shuffle=True, seed=cfg.seed)
        train_queue = DataLoader(train, per_rank, sampler=sampler, generator=generator, **common)
    else:
        train_queue = DataLoader(train, per_rank, shuffle=True, generator=generator, **common)
    return train_queue, eval_loader(cfg, valid, ctx, device), sampler


def eval_loader(cfg: EvalConfig, data: Dataset, ctx: DistContext,
                device: torch.device) -> DataLoader:
    """In-order loader of an evaluated split (test, held-out); under DDP rank r takes items
    r, r+world, ... (no padding, so the summed counts are exactly the split)."""
    if ctx.enabled:
        data = Subset(data, range(ctx.rank, len(data), ctx.world_size))
    return DataLoader(data, cfg.batch_size // ctx.world_size, shuffle=False,
                      **_loader_kwargs(cfg, device))


class EvalDatasets(NamedTuple):
    train: Dataset             # what the network trains on (augmented)
    test: Dataset              # the test split, scored every epoch as ``valid_acc`` (DARTS)
    holdout: Dataset | None = None  # train_ratio < 1: the rest of the training set


def load_datasets(cfg: EvalConfig) -> EvalDatasets:
    """The training set (all of it, or its first ``train_ratio`` with the rest held out and
    read with the eval transform) and the test set; ``auto_aug`` adds AutoAugment's CIFAR-10
    policy to the training transform (StacNAS' ``--auto_aug``)."""
    augment = D.train_transform(cfg.dataset, cfg.cutout, cfg.cutout_length, cfg.cutout_prob,
                                auto_augment=cfg.auto_aug)
    if cfg.train_ratio == 1.0:
        train = D.get_dataset(cfg.dataset, cfg.data, train=True, transform=augment)
        holdout = None
    else:
        # One copy of the images, two views. The held-out part is the LAST images, contiguous,
        # as StacNAS' (and DARTS') search split, so a search and its evaluation run with the
        # same ratio hold out the same images.
        full = D.get_dataset(cfg.dataset, cfg.data, train=True, transform=None)
        train_idx, holdout_idx = D.search_split(full, cfg.train_ratio, flag="--train_ratio")
        train = D.TransformedSubset(full, train_idx, augment)
        holdout = D.TransformedSubset(full, holdout_idx, D.eval_transform(cfg.dataset))
    test = D.get_dataset(cfg.dataset, cfg.data, train=False,
                         transform=D.eval_transform(cfg.dataset))
    return EvalDatasets(train, test, holdout)


def full_training_set(datasets: EvalDatasets) -> Dataset:
    """The training images before any split (``load_datasets`` splits with a view)."""
    train = datasets.train
    return train.dataset if isinstance(train, D.TransformedSubset) else train


def device_eval_queues(cfg: EvalConfig, datasets: EvalDatasets, ctx: DistContext,
                       generator: torch.Generator, device: torch.device
                       ) -> tuple[EpochBatches, OrderedBatches, OrderedBatches | None]:
    """``make_loaders`` and ``eval_loader`` with the images on the device
    (``shared.data.on_device``): the training part reshuffled each epoch in full batches of
    ``batch_size`` (the last partial batch of an epoch is dropped: every step has the same
    shapes), each rank its rows of every batch; the test split and the held-out part in order,
    rank r taking images r, r + world, ..."""
    shard = Shard(ctx.rank, ctx.world_size)
    full = full_training_set(datasets)
    images = to_device_images(full, cfg.dataset, device)
    train = datasets.train
    train_idx = train.indices if isinstance(train, D.TransformedSubset) else range(len(full))
    augment = batch_augment(cfg.dataset, cfg.cutout, cfg.cutout_length, cfg.cutout_prob)
    train_queue = EpochBatches(images, train_idx, cfg.batch_size, augment, generator, shard,
                               what="the training set")
    test = to_device_images(datasets.test, cfg.dataset, device)
    valid_queue = OrderedBatches(test, range(len(test)), cfg.batch_size, shard)
    holdout = datasets.holdout
    holdout_queue = (None if holdout is None
                     else OrderedBatches(images, holdout.indices, cfg.batch_size, shard))
    return train_queue, valid_queue, holdout_queue


@dataclass
class BestEpoch:
    """The epoch whose weights ``best_weights.pt`` holds: the best ``metric`` so far
    (``holdout_acc``, or ``valid_acc``, the test accuracy, under ``select_on_test``).

    The first epoch is kept, then a later one only if strictly better (a tie keeps the
    earlier), as StacNAS' augment.py (``epoch == 0 or best_top1 < valid_top1``). The record
    and a CPU copy of the weights go into every checkpoint: a run killed between writing the
    file and its checkpoint rewrites the file from the checkpoint's record when resumed.
    """

    metric: str
    path: str
    epoch: int = -1
    acc: float = float("-inf")
    test_acc: float = float("nan")
    weights: dict[str, torch.Tensor] | None = None

    def consider(self, entry: dict[str, Any], net: nn.Module | None) -> bool:
        """Keep epoch ``entry`` if it is the best so far (its weights from ``net``, when
        given: the main process only); True when it is."""
        acc = entry[self.metric]
        if self.epoch >= 0 and not acc > self.acc:
            return False
        self.epoch, self.acc, self.test_acc = int(entry["epoch"]), acc, entry["valid_acc"]
        if net is not None:
            self.weights = {k: v.detach().to("cpu", copy=True)
                            for k, v in net.state_dict().items()}
        return True

    def write(self) -> None:
        if self.weights is not None:
            save_checkpoint(self.weights, self.path)  # atomic, as every checkpoint

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "epoch": self.epoch, "acc": self.acc,
                "test_acc": self.test_acc, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.acc = int(state["epoch"]), float(state["acc"])
        self.test_acc, self.weights = float(state["test_acc"]), state.get("weights")



@dataclass
class EvalTrainer:
    cfg: EvalConfig
    net: nn.Module            # the network itself: saved, evaluated, drop_path_prob set on it
    model: nn.Module          # what the training forward runs: net, or DDP(net)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_queue: Iterable
    valid_queue: Iterable
    sampler: DistributedSampler | None
    device: torch.device
    ctx: DistContext
    logger: logging.Logger
    checkpoint_path: str
    generator: torch.Generator
    precision: Precision = field(default_factory=Precision)
    genotype: Genotype | None = None
    epoch_end_hooks: list[Callable[["EvalTrainer", EpochStats], None]] = field(
        default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    holdout_queue: Iterable | None = None  # train_ratio < 1: scored each epoch (holdout_acc)
    best: BestEpoch | None = None           # train_ratio < 1 or select_on_test: best_weights.pt

    def __post_init__(self) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.cfg.label_smooth)
        self.criterion_eval = nn.CrossEntropyLoss()  # DARTS: smoothing only in training
        check_compile_flags(self.cfg.compile, self.cfg.step_capture)
        self.capture = (TrainStepCapture(self, self.cfg.step_capture)
                        if self.cfg.step_capture != "off" else None)
        compiled = compile_network(self.net, self.cfg.compile, self.logger,
                                   data_parallel=self.ctx.enabled)
        # a recorded step under autocast casts the weights all at once, not each as autocast
        # does (bit for bit the same; ~9 ms of host time a forward at 20 cells, which only a
        # replay does not pay); a compiled network fuses its casts itself
        self.cast_once = (self.precision.amp and not compiled
                          and self.cfg.step_capture != "off")

    # one epoch ---------------------------------------------------------------------------
    def _apply_warmup(self, epoch: int) -> float:
        """The lr epoch ``epoch`` trains with; warm-up scales the scheduled lr for this epoch
        only (restored before ``scheduler.step()`` so the schedule itself is untouched)."""
        lr = self.scheduler.get_last_lr()[0]
        if epoch < self.cfg.warmup_epochs:
            factor = (epoch + 1) / self.cfg.warmup_epochs
            for group, base in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                group["lr"] = base * factor
            lr *= factor
        return lr

    def _end_warmup(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = base

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.precision.autocast(self.device):
            # DDP's own forward (its gradient hooks, its buffer broadcast) stays as it is
            model = self.model
            logits, logits_aux = (forward_cast_once(model, x)
                                  if self.cast_once and model is self.net else model(x))
            loss = self.criterion(logits, y)
            if self.cfg.auxiliary:
                loss = loss + self.cfg.auxiliary_weight * self.criterion(logits_aux, y)
        return loss, logits

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: forward, backward, clipping, SGD; returns (loss, logits)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, logits = self._loss(x, y)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradient, not the scaled one
        # the optimizer's parameters are the model's, in its order (``run.py`` builds it on
        # ``model.parameters()``), listed already: ``parameters()`` walks the modules, 1.9 ms
        # of host time a step for DARTS_V2's 20 cells, which an eager GPU step waits for
        nn.utils.clip_grad_norm_([p for group in self.optimizer.param_groups
                                  for p in group["params"]], self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, logits

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        cfg = self.cfg
        self.net.drop_path_prob = cfg.drop_path_prob * epoch / cfg.epochs
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.model.train()
        # on the device, read once per report line: no host synchronisation per step
        meters = DeviceMeters(self.device)
        bar = tqdm(self.train_queue, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                   disable=not (cfg.progress and self.ctx.is_main))
        train_step = self.train_step if self.capture is None else self.capture.for_epoch()
        for step, batch in enumerate(bar):
            x, y = to_device(batch, self.device, self.precision)
            loss, logits = train_step(x, y)
            meters.update(loss, logits.detach().float(), y)
            if step % cfg.report_freq == 0:
                objs, top1, top5 = meters.averages()
                self.logger.info("train %03d %e %f %f", step, objs, top1, top5)
                bar.set_postfix(loss=f"{objs:.3f}", acc=f"{top1:.1f}")
            if cfg.steps_per_epoch and step + 1 >= cfg.steps_per_epoch:
                break
        loss_sum, acc_sum = meters.sums[:2].tolist()
        loss_sum, acc_sum, n = dist_utils.all_reduce_sum(
            [loss_sum, acc_sum, meters.count], self.ctx, self.device)
        return acc_sum / max(n, 1), loss_sum / max(n, 1)

    def infer(self) -> tuple[float, float, float]:
        """Top-1, top-5 and loss on the test split (each rank its shard, summed)."""
        return self.evaluate(self.valid_queue, "valid")

    @torch.no_grad()
    def evaluate(self, queue: Iterable, tag: str) -> tuple[float, float, float]:
        """Top-1, top-5 and loss on the split ``queue`` reads (each rank its shard, summed);
        ``tag`` starts its progress lines."""
        dist_utils.broadcast_buffers(self.net, self.ctx)
        self.net.eval()
        meters = DeviceMeters(self.device)  # loss*n, top1*n, top5*n summed on the device
        with self.precision.autocast(self.device):
            for step, batch in enumerate(queue):
                x, y = to_device(batch, self.device, self.precision)
                logits, _ = self.net(x)
                logits = logits.float()
                meters.update(self.criterion_eval(logits, y), logits, y)
                if step % self.cfg.report_freq == 0:  # this rank's running averages, as DARTS
                    self.logger.info("%s %03d %e %f %f", tag, step, *meters.averages())
                if self.cfg.steps_per_epoch and step + 1 >= self.cfg.steps_per_epoch:
                    break
        loss, top1, top5, n = dist_utils.all_reduce_sum(
            [*meters.sums.tolist(), meters.count], self.ctx, self.device)
        n = max(n, 1)
        return top1 / n, top5 / n, loss / n

    # the whole run -------------------------------------------------------------------------
    def run_epoch(self, epoch: int) -> EpochStats:
        lr = self._apply_warmup(epoch)
        self.logger.info("epoch %d lr %e", epoch, lr)
        train_acc, train_loss = self.train_epoch(epoch)
        self.logger.info("train_acc %f", train_acc)
        valid_acc, valid_top5, valid_loss = self.infer()
        if self.cfg.top5:
            self.logger.info("valid_acc_top1 %f", valid_acc)
            self.logger.info("valid_acc_top5 %f", valid_top5)
        else:
            self.logger.info("valid_acc %f", valid_acc)
        holdout_acc = None
        if self.holdout_queue is not None:
            holdout_acc = self.evaluate(self.holdout_queue, "holdout")[0]
            self.logger.info("holdout_acc %f", holdout_acc)
        self._end_warmup()
        self.scheduler.step()
        return EpochStats(epoch, lr, train_acc, train_loss, valid_acc, valid_top5, valid_loss,
                          holdout_acc)

    def _history_entry(self, stats: EpochStats) -> dict[str, Any]:
        entry = asdict(stats)
        if stats.holdout_acc is None:
            del entry["holdout_acc"]  # without a held-out split the history keeps DARTS' keys
        if self.best is not None:
            # Before the checkpoint: the record it saves must include this epoch.
            if self.best.consider(entry, self.net if self.ctx.is_main else None):
                if self.ctx.is_main:
                    self.best.write()
                self.logger.info("%s <- epoch %d (%s %f)", os.path.basename(self.best.path),
                                 self.best.epoch, self.best.metric, self.best.acc)
            entry["best_epoch"] = self.best.epoch
        return entry

    def run(self) -> EpochStats | None:
        stats = None
        for epoch in range(self.start_epoch, self.cfg.epochs):
            stats = self.run_epoch(epoch)
            self.history.append(self._history_entry(stats))
            self.save(epoch + 1)
            for hook in self.epoch_end_hooks:  # publish (history.json, TensorBoard) once saved
                hook(self, stats)
        return stats

    # checkpoints ---------------------------------------------------------------------------
    def state_dict(self, next_epoch: int) -> dict[str, Any]:
        # Every rank's RNG (cutout, crops, drop-path draw per rank), so a resumed DDP run
        # continues each stream; single-process runs hold one entry.
        rngs = dist_utils.all_gather_object(rng_state(self.generator), self.ctx)
        state = {
            "kind": KIND,
            "epoch": next_epoch,
            "state_dict": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "world_size": self.ctx.world_size,
            "history": self.history,
            "genotype": self.genotype.to_dict() if self.genotype else None,
            "config": asdict(self.cfg),
        }
        if self.best is not None:
            state["best"] = self.best.state_dict()
        return state

    def save(self, next_epoch: int) -> None:
        state = self.state_dict(next_epoch)  # collective: every rank takes part
        if self.ctx.is_main:
            save_checkpoint(state, self.checkpoint_path)
            if self.cfg.ckpt_interval and next_epoch % self.cfg.ckpt_interval == 0:
                folder = os.path.dirname(self.checkpoint_path)
                save_checkpoint(state, os.path.join(folder, NUMBERED_CHECKPOINT.format(next_epoch)))
        dist_utils.barrier(self.ctx)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_data_path(state.get("config", {}), self.cfg.data_on_device)
        self.net.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state.get("scaler", {}))
        rngs = state["rng"]
        dist_utils.note_world_size(self.logger, int(state.get("world_size", 1)),
                                   self.ctx.world_size, dist_utils.NOT_BIT_IDENTICAL)
        set_rng_state(rngs[min(self.ctx.rank, len(rngs) - 1)], self.generator)
        self.history = list(state.get("history", []))
        self.start_epoch = int(state["epoch"])
        saved_best = state.get("best")
        if self.best is not None and saved_best and saved_best["metric"] == self.best.metric:
            self.best.load_state_dict(saved_best)
            if self.ctx.is_main:
                self.best.write()  # the file may be an epoch ahead of this record (killed between)
