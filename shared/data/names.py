"""Validation of dataset names, shared by transforms and loaders."""
from __future__ import annotations

from shared.errors import UserError

from .stats import DATASETS

# Other spellings of a dataset in the papers' code and READMEs (AutoDL writes "ImageNet16-120",
# the NAS-Bench-201 README "ImageNet-16-120", Zalando's README "Fashion-MNIST"); the
# lower-casing below takes care of case.
ALIASES: dict[str, str] = {"imagenet-16-120": "imagenet16-120", "imagenet16_120": "imagenet16-120",
                           "fashion-mnist": "fashionmnist", "fashion_mnist": "fashionmnist"}


def check_dataset(name: str) -> str:
    """Return the canonical (lower-case) dataset name, or raise UserError listing choices."""
    canonical = name.lower()
    canonical = ALIASES.get(canonical, canonical)
    if canonical not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return canonical
