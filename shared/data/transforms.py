"""Train / eval preprocessing pipelines per dataset (DARTS defaults)."""
from __future__ import annotations

from typing import Callable

import torchvision.transforms as T

from .cutout import Cutout
from .names import check_dataset
from .stats import DATASET_STATS, IMAGE_SIZE


def _normalize(dataset: str) -> T.Normalize:
    mean, std = DATASET_STATS[dataset]
    return T.Normalize(mean, std)


def train_transform(
    dataset: str,
    cutout: bool = False,
    cutout_length: int = 16,
    cutout_prob: float = 1.0,
) -> Callable:
    """Augmenting transform used for training (and for both halves during search).

    CIFAR / SVHN take PIL images; digits take a 1x8x8 float tensor in [0, 1].
    For digits ``cutout_length`` is used as given (clipped at the 8x8 borders), so
    pick a small length (e.g. 4): the default 16 blanks the whole image.
    """
    dataset = check_dataset(dataset)
    size = IMAGE_SIZE[dataset]
    steps: list[Callable]
    if dataset == "imagenet":
        steps = [
            T.RandomResizedCrop(size),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
            T.ToTensor(),
            _normalize(dataset),
        ]
    elif dataset == "imagenet16-120":
        # AutoDL / darts-pt order: flip first, then crop with 2 pixels of padding.
        steps = [
            T.RandomHorizontalFlip(),
            T.RandomCrop(size, padding=2),
            T.ToTensor(),
            _normalize(dataset),
        ]
    elif dataset == "digits":
        # Tensor-in: no ToTensor. No flips: a mirrored 2 or 7 is not a 2 or 7.
        steps = [T.RandomCrop(size, padding=1), _normalize(dataset)]
    else:
        # Flip is kept for SVHN too, as in the original code, even though digits
        # are not mirror-symmetric; changing it would change published numbers.
        steps = [
            T.RandomCrop(size, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            _normalize(dataset),
        ]
    if cutout:
        steps.append(Cutout(cutout_length, cutout_prob))
    return T.Compose(steps)


def eval_transform(dataset: str) -> Callable:
    """Deterministic transform for test-set evaluation."""
    dataset = check_dataset(dataset)
    if dataset == "imagenet":
        return T.Compose(
            [T.Resize(256), T.CenterCrop(IMAGE_SIZE[dataset]), T.ToTensor(), _normalize(dataset)]
        )
    if dataset == "digits":
        return T.Compose([_normalize(dataset)])
    return T.Compose([T.ToTensor(), _normalize(dataset)])
