"""Data sets held on the compute device and augmented there, a whole batch at a time.

The DataLoader path augments one image at a time on the host (PIL crop, flip, ``ToTensor``,
``Normalize``, Cutout) and copies every batch to the GPU; on a GPU that host work, not the
network, bounds a search step. The fast CIFAR trainers (airbench, hlb-CIFAR10) keep the whole
training set on the GPU as uint8 and augment batches there. This module does that for the
data sets whose augmentation is crop + flip (+ Cutout): CIFAR-10/100, SVHN and the embedded
digits (``ON_DEVICE_DATASETS``).

The batches have the distribution of the torchvision pipeline of
``shared.data.transforms.train_transform`` for the same data set, drawn differently:
``RandomCrop(size, padding=p)`` pads with zeros (black, before ``Normalize``) and takes the
window at offsets (i, j) uniform on {0..2p}^2; ``RandomHorizontalFlip`` mirrors with
probability 1/2; Cutout (DARTS ``utils.Cutout``) zeroes, after ``Normalize``, the square of
half-width ``length // 2`` around a centre uniform over all pixels, clipped at the borders,
with probability ``cutout_prob``. Every random number of a batch comes from one generator on
the device, so nothing is read back to the host and a checkpointed generator state replays
the stream.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import UserError

from .split import search_split
from .stats import DATASET_STATS

# Crop padding and flip of each data set's training transform (shared.data.transforms).
AUGMENTATION = {"cifar10": (4, True), "cifar100": (4, True), "svhn": (4, True),
                "digits": (1, False)}
ON_DEVICE_DATASETS = tuple(AUGMENTATION)


class AugmentDraw(NamedTuple):
    """The random numbers of one batch's augmentation, one row per image."""

    crop_i: torch.Tensor    # (n,) row offset into the padded image, in 0..2p
    crop_j: torch.Tensor    # (n,) column offset
    flip: torch.Tensor      # (n,) bool
    cut_y: torch.Tensor     # (n,) Cutout centre row
    cut_x: torch.Tensor     # (n,) Cutout centre column
    cut_on: torch.Tensor    # (n,) bool: Cutout applied (probability cutout_prob)

    def rows(self, start: int, stop: int) -> "AugmentDraw":
        return AugmentDraw(*(t[start:stop] for t in self))


@dataclass(frozen=True)
class BatchAugment:
    """Random crop with zero padding, horizontal flip, Normalize and Cutout on a batch."""

    padding: int
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cutout_length: int = 0   # 0: no Cutout
    cutout_prob: float = 1.0

    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> AugmentDraw:
        """All random numbers of an ``n``-image batch (drawn even where unused, so the stream
        does not depend on what was drawn)."""
        device = generator.device
        span = 2 * self.padding + 1

        def ints(high: int) -> torch.Tensor:
            return torch.randint(high, (n,), generator=generator, device=device)

        def coins(p: float) -> torch.Tensor:
            return torch.rand(n, generator=generator, device=device) < p

        return AugmentDraw(ints(span), ints(span), coins(0.5) & self.flip, ints(height),
                           ints(width), coins(self.cutout_prob) & (self.cutout_length > 0))

    def __call__(self, x: torch.Tensor, d: AugmentDraw) -> torch.Tensor:
        """``x``: (n, C, H, W) floats in [0, 1]; returns the augmented, normalised batch."""
        n, c, h, w = x.shape
        if self.padding:
            padded = F.pad(x, (self.padding,) * 4)
            rows = d.crop_i[:, None] + torch.arange(h, device=x.device)
            cols = d.crop_j[:, None] + torch.arange(w, device=x.device)
            x = padded[torch.arange(n, device=x.device)[:, None, None, None],
                       torch.arange(c, device=x.device)[None, :, None, None],
                       rows[:, None, :, None], cols[:, None, None, :]]
        if self.flip:
            x = torch.where(d.flip[:, None, None, None], x.flip(-1), x)
        x = normalize(x, self.mean, self.std)
        if self.cutout_length:
            half = self.cutout_length // 2
            r = torch.arange(h, device=x.device) - d.cut_y[:, None]  # (n, h)
            q = torch.arange(w, device=x.device) - d.cut_x[:, None]
            hole = ((r >= -half) & (r < half))[:, :, None] & ((q >= -half) & (q < half))[:, None]
            x = x.masked_fill((hole & d.cut_on[:, None, None])[:, None], 0.0)
        return x


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    return (x - _channels(tuple(mean), x.device, x.dtype)) / _channels(tuple(std), x.device,
                                                                      x.dtype)


@functools.lru_cache(maxsize=None)
def _channels(values: tuple[float, ...], device: torch.device,
              dtype: torch.dtype) -> torch.Tensor:
    """Per-channel constants as a (1, C, 1, 1) tensor on ``device``, made once: not a copy
    from the host in every batch."""
    return torch.tensor(values, dtype=dtype, device=device)[None, :, None, None]


