"""DataLoaders for the bilevel search: weight steps, alpha steps, end-of-epoch accuracy."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, SubsetRandomSampler

from .split import search_split


class RandomBatches(Sampler[list[int]]):
    """Batch sampler: ``num_batches`` batches of ``batch_size`` distinct indices each.

    Each batch is a fresh uniform draw from ``indices`` (without replacement inside
    a batch, with replacement across batches). This reproduces DARTS'
    ``next(iter(valid_queue))`` per step without rebuilding a DataLoader each step.
    The ``generator`` state can be checkpointed; ``num_batches`` may be reassigned
    (e.g. to the number of weight steps per epoch) and ``len()`` follows it.
    """

    def __init__(
        self,
        indices: Sequence[int],
        batch_size: int,
        num_batches: int,
        generator: torch.Generator | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(indices) == 0:
            raise ValueError("RandomBatches needs at least one index")
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.generator = generator

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.indices)
        for _ in range(self.num_batches):
            pick = torch.randperm(n, generator=self.generator)[: self.batch_size]
            yield self.indices[pick].tolist()

    def __len__(self) -> int:
        return self.num_batches


def search_loaders(
    train_data: Dataset,
    train_portion: float,
    batch_size: int,
    num_workers: int,
    generator_train: torch.Generator,
    generator_valid: torch.Generator,
    pin_memory: bool,
) -> tuple[DataLoader, DataLoader | None, DataLoader | None]:
    """Return ``(train_queue, valid_queue, valid_eval_queue)`` over the two halves (both
    validation queues None when ``train_portion`` is 1: no validation half).

    * train_queue: the weight half, reshuffled each epoch by ``generator_train``.
    * valid_queue: one random alpha-half batch per weight step (``RandomBatches``,
      ``generator_valid``); its length tracks ``len(train_queue)``.
    * valid_eval_queue: the alpha half in order, for the end-of-epoch accuracy.

    The generators are also given to the DataLoaders because worker seeds (and
    hence Cutout / crop randomness in workers) are drawn from them.
    """
    train_idx, valid_idx = search_split(train_data, train_portion)
    common = {"num_workers": num_workers, "pin_memory": pin_memory, "persistent_workers": False}
    train_queue = DataLoader(
        train_data,
        batch_size=batch_size,
        sampler=SubsetRandomSampler(train_idx, generator=generator_train),
        drop_last=False,
        generator=generator_train,
        **common,
    )
    if not valid_idx:
        return train_queue, None, None
    valid_queue = DataLoader(
        train_data,
        batch_sampler=RandomBatches(
            valid_idx, batch_size, num_batches=len(train_queue), generator=generator_valid
        ),
        generator=generator_valid,
        **common,
    )
    valid_eval_queue = DataLoader(
        Subset(train_data, valid_idx),
        batch_size=batch_size,
        shuffle=False,
        generator=generator_valid,
        **common,
    )
    return train_queue, valid_queue, valid_eval_queue
