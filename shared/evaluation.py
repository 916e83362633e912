"""Train a final network from scratch and test it: DARTS' cnn/train.py, train_imagenet.py, test.py.

The paper doors (``sdarts/sota/cnn/train.py``, ``train_imagenet.py``, ``test.py``, later
DARTS-PT's ``train.py``) parse their original flags into an ``EvalConfig`` / ``TestConfig``
and call ``run_evaluation`` / ``run_test``; the epoch loop, checkpoint/resume and
data parallelism (``torchrun``) live here once.

Protocol kept from DARTS: SGD on every parameter, lr schedule stepped at the end of each epoch
(epoch e trains with the closed-form lr_e), drop-path probability ramped linearly, auxiliary
loss, gradient-norm clipping, evaluation on the test split after every epoch and the LAST
epoch's accuracy reported. No epoch is ever picked by its test accuracy (that would tune on the
test set), so only the latest model is saved.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from shared import data as D
from shared import distributed as dist_utils
from shared.checkpoint import load_checkpoint, save_checkpoint, write_json
from shared.cli import ArgumentParser, apply_resumed_config, newest_run
from shared.distributed import DistContext
from shared.errors import UserError
from shared.models.cnn import build_final_network, count_parameters
from shared.genotypes import (Genotype, load_genotype,
                              published, save_genotype)
from shared.logs import (DATE_FORMAT, LOG_FORMAT, AverageMeter, accuracy, close_logger,
                         setup_logger, tensorboard_writer)
from shared.runtime import (Precision, choose_device, rng_state, seed_everything, set_rng_state,
                            to_device)

CHECKPOINT = "checkpoint.pth.tar"
NUMBERED_CHECKPOINT = "checkpoint_{}.pth.tar"  # every ``ckpt_interval`` epochs; {} = epochs done
WEIGHTS = "weights.pt"
KIND = "evaluation"  # marks our checkpoints, so --resume refuses a search run's checkpoint
LR_SCHEDULERS = ("step", "cosine", "linear")


@dataclass
class EvalConfig:
    data: str = "../../data"
    dataset: str = "cifar10"
    batch_size: int = 96  # global: split across processes under torchrun
    learning_rate: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    report_freq: int = 50
    gpu: int = 0
    epochs: int = 600
    init_channels: int = 36
    layers: int = 20
    auxiliary: bool = False
    auxiliary_weight: float = 0.4
    cutout: bool = False
    cutout_length: int = 16
    cutout_prob: float = 1.0
    drop_path_prob: float = 0.2
    seed: int = 0
    arch: str = "c100_s4_pgd"
    grad_clip: float = 5.0
    label_smooth: float = 0.0
    lr_scheduler: str = "cosine"
    gamma: float = 0.97       # step scheduler
    decay_period: int = 1     # step scheduler
    warmup_epochs: int = 0    # linear warm-up factor (e+1)/warmup_epochs on the first epochs
    top5: bool = False        # ImageNet logs valid_acc_top1 / valid_acc_top5 as DARTS does
    num_workers: int = 2
    amp: bool = False
    channels_last: bool = False
    progress: bool = True
    steps_per_epoch: int = 0  # 0: whole loaders; N: each train/test loop stops after N batches
    ckpt_interval: int = 0    # 0: rolling checkpoint only; N: also keep checkpoint_{N*k}.pth.tar
    extra: dict[str, Any] = field(default_factory=dict)  # the door's flags, saved for --resume


@dataclass
class EpochStats:
    epoch: int
    lr: float
    train_acc: float
    train_loss: float
    valid_acc: float
    valid_top5: float
    valid_loss: float


# -- run folders and --resume (shared by the doors) -----------------------------------------------
def arch_label(arch: str) -> str:
    """Registry name as is; a genotype file by its stem (``cells/mine.json`` -> mine), except
    the ``genotype.json`` every search writes, which is named by the search folder it lies in
    (``.../search-darts-sota-s2-2/genotype.json`` -> search-darts-sota-s2-2; a DARTS-PT
    projection's, in ``log_resume-...`` inside it, -> search-darts-sota-s2-2-proj), so that
    evaluations of different searches get different folders."""
    if arch in published():
        return arch
    path = os.path.normpath(arch.rstrip("/\\"))
    stem = os.path.splitext(os.path.basename(path))[0] or "arch"
    if stem == "genotype":
        parts = path.split(os.sep)[:-1]
        searches = [p for p in parts if p.startswith("search-")]
        if searches:
            return searches[-1] + ("-proj" if parts[-1].startswith("log_resume") else "")
        if parts and parts[-1] not in ("", ".", ".."):
            return parts[-1]
    return stem


def eval_run_dir(experiments: str, dataset: str, save: str, arch: str, seed: int,
                 suffix: str = "") -> str:
    name = f"eval-{save}-{arch_label(arch)}-{seed}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"
    return os.path.join(experiments, "sota", dataset, "eval", name)


def eval_run_pattern(experiments: str, dataset: str, save: str, arch: str, seed: int) -> str:
    """Glob of the folders ``eval_run_dir`` makes for these settings (for bare ``--resume``)."""
    return os.path.join(experiments, "sota", dataset, "eval",
                        f"eval-{save}-{arch_label(arch)}-{seed}-*")


def resolve_run(args: argparse.Namespace, typed: set[str], free: set[str], pattern: str,
                new_dir: Callable[[], str], kind: str = KIND, what: str = ""
                ) -> tuple[str, dict[str, Any] | None]:
    """(run folder, the checkpoint being resumed or None). On resume the saved flags replace
    the defaults; typed flags that would change the computation are refused."""
    if args.resume is None:
        return new_dir(), None
    save_dir = args.resume or newest_run(pattern)
    return save_dir, load_resumed(args, typed, free, os.path.join(save_dir, CHECKPOINT),
                                  kind, what)


def load_resumed(args: argparse.Namespace, typed: set[str], free: set[str],
                 path: str, kind: str = KIND, what: str = "") -> dict[str, Any]:
    """Load the checkpoint ``path`` of a run of ``kind`` (``what``: that run in words) and
    continue with the flags it was started with (typed flags outside ``free`` must agree with
    them). Returns the checkpoint."""
    saved = load_checkpoint(path)
    if saved.get("kind") != kind:
        what = what or "an evaluation run (train.py / train_imagenet.py)"
        raise UserError(f"{path} is not a checkpoint of {what}; pass such a run folder")
    flags = saved.get("config", {}).get("extra", {}).get("flags", {})
    apply_resumed_config(args, flags, typed, free)
    # Free flags not typed now keep the run's values too (not the defaults): e.g. the
    # number of DataLoader workers decides how augmentation draws are seeded, so only an
    # explicit change may break the bit-identical continuation.
    for key in free - typed - {"resume"}:
        if key in flags and hasattr(args, key):
            setattr(args, key, flags[key])
    return saved


def resolve_genotype(arch: str, saved: dict[str, Any] | None) -> Genotype:
    """The genotype a resumed run was started with (its .json may have moved since), else
    ``--arch`` resolved now, before any data or folder, so a typo fails at once."""
    if saved is not None and saved.get("genotype"):
        return Genotype.from_dict(saved["genotype"])
    return load_genotype(arch)


def build_cifar_train_parser(datasets: Sequence[str],
                             gpu: dict[str, Any] | None = None) -> ArgumentParser:
    """DARTS ``cnn/train.py``'s flags and defaults, which SDARTS' and DARTS-PT's copies keep
    (plus SDARTS' ``--dataset`` and ``--cutout_prob``); ``gpu``: a door's own ``--gpu``
    declaration (DARTS-PT's takes 'auto'). The doors add their own flags after these."""
    p = ArgumentParser("cifar")
    p.add_argument("--data", type=str, default="../../data", help="location of the data corpus")
    p.add_argument("--dataset", type=str, default="cifar10", choices=datasets)
    p.add_argument("--batch_size", type=int, default=96,
                   help="batch size (global: split across torchrun processes)")
    p.add_argument("--learning_rate", type=float, default=0.025, help="init learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum")
    p.add_argument("--weight_decay", type=float, default=3e-4, help="weight decay")
    p.add_argument("--report_freq", type=int, default=50, help="report frequency (steps)")
    p.add_argument("--gpu", **(gpu or dict(type=int, default=0, help="gpu device id (-1: CPU)")))
    p.add_argument("--epochs", type=int, default=600, help="num of training epochs")
    p.add_argument("--init_channels", type=int, default=36, help="num of init channels")
    p.add_argument("--layers", type=int, default=20, help="total number of layers")
    p.add_argument("--model_path", type=str, default="saved_models",
                   help="unused by the original either; kept so its commands still parse")
    p.add_argument("--auxiliary", action="store_true", default=False, help="use auxiliary tower")
    p.add_argument("--auxiliary_weight", type=float, default=0.4, help="weight for auxiliary loss")
    p.add_argument("--cutout", action="store_true", default=False, help="use cutout")
    p.add_argument("--cutout_length", type=int, default=16, help="cutout length")
    p.add_argument("--cutout_prob", type=float, default=1.0, help="cutout probability")
    p.add_argument("--drop_path_prob", type=float, default=0.2, help="drop path probability")
    p.add_argument("--save", type=str, default="exp", help="experiment name")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    # The original's default; it is SDARTS-ADV's S4/CIFAR-100 cell in our registry.
    p.add_argument("--arch", type=str, default="c100_s4_pgd",
                   help="registered genotype name or a genotype .json written by a search")
    p.add_argument("--grad_clip", type=float, default=5, help="gradient clipping")
    return p

def validate_config(cfg: EvalConfig) -> None:
    """Refuse settings that would fail late (after data loading) or silently misbehave."""
    for key in ("batch_size", "epochs", "init_channels", "layers", "report_freq",
                "decay_period", "cutout_length"):
        if getattr(cfg, key) < 1:
            raise UserError(f"--{key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("learning_rate", "grad_clip"):
        if not getattr(cfg, key) > 0:
            raise UserError(f"--{key} must be > 0, got {getattr(cfg, key)}")
    checks = [("cutout_prob", 0.0 <= cfg.cutout_prob <= 1.0, "in [0, 1]"),
              ("drop_path_prob", 0.0 <= cfg.drop_path_prob < 1.0, "in [0, 1)"),
              ("label_smooth", 0.0 <= cfg.label_smooth < 1.0, "in [0, 1)"),
              ("auxiliary_weight", cfg.auxiliary_weight >= 0, ">= 0"),
              ("num_workers", cfg.num_workers >= 0, ">= 0"),
              ("warmup_epochs", cfg.warmup_epochs >= 0, ">= 0"),
              ("steps_per_epoch", cfg.steps_per_epoch >= 0, ">= 0"),
              ("ckpt_interval", cfg.ckpt_interval >= 0, ">= 0")]
    for key, ok, rule in checks:
        if not ok:
            raise UserError(f"--{key} must be {rule}, got {getattr(cfg, key)}")
    if cfg.lr_scheduler not in LR_SCHEDULERS:
        raise UserError(f"--lr_scheduler {cfg.lr_scheduler!r}: choose one of "
                        f"{', '.join(LR_SCHEDULERS)}")


# -- building blocks ------------------------------------------------------------------------------
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
        valid = Subset(valid, range(ctx.rank, len(valid), ctx.world_size))
    else:
        train_queue = DataLoader(train, per_rank, shuffle=True, generator=generator, **common)
    valid_queue = DataLoader(valid, per_rank, shuffle=False, **common)
    return train_queue, valid_queue, sampler


def load_datasets(cfg: EvalConfig) -> tuple[Dataset, Dataset]:
    train = D.get_dataset(cfg.dataset, cfg.data, train=True, transform=D.train_transform(
        cfg.dataset, cfg.cutout, cfg.cutout_length, cfg.cutout_prob))
    valid = D.get_dataset(cfg.dataset, cfg.data, train=False,
                          transform=D.eval_transform(cfg.dataset))
    return train, valid


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# -- the training loop ----------------------------------------------------------------------------
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

    def __post_init__(self) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.cfg.label_smooth)
        self.criterion_eval = nn.CrossEntropyLoss()  # DARTS: smoothing only in training

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
            logits, logits_aux = self.model(x)
            loss = self.criterion(logits, y)
            if self.cfg.auxiliary:
                loss = loss + self.cfg.auxiliary_weight * self.criterion(logits_aux, y)
        return loss, logits

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        cfg = self.cfg
        self.net.drop_path_prob = cfg.drop_path_prob * epoch / cfg.epochs
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.model.train()
        objs, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
        bar = tqdm(self.train_queue, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                   disable=not (cfg.progress and self.ctx.is_main))
        for step, batch in enumerate(bar):
            x, y = to_device(batch, self.device, self.precision)
            self.optimizer.zero_grad(set_to_none=True)
            loss, logits = self._loss(x, y)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # clip the true gradient, not the scaled one
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()

            prec1, prec5 = accuracy(logits.detach().float(), y, topk=(1, 5))
            n = x.size(0)
            objs.update(loss.item(), n)
            top1.update(prec1, n)
            top5.update(prec5, n)
            if step % cfg.report_freq == 0:
                self.logger.info("train %03d %e %f %f", step, objs.avg, top1.avg, top5.avg)
            bar.set_postfix(loss=f"{objs.avg:.3f}", acc=f"{top1.avg:.1f}")
            if cfg.steps_per_epoch and step + 1 >= cfg.steps_per_epoch:
                break
        loss_sum, acc_sum, n = dist_utils.all_reduce_sum(
            [objs.sum, top1.sum, top1.cnt], self.ctx, self.device)
        return acc_sum / max(n, 1), loss_sum / max(n, 1)

    @torch.no_grad()
    def infer(self) -> tuple[float, float, float]:
        """Top-1, top-5 and loss on the test split (each rank its shard, summed)."""
        dist_utils.broadcast_buffers(self.net, self.ctx)
        self.net.eval()
        sums = [0.0, 0.0, 0.0, 0.0]  # loss*n, top1*n, top5*n, n
        with self.precision.autocast(self.device):
            for step, batch in enumerate(self.valid_queue):
                x, y = to_device(batch, self.device, self.precision)
                logits, _ = self.net(x)
                logits = logits.float()
                prec1, prec5 = accuracy(logits, y, topk=(1, 5))
                n = x.size(0)
                for i, v in enumerate((self.criterion_eval(logits, y).item(), prec1, prec5, 1)):
                    sums[i] += v * n
                if step % self.cfg.report_freq == 0:  # this rank's running averages, as DARTS
                    self.logger.info("valid %03d %e %f %f", step, sums[0] / sums[3],
                                     sums[1] / sums[3], sums[2] / sums[3])
                if self.cfg.steps_per_epoch and step + 1 >= self.cfg.steps_per_epoch:
                    break
        loss, top1, top5, n = dist_utils.all_reduce_sum(sums, self.ctx, self.device)
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
        self._end_warmup()
        self.scheduler.step()
        return EpochStats(epoch, lr, train_acc, train_loss, valid_acc, valid_top5, valid_loss)

    def run(self) -> EpochStats | None:
        stats = None
        for epoch in range(self.start_epoch, self.cfg.epochs):
            stats = self.run_epoch(epoch)
            self.history.append(asdict(stats))
            for hook in self.epoch_end_hooks:
                hook(self, stats)
            self.save(epoch + 1)
        return stats

    # checkpoints ---------------------------------------------------------------------------
    def state_dict(self, next_epoch: int) -> dict[str, Any]:
        # Every rank's RNG (cutout, crops, drop-path draw per rank), so a resumed DDP run
        # continues each stream; single-process runs hold one entry.
        rngs = dist_utils.all_gather_object(rng_state(self.generator), self.ctx)
        return {
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

    def save(self, next_epoch: int) -> None:
        state = self.state_dict(next_epoch)  # collective: every rank takes part
        if self.ctx.is_main:
            save_checkpoint(state, self.checkpoint_path)
            if self.cfg.ckpt_interval and next_epoch % self.cfg.ckpt_interval == 0:
                folder = os.path.dirname(self.checkpoint_path)
                save_checkpoint(state, os.path.join(folder, NUMBERED_CHECKPOINT.format(next_epoch)))
        dist_utils.barrier(self.ctx)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state.get("scaler", {}))
        rngs = state["rng"]
        if int(state.get("world_size", 1)) != self.ctx.world_size:
            self.logger.info("note: resumed with %d process(es), saved with %d: the run "
                             "continues but not bit-identically", self.ctx.world_size,
                             state.get("world_size", 1))
        set_rng_state(rngs[min(self.ctx.rank, len(rngs) - 1)], self.generator)
        self.history = list(state.get("history", []))
        self.start_epoch = int(state["epoch"])


# -- composition ----------------------------------------------------------------------------------
def _tensorboard_hook(writer) -> Callable[[EvalTrainer, EpochStats], None]:
    def hook(trainer: EvalTrainer, s: EpochStats) -> None:
        writer.add_scalar("Acc/train", s.train_acc, s.epoch)
        writer.add_scalar("Obj/train", s.train_loss, s.epoch)
        writer.add_scalar("Acc/valid", s.valid_acc, s.epoch)
        writer.add_scalar("Acc/valid_top5", s.valid_top5, s.epoch)
        writer.add_scalar("Obj/valid", s.valid_loss, s.epoch)
        writer.add_scalar("lr", s.lr, s.epoch)
        writer.add_scalar("drop_path_prob", trainer.net.drop_path_prob, s.epoch)
        writer.flush()
    return hook


def _history_hook(save_dir: str) -> Callable[[EvalTrainer, EpochStats], None]:
    def hook(trainer: EvalTrainer, s: EpochStats) -> None:
        write_json(os.path.join(save_dir, "history.json"), trainer.history)
    return hook


def _check_world(cfg: EvalConfig, ctx: DistContext) -> None:
    if cfg.batch_size % ctx.world_size:
        raise UserError(f"--batch_size {cfg.batch_size} is the global batch and must divide by "
                        f"the {ctx.world_size} processes; pick a multiple of {ctx.world_size}")


def _build_model(cfg: EvalConfig, genotype: Genotype, device: torch.device,
                 precision: Precision, ctx: DistContext) -> tuple[nn.Module, nn.Module]:
    net = build_final_network(genotype, cfg.dataset, cfg.init_channels, cfg.layers,
                              cfg.auxiliary)
    net = precision.prepare_model(net.to(device))
    if not ctx.enabled:
        return net, net
    ids = [device.index] if device.type == "cuda" else None
    # DDP broadcasts rank 0's initial weights, so all ranks start from the same network.
    return net, nn.parallel.DistributedDataParallel(net, device_ids=ids)


def _make_trainer(cfg: EvalConfig, genotype: Genotype, save_dir: str, device: torch.device,
                  ctx: DistContext, logger: logging.Logger,
                  datasets: tuple[Dataset, Dataset]) -> EvalTrainer:
    precision = Precision(cfg.amp, cfg.channels_last)
    generator = _generator(cfg.seed)
    train_queue, valid_queue, sampler = make_loaders(cfg, *datasets, ctx, generator, device)
    net, model = _build_model(cfg, genotype, device, precision, ctx)
    logger.info("param size = %fMB", count_parameters(net) / 1e6)
    optimizer = torch.optim.SGD(model.parameters(), cfg.learning_rate, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    # A scaler only for fp16 autocast (CUDA without bf16); bf16 and fp32 need none.
    fp16 = cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return EvalTrainer(
        cfg=cfg, net=net, model=model, optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg),
        scaler=torch.amp.GradScaler(device.type, enabled=fp16),
        train_queue=train_queue, valid_queue=valid_queue, sampler=sampler, device=device,
        ctx=ctx, logger=logger, checkpoint_path=os.path.join(save_dir, CHECKPOINT),
        generator=generator, precision=precision, genotype=genotype)


def run_evaluation(cfg: EvalConfig, genotype: Genotype, save_dir: str, *,
                   resume: bool = False, resume_from: str | None = None,
                   log_file: str = "log.txt",
                   hooks: Sequence[Callable[[EvalTrainer, EpochStats], None]] = ()
                   ) -> EpochStats | None:
    """Train ``genotype`` from scratch in ``save_dir`` (or continue it with ``resume``).

    ``resume_from`` continues from that checkpoint file instead of the run's rolling one (e.g. a
    ``checkpoint_{N}.pth.tar``; later checkpoints are then rewritten). ``log_file`` names the
    log in ``save_dir``; ``hooks`` run after each epoch on the main process, after the
    TensorBoard and history hooks.
    Returns the last epoch's statistics (None when a resumed run had nothing left to do).
    Works as one process or under ``torchrun`` (DDP); only rank 0 writes files.
    """
    validate_config(cfg)
    ctx, device = dist_utils.setup(cfg.gpu)
    logger, writer = dist_utils.silent_logger(), None
    try:
        _check_world(cfg, ctx)
        save_dir = dist_utils.broadcast_object(save_dir, ctx)  # rank 0's timestamped name
        # Seed per rank: same init (DDP copies rank 0's anyway), distinct augmentation streams.
        seed_everything(cfg.seed + ctx.rank)
        # Data first: a missing dataset fails before an empty run folder is made.
        datasets = load_datasets(cfg)
        if ctx.is_main:
            logger = setup_logger(save_dir, log_file)
        logger.info("experiment folder: %s", os.path.abspath(save_dir))
        logger.info("device = %s, processes = %d", device, ctx.world_size)
        logger.info("args = %s", asdict(cfg))
        logger.info("genotype = %s", genotype)
        trainer = _make_trainer(cfg, genotype, save_dir, device, ctx, logger, datasets)
        if cfg.steps_per_epoch:
            logger.info("steps_per_epoch = %d: every train/test loop stops after %d batch(es) "
                        "(a debug run, not a result)", cfg.steps_per_epoch, cfg.steps_per_epoch)
        if resume or resume_from:
            path = resume_from or trainer.checkpoint_path
            trainer.load_state_dict(load_checkpoint(path))
            logger.info("resumed from %s at epoch %d", path, trainer.start_epoch)
        if ctx.is_main:
            save_genotype(genotype, os.path.join(save_dir, "genotype.json"), arch=cfg.arch)
            writer = tensorboard_writer(save_dir, purge_step=trainer.start_epoch)
            trainer.epoch_end_hooks = [_tensorboard_hook(writer), _history_hook(save_dir),
                                       *hooks]
        stats = trainer.run()
        _finish(trainer, save_dir)
        return stats
    finally:
        if writer is not None:
            writer.close()
        if ctx.is_main:
            close_logger(logger)
        dist_utils.cleanup()


def _finish(trainer: EvalTrainer, save_dir: str) -> None:
    if not trainer.ctx.is_main:
        return
    save_checkpoint(trainer.net.state_dict(), os.path.join(save_dir, WEIGHTS))
    if trainer.history:
        last = trainer.history[-1]
        # The last epoch, as the papers report; no best-on-test selection.
        trainer.logger.info("final (last epoch %d) valid_acc %f", last["epoch"],
                            last["valid_acc"])
    trainer.logger.info("weights: %s", os.path.abspath(os.path.join(save_dir, WEIGHTS)))


# -- test.py ----------------------------------------------------------------------------------
@dataclass
class TestConfig:
    __test__ = False  # not a pytest test class, despite the name
    data: str = "../../data"
    dataset: str = "cifar10"
    batch_size: int = 96
    report_freq: int = 50
    gpu: int = 0
    init_channels: int = 36
    layers: int = 20
    auxiliary: bool = False
    drop_path_prob: float = 0.2
    seed: int = 0
    arch: str = "DARTS"
    model_path: str = "EXP/model.pt"
    num_workers: int = 2


def _stdout_logger() -> logging.Logger:
    """test.py logs to stdout only, as DARTS' test.py."""
    logger = logging.getLogger("darts.test")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt=DATE_FORMAT))
    logger.addHandler(handler)
    return logger


def load_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, saved config or {}) from a ``weights.pt`` or a ``checkpoint.pth.tar``.

    The ``module.`` prefix of weights saved from (Distributed)DataParallel is dropped, so
    DARTS-style released weights load as well.
    """
    if not os.path.isfile(path):
        raise UserError(f"--model_path {path!r} does not exist; pass the weights.pt or "
                        f"checkpoint.pth.tar of a train.py run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / foreign files raise many types
        first_line = (str(exc).splitlines() or [""])[0][:200]
        raise UserError(f"--model_path {path!r} is corrupt or not a weights file "
                        f"({type(exc).__name__}: {first_line}); pass the weights.pt or "
                        f"checkpoint.pth.tar of a train.py run") from None
    config: dict[str, Any] = {}
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        config = state.get("config") or {}
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--model_path {path!r} holds no model weights (expected a state_dict "
                        f"or a checkpoint with one)")
    weights = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    return weights, config


def fit_weights(net: nn.Module, weights: dict[str, torch.Tensor], what: str,
                config: dict[str, Any]) -> None:
    """Load ``weights`` into ``net``, or say plainly why they do not fit (wrong flags)."""
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if not (missing or unexpected or shapes):
        net.load_state_dict(weights)
        return
    parts = [f"{len(keys)} {label}" for keys, label in ((missing, "missing"),
             (unexpected, "unexpected"), (shapes, "with other shapes")) if keys]
    if shapes:
        k = shapes[0]
        parts.append(f"e.g. {k}: {tuple(weights[k].shape)} in the file vs "
                     f"{tuple(own[k].shape)} here")
    elif missing or unexpected:
        parts.append(f"e.g. {(missing or unexpected)[0]}")
    hint = ""
    if config:
        hint = (f" The checkpoint was trained with --arch {config.get('arch')} --dataset "
                f"{config.get('dataset')} --init_channels {config.get('init_channels')} "
                f"--layers {config.get('layers')}.")
    raise UserError(f"the weights in {what} do not match this network ({'; '.join(parts)}); "
                    f"pass the --arch/--init_channels/--layers/--dataset it was trained "
                    f"with.{hint}")


def run_test(cfg: TestConfig, genotype: Genotype) -> tuple[float, float]:
    """DARTS' test.py: top-1 / top-5 of saved weights on the test split."""
    logger = _stdout_logger()
    device = choose_device(cfg.gpu)
    seed_everything(cfg.seed)
    logger.info("gpu device = %s", device)
    logger.info("args = %s", asdict(cfg))
    weights, config = load_weights(cfg.model_path)
    # The auxiliary head is unused at test time; build it when the file has one so that
    # weights trained with --auxiliary load whether or not the flag is repeated here.
    has_aux = any(k.startswith("auxiliary_head.") for k in weights)
    if cfg.auxiliary and not has_aux:
        raise UserError(f"--auxiliary: {cfg.model_path} has no auxiliary head (it was trained "
                        f"without --auxiliary); drop the flag")
    net = build_final_network(genotype, cfg.dataset, cfg.init_channels, cfg.layers, has_aux)
    fit_weights(net, weights, cfg.model_path, config)
    logger.info("param size = %fMB", count_parameters(net) / 1e6)
    net = net.to(device)
    net.drop_path_prob = cfg.drop_path_prob  # inactive in eval mode, kept as the original
    test_data = D.get_dataset(cfg.dataset, cfg.data, train=False,
                              transform=D.eval_transform(cfg.dataset))
    queue = DataLoader(test_data, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                       pin_memory=device.type == "cuda")
    top1, top5 = _test_loop(net, queue, device, cfg.report_freq, logger)
    logger.info("test_acc %f", top1)
    return top1, top5


@torch.no_grad()
def _test_loop(net: nn.Module, queue: DataLoader, device: torch.device, report_freq: int,
               logger: logging.Logger) -> tuple[float, float]:
    net.eval()
    criterion = nn.CrossEntropyLoss()
    objs, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
    for step, batch in enumerate(queue):
        x, y = to_device(batch, device)
        logits, _ = net(x)
        prec1, prec5 = accuracy(logits, y, topk=(1, 5))
        n = x.size(0)
        objs.update(criterion(logits, y).item(), n)
        top1.update(prec1, n)
        top5.update(prec5, n)
        if step % report_freq == 0:
            logger.info("test %03d %e %f %f", step, objs.avg, top1.avg, top5.avg)
    return top1.avg, top5.avg
