"""Data-parallel training under ``torchrun``: detect it, set it up, reduce metrics.

A script started by ``torchrun --nproc_per_node N`` finds WORLD_SIZE / RANK / LOCAL_RANK in
its environment; a plain ``python script.py`` does not and runs as one process (world size 1),
so every helper here is a cheap no-op there and single-process code needs no branches.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist

from shared.errors import UserError
from shared.runtime import choose_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        # Only rank 0 writes logs, checkpoints and TensorBoard events: N writers would race.
        return self.rank == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def refuse_more_processes(what: str = "search") -> None:
    """A run without data parallelism started under ``torchrun`` would run one independent
    ``what`` per process (each rank its own data, α and run folder), so more than one process
    is refused, on every rank, before any folder or data is touched."""
    world = env_world_size()
    if world > 1:
        raise UserError(f"this {what} was started as {world} processes (torchrun, "
                        f"WORLD_SIZE={world}): data-parallel {what} is not implemented yet, and "
                        f"each process would run a {what} of its own; start it as one process "
                        "(python ..., not torchrun)")


def refuse_data_parallel_search() -> None:
    """The search engine's own check (a library caller has no door that checked first)."""
    refuse_more_processes("search")


_joined = 0  # how many setup() calls of this process hold the process group


def setup(gpu: int) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun; pick this process's device.

    CUDA ranks use NCCL on GPU ``LOCAL_RANK`` (``--gpu`` only matters for one process);
    CPU ranks (``--gpu -1`` or no CUDA) use gloo, which is how the tests exercise DDP.
    Calls nest: each is paired with a ``cleanup``, and the group is left at the outermost
    (StacNAS' ``run_all.py`` holds it across its stages, each of which joins it too).
    """
    global _joined
    world = env_world_size()
    if world <= 1:
        return DistContext(), choose_device(gpu)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if choose_device(gpu).type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
                            f"CUDA device(s); lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _joined += 1
    return DistContext(rank, world, local_rank), device


@contextlib.contextmanager
def process_group(gpu: int) -> Iterator[tuple[DistContext, torch.device]]:
    """``setup`` for the ``with`` block, then ``cleanup`` however it ends."""
    ctx, device = setup(gpu)
    try:
        yield ctx, device
    finally:
        cleanup()


def cleanup() -> None:
    """Undo one ``setup``: the last one leaves the process group."""
    global _joined
    _joined = max(_joined - 1, 0)
    if not _joined and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's value on every rank (e.g. the run folder, whose name holds a timestamp)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[float], ctx: DistContext,
                   device: torch.device) -> list[float]:
    """Element-wise sum over ranks (float64 so sample counts stay exact)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's BatchNorm running statistics.

    Each rank updates them on its own shard after DDP's per-forward broadcast, so without
    this the ranks would evaluate slightly different models; rank 0's is the one saved.
    """
    if not ctx.enabled:
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def silent_logger() -> logging.Logger:
    """What non-zero ranks log to: nothing."""
    logger = logging.getLogger("darts.silent-rank")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


# What resuming under another number of processes does to a run: the search loops draw the
# same global batches whatever the world size; evaluation training's shards, samplers and
# random states depend on it
SAME_BATCHES = ("the same global batches, summed in another order (equal to rounding, not bit "
                "for bit)")
NOT_BIT_IDENTICAL = "the run continues but not bit-identically"


def note_world_size(logger: logging.Logger, saved: int, now: int, consequence: str) -> None:
    """One log line where a checkpoint saved by ``saved`` processes resumes under ``now``."""
    if saved != now:
        logger.info("note: resumed with %d process(es), saved with %d: %s", now, saved,
                    consequence)
