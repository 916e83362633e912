"""Train a recurrent cell from scratch and test it: DARTS ``rnn/train.py`` and ``rnn/test.py``
(SmoothDARTS' copies, ``sota/rnn/train.py`` and ``sota/rnn/test.py``, are the same).

The protocol, as the original:
* SGD (lr 20, weight decay 8e-7) on every weight, gradients clipped to 0.25, NLL + TAR
  (``beta`` 1e-3) + AR (``alpha``, 0 by default);
* variable-length BPTT: a window is ``bptt`` long with probability 0.95, else ``bptt / 2``,
  blurred by N(0, 5), at least 5 and at most ``bptt + max_seq_len_delta``; the step's lr is
  scaled by ``seq_len / bptt``, so long and short windows move the weights alike per word;
* the training hidden state is carried from window to window within an epoch (one per
  ``small_batch_size`` slice of the batch, whose gradients accumulate);
* after each epoch the validation loss (batch 10) decides: a new best saves ``model.pt``;
  non-monotone trigger (AWD-LSTM's NT-ASGD): once more than ``nonmono`` losses are recorded
  and this one is worse than the best of all but the last ``nonmono``, SGD is replaced by
  ASGD (t0 = 0, lambd = 0, same lr and weight decay), and from then on validation (and the
  saved best model) uses the averaged weights ``ax``;
* a non-finite loss or gradient rolls the weights and optimiser back to ``model.pt`` (the
  original caught the bare ``raise`` its NaN check threw) and training goes on from the epoch
  after it; the log says so;
* at the end the best model is tested on the test split with batch size 1 (``test.py`` does
  the same for any ``model.pt``).

Data parallel (``torchrun --nproc_per_node N train.py ...``): each process trains
``batch_size / N`` of the batch's columns (the sequences whose hidden states it carries), with
the global batch's dropout masks (``RNNModel.shard_batches``); the gradients are averaged before
the clip and the step, and the window's NLL over the ranks, so N processes step the weights as
one process with the whole batch, and every rank takes the same decisions (divergence, the best
model, the switch to ASGD) from the same numbers. The validation and test perplexities are
computed whole on every rank (batches of 10 and 1); rank 0 alone writes. ``--small_batch_size``
(one process's gradient accumulation over slices of the batch) is refused with more than one
process: each rank computes its columns in one pass.

Additions: ``checkpoint.pth.tar`` after every epoch (weights, optimiser, the non-monotone
record, RNG streams), so a killed run continues with ``--resume`` exactly as if never stopped;
the window lengths come from the run's own generator for that reason. A run that keeps
diverging from the same checkpoint stops after ``MAX_ROLLBACKS`` tries instead of looping.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from shared import distributed as dist_utils
from shared.checkpoint import load_checkpoint, save_checkpoint, write_json
from shared.data.on_device import Shard
from shared.data.text import Corpus, Dictionary, batchify, get_batch, load_corpus
from shared.errors import UserError
from shared.lm import evaluate_perplexity, perplexity, regularised_loss
from shared.logs import AverageMeter, close_logger, setup_logger, tensorboard_writer
from shared.models.rnn import RNNModel, repackage_hidden
from shared.plots import plot_curves, plot_genotype
from shared.rnn_genotype import RNNGenotype
from shared.runtime import choose_device, cpu_threads, rng_state, seed_everything, set_rng_state
from shared.search.data_parallel import ONE_PROCESS, DataParallel

CHECKPOINT = "checkpoint.pth.tar"  # the last finished epoch, for --resume
BEST = "model.pt"                  # the best validation loss: test.py's input, the rollback point
KIND = "rnn_evaluation"            # marks the --resume checkpoint
BEST_KIND = "rnn_model"            # marks model.pt
MAX_ROLLBACKS = 5                  # consecutive rollbacks without a finished epoch in between
TEST_BATCH_SIZE = 1
EVAL_BATCH_SIZE = 10


@dataclass
class RNNTrainConfig:
    data: str = "../../data/penn/"
    emsize: int = 850
    nhid: int = 850
    nhidlast: int = 850
    lr: float = 20.0
    clip: float = 0.25
    epochs: int = 8000
    batch_size: int = 64
    bptt: int = 35
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.1
    seed: int = 1267
    nonmono: int = 5
    log_interval: int = 200
    alpha: float = 0.0
    beta: float = 1e-3
    wdecay: float = 8e-7
    small_batch_size: int = -1  # -1: the batch size
    max_seq_len_delta: int = 20
    arch: str = "DARTS"
    gpu: int = 0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # the door's flags, for --resume


def validate_config(cfg: RNNTrainConfig) -> None:
    """Refuse settings that would fail late or silently misbehave."""
    for key in ("emsize", "epochs", "batch_size", "bptt", "log_interval"):
        if getattr(cfg, key) < 1:
            raise UserError(f"--{key} must be >= 1, got {getattr(cfg, key)}")
    if not cfg.emsize == cfg.nhid == cfg.nhidlast:
        raise UserError(f"the DARTS cell needs --emsize = --nhid = --nhidlast, got "
                        f"{cfg.emsize}, {cfg.nhid}, {cfg.nhidlast}")
    small = small_batch_size(cfg)
    if small < 1 or cfg.batch_size % small:
        raise UserError(f"--small_batch_size {cfg.small_batch_size} must divide --batch_size "
                        f"{cfg.batch_size} (or be -1)")
    for key in ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute"):
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise UserError(f"--{key} must be in [0, 1), got {getattr(cfg, key)}")
    for key in ("lr", "clip"):
        if not getattr(cfg, key) > 0:
            raise UserError(f"--{key} must be > 0, got {getattr(cfg, key)}")
    for key in ("nonmono", "max_seq_len_delta", "alpha", "beta", "wdecay"):
        if getattr(cfg, key) < 0:
            raise UserError(f"--{key} must be >= 0, got {getattr(cfg, key)}")


def small_batch_size(cfg: RNNTrainConfig) -> int:
    return cfg.batch_size if cfg.small_batch_size == -1 else cfg.small_batch_size


def check_data_parallel(cfg: RNNTrainConfig, world_size: int) -> None:
    """Refuse what N processes cannot split: a batch N does not divide, and the slices of
    ``--small_batch_size`` (one process's gradient accumulation; its dropout masks are drawn
    slice by slice, which ranks holding other columns could not reproduce)."""
    if world_size <= 1:
        return
    if cfg.batch_size % world_size:
        raise UserError(f"--batch_size {cfg.batch_size} is the global batch of a data-parallel "
                        f"run: it must split evenly over {world_size} processes")
    if small_batch_size(cfg) != cfg.batch_size:
        raise UserError(f"--small_batch_size {cfg.small_batch_size}: a data-parallel run "
                        f"computes each process's {cfg.batch_size // world_size} columns in one "
                        "pass; leave it at -1 (more processes also need less memory each)")


def window_length(bptt: int, max_seq_len_delta: int, generator: torch.Generator) -> int:
    """The original's variable BPTT: base ``bptt`` (p = 0.95) or ``bptt / 2``, plus N(0, 5),
    truncated to an int, at least 5, at most ``bptt + max_seq_len_delta``."""
    base = bptt if torch.rand(1, generator=generator).item() < 0.95 else bptt / 2.0
    seq_len = max(5, int(base + 5.0 * torch.randn(1, generator=generator).item()))
    return min(seq_len, bptt + max_seq_len_delta)


def vocabulary_fingerprint(dictionary: Dictionary) -> str:
    """A short hash of the word list in id order: test.py refuses a corpus whose ids differ."""
    return hashlib.sha256("\n".join(dictionary.idx2word).encode()).hexdigest()[:16]


def model_args(cfg: RNNTrainConfig, ntoken: int) -> dict[str, Any]:
    """What ``RNNModel`` is built from; stored in ``model.pt`` so test.py needs no flags."""
    return {"ntoken": ntoken, "ninp": cfg.emsize, "nhid": cfg.nhid, "nhidlast": cfg.nhidlast,
            "dropout": cfg.dropout, "dropouth": cfg.dropouth, "dropoutx": cfg.dropoutx,
            "dropouti": cfg.dropouti, "dropoute": cfg.dropoute}


def check_vocabulary(state: dict[str, Any], vocabulary: str) -> None:
    """Refuse to continue a run on a corpus whose vocabulary is not the run's."""
    if state.get("vocabulary") != vocabulary:
        raise UserError("the corpus' vocabulary differs from the one the run was started "
                        "with; resume with the same --data")


