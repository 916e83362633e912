"""Word-level language-model pieces shared by the recurrent-cell search and the training of a
found cell (DARTS ``rnn/train_search.py`` and ``rnn/train.py``, after AWD-LSTM):

* ``regularised_loss``: NLL plus the two activation regularisers of AWD-LSTM, AR
  (``alpha`` * mean of the squared dropped-out output) and TAR (``beta`` * mean of the squared
  step-to-step change of the raw output, "slowness");
* ``evaluate_perplexity``: the loss over a batchified split in ``bptt`` windows, hidden state
  carried from window to window, in eval mode.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from shared.data.text import get_batch
from shared.models.rnn import repackage_hidden


def regularised_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                     hidden: Sequence[torch.Tensor], ar_alpha: float, tar_beta: float,
                     **forward_kw: Any) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(NLL + AR + TAR, the NLL alone, the next hidden state) of one window; ``y`` is the
    flattened targets ``get_batch`` returns."""
    log_prob, hidden, raw_outputs, outputs = model(x, hidden, return_h=True, **forward_kw)
    raw_loss = F.nll_loss(log_prob.view(-1, log_prob.size(2)), y)
    loss = raw_loss
    if ar_alpha:  # the original adds AR only when alpha > 0
        loss = loss + ar_alpha * outputs[-1].pow(2).mean()
    if tar_beta:
        loss = loss + tar_beta * (raw_outputs[-1][1:] - raw_outputs[-1][:-1]).pow(2).mean()
    return loss, raw_loss, hidden


@torch.no_grad()
def evaluate_perplexity(model: torch.nn.Module, data: torch.Tensor, bptt: int,
                        max_batches: int | None = None) -> tuple[float, float]:
    """(perplexity, mean NLL per predicted word) of ``data`` (batchified: rows are time, the
    batch size is ``data.size(1)``). The mean is over the words predicted; the original divides
    the summed loss by ``len(data)``, one row more, which changes a PTB perplexity in the
    fourth digit."""
    model.eval()
    hidden = model.init_hidden(data.size(1))
    total_loss, total_len = 0.0, 0
    for n, i in enumerate(range(0, data.size(0) - 1, bptt)):
        if max_batches is not None and n >= max_batches:
            break
        x, y = get_batch(data, i, bptt)
        log_prob, hidden = model(x, hidden)
        total_loss += len(x) * F.nll_loss(log_prob.view(-1, log_prob.size(2)), y).item()
        total_len += len(x)
        hidden = repackage_hidden(hidden)
    loss = total_loss / max(total_len, 1)
    return perplexity(loss), loss


def perplexity(loss: float) -> float:
    """exp(loss), inf rather than an OverflowError for a diverged loss."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")
