"""Validation of dataset names, shared by transforms and loaders."""
from __future__ import annotations

from shared.errors import UserError

from .stats import DATASETS


def check_dataset(name: str) -> str:
    """Return the canonical (lower-case) dataset name, or raise UserError listing choices."""
    canonical = name.lower()
    if canonical not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return canonical
