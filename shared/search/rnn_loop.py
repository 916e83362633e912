"""The bilevel search loop for the recurrent cell (DARTS / SDARTS ``rnn/train_search.py``;
reference sdarts.md §3.8): the engine's ``SearchLoop`` (epochs, hooks, genotype, atomic
checkpoints, ``--resume``) with the two moments a language model does differently.

``train_epoch`` walks the batchified training text in truncated-BPTT windows:
* the window is ``bptt`` (35) long with probability 0.95, else ``bptt / 2``, and the step's lr
  is scaled by ``seq_len / bptt`` (then restored);
* the alpha batch is the window of the search text (PTB's valid split, batchified at the
  training batch size) at ``i % (len - 1)``, always ``bptt`` long; the training and the
  validation hidden states are carried across steps (detached), the Architect returns the
  next validation state;
* the weight step (SDARTS: under perturbed softmax(alpha) from the training window and its
  hidden state) minimises NLL + AR + TAR (``alpha`` * mean(dropped output^2) +
  ``beta`` * mean((h_{t+1} - h_t)^2) on the raw outputs), gradients clipped to ``--clip``.

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

import torch
from tqdm import tqdm

from shared.data.text import get_batch
from shared.lm import evaluate_perplexity, regularised_loss
from shared.logs import AverageMeter
from shared.models.rnn import repackage_hidden
from shared.search.loop import SearchLoop


@dataclass
class RNNSearchLoop(SearchLoop):
    bptt: int = 35
    ar_alpha: float = 0.0   # --alpha: activation regularisation on the dropped-out output
    tar_beta: float = 1e-3  # --beta: temporal activation regularisation on the raw output
    batch_size: int = 256
    metric: str = "ppl"

    def _window_length(self) -> int:
        g = self.generators[0] if self.generators else None
        bptt = self.bptt if torch.rand(1, generator=g).item() < 0.95 else self.bptt / 2.0
        return int(bptt)

    def train_epoch(self, epoch: int, lr: float) -> tuple[float, float]:
        model, train, search = self.model, self.train_queue, self.valid_queue
        update_alpha = self.architect is not None and epoch >= self.warm_start_epochs
        hidden = model.init_hidden(self.batch_size)
        hidden_valid = model.init_hidden(self.batch_size)
        objs = AverageMeter()
        total = (train.size(0) - 2 + self.bptt - 1) // self.bptt  # the bar's estimate
        bar = tqdm(total=total, desc=f"epoch {epoch}", leave=False, disable=not self.progress,
                   dynamic_ncols=True)
        i, step = 0, 0
        while i < train.size(0) - 1 - 1:
            if self.max_batches is not None and step >= self.max_batches:
                break
            seq_len = self._window_length()
            group = self.optimizer.param_groups[0]
            group["lr"] = lr * seq_len / self.bptt
            x, y = get_batch(train, i, seq_len)
            x_val, y_val = get_batch(search, i % (search.size(0) - 1), self.bptt)
            hidden, hidden_valid = repackage_hidden(hidden), repackage_hidden(hidden_valid)
            model.train()
            if update_alpha:
                hidden_valid = self.architect.step(hidden, x, y, hidden_valid, x_val, y_val,
                                                   group["lr"], self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)
            weights = self.mixing_weights_for_weight_step((x, hidden), y, epoch)
            model.train()
            loss, raw_loss, hidden = regularised_loss(model, x, y, hidden, self.ar_alpha,
                                                      self.tar_beta, weights=weights)
            loss.backward()
            for hook in self.weight_grad_hooks:
                hook(model)
            torch.nn.utils.clip_grad_norm_(model.weight_parameters(), self.grad_clip)
            self.optimizer.step()
            group["lr"] = lr
            for a in model.arch_parameters():
                a.grad = None
            objs.update(raw_loss.item(), seq_len)
            if step % self.report_freq == 0:
                self.logger.info("| epoch %3d | %5d batches | lr %02.2f | loss %5.2f | ppl %8.2f",
                                 epoch, step, lr, objs.avg, math.exp(objs.avg))
            bar.update(1)
            bar.set_postfix(ppl=f"{math.exp(objs.avg):.1f}")
            i += seq_len
            step += 1
        bar.close()
        return math.exp(objs.avg), objs.avg

    def infer(self) -> tuple[float, float]:
        return evaluate_perplexity(self.model, self.valid_eval_queue, self.bptt, self.max_batches)
