"""Time one real epoch of a loop in two parts: what each step costs once the epoch is running
(its steady ms per step) and what the epoch costs on top (its fixed cost), so a short timed
epoch extrapolates to a long one honestly.

A recorded step (``--step_capture cuda_graph``) starts every epoch with an eager step and a
recording, then replays; a DataLoader starts its workers at the first batch. Both are paid once
per epoch: averaged over a timed epoch of 20 steps they would weigh ~20 times what they weigh
in CIFAR-10's 391 (search) or 521 (evaluation) steps. So the clock wraps the loop's queue and
reads the time (after synchronising the device) when batch ``mark`` is about to be fetched:
steps ``mark`` and later give the steady cost, everything before them and after the last is the
fixed cost.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class EpochTime:
    """One timed epoch: ``steps`` batches in ``total_s``, ``steady_ms`` each from ``mark`` on."""

    steps: int
    total_s: float
    steady_ms: float

    @property
    def fixed_s(self) -> float:
        """The epoch's cost beyond ``steps`` steady steps (warm-up, recording, worker start)."""
        return self.total_s - self.steps * self.steady_ms / 1000

    def epoch_s(self, steps: int) -> float:
        """An epoch of ``steps`` steps: the fixed cost once, the steady cost per step."""
        return self.fixed_s + steps * self.steady_ms / 1000


class MarkedQueue:
    """The first ``steps`` batches of ``queue``, with the time read before batch ``mark`` is
    fetched; every other attribute is the queue's own."""

    def __init__(self, queue: Iterable, steps: int, mark: int, device: torch.device) -> None:
        self.queue, self.steps, self.mark, self.device = queue, steps, mark, device
        self.marked: float | None = None
        self.served = 0

    def __len__(self) -> int:
        return min(len(self.queue), self.steps)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.queue)
        while True:
            if self.served == self.mark:  # the earlier steps have run: start the steady clock
                synchronize(self.device)
                self.marked = time.perf_counter()
            if self.served == self.steps:
                return
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.served += 1
            yield batch


def time_epoch(owner: Any, queue: str, run: Callable[[], Any], device: torch.device,
               steps: int, mark: int = 2) -> EpochTime:
    """Run ``run()`` (one epoch over ``owner.<queue>``, the loop's own limit off) with that
    queue cut to ``steps`` batches under a ``MarkedQueue``, and return its timing."""
    if steps <= mark:
        raise ValueError(f"time more than {mark} steps, not {steps}")
    original = getattr(owner, queue)
    clock = MarkedQueue(original, steps, mark, device)
    setattr(owner, queue, clock)
    try:
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        end = time.perf_counter()
    finally:
        setattr(owner, queue, original)
    if clock.marked is None or clock.served <= mark:
        raise ValueError(f"the epoch took {clock.served} batches: time more than {mark}")
    # the loop may stop early (a short queue); every batch fetched was a step of the epoch
    steady_ms = (end - clock.marked) * 1000 / (clock.served - mark)
    return EpochTime(clock.served, end - start, steady_ms)
