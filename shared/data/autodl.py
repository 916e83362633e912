"""AutoDL's search data (D-X-Y/AutoDL-Projects, the code base of NAS-Bench-201's searches and
of Λ-DARTS' ``NAS-Bench201/exps/algos/DARTS-V1.py``).

* **Its file format** (``lib/config_utils/configure_utils.py``, ``load_config``): a JSON object
  whose every value is ``[type, value]`` (``["int", ["0", "5", ...]]``, ``["float", "0.025"]``,
  ``["bool", "0"]``); ``read_autodl_config`` returns the converted values. The split files
  (``configs/nas-benchmark/cifar-split.txt``: 25,000 + 25,000 indices of the CIFAR-10 training
  set, used for CIFAR-100 too) and the hyper-parameter files (``algos/DARTS.config``) are in it.
* **``SearchDataset``'s pairing** (``lib/datasets/SearchDatasetWrap.py``): each training image
  of the train split (shuffled each epoch, batch 64, the last batch partial) comes with a
  validation image drawn uniformly **with replacement** from the valid split (``random.choice``
  per image), so an epoch has ``ceil(25000 / 64)`` = 391 steps and every step an alpha batch of
  the same size as its weight batch. ``RandomPairs`` draws the same distribution from a seeded
  ``torch.Generator`` (checkpointed, so a resumed search draws the same batches); it cannot
  repeat Python's ``random`` stream itself.
* The end-of-epoch accuracy is over the valid split with the **test** transform (AutoDL's
  ``valid_loader``, ``train_data_v2.transform = valid_data.transform``).
* **On the device** (``device_paired_queues``, ``shared.data.on_device``): the same pairing
  drawn there in whole batches. As every on-device search queue, the train split's last
  partial batch is dropped (static shapes for a captured step; its effect on α is nil), so an
  epoch has ``floor(25000 / 64)`` = 390 steps; under data parallelism each rank keeps its rows
  of both batches.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, SubsetRandomSampler

from shared.data.on_device import (
    ONE_PROCESS,
    BatchAugment,
    DeviceImages,
    EpochBatches,
    OrderedBatches,
    RandomDeviceBatches,
    Shard,
)
from shared.errors import UserError

_CONVERT = {"int": int, "float": float, "str": str, "bool": lambda v: bool(int(v))}


def read_autodl_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The values of an AutoDL configuration file, converted by their declared types."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not an AutoDL configuration file (JSON of "
                        f"[type, value] pairs): {exc}") from None
    out: dict[str, Any] = {}
    for key, entry in raw.items() if isinstance(raw, dict) else ():
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in _CONVERT):
            raise UserError(f"{path}: {key!r} is not a [type, value] pair with a type of "
                            f"{', '.join(_CONVERT)}")
        kind, value = entry
        try:
            out[key] = ([_CONVERT[kind](v) for v in value] if isinstance(value, list)
                        else _CONVERT[kind](value))
        except (TypeError, ValueError):
            raise UserError(f"{path}: {key!r} holds a value that is not {kind}") from None
    if not out:
        raise UserError(f"{path} is not an AutoDL configuration file (no [type, value] pairs)")
    return out


def load_split(path: str | os.PathLike[str], size: int) -> tuple[list[int], list[int]]:
    """(train, valid) indices of an AutoDL split file, checked against a data set of ``size``
    images: both non-empty, disjoint, inside the data set."""
    split = read_autodl_config(path)
    if not {"train", "valid"} <= split.keys():
        raise UserError(f"{path}: an AutoDL split file has 'train' and 'valid' index lists")
    train, valid = list(split["train"]), list(split["valid"])
    if not train or not valid:
        raise UserError(f"{path}: the train and valid lists must both be non-empty")
    if set(train) & set(valid):
        raise UserError(f"{path}: the train and valid lists overlap")
    top = max(max(train), max(valid))
    if min(min(train), min(valid)) < 0 or top >= size:
        raise UserError(f"{path}: indices reach {top}, but the training set has {size} images "
                        "(a split file for another data set?)")
    return train, valid


class RandomPairs(Sampler[list[int]]):
    """Alpha batches paired with the weight batches of an epoch over ``num_train`` images in
    batches of ``batch_size`` (the last one partial): each index uniform with replacement from
    ``indices``, as AutoDL's ``SearchDataset``. ``num_batches`` may be lowered (a debug run)."""

    def __init__(self, indices: Sequence[int], batch_size: int, num_train: int,
                 generator: torch.Generator | None = None) -> None:
        if not indices:
            raise ValueError("RandomPairs needs at least one index")
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.batch_size, self.num_train, self.generator = batch_size, num_train, generator
        self.num_batches = math.ceil(num_train / batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.num_batches):
            size = min(self.batch_size, self.num_train - b * self.batch_size)
            pick = torch.randint(len(self.indices), (size,), generator=self.generator)
            yield self.indices[pick].tolist()

    def __len__(self) -> int:
        return self.num_batches


def paired_search_loaders(train_data: Dataset, eval_data: Dataset, train_idx: Sequence[int],
                          valid_idx: Sequence[int], batch_size: int, num_workers: int,
                          generator_train: torch.Generator, generator_valid: torch.Generator,
                          pin_memory: bool) -> tuple[DataLoader, DataLoader, DataLoader]:
    """``(train_queue, valid_queue, valid_eval_queue)`` as AutoDL's search: the train split
    shuffled, alpha batches paired by ``RandomPairs`` (both with the training transform), the
    valid split in order with ``eval_data``'s (test) transform for the epoch's accuracy."""
    common = {"num_workers": num_workers, "pin_memory": pin_memory, "persistent_workers": False}
    train_queue = DataLoader(train_data, batch_size=batch_size, drop_last=False,
                             sampler=SubsetRandomSampler(list(train_idx),
                                                         generator=generator_train),
                             generator=generator_train, **common)
    valid_queue = DataLoader(train_data, batch_sampler=RandomPairs(
        valid_idx, batch_size, len(train_idx), generator=generator_valid),
        generator=generator_valid, **common)
    valid_eval_queue = DataLoader(Subset(eval_data, list(valid_idx)), batch_size=batch_size,
                                  shuffle=False, **common)
    return train_queue, valid_queue, valid_eval_queue


class PairedDeviceBatches(RandomDeviceBatches):
    """``RandomPairs`` on the device: per weight step an alpha batch of ``batch_size`` images
    uniform with replacement from ``indices`` (``RandomDeviceBatches`` draws them distinct),
    augmented as the weight batch."""

    draws_distinct = False  # a valid split smaller than a batch is fine, as in AutoDL

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = self.generator
        for _ in range(self.num_batches):
            pick = torch.randint(len(self.indices), (self.batch_size,), generator=g,
                                 device=g.device)
            yield self.batch(self.indices[pick])


def device_paired_queues(data: DeviceImages, train_idx: Sequence[int],
                         valid_idx: Sequence[int], batch_size: int, augment: BatchAugment,
                         generator_train: torch.Generator, generator_valid: torch.Generator,
                         shard: Shard = ONE_PROCESS
                         ) -> tuple[EpochBatches, PairedDeviceBatches, OrderedBatches]:
    """``paired_search_loaders`` with the data on the device: the train split reshuffled each
    epoch (full batches only), a paired alpha batch per step, the valid split in order with
    the test transform."""
    train = EpochBatches(data, train_idx, batch_size, augment, generator_train, shard,
                         what="the train split")
    valid = PairedDeviceBatches(data, valid_idx, batch_size, augment, generator_valid,
                                len(train), shard)
    return train, valid, OrderedBatches(data, valid_idx, batch_size, shard)
