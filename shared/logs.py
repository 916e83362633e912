"""Plain-text logs in DARTS' format, TensorBoard events, and meters."""
from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

import torch

LOG_FORMAT = "%(asctime)s %(message)s"
DATE_FORMAT = "%m/%d %I:%M:%S %p"


class _LogFile(logging.FileHandler):
    """``log.txt``: a failed write (full disk) is said once on stderr in one line, instead of
    logging's traceback per record; the run goes on, and its checkpoint write reports the
    problem as the error that stops it."""

    _warned = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not self._warned:
            self._warned = True
            exc = sys.exc_info()[1]
            sys.stderr.write(f"warning: cannot write to {self.baseFilename} ({exc}); "
                             "its lines go to the console only\n")


def setup_logger(save_dir: str, filename: str = "log.txt", name: str = "darts") -> logging.Logger:
    """Log to stdout and ``save_dir/filename`` (appending, so a resumed run keeps its history)."""
    os.makedirs(save_dir, exist_ok=True)
    logger = logging.getLogger(f"{name}:{os.path.abspath(save_dir)}:{filename}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter(LOG_FORMAT, datefmt=DATE_FORMAT)
    for handler in (logging.StreamHandler(sys.stdout),
                    _LogFile(os.path.join(save_dir, filename))):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up notices (CPU instructions, oneDNN) out of every run's output.

    TensorBoard imports TensorFlow when it is installed (it is: the NB-101 reader), so every
    run would print them. Call before TensorFlow is first imported. oneDNN's custom TensorFlow
    ops are what the second notice announces; nothing here computes with TensorFlow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def tensorboard_writer(save_dir: str, purge_step: int | None = None):
    """A SummaryWriter under ``save_dir/runs``; ``purge_step`` drops events a resumed run redoes.

    TensorBoard writes its event files through TensorFlow's file API when TensorFlow is
    installed (it is: the NB-101 reader), and importing TensorFlow costs seconds at every
    start (5.7 s against 0.07 s measured here). ``tensorboard.compat`` falls back to its own
    pure-Python stub when a module ``tensorboard.compat.notf`` exists (TensorBoard's marker of
    its TensorFlow-free build); local event files are the same. Python's ``random`` state is
    the same after as before."""
    import random
    import types

    quiet_tensorflow()
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    # Importing torch.utils.tensorboard (and TensorFlow through it) draws from Python's global
    # ``random`` module, so a run seeded before this call would have its Python RNG advanced
    # by one draw (and a resumed run's saved state one draw ahead of the uninterrupted run's).
    state = random.getstate()
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(os.path.join(save_dir, "runs"), purge_step=purge_step)
    finally:
        random.setstate(state)


class AverageMeter:
    def __init__(self) -> None:
        self.sum, self.cnt, self.avg = 0.0, 0, 0.0

    def update(self, val: float, n: int = 1) -> None:
        self.sum += val * n
        self.cnt += n
        self.avg = self.sum / self.cnt


def accuracy(output: torch.Tensor, target: torch.Tensor,
             topk: Sequence[int] = (1,)) -> list[float]:
    """Top-k accuracies in percent."""
    maxk = min(max(topk), output.size(1))
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1))
    return [correct[:min(k, maxk)].reshape(-1).float().sum().item() * 100.0 / target.size(0)
            for k in topk]
