"""``run_evaluation``: train a genotype from scratch in a run folder, or continue it; data,
network, trainer, logs, TensorBoard and ``history.json`` composed once for every door."""
from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Callable, Sequence

import torch
import torch.nn as nn

from shared import distributed as dist_utils
from shared.checkpoint import load_checkpoint, save_checkpoint, write_json
from shared.data.on_device import adopt_data_path, device_generator, resolve_data_on_device
from shared.distributed import DistContext
from shared.errors import UserError
from shared.evaluation.config import (
    BEST_WEIGHTS,
    CHECKPOINT,
    WEIGHTS,
    EvalConfig,
    validate_config,
)
from shared.evaluation.trainer import (
    BestEpoch,
    EpochStats,
    EvalDatasets,
    EvalTrainer,
    device_eval_queues,
    eval_loader,
    full_training_set,
    load_datasets,
    make_loaders,
    make_scheduler,
)
from shared.genotypes import Genotype, save_genotype
from shared.logs import close_logger, setup_logger, tensorboard_writer
from shared.models.cnn import build_final_network, count_parameters
from shared.runtime import Precision, cpu_threads, seed_everything, seeded_generator


def _tensorboard_hook(writer) -> Callable[[EvalTrainer, EpochStats], None]:
    def hook(trainer: EvalTrainer, s: EpochStats) -> None:
        writer.add_scalar("Acc/train", s.train_acc, s.epoch)
        writer.add_scalar("Obj/train", s.train_loss, s.epoch)
        writer.add_scalar("Acc/valid", s.valid_acc, s.epoch)
        writer.add_scalar("Acc/valid_top5", s.valid_top5, s.epoch)
        writer.add_scalar("Obj/valid", s.valid_loss, s.epoch)
        if s.holdout_acc is not None:
            writer.add_scalar("Acc/holdout", s.holdout_acc, s.epoch)
        writer.add_scalar("lr", s.lr, s.epoch)
        writer.add_scalar("drop_path_prob", trainer.net.drop_path_prob, s.epoch)
        writer.flush()
    return hook


def _history_hook(save_dir: str) -> Callable[[EvalTrainer, EpochStats], None]:
    def hook(trainer: EvalTrainer, s: EpochStats) -> None:
        write_json(os.path.join(save_dir, "history.json"), trainer.history)
    return hook


def _check_world(cfg: EvalConfig, ctx: DistContext) -> None:
    if cfg.batch_size % ctx.world_size:
        raise UserError(f"--batch_size {cfg.batch_size} is the global batch and must divide by "
                        f"the {ctx.world_size} processes; pick a multiple of {ctx.world_size}")


def _build_model(cfg: EvalConfig, genotype: Genotype, device: torch.device,
                 precision: Precision, ctx: DistContext) -> tuple[nn.Module, nn.Module]:
    net = build_final_network(genotype, cfg.dataset, cfg.init_channels, cfg.layers,
                              cfg.auxiliary)
    net.grouped_ops = cfg.grouped_ops
    net = precision.prepare_model(net.to(device))
    if not ctx.enabled:
        return net, net
    ids = [device.index] if device.type == "cuda" else None
    # DDP broadcasts rank 0's initial weights, so all ranks start from the same network.
    return net, nn.parallel.DistributedDataParallel(net, device_ids=ids)


def _selection(cfg: EvalConfig, datasets: EvalDatasets, save_dir: str,
               logger: logging.Logger) -> BestEpoch | None:
    """What picks ``best_weights.pt``: the held-out split, the test set (said loudly), or
    nothing (DARTS: the last epoch only)."""
    path = os.path.join(save_dir, BEST_WEIGHTS)
    if datasets.holdout is not None:
        n_train, n_held = len(datasets.train), len(datasets.holdout)
        logger.info("train_ratio %g: training on the first %d training images; the last %d "
                    "are held out (eval transform), scored each epoch as holdout_acc; %s "
                    "keeps the best holdout epoch", cfg.train_ratio, n_train, n_held,
                    BEST_WEIGHTS)
        return BestEpoch("holdout_acc", path)
    if cfg.select_on_test:
        logger.warning("WARNING select_on_test: %s keeps the epoch of best TEST accuracy, as "
                       "StacNAS' augment.py does; this is selection on the test set, an "
                       "optimistic estimate, not a clean test result", BEST_WEIGHTS)
        return BestEpoch("valid_acc", path)
    return None


