"""One process of a search: under ``torchrun`` it joins the process group (gloo on the CPU,
NCCL on GPU ``LOCAL_RANK``), every rank takes rank 0's run folder and only rank 0 logs
(``shared.search.data_parallel``); started plainly, it is the one process. The CNN searches
(``shared.search.cnn_search``) and the recurrent ones (``shared.search.rnn_search``) run in it.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, NamedTuple

import torch

from shared import distributed as dist_utils
from shared.checkpoint import load_checkpoint
from shared.logs import close_logger, setup_logger
from shared.search.data_parallel import DataParallel

CHECKPOINT = "checkpoint.pth.tar"


class SearchProcess(NamedTuple):
    """What ``search_process`` gives one process of a search."""

    save_dir: str                  # rank 0's run folder on every rank
    logger: Any                    # rank 0: the run's log.txt; other ranks: nowhere
    data_parallel: DataParallel    # ONE_PROCESS unless torchrun started several
    device: torch.device
    state: dict[str, Any] | None   # the checkpoint being resumed, if any


@contextlib.contextmanager
def search_process(gpu: int, batch_size: int, save_dir: str, resume: bool = False,
                   adopt: Callable[[dict[str, Any]], None] | None = None
                   ) -> Iterator[SearchProcess]:
    """One process of a search on ``gpu`` with global batch ``batch_size``, writing to
    ``save_dir``. With ``resume`` the run's checkpoint is read for the loop to load once it is
    built; ``adopt(state)`` lets the caller take what it needs from it first."""
    with dist_utils.process_group(gpu) as (ctx, device):
        save_dir = dist_utils.broadcast_object(save_dir, ctx)  # rank 0's (timestamped) name
        logger = setup_logger(save_dir) if ctx.is_main else dist_utils.silent_logger()
        try:
            log_data_parallel(logger, ctx, batch_size)
            state = None
            if resume:
                state = load_checkpoint(os.path.join(save_dir, CHECKPOINT), map_location=device)
                if adopt is not None:
                    adopt(state)
            yield SearchProcess(save_dir, logger, DataParallel.of(ctx), device, state)
        finally:
            if ctx.is_main:
                close_logger(logger)


def log_data_parallel(logger: Any, ctx: dist_utils.DistContext, batch_size: int) -> None:
    """The log's line of a data-parallel search (nothing for one process)."""
    if ctx.enabled:
        logger.info("data-parallel search: %d processes, batch %d = %d per process",
                    ctx.world_size, batch_size, batch_size // ctx.world_size)


def check_data_parallel(data_parallel: DataParallel, batch_size: int) -> None:
    """Refuse a search several processes cannot split (a library caller that passed no
    ``data_parallel`` under torchrun: it would run one search per process)."""
    from shared.errors import UserError

    if not data_parallel.enabled:
        dist_utils.refuse_data_parallel_search()
    elif batch_size % data_parallel.world_size:
        raise UserError(f"--batch_size {batch_size} is the global batch of a data-parallel "
                        f"search: it must split evenly over {data_parallel.world_size} processes")
