"""AutoAugment's CIFAR-10 policy (Cubuk et al. 2019), torchvision's implementation, as StacNAS'
``--auto_aug`` uses it (released ``data_loader.py``: after RandomCrop + flip, before ToTensor).

The release imports ``CIFAR10Policy`` from its ``auto_augment.py``, DeepVoltaire's port
(github.com/DeepVoltaire/AutoAugment). ``T.AutoAugment(AutoAugmentPolicy.CIFAR10)`` holds the
same published table (25 sub-policies: same operations, probabilities and magnitude indices,
10 magnitude bins per operation); what differs is how some magnitudes are discretised and
drawn: torchvision solarises at ``linspace(255, 0, 10)`` (the port: 256..0), rounds the
posterize bits by its own formula, translates by whole pixels, and draws its coins and signs
from torch's RNG (the port: Python's ``random``), which our checkpoints save, so resumed runs
repeat them. The port fills the pixels uncovered by shear/translate/rotate with grey
(128, 128, 128); ``FILL`` passes the same grey to torchvision (whose default is black).
"""
from __future__ import annotations

import torch
import torchvision.transforms as T

FILL = 128  # the port's fillcolor, per channel, on the 0..255 scale


def cifar10_policy(channels: int = 3) -> T.AutoAugment:
    """torchvision's AutoAugment CIFAR-10 policy with the port's grey fill, for PIL images or
    uint8 tensors of ``channels`` channels."""
    return T.AutoAugment(T.AutoAugmentPolicy.CIFAR10, fill=[FILL] * channels)


class FloatTensorAutoAugment:
    """The CIFAR-10 policy on a float CHW tensor in [0, 1] (the embedded digits, which never
    become PIL images): converted to uint8 and back, because torchvision's posterize and
    equalize accept uint8 tensors only and its solarize thresholds are on the 0..255 scale.

    The round trip moves a pixel by at most 0.5/255 (the digits' k/16 levels are not
    multiples of 1/255); the output is float32 of the input's shape.
    """

    def __init__(self, channels: int = 1) -> None:
        self.policy = cifar10_policy(channels)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        as_uint8 = (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return self.policy(as_uint8).to(torch.float32) / 255.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.policy!r})"
