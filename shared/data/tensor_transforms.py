"""The embedded digits' transforms, written with torch ops so a digits run never imports
torchvision.

``import torchvision`` (0.29) imports its models and ops, and ``torchvision.ops.roi_align``
imports ``torch._dynamo.utils``, i.e. all of TorchDynamo (~3 s). A training process imports
TorchDynamo anyway (torch.optim's first optimiser does), so what a digits run saves is
torchvision's own part: measured 0.6 s of a 12 s one-epoch door run, in every process of every
test, demo and torchrun rank. The digits are already 1x8x8 float tensors and need only a
padded random crop and a normalisation, so these two are written here, drawing the same random
numbers in the same order as torchvision's ``RandomCrop`` and returning the same floats as its
``Normalize`` (``tests/test_tensor_transforms.py`` compares them bit for bit). Every other data
set keeps torchvision's transforms.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F


class RandomCrop:
    """torchvision's ``RandomCrop(size, padding)`` for a CHW tensor, zero (constant) padding:
    pad every border by ``padding``, then draw the top row and the left column uniformly with
    ``torch.randint``, row first (its ``get_params``); no draw when nothing is left to choose."""

    def __init__(self, size: int, padding: int = 0) -> None:
        self.size = size
        self.padding = padding

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.padding:
            img = F.pad(img, [self.padding] * 4, mode="constant", value=0.0)
        height, width = img.shape[-2], img.shape[-1]
        if height < self.size or width < self.size:
            raise ValueError(f"cannot crop {self.size}x{self.size} from {height}x{width}")
        if height == self.size and width == self.size:
            return img
        top = int(torch.randint(0, height - self.size + 1, size=(1,)).item())
        left = int(torch.randint(0, width - self.size + 1, size=(1,)).item())
        return img[..., top:top + self.size, left:left + self.size]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, padding={self.padding})"


class Normalize:
    """``(img - mean) / std`` per channel, out of place, in the image's dtype (torchvision's
    ``Normalize`` on a tensor: subtract, then divide)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if any(s == 0 for s in std):
            raise ValueError(f"std has a zero: {list(std)}")
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=img.dtype, device=img.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=img.dtype, device=img.device).view(-1, 1, 1)
        return img.sub(mean).div(std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={list(self.mean)}, std={list(self.std)})"


class Compose:
    """The steps applied in order (torchvision's ``Compose``; ``transforms`` lists them)."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for step in self.transforms:
            img = step(img)
        return img

    def __repr__(self) -> str:
        inner = "".join(f"\n    {step!r}" for step in self.transforms)
        return f"{type(self).__name__}({inner}\n)"