def make_optimizer(kind: str, model: torch.nn.Module, cfg: RNNTrainConfig
                   ) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.wdecay)
    if kind == "asgd":
        return torch.optim.ASGD(model.parameters(), lr=cfg.lr, t0=0, lambd=0.0,
                                weight_decay=cfg.wdecay)
    raise ValueError(f"unknown optimizer kind {kind!r}")


def optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    return "asgd" if isinstance(optimizer, torch.optim.ASGD) else "sgd"


class Diverged(Exception):
    """A non-finite training loss or gradient norm (the weights were not stepped with it)."""

    def __init__(self, epoch: int, batch: int, what: str) -> None:
        super().__init__(f"non-finite {what} at epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.what = epoch, batch, what


@dataclass
class RNNTrainer:
    cfg: RNNTrainConfig
    model: RNNModel
    genotype: RNNGenotype
    train_data: torch.Tensor  # batchified at batch_size
    valid_data: torch.Tensor  # batchified at EVAL_BATCH_SIZE
    test_data: torch.Tensor   # batchified at TEST_BATCH_SIZE
    vocabulary: str
    device: torch.device
    logger: logging.Logger
    save_dir: str
    generator: torch.Generator = field(default_factory=torch.Generator)
    epoch: int = 0  # the last finished epoch (epochs count from 1, as the original)
    best_val_loss: list[float] = field(default_factory=list)  # SGD phase, for the trigger
    stored_loss: float = math.inf  # the best validation loss so far (what model.pt holds)
    history: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    consecutive_rollbacks: int = 0
    epoch_end_hooks: list[Callable[["RNNTrainer", dict[str, Any]], None]] = \
        field(default_factory=list)
    # several processes, each its columns of every batch; train_data holds them all
    data_parallel: DataParallel = ONE_PROCESS

    def __post_init__(self) -> None:
        self.optimizer = make_optimizer("sgd", self.model, self.cfg)
        dp = self.data_parallel
        if dp.enabled:
            check_data_parallel(self.cfg, dp.world_size)
            start, stop = Shard(dp.rank, dp.world_size).rows(self.cfg.batch_size)
            self.train_data = self.train_data[:, start:stop].contiguous()
            self.model.shard_batches(Shard(dp.rank, dp.world_size))

    @property
    def rank_batch_size(self) -> int:
        """The columns this process trains (one process: the batch)."""
        return self.cfg.batch_size // self.data_parallel.world_size

    @property
    def best_path(self) -> str:
        return os.path.join(self.save_dir, BEST)

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.save_dir, CHECKPOINT)

    # -- one epoch -------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training text; (perplexity, mean NLL). Raises Diverged."""
        cfg, model, data = self.cfg, self.model, self.train_data
        small = small_batch_size(cfg) // self.data_parallel.world_size
        hidden = [model.init_hidden(small) for _ in range(self.rank_batch_size // small)]
        epoch_loss, interval_loss = AverageMeter(), AverageMeter()
        start = time.time()
        batch, i = 0, 0
        with tqdm(total=len(data) // cfg.bptt, desc=f"epoch {epoch}", leave=False,
                  disable=not (cfg.progress and self.data_parallel.is_main),
                  dynamic_ncols=True) as bar:
            while i < data.size(0) - 1 - 1:
                seq_len = window_length(cfg.bptt, cfg.max_seq_len_delta, self.generator)
                x, y = get_batch(data, i, seq_len)
                step_loss = self.train_step(x, y.view(x.size(0), -1), hidden, seq_len, epoch,
                                            batch)
                epoch_loss.update(step_loss, x.size(0))
                interval_loss.update(step_loss)
                if batch % cfg.log_interval == 0 and batch > 0:
                    self.logger.info(
                        "| epoch %3d | %5d/%5d batches | lr %02.2f | ms/batch %5.2f | "
                        "loss %5.2f | ppl %8.2f", epoch, batch, len(data) // cfg.bptt,
                        self.optimizer.param_groups[0]["lr"],
                        (time.time() - start) * 1000 / cfg.log_interval, interval_loss.avg,
                        perplexity(interval_loss.avg))
                    interval_loss, start = AverageMeter(), time.time()
                bar.update(1)
                bar.set_postfix(ppl=f"{perplexity(epoch_loss.avg):.1f}")
                batch += 1
                i += seq_len
        return perplexity(epoch_loss.avg), epoch_loss.avg

    def train_step(self, x: torch.Tensor, y: torch.Tensor, hidden: list, seq_len: int,
                   epoch: int, batch: int) -> float:
        """One SGD/ASGD step on the window ``x`` -> ``y`` (both T x B), the batch in slices
        of ``small_batch_size`` whose hidden states ``hidden`` carries; the lr is scaled by
        ``seq_len / bptt`` for this step only. Returns the window's mean NLL; raises
        Diverged (before stepping) on a non-finite loss or gradient norm."""
        cfg, model, dp = self.cfg, self.model, self.data_parallel
        small = small_batch_size(cfg) // dp.world_size  # data parallel: the rank's columns
        group = self.optimizer.param_groups[0]
        lr = group["lr"]
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for s, col in enumerate(range(0, self.rank_batch_size, small)):
            hidden[s] = repackage_hidden(hidden[s])
            loss, raw_loss, hidden[s] = regularised_loss(
                model, x[:, col:col + small], y[:, col:col + small].reshape(-1), hidden[s],
                cfg.alpha, cfg.beta)
            (loss * small / self.rank_batch_size).backward()
            step_loss += raw_loss.item() * small / self.rank_batch_size
        if dp.enabled:  # the global batch's: its mean NLL and gradient, the same on every rank
            step_loss = dp.mean(torch.tensor(step_loss, dtype=torch.float64,
                                             device=self.device)).item()
            dp.average_grads(model.parameters())
        if not math.isfinite(step_loss):
            raise Diverged(epoch, batch, "training loss")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        if not torch.isfinite(norm):
            raise Diverged(epoch, batch, "gradient norm")
        group["lr"] = lr * seq_len / cfg.bptt
        try:
            self.optimizer.step()
        finally:
            group["lr"] = lr
        return step_loss

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Under ASGD: the averaged weights ``ax`` in place of the current ones."""
        if optimizer_kind(self.optimizer) != "asgd":
            yield
            return
        saved = {}
        for p in self.model.parameters():
            state = self.optimizer.state.get(p, {})
            if "ax" in state:
                saved[p] = p.detach().clone()
                p.data.copy_(state["ax"])
        try:
            yield
        finally:
            for p, value in saved.items():
                p.data.copy_(value)

    def validate_and_save(self, epoch: int) -> tuple[float, bool, bool]:
        """(validation loss, saved as the new best, switched to ASGD) -- the original's
        epoch-end branch, SGD or ASGD."""
        cfg = self.cfg
        averaged = optimizer_kind(self.optimizer) == "asgd"
        with self.averaged_weights():
            _, val_loss = evaluate_perplexity(self.model, self.valid_data, cfg.bptt)
            saved = val_loss < self.stored_loss  # every rank computed the same val_loss
            if saved:
                if self.data_parallel.is_main:
                    self.save_best(epoch, val_loss, averaged)
                self.data_parallel.barrier()  # a rollback on any rank reads this model.pt
                self.stored_loss = val_loss
        switched = False
        if not averaged:
            nonmono = cfg.nonmono
            if len(self.best_val_loss) > nonmono and \
                    val_loss > min(self.best_val_loss[:len(self.best_val_loss) - nonmono]):
                self.optimizer = make_optimizer("asgd", self.model, cfg)
                switched = True
            self.best_val_loss.append(val_loss)
        return val_loss, saved, switched

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        while self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            start = time.time()
            lr = self.optimizer.param_groups[0]["lr"]
            try:
                train_ppl, train_loss = self.train_epoch(epoch)
            except Diverged as d:
                self.rollback(d)
                continue
            self.consecutive_rollbacks = 0
            val_loss, saved, switched = self.validate_and_save(epoch)
            averaged = optimizer_kind(self.optimizer) == "asgd" and not switched
            self.logger.info("-" * 89)
            self.logger.info("| end of epoch %3d | time: %5.2fs | valid loss %5.2f | "
                             "valid ppl %8.2f%s", epoch, time.time() - start, val_loss,
                             perplexity(val_loss), " (averaged weights)" if averaged else "")
            self.logger.info("-" * 89)
            if saved:
                self.logger.info("Saving %s!", "Averaged" if averaged else "Normal")
            if switched:
                self.logger.info("Switching to ASGD (validation loss %.4f is worse than the "
                                 "best before the last %d epochs)", val_loss, cfg.nonmono)
            record = {"epoch": epoch, "lr": lr, "optimizer": "asgd" if averaged else "sgd",
                      "train_loss": train_loss, "train_ppl": train_ppl, "valid_loss": val_loss,
                      "valid_ppl": perplexity(val_loss), "averaged": averaged, "best": saved,
                      "switched_to_asgd": switched, "seconds": time.time() - start}
            self.history.append(record)
            self.epoch = epoch
            if self.data_parallel.is_main:
                save_checkpoint(self.state_dict(), self.checkpoint_path)
            for hook in self.epoch_end_hooks:  # publish (history.json, plots) once saved
                hook(self, record)

    def rollback(self, d: Diverged) -> None:
        """The original's ``except``: reload the best model and its optimiser, go on after it."""
        if not os.path.isfile(self.best_path):
            raise UserError(f"training diverged ({d}) before any epoch was validated, so there "
                            f"is no model.pt to roll back to; lower --lr ({self.cfg.lr}) or "
                            f"--clip ({self.cfg.clip})")
        self.consecutive_rollbacks += 1
        if self.consecutive_rollbacks > MAX_ROLLBACKS:
            raise UserError(f"training diverged ({d}) {MAX_ROLLBACKS} times in a row after "
                            f"rolling back to {self.best_path}; lower --lr ({self.cfg.lr}) or "
                            f"--clip ({self.cfg.clip}). The run so far is kept in "
                            f"{self.save_dir}")
        best = load_checkpoint(self.best_path, map_location=self.device)
        self.model.load_state_dict(best["state_dict"])
        self.optimizer = make_optimizer(best["optimizer_kind"], self.model, self.cfg)
        self.optimizer.load_state_dict(best["optimizer"])
        self.logger.info("%s: rolling back to the best model (epoch %d, valid ppl %.2f, %s) "
                         "and training on from epoch %d", d, best["epoch"],
                         perplexity(best["valid_loss"]), best["optimizer_kind"].upper(),
                         best["epoch"] + 1)
        self.rollbacks.append({"epoch": d.epoch, "batch": d.batch, "what": d.what,
                               "to_epoch": int(best["epoch"])})
        self.history = [h for h in self.history if h["epoch"] <= best["epoch"]]
        self.epoch = int(best["epoch"])

    # -- checkpoints -----------------------------------------------------------------------
    def save_best(self, epoch: int, val_loss: float, averaged: bool) -> None:
        save_checkpoint({
            "kind": BEST_KIND, "epoch": epoch, "state_dict": self.model.state_dict(),
            "optimizer_kind": optimizer_kind(self.optimizer),
            "optimizer": self.optimizer.state_dict(), "valid_loss": val_loss,
            "averaged": averaged, "genotype": self.genotype.to_dict(),
            "model": model_args(self.cfg, self.model.ntoken), "vocabulary": self.vocabulary,
            "data": self.cfg.data,
        }, self.best_path)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND, "epoch": self.epoch, "state_dict": self.model.state_dict(),
            "optimizer_kind": optimizer_kind(self.optimizer),
            "optimizer": self.optimizer.state_dict(), "best_val_loss": list(self.best_val_loss),
            "stored_loss": self.stored_loss, "history": self.history,
            "rollbacks": self.rollbacks, "consecutive_rollbacks": self.consecutive_rollbacks,
            "rng": rng_state(self.generator), "genotype": self.genotype.to_dict(),
            "vocabulary": self.vocabulary, "config": asdict(self.cfg),
            "world_size": self.data_parallel.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_vocabulary(state, self.vocabulary)
        dist_utils.note_world_size(self.logger, int(state.get("world_size", 1)),
                                   self.data_parallel.world_size, dist_utils.SAME_BATCHES)
        self.model.load_state_dict(state["state_dict"])
        self.optimizer = make_optimizer(state["optimizer_kind"], self.model, self.cfg)
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.best_val_loss = [float(v) for v in state["best_val_loss"]]
        self.stored_loss = float(state["stored_loss"])
        self.history = list(state["history"])
        self.rollbacks = list(state["rollbacks"])
        self.consecutive_rollbacks = int(state["consecutive_rollbacks"])
        set_rng_state(state["rng"], self.generator)

    def test(self) -> tuple[float, dict[str, Any]]:
        """Test loss of the best model with batch size 1 (the original's last lines)."""
        best = load_checkpoint(self.best_path, map_location=self.device)
        self.model.load_state_dict(best["state_dict"])
        _, loss = evaluate_perplexity(self.model, self.test_data, self.cfg.bptt)
        return loss, best


# -- composition ----------------------------------------------------------------------------------
def open_corpus(data: str) -> Corpus:
    """``--data``: a corpus folder (train/valid/test.txt), 'ptb'/'wt2', or 'embedded'."""
    return load_corpus(data, os.path.dirname(os.path.normpath(data)))


def build_trainer(cfg: RNNTrainConfig, genotype: RNNGenotype, save_dir: str,
                  logger: logging.Logger, corpus: Corpus | None = None, *,
                  data_parallel: DataParallel = ONE_PROCESS,
                  device: torch.device | None = None) -> RNNTrainer:
    """The model, data and trainer (nothing run yet). ``data_parallel``: this process's rank
    of a data-parallel run (``run_rnn_training`` under torchrun; ``device`` is then the
    rank's)."""
    validate_config(cfg)
    check_data_parallel(cfg, data_parallel.world_size)
    device = device or choose_device(cfg.gpu)
    seed_everything(cfg.seed)  # the same on every rank: the same weights and dropout masks
    logger.info("device = %s", device)
    logger.info("cpu threads = %d", cpu_threads())
    logger.info("args = %s", asdict(cfg))
    logger.info("genotype = %s", genotype)
    corpus = corpus or open_corpus(cfg.data)
    ntokens = len(corpus.dictionary)
    train = batchify(corpus.train, cfg.batch_size, device)
    valid = batchify(corpus.valid, EVAL_BATCH_SIZE, device)
    test = batchify(corpus.test, TEST_BATCH_SIZE, device)
    logger.info("corpus %s: %d words, train %d / valid %d / test %d tokens", cfg.data, ntokens,
                corpus.train.numel(), corpus.valid.numel(), corpus.test.numel())
    model = RNNModel(genotype=genotype, **model_args(cfg, ntokens)).to(device)
    logger.info("Model total parameters: %d", sum(p.numel() for p in model.parameters()))
    generator = torch.Generator()
    generator.manual_seed(cfg.seed)
    return RNNTrainer(cfg=cfg, model=model, genotype=genotype, train_data=train,
                      valid_data=valid, test_data=test,
                      vocabulary=vocabulary_fingerprint(corpus.dictionary), device=device,
                      logger=logger, save_dir=save_dir, generator=generator,
                      data_parallel=data_parallel)


def _tensorboard_hook(writer) -> Callable[[RNNTrainer, dict[str, Any]], None]:
    def hook(trainer: RNNTrainer, r: dict[str, Any]) -> None:
        for key, tag in (("train_ppl", "Ppl/train"), ("valid_ppl", "Ppl/valid"),
                         ("train_loss", "Loss/train"), ("valid_loss", "Loss/valid"),
                         ("lr", "lr")):
            writer.add_scalar(tag, r[key], r["epoch"])
        writer.add_scalar("asgd", float(r["averaged"] or r["switched_to_asgd"]), r["epoch"])
        writer.flush()
    return hook


def _outputs_hook(save_dir: str) -> Callable[[RNNTrainer, dict[str, Any]], None]:
    def hook(trainer: RNNTrainer, r: dict[str, Any]) -> None:
        write_json(os.path.join(save_dir, "history.json"), trainer.history)
        plot_perplexity(trainer.history, os.path.join(save_dir, "perplexity.png"))
    return hook


def plot_perplexity(history: list[dict[str, Any]], path: str) -> str:
    """Train and validation perplexity per epoch, the switch to ASGD marked; a log axis
    when they span more than a factor of 10 (the first epochs of a big model)."""
    switch = [(h["epoch"], "switch to ASGD") for h in history if h.get("switched_to_asgd")]
    values = [h[k] for h in history for k in ("train_ppl", "valid_ppl")
              if math.isfinite(h.get(k, math.nan))]
    wide = bool(values) and min(values) > 0 and max(values) / min(values) > 10
    return plot_curves(history, path, keys=("train_ppl", "valid_ppl"), marks=switch[:1],
                       log_y=wide)


def run_rnn_training(cfg: RNNTrainConfig, genotype: RNNGenotype, save_dir: str, *,
                     resume_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (or continue, given the checkpoint ``resume_state``) in ``save_dir``, then test
    the best model; returns what ``result.json`` holds. Under torchrun the training is
    data-parallel and rank 0 writes (every rank gets rank 0's folder name)."""
    corpus = open_corpus(cfg.data)  # a missing corpus fails before the run folder is made
    if resume_state is not None:  # refused before a line is appended to the run's log
        check_vocabulary(resume_state, vocabulary_fingerprint(corpus.dictionary))
    with dist_utils.process_group(cfg.gpu) as (ctx, device):
        save_dir = dist_utils.broadcast_object(save_dir, ctx)  # rank 0's timestamped name
        return _train_and_test(cfg, genotype, save_dir, corpus, resume_state,
                               DataParallel.of(ctx), device)


def _train_and_test(cfg: RNNTrainConfig, genotype: RNNGenotype, save_dir: str, corpus: Corpus,
                    resume_state: dict[str, Any] | None, dp: DataParallel,
                    device: torch.device) -> dict[str, Any]:
    logger = setup_logger(save_dir) if dp.is_main else dist_utils.silent_logger()
    writer = None
    try:
        if dp.enabled:
            logger.info("data-parallel training: %d processes, batch %d = %d per process",
                        dp.world_size, cfg.batch_size, cfg.batch_size // dp.world_size)
        trainer = build_trainer(cfg, genotype, save_dir, logger, corpus, data_parallel=dp,
                                device=device)
        if resume_state is not None:
            trainer.load_state_dict(resume_state)
            logger.info("resumed from %s after epoch %d", trainer.checkpoint_path,
                        trainer.epoch)
        if dp.is_main:
            write_json(os.path.join(save_dir, "genotype.json"),
                       {"genotype": genotype.to_dict(), "arch": cfg.arch})
            plot_genotype(genotype, os.path.join(save_dir, "genotype"))
            writer = tensorboard_writer(save_dir, purge_step=trainer.epoch + 1)
            trainer.epoch_end_hooks = [_tensorboard_hook(writer), _outputs_hook(save_dir)]
        trainer.run()
        test_loss, best = trainer.test()
        logger.info("=" * 89)
        logger.info("| End of training | test loss %5.2f | test ppl %8.2f", test_loss,
                    perplexity(test_loss))
        logger.info("=" * 89)
        result = {"arch": cfg.arch, "data": cfg.data, "epochs": trainer.epoch,
                  "best_epoch": best["epoch"], "valid_ppl": perplexity(best["valid_loss"]),
                  "test_loss": test_loss, "test_ppl": perplexity(test_loss),
                  "averaged": best["averaged"], "rollbacks": trainer.rollbacks,
                  "parameters": sum(p.numel() for p in trainer.model.parameters())}
        if dp.is_main:
            write_json(os.path.join(save_dir, "result.json"), result)
        logger.info("outputs in %s", os.path.abspath(save_dir))
        return result
    finally:
        if writer is not None:
            writer.close()
        if dp.is_main:
            close_logger(logger)


# -- test.py --------------------------------------------------------------------------------------
def load_best_model(path: str, device: torch.device) -> tuple[RNNModel, dict[str, Any]]:
    """The model a train.py run saved as ``model.pt`` (architecture and sizes inside it)."""
    try:
        best = load_checkpoint(path, map_location=device)
    except UserError as exc:  # corrupt, foreign, or pickled code (never run): one line
        raise UserError(f"--model_path: {exc}") from None
    if best.get("kind") != BEST_KIND:
        hint = ""
        if best.get("kind") == KIND:
            hint = " (that is the --resume checkpoint; test the run's model.pt)"
        elif "arch_optimizer" in best:  # what every search checkpoints
            hint = (" (that is a search (supernet) checkpoint, not a trained cell's model: "
                    "train its genotype.json with train.py first, then test that run's "
                    "model.pt)")
        raise UserError(f"--model_path {path} is not a model.pt written by "
                        f"sdarts/sota/rnn/train.py{hint}")
    model = RNNModel(genotype=RNNGenotype.from_dict(best["genotype"]), **best["model"])
    model.load_state_dict(best["state_dict"])
    return model.to(device), best


def run_rnn_test(model_path: str, data: str, bptt: int = 35, gpu: int = 0,
                 sizes: dict[str, int | None] | None = None) -> dict[str, Any]:
    """Test perplexity of ``model_path`` on the test split of ``data`` with batch size 1.
    ``sizes``: flag name -> value the user typed (emsize, nhid, nhidlast), checked against
    the model's."""
    device = choose_device(gpu)
    cpu_threads()
    model, best = load_best_model(model_path, device)
    saved = {"emsize": best["model"]["ninp"], "nhid": best["model"]["nhid"],
             "nhidlast": best["model"]["nhidlast"]}
    for flag, value in (sizes or {}).items():
        if value is not None and value != saved[flag]:
            raise UserError(f"--{flag} {value}: {model_path} holds a model with {flag} "
                            f"{saved[flag]}")
    corpus = open_corpus(data)
    if vocabulary_fingerprint(corpus.dictionary) != best["vocabulary"]:
        raise UserError(f"--data {data}: its vocabulary is not the one {model_path} was "
                        f"trained on ({best['data']}); pass that corpus")
    test = batchify(corpus.test, TEST_BATCH_SIZE, device)
    _, loss = evaluate_perplexity(model, test, bptt)
    return {"model_path": model_path, "data": data, "epoch": best["epoch"], "test_loss": loss,
            "test_ppl": perplexity(loss),
            "parameters": sum(p.numel() for p in model.parameters())}
