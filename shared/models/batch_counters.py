"""A network's BatchNorm batch counters advanced together, one ``_foreach_add_`` per training
forward, where each ``nn.BatchNorm2d`` adds 1 to its own ``num_batches_tracked``: those were
241 of the 2,634 operations a DARTS_V2 training step (20 cells, auxiliary head) launched
(``bench/kernel_count.py --eval``).

With a momentum set (DARTS' 0.1, every BN of the final networks) the counter is only a
record, never read by the normalisation; it is kept, and counts the same batches, so that a
``state_dict`` is what ``nn.BatchNorm2d`` gives. The modules stay ``nn.BatchNorm2d`` (their
class is switched to the subclass below, as ``global_batch_norm.use_global_batch_norm``
switches the search supernets' BNs), with the same parameters and buffers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def counted(m: nn.BatchNorm2d) -> bool:
    """A training-mode BN whose counter only records (a momentum is set) is counted by its
    network, not by itself."""
    return (m.training and m.track_running_stats and m.momentum is not None
            and m.num_batches_tracked is not None)


class NetworkCountedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that leaves its batch counter to its network
    (:func:`advance_batch_counters`) where :func:`counted`; the same call of
    ``F.batch_norm`` as ``nn.BatchNorm2d.forward``, so the same bits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not counted(self):
            return super().forward(x)
        self._check_input_dim(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            True, self.momentum, self.eps)


def count_batches_together(model: nn.Module) -> tuple[NetworkCountedBatchNorm2d, ...]:
    """Make every plain ``nn.BatchNorm2d`` of ``model`` leave its counter to the network (in
    place); returns them, for :func:`advance_batch_counters` to advance on each forward."""
    out = []
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = NetworkCountedBatchNorm2d
        if isinstance(m, NetworkCountedBatchNorm2d):
            out.append(m)
    return tuple(out)


def advance_batch_counters(batch_norms: tuple[NetworkCountedBatchNorm2d, ...]) -> None:
    """Add 1 to the counter of each of ``batch_norms`` that a training forward counts, in one
    launch: a forward runs every BN of the network once."""
    counters = [m.num_batches_tracked for m in batch_norms if counted(m)]
    if counters:
        with torch.no_grad():
            torch._foreach_add_(counters, 1)
