"""Learning-rate schedules beyond torch's own, as closed forms of the epoch (stepped at the end
of each epoch, like every schedule here, so epoch e trains with lr_e and a resume continues it).

* **Cosine-power annealing** (Hundt et al., "sharpDARTS", arXiv 1903.09900, sec. 3.2; the
  StacNAS search's and augment's ``--power_lr``, released ``utils.CosinePowerAnnealingLR``
  with p = 2): with c_e = (1 + cos(π e / E)) / 2, lr_e = lr_min + (lr_0 - lr_min) ·
  (p^(c_e+1) - p) / (p² - p). It starts at lr_0 and ends at lr_min like the cosine, but
  spends less time at large learning rates.
"""
from __future__ import annotations

import math

import torch


def cosine_power_lr(epoch: int, epochs: int, lr: float, lr_min: float, p: float = 2.0) -> float:
    """lr_e of cosine-power annealing (see the module docstring)."""
    c = (1 + math.cos(math.pi * epoch / epochs)) / 2
    return lr_min + (lr - lr_min) * (p ** (c + 1) - p) / (p * p - p)


def cosine_power_scheduler(optimizer: torch.optim.Optimizer, epochs: int, lr_min: float,
                           p: float = 2.0) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule as a ``LambdaLR`` on the optimiser's (single) initial lr."""
    lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: cosine_power_lr(e, epochs, lr, lr_min, p) / lr)
