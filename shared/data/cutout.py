"""Cutout (DeVries & Taylor 2017) as used by DARTS / SDARTS."""
from __future__ import annotations

import torch


class Cutout:
    """Zero one ``length`` x ``length`` square of a CHW tensor, with probability ``prob``.

    Same semantics as DARTS' ``utils.Cutout`` (and SDARTS' ``cutout_prob``): the
    centre is uniform over all pixels, the half-width is ``length // 2`` and the
    square is clipped at the borders, so near an edge fewer pixels are zeroed.
    It runs after Normalize, so the zeros are the dataset mean, not black.

    Randomness comes from torch's global RNG (not numpy) so that a checkpointed
    torch RNG state, and DataLoader worker seeding, make runs reproducible.
    """

    def __init__(self, length: int, prob: float = 1.0) -> None:
        if length < 0:
            raise ValueError(f"cutout length must be >= 0, got {length}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"cutout prob must be in [0, 1], got {prob}")
        self.length = length
        self.prob = prob

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        # prob == 1 draws no coin, so the RNG stream matches plain DARTS cutout.
        if self.prob < 1.0 and torch.rand(()).item() >= self.prob:
            return img
        h, w = img.shape[-2], img.shape[-1]
        y = int(torch.randint(h, ()).item())
        x = int(torch.randint(w, ()).item())
        half = self.length // 2
        y1, y2 = max(y - half, 0), min(y + half, h)
        x1, x2 = max(x - half, 0), min(x + half, w)
        # Out of place: a dataset may hand out a stored tensor (digits) that must stay intact.
        out = img.clone()
        out[..., y1:y2, x1:x2] = 0.0
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length}, prob={self.prob})"
