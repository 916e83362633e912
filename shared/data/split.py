"""DARTS' split of the training set into a weight half and an architecture half."""
from __future__ import annotations

import math
from typing import Sized

from shared.errors import UserError


def search_split(train_data: Sized, train_portion: float) -> tuple[list[int], list[int]]:
    """Return ``(train_indices, valid_indices)``: the first ``floor(portion * N)`` and the rest.

    Not shuffled, exactly as DARTS (the samplers shuffle), so a given portion always
    puts the same images in each half. A portion of 1 keeps every image for training and no
    validation half (one-level search, StacNAS' ``--train_ratio 1``).
    """
    if not 0.0 < train_portion <= 1.0:
        raise UserError(f"--train_portion must be in (0, 1], got {train_portion}")
    n = len(train_data)
    if train_portion == 1.0:
        return list(range(n)), []
    split = math.floor(train_portion * n)
    if split == 0 or split == n:
        raise UserError(
            f"--train_portion {train_portion} of {n} images leaves one half empty; "
            "use a portion nearer 0.5 or a larger dataset"
        )
    indices = list(range(n))
    return indices[:split], indices[split:]
