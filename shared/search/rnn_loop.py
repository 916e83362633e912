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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from shared.data.text import get_batch
from shared.lm import evaluate_perplexity, regularised_loss
from shared.models.rnn import repackage_hidden
from shared.search.context import StepContext
from shared.search.loop import SearchLoop
from shared.search.meters import DeviceMean


@dataclass
class RNNSearchLoop(SearchLoop):
    supports_data_parallel = False  # its weight step carries the hidden state of one process
    supports_step_capture = False  # ... and hands it from step to step on the host
    bptt: int = 35
    ar_alpha: float = 0.0   # --alpha: activation regularisation on the dropped-out output
    tar_beta: float = 1e-3  # --beta: temporal activation regularisation on the raw output
    batch_size: int = 256
    metric: str = "ppl"

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
        hidden = model.init_hidden(self.batch_size)
        hidden_valid = model.init_hidden(self.batch_size)
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
        avg = meters.average()
        self.logger.info("| epoch %3d | %5d batches | lr %02.2f | loss %5.2f | ppl %8.2f",
                         ctx.epoch, ctx.step, ctx.extra["epoch_lr"], avg, math.exp(avg))
        return {"ppl": f"{math.exp(avg):.1f}"}

    def summarize(self, meters: DeviceMean) -> tuple[float, float]:
        avg = meters.average()
        return math.exp(avg), avg

    def infer(self) -> tuple[float, float]:
        return evaluate_perplexity(self.model, self.valid_eval_queue, self.bptt, self.max_batches)