def batch_augment(dataset: str, cutout: bool = False, cutout_length: int = 16,
                  cutout_prob: float = 1.0) -> BatchAugment:
    """The batched twin of ``train_transform(dataset, cutout, cutout_length, cutout_prob)``."""
    padding, flip = AUGMENTATION[dataset]
    mean, std = DATASET_STATS[dataset]
    return BatchAugment(padding, flip, mean, std, cutout_length if cutout else 0, cutout_prob)


class DeviceImages:
    """A data set's images as one tensor on the device: uint8 (CIFAR, SVHN) or floats in
    [0, 1] (digits), (N, C, H, W), with its labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, dataset: str) -> None:
        self.images, self.labels, self.dataset = images, labels, dataset

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def pixels(self, index: torch.Tensor) -> torch.Tensor:
        """The images at ``index`` as floats in [0, 1] (``ToTensor``'s scale)."""
        x = self.images[index]
        # a division, as ToTensor: the same floats bit for bit
        return x.float().div_(255) if x.dtype == torch.uint8 else x

    def eval_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``eval_transform``: normalised, not augmented."""
        mean, std = DATASET_STATS[self.dataset]
        return normalize(self.pixels(index), mean, std), self.labels[index]


def to_device_images(dataset: Any, name: str, device: torch.device) -> DeviceImages:
    """Copy a data set built by ``get_dataset(name, ...)`` (any transform: it is not used) to
    ``device``: torchvision's CIFAR (``data`` N x H x W x C uint8, ``targets``), SVHN (``data``
    N x C x H x W uint8, ``labels``) or the embedded digits (``data`` floats in [0, 1])."""
    if name not in ON_DEVICE_DATASETS:
        raise UserError(f"--data_on_device holds {', '.join(ON_DEVICE_DATASETS)} on the "
                        f"device, not {name}: run with --no-data_on_device")
    data = dataset.data
    images = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if name in ("cifar10", "cifar100"):
        images = images.permute(0, 3, 1, 2)
    labels = dataset.labels if name == "svhn" else dataset.targets
    return DeviceImages(images.contiguous().to(device),
                        torch.as_tensor(np.asarray(labels), dtype=torch.long).to(device), name)


def device_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` (its draws need no host round trip), checkpointed as any."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


class Shard(NamedTuple):
    """Which part of every global batch this process computes (data parallelism)."""

    rank: int = 0
    world_size: int = 1

    def rows(self, n: int) -> tuple[int, int]:
        """This rank's rows of a global batch of ``n``: equal parts when the ranks divide
        ``n`` (every training batch), else parts one row apart (a short last batch of
        ``PassBatches``), rank order kept, so the shards together are the batch."""
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size


ONE_PROCESS = Shard()


class EpochBatches:
    """The weight half, reshuffled each epoch: ``len(indices) // batch_size`` full batches
    (the last partial batch is dropped, so every step has the same shapes), augmented.

    Under data parallelism every rank draws the same global batch and augmentation and keeps
    its ``shard`` of the rows."""

    draws_distinct = True  # a batch holds distinct images: the split must fill one

    def __init__(self, data: DeviceImages, indices: Sequence[int], batch_size: int,
                 augment: BatchAugment, generator: torch.Generator, shard: Shard = ONE_PROCESS,
                 what: str = "the weight half") -> None:
        self.data, self.augment, self.generator, self.shard = data, augment, generator, shard
        self.indices = torch.as_tensor(list(indices), dtype=torch.long, device=data.device)
        self.batch_size = batch_size
        if self.draws_distinct and len(self.indices) < batch_size:
            raise UserError(f"{what} has {len(self.indices)} images, fewer than one batch of "
                            f"{batch_size}: lower --batch_size")
        self.num_batches = len(self.indices) // batch_size

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = self.generator
        order = self.indices[torch.randperm(len(self.indices), generator=g, device=g.device)]
        for k in range(self.num_batches):
            yield self.batch(order[k * self.batch_size:(k + 1) * self.batch_size])

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.data.images.shape[-2:]
        draw = self.augment.draw(len(index), h, w, self.generator)
        start, stop = self.shard.rows(len(index))
        index = index[start:stop]
        return self.augment(self.data.pixels(index), draw.rows(start, stop)), \
            self.data.labels[index]


class RandomDeviceBatches(EpochBatches):
    """One fresh random batch of the alpha half per step (DARTS' ``next(iter(valid_queue))``,
    as ``shared.data.loaders.RandomBatches``): distinct images inside a batch, independent
    batches. ``num_batches`` follows the weight queue's length."""

    def __init__(self, data: DeviceImages, indices: Sequence[int], batch_size: int,
                 augment: BatchAugment, generator: torch.Generator, num_batches: int,
                 shard: Shard = ONE_PROCESS) -> None:
        super().__init__(data, indices, batch_size, augment, generator, shard,
                         what="the architecture half")
        self.num_batches = num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g, n = self.generator, len(self.indices)
        for _ in range(self.num_batches):
            pick = torch.randperm(n, generator=g, device=g.device)[:self.batch_size]
            yield self.batch(self.indices[pick])