def make_trainer(cfg: EvalConfig, genotype: Genotype, save_dir: str, device: torch.device,
                  ctx: DistContext, logger: logging.Logger,
                  datasets: EvalDatasets) -> EvalTrainer:
    """The trainer of ``genotype`` on ``datasets``: data queues (on the device or DataLoaders),
    network (DDP under torchrun), SGD, schedule, precision, step capture; nothing written yet
    (``run_evaluation`` adds the files; ``bench/eval_epoch.py`` times its epochs)."""
    precision = Precision(cfg.amp, cfg.channels_last)
    cfg.data_on_device = resolve_data_on_device(cfg.data_on_device, cfg.dataset,
                                                full_training_set(datasets), device,
                                                cfg.auto_aug)
    logger.info("data on device = %s", cfg.data_on_device)
    sampler = None
    if cfg.data_on_device:  # every rank draws the same global batches and keeps its shard
        generator = device_generator(cfg.seed, device)
        train_queue, valid_queue, holdout_queue = device_eval_queues(cfg, datasets, ctx,
                                                                     generator, device)
    else:
        generator = seeded_generator(cfg.seed)
        train_queue, valid_queue, sampler = make_loaders(cfg, datasets.train, datasets.test,
                                                         ctx, generator, device)
        holdout_queue = None
        if datasets.holdout is not None:
            holdout_queue = eval_loader(cfg, datasets.holdout, ctx, device)
    net, model = _build_model(cfg, genotype, device, precision, ctx)
    logger.info("param size = %fMB", count_parameters(net) / 1e6)
    optimizer = torch.optim.SGD(model.parameters(), cfg.learning_rate, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    # A scaler only for fp16 autocast (CUDA without bf16); bf16 and fp32 need none.
    fp16 = cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return EvalTrainer(
        cfg=cfg, net=net, model=model, optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg),
        scaler=torch.amp.GradScaler(device.type, enabled=fp16),
        train_queue=train_queue, valid_queue=valid_queue, sampler=sampler, device=device,
        ctx=ctx, logger=logger, checkpoint_path=os.path.join(save_dir, CHECKPOINT),
        generator=generator, precision=precision, genotype=genotype,
        holdout_queue=holdout_queue, best=_selection(cfg, datasets, save_dir, logger))


def run_evaluation(cfg: EvalConfig, genotype: Genotype, save_dir: str, *,
                   resume: bool = False, resume_from: str | None = None,
                   log_file: str = "log.txt",
                   hooks: Sequence[Callable[[EvalTrainer, EpochStats], None]] = ()
                   ) -> EpochStats | None:
    """Train ``genotype`` from scratch in ``save_dir`` (or continue it with ``resume``).

    ``resume_from`` continues from that checkpoint file instead of the run's rolling one (e.g. a
    ``checkpoint_{N}.pth.tar``; later checkpoints are then rewritten). ``log_file`` names the
    log in ``save_dir``; ``hooks`` run after each epoch on the main process, after the
    TensorBoard and history hooks.
    ``weights.pt`` is the last epoch's; with ``train_ratio < 1`` (or, StacNAS' augment.py,
    ``select_on_test``) ``best_weights.pt`` is the epoch of best held-out (test) accuracy.
    Returns the last epoch's statistics (None when a resumed run had nothing left to do).
    Works as one process or under ``torchrun`` (DDP); only rank 0 writes files.
    """
    validate_config(cfg)
    with dist_utils.process_group(cfg.gpu) as (ctx, device):
        return _train(cfg, genotype, save_dir, ctx, device, resume=resume,
                      resume_from=resume_from, log_file=log_file, hooks=hooks)


