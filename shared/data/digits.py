"""scikit-learn's 8x8 handwritten digits as a torch Dataset (ships offline).

It lets every script run end to end on a laptop or in CI with no download.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

# Fixed split so "train" and "test" never overlap and never change between runs.
TRAIN_FRACTION = 0.8
SPLIT_SEED = 0


class DigitsDataset(Dataset):
    """1797 real 8x8 digits; items are ``(transform(1x8x8 float in [0, 1]), int label)``."""

    def __init__(self, train: bool = True, transform: Callable | None = None) -> None:
        # Imported here so importing shared.data does not pay for sklearn.
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
        labels = bunch.target.astype(np.int64)
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