class PassBatches(EpochBatches):
    """Every image of a split once per pass, reshuffled and augmented, the last batch short
    (DataLoader's ``shuffle=True`` without ``drop_last``): DARTS-PT scores each masked
    supernet on one pass over the validation half (``darts_pt.tuning.projection_queue``).
    Under data parallelism the short batch's shards may differ by a row, which only a
    no-gradient forward may take (``shared.models.global_batch_norm`` weighs them)."""

    def __init__(self, data: DeviceImages, indices: Sequence[int], batch_size: int,
                 augment: BatchAugment, generator: torch.Generator,
                 shard: Shard = ONE_PROCESS) -> None:
        super().__init__(data, indices, batch_size, augment, generator, shard,
                         what="the architecture half")
        self.num_batches = -(-len(self.indices) // batch_size)


class OrderedBatches:
    """A split in order with the eval transform, for accuracies; the last batch may be short.
    Under data parallelism rank r takes images r, r + world, ... (no padding, so the summed
    counts are exactly the split)."""

    def __init__(self, data: DeviceImages, indices: Sequence[int], batch_size: int,
                 shard: Shard = ONE_PROCESS) -> None:
        index = torch.as_tensor(list(indices), dtype=torch.long, device=data.device)
        self.data, self.batch_size = data, max(1, batch_size // shard.world_size)
        self.indices = index[shard.rank::shard.world_size]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for k in range(len(self)):
            yield self.data.eval_batch(self.indices[k * self.batch_size:
                                                    (k + 1) * self.batch_size])


def device_search_queues(data: DeviceImages, train_portion: float, batch_size: int,
                         augment: BatchAugment, generator_train: torch.Generator,
                         generator_valid: torch.Generator, shard: Shard = ONE_PROCESS
                         ) -> tuple[EpochBatches, RandomDeviceBatches | None,
                                    OrderedBatches | None]:
    """``shared.data.loaders.search_loaders`` on the device: the weight half reshuffled each
    epoch (full batches only), a random alpha-half batch per weight step, the alpha half in
    order for the epoch's accuracy (both None when ``train_portion`` is 1)."""
    train_idx, valid_idx = search_split(data, train_portion)
    train = EpochBatches(data, train_idx, batch_size, augment, generator_train, shard)
    if not valid_idx:
        return train, None, None
    valid = RandomDeviceBatches(data, valid_idx, batch_size, augment, generator_valid,
                                len(train), shard)
    return train, valid, OrderedBatches(data, valid_idx, batch_size, shard)


def host_bytes(dataset: Any) -> int:
    """The size of a data set's images as ``to_device_images`` would hold them."""
    data = dataset.data
    if isinstance(data, torch.Tensor):
        return data.numel() * data.element_size()
    return int(np.asarray(data).nbytes)


def resolve_data_on_device(requested: bool | None, name: str, dataset: Any,
                           device: torch.device, auto_augment: bool = False) -> bool:
    """Whether a run holds its data on the device: ``requested`` (``--data_on_device`` /
    ``--no-data_on_device``), or with None on a CUDA device where the data set is one of
    ``ON_DEVICE_DATASETS``, ``auto_augment`` (drawn per image on the host) is off and its images
    take at most half the free device memory. Asked for where it cannot be: one UserError with
    every reason."""
    reasons: list[str] = []
    if auto_augment:
        reasons.insert(0, "--auto_aug draws AutoAugment per image on the host")
    if name not in ON_DEVICE_DATASETS:
        reasons.insert(0, f"{name} is not held on the device (only "
                          f"{', '.join(ON_DEVICE_DATASETS)}: crop, flip and Cutout)")
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if host_bytes(dataset) > free // 2:
            reasons.append(f"its {host_bytes(dataset) / 2**20:.0f} MiB of images exceed half "
                           f"the device's free {free / 2**20:.0f} MiB")
    if requested is None:
        return device.type == "cuda" and not reasons
    if requested and reasons:
        raise UserError("--data_on_device: " + "; ".join(reasons) + "; run with "
                        "--no-data_on_device")
    return bool(requested)


def adopt_data_path(cfg: Any, state: dict[str, Any]) -> None:
    """A resumed run reads its data as it did (``data_on_device`` as it was settled at its
    start) unless the flag was given: a run started on a GPU continues on the CPU, and a
    data-parallel one as one process, with the same batches."""
    if cfg.data_on_device is None:
        cfg.data_on_device = state.get("config", {}).get("data_on_device")


def check_data_path(saved_config: dict[str, Any], here: bool | None,
                    data_parallel: bool = False) -> None:
    """Refuse to resume a run through the other data path: the two draw different batches
    (and hold different generators), so the continuation would not be the run's. Several
    processes always hold the data on the device: a run of DataLoaders continues as one."""
    saved = bool(saved_config.get("data_on_device"))
    if saved != bool(here):
        how = "held its data on the device" if saved else "read its data through DataLoaders"
        flag = "--data_on_device" if saved else "--no-data_on_device"
        if data_parallel:
            raise UserError(f"the run being resumed {how}, which a data-parallel run cannot: "
                            f"continue it as one process (python ..., not torchrun) with "
                            f"{flag}")
        raise UserError(f"the run being resumed {how}: resume it with {flag}")
