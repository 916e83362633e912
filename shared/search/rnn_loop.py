"""The search loop for the recurrent cell (DARTS / SDARTS ``rnn/train_search.py``): the engine's
``SearchLoop`` (the step, its hooks and alpha updates, epochs, genotype, atomic checkpoints,
``--resume``) with what a language model does differently: how it batches (``batches``), its
loss (``forward_loss``) and what it reports.

``batches`` walks the batchified training text in truncated-BPTT windows:
* the window is ``bptt`` (35) long with probability 0.95, else ``bptt / 2``, and the step's lr
  is scaled by ``seq_len / bptt`` (then restored);
* the alpha batch is the window of the search text (PTB's valid split, batchified at the
  training batch size) at ``i % (len - 1)``, always ``bptt`` long; the training and the
  validation hidden states are carried across steps (detached), the Architect returns the
  next validation state;
* the weight step (SDARTS: under perturbed softmax(alpha) from the training window and its
  hidden state) minimises NLL + AR + TAR (``alpha`` * mean(dropped output^2) +
  ``beta`` * mean((h_{t+1} - h_t)^2) on the raw outputs), gradients clipped to ``--clip``.

The training NLL is averaged on the device (``DeviceMean``, bit-identical to DARTS'
``AverageMeter``) and read only when a line is logged (every ``--log_interval`` steps, the bar's
postfix then too) and at the end of the epoch: the step itself reads nothing back.

``infer`` is the perplexity of the validation text (batchified at 10), in eval mode, hidden
carried (``shared.lm.evaluate_perplexity``).
The epoch's quality number is the perplexity (``metric = "ppl"``), logged as
``train_ppl`` / ``valid_ppl`` like the original's ``valid ppl`` lines.

The window length is drawn from the loop's own generator (saved in every checkpoint), so a
killed and resumed search takes the same windows as one never stopped.

Data parallel (``data_parallel``, ``shared.search.data_parallel``): the queues are given whole
(batchified at the global ``batch_size``) and each of N ranks keeps its ``batch_size / N``
columns, the sequences it carries hidden states for; the dropout masks are the global batch's
(``RNNModel.shard_batches``), the search cell's BatchNorm1d normalises with the global batch's
statistics at every node of every time step (``shared.models.global_batch_norm``), every
gradient is averaged and the NLL meter summed over the ranks, so N ranks move alpha and the
weights as one process with the whole batch. Every rank draws the same window lengths and
computes the validation perplexity on the whole validation text (the same number on every
rank: its batch of 10 sequences does not split over N).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from shared.data.on_device import Shard
from shared.data.text import get_batch
from shared.lm import evaluate_perplexity, regularised_loss
from shared.models.rnn import repackage_hidden
from shared.search.context import StepContext
from shared.search.loop import SearchLoop
from shared.search.meters import DeviceMean
from shared.search.process import check_data_parallel


@dataclass
class RNNSearchLoop(SearchLoop):
    supports_step_capture = False  # the hidden state goes from step to step on the host
    bptt: int = 35
    ar_alpha: float = 0.0   # --alpha: activation regularisation on the dropped-out output
    tar_beta: float = 1e-3  # --beta: temporal activation regularisation on the raw output
    batch_size: int = 256   # the global batch (data parallel: this rank has a part of it)
    metric: str = "ppl"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data_parallel.enabled:  # this rank's columns of the training and search text
            self.train_queue = self._columns(self.train_queue)
            self.valid_queue = self._columns(self.valid_queue)

    def share_data_parallel(self) -> None:
        """The engine's sharing, and the model draws the global batch's dropout masks."""
        dp = self.data_parallel
        check_data_parallel(dp, self.batch_size)
        super().share_data_parallel()
        self.model.shard_batches(Shard(dp.rank, dp.world_size))

    def _columns(self, text: torch.Tensor) -> torch.Tensor:
        if text.size(1) != self.batch_size:
            raise ValueError(f"text batchified at {text.size(1)}, the batch is "
                             f"{self.batch_size}")
        start, stop = Shard(self.data_parallel.rank, self.data_parallel.world_size).rows(
            self.batch_size)
        return text[:, start:stop].contiguous()

    @property
    def rank_batch_size(self) -> int:
        return self.batch_size // self.data_parallel.world_size

    def _window_length(self) -> int:
        g = self.generators[0] if self.generators else None
        bptt = self.bptt if torch.rand(1, generator=g).item() < 0.95 else self.bptt / 2.0
        return int(bptt)

    def steps_per_epoch(self) -> int:
        return (self.train_queue.size(0) - 2 + self.bptt - 1) // self.bptt  # the bar's estimate

    def batches(self, epoch: int, lr: float, update_alpha: bool) -> Iterator[StepContext]:
        """BPTT windows of the training text with the search text's window at the same place;
        the hidden states go from step to step (detached), the lr is scaled by the length."""
        model, train, search = self.model, self.train_queue, self.valid_queue
        hidden = model.init_hidden(self.rank_batch_size)
        hidden_valid = model.init_hidden(self.rank_batch_size)
        group = self.optimizer.param_groups[0]
        i, step = 0, 0
        while i < train.size(0) - 1 - 1:
            if self.max_batches is not None and step >= self.max_batches:
                break
            seq_len = self._window_length()
            group["lr"] = lr * seq_len / self.bptt
            x, y = get_batch(train, i, seq_len)
            x_val, y_val = get_batch(search, i % (search.size(0) - 1), self.bptt)
            hidden, hidden_valid = repackage_hidden(hidden), repackage_hidden(hidden_valid)
            ctx = StepContext(self, model, epoch, step, group["lr"], (x, hidden), y,
                              (x_val, hidden_valid), y_val, update_alpha,
                              extra={"seq_len": seq_len, "epoch_lr": lr})
            yield ctx
            hidden = ctx.extra["hidden"]
            hidden_valid = ctx.extra.get("hidden_valid", hidden_valid)
            group["lr"] = lr
            i += seq_len
            step += 1

    def forward_loss(self, ctx: StepContext) -> torch.Tensor:
        """NLL + AR + TAR of the window; the next hidden state and the NLL go to ``ctx.extra``."""
        words, hidden = ctx.x
        kw = ({"cell_weights": ctx.cell_weights} if ctx.cell_weights is not None
              else {"weights": ctx.weights})
        loss, raw_loss, hidden = regularised_loss(ctx.model, words, ctx.y, hidden,
                                                  self.ar_alpha, self.tar_beta, **kw)
        ctx.extra["hidden"], ctx.extra["raw_loss"] = hidden, raw_loss
        return loss

    def new_meters(self) -> DeviceMean:
        return DeviceMean(self.device)

    def report(self, ctx: StepContext, meters: DeviceMean) -> dict[str, str] | None:
        """Accumulate the window's NLL on the device (no host synchronisation) and every
        ``report_freq`` steps read it once, log it and return the bar's postfix."""
        meters.update(ctx.extra["raw_loss"], ctx.extra["seq_len"])
        if ctx.step % self.report_freq:
            return None
        avg = meters.average(self.data_parallel)
        self.logger.info("| epoch %3d | %5d batches | lr %02.2f | loss %5.2f | ppl %8.2f",
                         ctx.epoch, ctx.step, ctx.extra["epoch_lr"], avg, math.exp(avg))
        return {"ppl": f"{math.exp(avg):.1f}"}

    def summarize(self, meters: DeviceMean) -> tuple[float, float]:
        avg = meters.average(self.data_parallel)
        return math.exp(avg), avg

    def infer(self) -> tuple[float, float]:
        return evaluate_perplexity(self.model, self.valid_eval_queue, self.bptt, self.max_batches)
