"""Per-dataset constants: normalisation statistics, class counts, input shapes."""
from __future__ import annotations

# Dataset names accepted everywhere (``--dataset``); order is the one shown in errors.
DATASETS: tuple[str, ...] = (
    "cifar10", "cifar100", "svhn", "imagenet", "imagenet16-120", "mnist", "fashionmnist",
    "digits")

# (mean, std) per channel, applied after ToTensor, i.e. on [0, 1] pixels.
# CIFAR-10 values are the full-precision ones used by DARTS / SDARTS.
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": (
        (0.49139968, 0.48215827, 0.44653124),
        (0.24703233, 0.24348505, 0.26158768),
    ),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # AutoDL / darts-pt (get_dataset_with_transform.py): [122.68, 116.66, 104.01] / 255 and
    # [63.22, 61.26, 65.09] / 255.
    "imagenet16-120": (
        (122.68 / 255, 116.66 / 255, 104.01 / 255),
        (63.22 / 255, 61.26 / 255, 65.09 / 255),
    ),
    # StacNAS' released data_loader.py (MEAN / STD of its mnist and fashionmnist branches).
    "mnist": ((0.13066051707548254,), (0.30810780244715075,)),
    "fashionmnist": ((0.28604063146254594,), (0.35302426207299326,)),
    # Computed once over all 1797 images of sklearn's load_digits(), pixels / 16
    # (population std over every pixel); tests/test_data.py recomputes it.
    "digits": ((0.30526028624095713,), (0.3760492217920148,)),
}

NUM_CLASSES: dict[str, int] = {
    "cifar10": 10,
    "cifar100": 100,
    "svhn": 10,
    "imagenet": 1000,
    "imagenet16-120": 120,
    "mnist": 10,
    "fashionmnist": 10,
    "digits": 10,
}

IN_CHANNELS: dict[str, int] = {
    "cifar10": 3,
    "cifar100": 3,
    "svhn": 3,
    "imagenet": 3,
    "imagenet16-120": 3,
    "mnist": 1,
    "fashionmnist": 1,
    "digits": 1,
}

IMAGE_SIZE: dict[str, int] = {
    "cifar10": 32,
    "cifar100": 32,
    "svhn": 32,
    "imagenet": 224,
    "imagenet16-120": 16,
    "mnist": 28,
    "fashionmnist": 28,
    "digits": 8,
}
