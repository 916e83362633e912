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

import argparse
import os
import tempfile
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


def add_epoch_arguments(p: argparse.ArgumentParser) -> None:
    """The options every epochs-per-hour bench shares: how much to time, the data, threads."""
    p.add_argument("--steps", type=int, default=4,
                   help="steps of the timed epoch (at least 3: the first 2 are its fixed cost)")
    p.add_argument("--warmup", type=int, default=4,
                   help="steps of the untimed epoch before (at least 4: on the graph paths a "
                        "run's first recording follows 3 eager steps)")
    p.add_argument("--eval_batches", type=int, default=3, help="at least 2")
    p.add_argument("--data", default=None, help="a folder holding cifar-10-batches-py")
    p.add_argument("--threads", type=int, default=None)


def parse_epoch_arguments(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``p``'s arguments, the shared ones checked, and ``--threads`` applied."""
    args = p.parse_args(argv)
    if args.steps < 3 or args.warmup < 4 or args.eval_batches < 2:
        p.error("--steps must be at least 3, --warmup at least 4, --eval_batches at least 2")
    if getattr(args, "device", "cpu") == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


Row = tuple[str, dict]  # a path's name and its time_path numbers


def time_paths(args: argparse.Namespace, paths: list[str], config: Callable[[str, str], Any],
               time_path: Callable[..., dict]) -> list[Row]:
    """``time_path(config(path, data), steps, warmup, eval_batches, folder)`` for every path, on
    ``--data`` or on made-up CIFAR-10 files in a temporary folder (each path a folder of its
    own there)."""
    from bench.data_pipeline import made_up_cifar10

    rows = []
    with tempfile.TemporaryDirectory() as root:
        data = args.data
        if data is None:
            made_up_cifar10(root)
            data = root
        for path in paths:
            folder = os.path.join(root, path)
            os.makedirs(folder)
            rows.append((path, time_path(config(path, data), args.steps, args.warmup,
                                         args.eval_batches, folder)))
    return rows


def print_epoch_table(rows: list[Row], epochs: int, eval_column: str) -> None:
    """One line per path: steady ms/step, fixed s per epoch, ms per ``eval_column`` batch, s
    per epoch, epochs per hour, hours for ``epochs`` epochs, speed against the first row."""
    base = rows[0][1]["epoch_s"]
    print(f"{'path':<12} {'ms/step':>9} {'fixed s':>8} {eval_column:>14} {'s/epoch':>9} "
          f"{'epochs/hour':>12} {f'{epochs} epochs':>11} {'vs first':>9}  note")
    for name, r in rows:
        note = f"eager: {r['reason']}" if r.get("reason") else ""
        print(f"{name:<12} {r['step_ms']:>9.1f} {r['fixed_s']:>8.2f} {r['eval_ms']:>14.1f} "
              f"{r['epoch_s']:>9.1f} {3600 / r['epoch_s']:>12.2f} "
              f"{epochs * r['epoch_s'] / 3600:>10.2f}h {base / r['epoch_s']:>8.2f}x  {note}",
              flush=True)
