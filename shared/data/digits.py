"""scikit-learn's 8x8 handwritten digits as a torch Dataset (ships offline).

It lets every script run end to end on a laptop or in CI with no download.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

DIGITS_FILE = ("datasets", "data", "digits.csv.gz")  # inside the installed sklearn package

# Fixed split so "train" and "test" never overlap and never change between runs.
TRAIN_FRACTION = 0.8
SPLIT_SEED = 0


def load_digits_file() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64) float32 in 0..16, labels int64) from the file scikit-learn ships,
    read as its ``load_digits`` reads it (``np.loadtxt``, comma-separated, the label last)
    but without importing scikit-learn: that import costs ~1 s, paid by every door process
    that searches the embedded data."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        from shared.errors import UserError

        raise UserError("the embedded digits ship with scikit-learn: pip install scikit-learn")
    path = os.path.join(os.path.dirname(spec.origin), *DIGITS_FILE)
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].astype(np.float32), data[:, -1].astype(np.int64)


class DigitsDataset(Dataset):
    """1797 real 8x8 digits; items are ``(transform(1x8x8 float in [0, 1]), int label)``."""

    def __init__(self, train: bool = True, transform: Callable | None = None) -> None:
        pixels, labels = load_digits_file()
        images = torch.from_numpy(pixels.reshape(-1, 8, 8) / 16.0).unsqueeze(1)
        order = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
        n_train = int(TRAIN_FRACTION * len(labels))
        chosen = order[:n_train] if train else order[n_train:]
        self.data = images[torch.from_numpy(chosen)]
        self.targets: list[int] = labels[chosen].tolist()
        self.classes = [str(d) for d in range(10)]
        self.train = train
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.data[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]
