"""DARTS' split of the training set into a weight half and an architecture half, also used to
hold out a validation split during evaluation (``EvalConfig.train_ratio``)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable, Sized

from torch.utils.data import Dataset

from shared.errors import UserError


def search_split(train_data: Sized, train_portion: float,
                 flag: str = "--train_portion") -> tuple[list[int], list[int]]:
    """Return ``(train_indices, valid_indices)``: the first ``floor(portion * N)`` and the rest.

    Not shuffled, exactly as DARTS (the samplers shuffle), so a given portion always
    puts the same images in each half. A portion of 1 keeps every image for training and no
    validation half (one-level search, StacNAS' ``--train_ratio 1``). ``flag`` names the
    option in the errors.
    """
    if not 0.0 < train_portion <= 1.0:
        raise UserError(f"{flag} must be in (0, 1], got {train_portion}")
    n = len(train_data)
    if train_portion == 1.0:
        return list(range(n)), []
    split = math.floor(train_portion * n)
    if split == 0 or split == n:
        raise UserError(
            f"{flag} {train_portion} of {n} images leaves one half empty; "
            "use a portion nearer 0.5 or a larger dataset"
        )
    indices = list(range(n))
    return indices[:split], indices[split:]


class TransformedSubset(Dataset):
    """``dataset[i]`` for ``i`` in ``indices``, its image passed through ``transform``.

    ``dataset`` is built without a transform, so one copy of the images in memory serves
    two views: the augmented training part and the held-out part with the eval transform.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int],
                 transform: Callable | None) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img, target = self.dataset[self.indices[index]]
        if self.transform is not None:
            img = self.transform(img)
        return img, target
