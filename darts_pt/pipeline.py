"""DARTS-PT's two phases on the engine (Wang et al., ICLR'21, Alg. 1; the released
``train_search.py``): the supernet, trained, continued from a checkpoint or resumed, then the
perturbation-based projection with its tuning epochs. Both search doors (``sota/cnn`` and
``nasbench201``) run it; what differs between their spaces is a ``ProjectionSpec``.

Which run a command is (and which checkpoints it starts from) is ``darts_pt.doors.resolve``'s
answer, a ``Run``; each phase is ``shared.search.phase.run_phase`` in its own folder.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from darts_pt.doors import Run, taken
from darts_pt.projection import ProjectionState
from darts_pt.tuning import ProjectionConfig, tuning_loop
from shared import distributed as dist_utils
from shared.cli.run_folder import claim_run, has_checkpoint, inside
from shared.errors import UserError
from shared.logs import close_logger, setup_logger
from shared.search.cnn_search import CNNSearch, CNNSearchConfig, build_cnn_search
from shared.search.data_parallel import DataParallel
from shared.search.phase import Finish, run_phase
from shared.search.process import log_data_parallel


@dataclass
class ProjectionSpec:
    """What a space adds to the pipeline: the projection's state and settings, how a
    finished projection is described, and the supernet phase's epoch-end hooks."""

    state: ProjectionState
    config: ProjectionConfig
    describe: Callable[[Any, logging.Logger], None]  # logs the final network (its size)
    select: Callable | None = None                  # the tuning loop's genotype rule
    finish: Finish | None = None                    # extra genotype.json entries at the end
    supernet_hooks: list[Callable] = field(default_factory=list)


def run_pipeline(args: argparse.Namespace, run: Run, cfg: CNNSearchConfig,
                 spec: Callable[[CNNSearch], ProjectionSpec],
                 notes: Sequence[tuple[Any, ...]] = ()) -> Any:
    """The command's phases, logged to ``run.log_name`` in the supernet's folder (``notes``:
    log lines of the door's to write first); returns the final genotype (the projection's,
    with ``--dev proj``). ``spec(search)`` makes the space's ``ProjectionSpec`` once the search
    is built.

    The run's own folder (the projection's, else the supernet's) is claimed for the command
    (``shared.cli.run_folder``): created new inside ``--experiments`` or, resumed, locked.
    Under torchrun both phases are data-parallel (``shared.search.data_parallel``): every
    rank computes its shard of each batch and of each projection pass, rank 0 writes."""
    new = run.saved is None
    out = run.proj_dir or run.save_dir
    # under torchrun: rank 0 owns the folder and writes every file; the others compute
    with claim_run(out, root=args.experiments if new else None, new=new, unique=run.restart,
                   taken=taken(out), data_parallel=True) as out, \
            dist_utils.process_group(cfg.gpu) as (ctx, device):
        out = dist_utils.broadcast_object(out, ctx)  # a debug restart's new name, on every rank
        if run.proj_dir is None:
            run.save_dir = out
        elif out != run.proj_dir:  # a debug restart's new folder: its log is named after it
            run.proj_dir, run.log_name = out, os.path.basename(out) + ".txt"
        if not ctx.is_main:
            return _phases(args, run, dist_utils.silent_logger(), cfg, spec,
                           DataParallel.of(ctx), device)
        if new:  # the projection's log lies in the supernet's folder
            inside(run.save_dir, args.experiments, "the supernet folder")
        print(f"experiment folder: {out}")
        log_path = os.path.join(run.save_dir, run.log_name)
        fresh_log = run.proj_dir is not None and not os.path.exists(log_path)
        logger = setup_logger(run.save_dir, run.log_name)
        try:
            for note in notes:
                logger.info(*note)
            log_data_parallel(logger, ctx, cfg.batch_size)
            return _phases(args, run, logger, cfg, spec, DataParallel.of(ctx), device)
        except (UserError, OSError):
            if fresh_log and new and not has_checkpoint(out):  # the start failed: no trace
                close_logger(logger)
                with contextlib.suppress(OSError):
                    os.remove(log_path)
            raise
        finally:
            close_logger(logger)


def _phases(args: argparse.Namespace, run: Run, logger: logging.Logger, cfg: CNNSearchConfig,
            spec: Callable[[CNNSearch], ProjectionSpec], data_parallel: DataParallel,
            device: torch.device) -> Any:
    search = build_cnn_search(cfg, run.save_dir, logger, numbered_checkpoints=args.ckpt_interval,
                              max_batches=1 if args.fast else None,
                              data_parallel=data_parallel, device=device)
    projection = spec(search)
    loop = search.loop
    loop.epoch_end_hooks += list(projection.supernet_hooks)
    dev_resume = getattr(args, "dev_resume_epoch", -1) >= 0
    if run.proj_dir is None:
        if run.saved is not None:
            loop.load_state_dict(run.saved)
            logger.info("resumed from %s at epoch %d", loop.checkpoint_path, loop.start_epoch)
        elif run.source is not None:
            _load_supernet(loop, run, args, logger)
        return run_phase(loop, run.save_dir, search.space, cfg)
    if run.saved is None and not dev_resume:  # a fresh projection of a supernet checkpoint
        _load_supernet(loop, run, args, logger)
        if loop.start_epoch < loop.epochs:  # the released code trains the rest first
            with claim_run(run.save_dir, root=None, new=False,  # it writes the supernet's
                           data_parallel=True):
                run_phase(loop, run.save_dir, search.space, cfg)
    return project(args, search, run, projection)


def _load_supernet(loop, run: Run, args: argparse.Namespace, logger: logging.Logger) -> None:
    loop.load_state_dict(run.source)
    logger.info("loaded supernet checkpoint %s (epoch %d)",
                run.source_path, loop.start_epoch)


def project(args: argparse.Namespace, search: CNNSearch, run: Run, spec: ProjectionSpec) -> Any:
    """The projection phase in ``run.proj_dir``: continued (``--resume``), restarted from one
    of its own checkpoints (``--dev_resume_epoch``), or begun on the loaded supernet."""
    cfg, logger = search.cfg, search.logger
    tune = tuning_loop(search.loop, spec.state, spec.config, run.proj_dir,
                       batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                       select=spec.select)
    if run.saved is not None:
        tune.load_state_dict(run.saved)
        logger.info("resumed projection from %s at epoch %d", tune.checkpoint_path,
                    tune.start_epoch)
    elif getattr(args, "dev_resume_epoch", -1) >= 0:
        tune.load_state_dict(run.source)
        logger.info("=> loaded projection checkpoint %s/checkpoint_%d.pth.tar",
                    args.dev_resume_log, args.dev_resume_epoch)
    else:
        valid_acc, valid_obj = tune.infer()
        logger.info("valid_acc  %f", valid_acc)
        logger.info("valid_loss %f", valid_obj)

    def finish(genotype: Any, writer: Any) -> dict[str, Any]:
        logger.info("projection finished")
        spec.describe(genotype, logger)
        logger.info("genotype = %s", genotype)
        return spec.finish(genotype, writer) if spec.finish is not None else {}

    return run_phase(tune, run.proj_dir, search.space, cfg, finish=finish)
