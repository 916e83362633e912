"""The search's running loss and accuracies, accumulated on the device.

DARTS' ``AverageMeter`` takes Python floats (``loss.item()``, ``accuracy()``), so every step
waited for the GPU to finish before the next could be queued: a host synchronisation per step.
``DeviceMeters`` keeps the sums as one float64 tensor on the model's device and is read only
when a line is logged (every ``--report_freq`` steps) and at the end of the epoch.

The numbers are bit-identical to ``AverageMeter``'s: the same float64 operations in the same
order (``sum += (correct * 100.0 / batch) * n``, ``sum += float(loss) * n``, ``avg = sum /
count``), only on a tensor; ``tests/test_search_meters.py`` holds them equal. ``DeviceMean``
is the same for one number (the recurrent search's NLL per word, weighted by the window length).
"""
from __future__ import annotations

from typing import Sequence

import torch

from shared.search.data_parallel import ONE_PROCESS, DataParallel

TOPK = (1, 5)


def correct_counts(logits: torch.Tensor, target: torch.Tensor,
                   topk: Sequence[int] = TOPK) -> torch.Tensor:
    """How many of the batch are right within each top-k (a float32 tensor, no host read)."""
    maxk = min(max(topk), logits.size(1))
    _, pred = logits.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1))
    return torch.stack([correct[:min(k, maxk)].reshape(-1).float().sum() for k in topk])


class DeviceMeters:
    """Running means of the loss and the top-k accuracies (percent), weighted by batch size,
    held on ``device`` until read."""

    def __init__(self, device: torch.device, topk: Sequence[int] = TOPK) -> None:
        self.topk = tuple(topk)
        self.sums = torch.zeros(len(self.topk) + 1, dtype=torch.float64, device=device)
        self.count = 0  # a host integer: batch sizes are known without the device

    def update(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        n = target.size(0)
        # AverageMeter.update(val, n) adds val * n with val = correct * 100.0 / batch
        accs = correct_counts(logits.detach(), target, self.topk).double() * 100.0 / n
        values = torch.cat([loss.detach().double().reshape(1), accs])
        self.sums += values * n
        self.count += n

    def averages(self, data_parallel: DataParallel = ONE_PROCESS) -> list[float]:
        """[loss, top-k accuracies...] means so far over every rank's batches (one process:
        its own): one read of the device (0.0 before any update, as AverageMeter)."""
        if not data_parallel.enabled:
            if not self.count:
                return [0.0] * self.sums.numel()
            return (self.sums / self.count).tolist()
        sums = torch.cat([self.sums, self.sums.new_tensor([self.count])])
        data_parallel.sum_(sums)
        count = float(sums[-1])
        return (sums[:-1] / count).tolist() if count else [0.0] * (len(sums) - 1)


class DeviceMean:
    """A running mean weighted by ``n``, held on ``device`` until read: ``AverageMeter``'s
    ``update(value.item(), n)`` and ``avg`` bit for bit (``sum += value * n`` in float64,
    ``avg = sum / count``)."""

    def __init__(self, device: torch.device) -> None:
        self.sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0  # a host integer

    def update(self, value: torch.Tensor, n: int) -> None:
        self.sum += value.detach().double() * n
        self.count += n

    def average(self, data_parallel: DataParallel = ONE_PROCESS) -> float:
        """The mean so far over every rank's updates (one process: its own): one read of the
        device (0.0 before any update, as AverageMeter)."""
        if data_parallel.enabled:
            sums = data_parallel.sum_(torch.stack([self.sum, self.sum.new_tensor(self.count)]))
            return (sums[0] / sums[1]).item() if float(sums[1]) else 0.0
        if not self.count:
            return 0.0
        return (self.sum / self.count).item()
