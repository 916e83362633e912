"""Candidate operations of the DARTS family, one registry.

Every op maps ``C`` channels to ``C`` channels; ``stride=2`` halves the spatial size.
``affine=False`` in search (DARTS keeps BN parameter-free so that alpha alone scales an op)
and ``affine=True`` in the final networks.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from shared.errors import UserError

CL = torch.channels_last
# Device types whose dilated convs in bf16 run on NCHW copies where given channels-last
# (``DilatedConv2d``: a wrong gradient in PyTorch 2.14.1's oneDNN kernel)
NCHW_DILATED_BF16 = {"cpu"}


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN, the DARTS preprocessing block."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilatedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same ``state_dict``) that on the CPU runs a dilated
    conv in bf16 on NCHW tensors where it was given channels-last ones.

    PyTorch 2.14.1's CPU kernel (oneDNN) computes a wrong weight gradient for a dilated
    depthwise conv in bf16 (autocast) on channels-last tensors of CIFAR's 32x32: 1e35 or NaN
    where the gradient is ~100 (measured: N=4, C=4 and N=64, C=16, 3x3 and 5x5 at dilation
    2; 16x16 and 17x17 are right, as are fp32 and bf16 NCHW and every undilated conv;
    ``tests/test_ops.py``). So ``--amp --channels_last`` on the CPU would train every
    ``dil_conv`` of a final network on garbage. The conv runs on NCHW copies of its input and
    kernel there, and its output goes back to channels-last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (x.device.type in NCHW_DILATED_BF16 and self.dilation != (1, 1) and x.dim() == 4
                and not x.is_contiguous() and x.is_contiguous(memory_format=CL)
                and (x.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu"))):
            return super().forward(x)
        weight = self.weight.clone(memory_format=torch.contiguous_format)
        return self._conv_forward(x.contiguous(), weight, self.bias).contiguous(
            memory_format=CL)


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, affine: bool = True) -> None:
        conv = DilatedConv2d if dilation != 1 else nn.Conv2d
        super().__init__(
            nn.ReLU(inplace=False),
            conv(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in,
                 bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConv(dilation=1): DARTS applies the separable conv twice."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine),
        )


class FactorizedConv(nn.Sequential):
    """ReLU -> Conv(1 x k) -> Conv(k x 1) -> BN (AmoebaNet's 7x1/1x7, AutoDL's 3x1/1x3)."""

    def __init__(self, C: int, k: int, stride: int, affine: bool = True) -> None:
        p = k // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, k), stride=(1, stride), padding=(0, p), bias=False),
            nn.Conv2d(C, C, (k, 1), stride=(stride, 1), padding=(p, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )


class Identity(nn.Module):
    """skip_connect at stride 1. Its own class: drop-path exempts exactly this op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The 'none' op: zeros, subsampled at stride 2."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class NoiseOp(nn.Module):
    """RobustDARTS S4's 'noise' op: ignores x's values, returns fresh N(mean, std) noise.

    Stays stochastic in eval mode, as in the original (RobustDARTS ``src/operations.py``).
    """

    def __init__(self, stride: int, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.stride, self.mean, self.std = stride, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return torch.randn_like(x).mul_(self.std).add_(self.mean)


class FactorizedReduce(nn.Module):
    """ReLU, two offset 1x1 stride-2 convs concatenated, BN: halves H and W without losing
    pixels."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        assert C_out % 2 == 0, "FactorizedReduce needs an even number of output channels"
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_relu(self.relu(x))

    def after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """The block from its input's ReLU ``x`` on (a network that shares that ReLU)."""
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


class NorConv(nn.Module):
    """NAS-Bench-201's ``nor_conv_kxk``: ReLU -> Conv(bias=False) -> BN (AutoDL's ReLUConvBN).

    The layers sit in ``self.op`` as in AutoDL, so the state_dict keys (``op.1.weight``,
    ``op.2.running_mean``) match AutoDL / darts-pt checkpoints. BN keeps running statistics in
    search too (darts-pt: affine=False, track_running_stats=True).
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResNetBasicblock(nn.Module):
    """AutoDL's residual block between NAS-Bench-201 stages (fixed, not searched).

    conv_a (3x3, ``stride``) -> conv_b (3x3), both NorConv with affine BN, plus a shortcut:
    AvgPool(2, 2) -> Conv1x1 (no BN) at stride 2, NorConv 1x1 when only the width changes.
    It is affine in the supernet too, exactly as darts-pt builds it.
    """

    def __init__(self, inplanes: int, planes: int, stride: int, affine: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicblock stride must be 1 or 2, got {stride}")
        self.conv_a = NorConv(inplanes, planes, 3, stride, 1, affine)
        self.conv_b = NorConv(planes, planes, 3, 1, 1, affine)
        self.downsample: nn.Module | None
        if stride == 2:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=1, padding=0, bias=False))
        elif inplanes != planes:
            self.downsample = NorConv(inplanes, planes, 1, 1, 0, affine)
        else:
            self.downsample = None
        self.in_dim, self.out_dim, self.stride = inplanes, planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))


OpFactory = Callable[[int, int, bool], nn.Module]

OPS: dict[str, OpFactory] = {
    "none": lambda C, stride, affine: Zero(stride),
    "noise": lambda C, stride, affine: NoiseOp(stride),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1,
                                                           count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine: (Identity() if stride == 1
                                               else FactorizedReduce(C, C, affine=affine)),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "sep_conv_7x7": lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    "conv_7x1_1x7": lambda C, stride, affine: FactorizedConv(C, 7, stride, affine=affine),
    "conv_3x1_1x3": lambda C, stride, affine: FactorizedConv(C, 3, stride, affine=affine),
    # NAS-Bench-201 (AutoDL cell_operations.py). Its 'none', 'skip_connect' and 'avg_pool_3x3'
    # are the entries above: for C_in == C_out and stride 1, the only case an NB201 cell
    # builds, AutoDL's Zero is x * 0, its skip is the identity and its POOLING('avg') is
    # AvgPool2d(3, stride, 1, count_include_pad=False) with no BN (tests/test_nb201.py checks).
    "nor_conv_1x1": lambda C, stride, affine: NorConv(C, C, 1, stride, 0, affine=affine),
    "nor_conv_3x3": lambda C, stride, affine: NorConv(C, C, 3, stride, 1, affine=affine),
}


def make_op(name: str, C: int, stride: int, affine: bool) -> nn.Module:
    """Build candidate op ``name``; an unknown name is a user error naming the known ones."""
    try:
        factory = OPS[name]
    except KeyError:
        raise UserError(f"unknown operation {name!r}; known: {', '.join(sorted(OPS))}") from None
    return factory(C, stride, affine)