def _train(cfg: EvalConfig, genotype: Genotype, save_dir: str, ctx: DistContext,
           device: torch.device, *, resume: bool, resume_from: str | None, log_file: str,
           hooks: Sequence[Callable[[EvalTrainer, EpochStats], None]]) -> EpochStats | None:
    """``run_evaluation``'s work, inside its process group."""
    logger, writer = dist_utils.silent_logger(), None
    try:
        _check_world(cfg, ctx)
        save_dir = dist_utils.broadcast_object(save_dir, ctx)  # rank 0's timestamped name
        # Seed per rank: same init (DDP copies rank 0's anyway), distinct augmentation streams.
        seed_everything(cfg.seed + ctx.rank)
        # Data first: a missing dataset fails before an empty run folder is made.
        datasets = load_datasets(cfg)
        if ctx.is_main:
            logger = setup_logger(save_dir, log_file)
        logger.info("experiment folder: %s", os.path.abspath(save_dir))
        logger.info("device = %s, processes = %d", device, ctx.world_size)
        logger.info("cpu threads = %d", cpu_threads())
        logger.info("args = %s", asdict(cfg))
        logger.info("genotype = %s", genotype)
        state = None
        if resume or resume_from:
            state = load_checkpoint(resume_from or os.path.join(save_dir, CHECKPOINT))
            adopt_data_path(cfg, state)
        trainer = make_trainer(cfg, genotype, save_dir, device, ctx, logger, datasets)
        if cfg.steps_per_epoch:
            logger.info("steps_per_epoch = %d: every train/test loop stops after %d batch(es) "
                        "(a debug run, not a result)", cfg.steps_per_epoch, cfg.steps_per_epoch)
        if state is not None:
            trainer.load_state_dict(state)
            logger.info("resumed from %s at epoch %d", resume_from or trainer.checkpoint_path,
                        trainer.start_epoch)
        if ctx.is_main:
            save_genotype(genotype, os.path.join(save_dir, "genotype.json"), arch=cfg.arch)
            writer = tensorboard_writer(save_dir, purge_step=trainer.start_epoch)
            trainer.epoch_end_hooks = [_tensorboard_hook(writer), _history_hook(save_dir),
                                       *hooks]
        stats = trainer.run()
        _finish(trainer, save_dir)
        return stats
    finally:
        if writer is not None:
            writer.close()
        if ctx.is_main:
            close_logger(logger)


def _finish(trainer: EvalTrainer, save_dir: str) -> None:
    if not trainer.ctx.is_main:
        return
    save_checkpoint(trainer.net.state_dict(), os.path.join(save_dir, WEIGHTS))
    if trainer.history:
        last = trainer.history[-1]
        # The last epoch, as the papers report; a selected epoch is named beside it, never
        # instead of it.
        trainer.logger.info("final (last epoch %d) valid_acc %f", last["epoch"],
                            last["valid_acc"])
        _log_best(trainer.best, trainer.logger)
    trainer.logger.info("weights: %s", os.path.abspath(os.path.join(save_dir, WEIGHTS)))


def _log_best(best: BestEpoch | None, logger: logging.Logger) -> None:
    if best is None or best.epoch < 0:
        return
    where = os.path.abspath(best.path)
    if best.metric == "holdout_acc":
        logger.info("best holdout epoch %d: holdout_acc %f, its test valid_acc %f (%s)",
                    best.epoch, best.acc, best.test_acc, where)
    else:
        logger.warning("best test epoch %d: valid_acc %f (%s), selected ON THE TEST SET "
                       "(select_on_test): optimistic, not a clean test result",
                       best.epoch, best.acc, where)
