"""Compose a CNN search from a config: data, supernet, optimisers, loop, outputs.

The paper doors (``sdarts/sota/cnn/train_search.py``, DARTS-PT's two ``train_search.py``, later
Lambda-DARTS) parse their flags into a ``CNNSearchConfig``, which also names the alpha update
(bilevel, fixed or one-level) and SDARTS' perturbation, and hand in what their paper adds as
hooks (a gradient hook, epoch hooks); the rest is here once. ``CNNSearchConfig.supernet``
picks the supernet and the table of spaces it reads (``SUPERNETS``): the DARTS-space
``Network``, the NAS-Bench-201 ``TinyNetworkDarts`` or the NAS-Bench-1Shot1
``NB1Shot1Network``; everything else (data, optimisers, loop, checkpoints, TensorBoard,
history, plots) is the same for all.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch

from shared import data as D
from shared.data.on_device import (
    Shard,
    adopt_data_path,
    batch_augment,
    device_generator,
    device_search_queues,
    resolve_data_on_device,
    to_device_images,
)
from shared.errors import UserError
from shared.lr_schedules import cosine_power_scheduler
from shared.models.search_cnn import Network
from shared.models.search_nb1shot1 import NB1Shot1Network
from shared.models.search_nb201 import TinyNetworkDarts
from shared.runtime import Precision, choose_device, cpu_threads, seed_everything, seeded_generator
from shared.search import process
from shared.search.alignment import LayerAlignment
from shared.search.alignment_config import make_layer_alignment
from shared.search.alpha_update import AlphaUpdate, FixedAlpha, OneLevel
from shared.search.architect import Architect
from shared.search.data_parallel import ONE_PROCESS, DataParallel
from shared.search.loop import SearchLoop
from shared.search.perturbation import make_perturbation
from shared.search.phase import run_phase
from shared.search.process import CHECKPOINT, SearchProcess, check_data_parallel
from shared.spaces import get_nb1shot1_space, get_nb201_space, get_space


@dataclass
class CNNSearchConfig:
    data: str = "../../data"
    dataset: str = "cifar10"
    batch_size: int = 64
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    lr_schedule: str = "cosine"  # or "cosine_power" (StacNAS' --power_lr, p = 2)
    momentum: float = 0.9
    weight_decay: float = 3e-4
    report_freq: int = 50
    gpu: int = 0
    epochs: int = 50
    init_channels: int = 16
    layers: int = 8  # darts: cells in all; nb201: search cells per stage (darts-pt's N = 5)
    cutout: bool = False
    cutout_length: int = 16
    cutout_prob: float = 1.0
    auto_augment: bool = False  # AutoAugment's CIFAR-10 policy on the search data (StacNAS)
    seed: int = 2
    grad_clip: float = 5.0
    train_portion: float = 0.5  # 1.0: no validation half (one-level search only)
    unrolled: bool = False      # bilevel: second order
    arch_learning_rate: float = 3e-4
    arch_weight_decay: float = 1e-3
    search_space: str = "s1"
    # a DARTS-space search on a space derived at run time (StacNAS' stage 2): the space's
    # CellSpace.to_dict(), saved with the run's config, so a resume does not re-derive it
    space_data: dict[str, Any] | None = None
    warm_start_epochs: int = 0
    num_workers: int = 0
    # the data set held on the device, augmented there in batches (shared.data.on_device);
    # None: on for a CUDA device when the data set allows it. The search resolves it and saves
    # the answer with its config, so a resumed run reads the data the same way.
    data_on_device: bool | None = None
    # the step recorded as a CUDA graph per epoch (shared.search.step_capture): off | cuda_graph
    step_capture: str = "off"
    # the supernet compiled with torch.compile (shared.compile): off | one of its modes
    compile: str = "off"
    amp: bool = False
    channels_last: bool = False
    debug: bool = False  # one step per epoch, as the original's 'debug' in --save
    progress: bool = True
    plots: bool = True  # the figures of shared.search.outputs (--no_plots: none)
    supernet: str = "darts"  # a key of SUPERNETS
    skip_zero_weights: bool = False  # darts: candidates of weight exactly 0 not run (DARTS-PT)
    # darts: the convs of the edges leaving a cell state as one kernel per stage
    # (shared.models.grouped_edges; the other supernets refuse it)
    grouped_edges: bool = False
    alpha_update: str = "bilevel"  # bilevel (first/second order) | fixed | one_level
    step_order: str = "alpha_first"  # alpha_first (DARTS) | weights_first (AutoDL)
    perturb_alpha: str = "none"  # SDARTS: none | random | pgd_linf (shared.search.perturbation)
    epsilon_alpha: float = 0.3
    # Λ-DARTS (shared.search.alignment): none | corr | signcorr; record_corr: train_corr and
    # valid_corr without the regulariser (the released --corr_regularization none)
    corr_regularization: str = "none"
    lambda_: float = 0.125
    epsilon_0: float = 1e-4
    lambda_cells: str = "normal"
    fresh_noise: bool = False
    record_corr: bool = False
    # the search data: "darts" (DARTS' halves by train_portion, a random alpha batch per step)
    # or "autodl" (AutoDL's SearchDataset: split_file's train/valid lists, or DARTS' halves
    # without one, each weight batch paired with random valid images; shared.data.autodl)
    search_data: str = "darts"
    split_file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # method flags, logged and saved


@dataclass(frozen=True)
class SupernetFamily:
    """A supernet class and the table of spaces it reads: ``space(name)`` looks a space up
    (a UserError for unknown names), ``build(cfg, space, num_classes, in_channels)`` makes the
    model (alpha included; the caller moves it to the device)."""

    space: Callable[[str], Any]
    build: Callable[[CNNSearchConfig, Any, int, int], torch.nn.Module]


SUPERNETS: dict[str, SupernetFamily] = {
    "darts": SupernetFamily(get_space, lambda cfg, space, classes, in_channels: Network(
        cfg.init_channels, classes, cfg.layers, space, in_channels=in_channels,
        skip_zero_weights=cfg.skip_zero_weights, grouped_edges=cfg.grouped_edges)),
    "nb201": SupernetFamily(get_nb201_space, lambda cfg, space, classes, in_channels:
                            TinyNetworkDarts(cfg.init_channels, classes, cfg.layers, space,
                                             in_channels=in_channels)),
    "nb1shot1": SupernetFamily(get_nb1shot1_space, lambda cfg, space, classes, in_channels:
                         NB1Shot1Network(cfg.init_channels, classes, cfg.layers, space,
                                         in_channels=in_channels)),
}


LR_SCHEDULES = ("cosine", "cosine_power")


def make_lr_schedule(cfg: CNNSearchConfig, optimizer: torch.optim.Optimizer
                     ) -> torch.optim.lr_scheduler.LRScheduler:
    """The weights' schedule from learning_rate to learning_rate_min over the epochs:
    DARTS' cosine, or cosine-power (``shared.lr_schedules``)."""
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(cfg.epochs),
                                                          eta_min=cfg.learning_rate_min)
    if cfg.lr_schedule == "cosine_power":
        return cosine_power_scheduler(optimizer, cfg.epochs, cfg.learning_rate_min)
    raise UserError(f"lr schedule {cfg.lr_schedule!r}: one of {', '.join(LR_SCHEDULES)}")


def search_space(cfg: CNNSearchConfig, supernet: SupernetFamily) -> Any:
    """The config's space: ``space_data`` when given (a DARTS-space supernet only: a
    ``CellSpace``, or a ``PerCellSpace``, one alpha per cell as StacNAS without
    ``--alpha_share``, with as many cells as ``layers``), else the named one of the
    supernet's table."""
    if cfg.space_data is None:
        return supernet.space(cfg.search_space)
    if cfg.supernet != "darts":
        raise UserError(f"space_data is a DARTS cell space; the {cfg.supernet} supernet reads "
                        "its spaces by name")
    from shared.spaces import PerCellSpace, space_from_dict

    space = space_from_dict(cfg.space_data)
    if isinstance(space, PerCellSpace) and space.layers != cfg.layers:
        raise UserError(f"space {space.name} has {space.layers} cells, the network "
                        f"{cfg.layers} (--layers)")
    return space


ALPHA_UPDATES = ("bilevel", "fixed", "one_level")


def make_alpha_update(cfg: CNNSearchConfig, model: torch.nn.Module) -> AlphaUpdate:
    """The config's alpha strategy: DARTS' Architect (first or second order by ``unrolled``),
    Blank-PT's fixed alpha or one-level optimisation."""
    if cfg.alpha_update == "bilevel":
        return Architect(model, cfg.arch_learning_rate, cfg.arch_weight_decay, cfg.momentum,
                         cfg.weight_decay, cfg.unrolled)
    if cfg.alpha_update == "fixed":
        return FixedAlpha()
    if cfg.alpha_update == "one_level":
        if cfg.unrolled:
            raise UserError("one-level search has no unrolled (second-order) alpha step")
        return OneLevel(model, cfg.arch_learning_rate, cfg.arch_weight_decay)
    raise UserError(f"alpha update {cfg.alpha_update!r}: one of {', '.join(ALPHA_UPDATES)}")


@dataclass
class CNNSearch:
    """Everything a CNN search run is made of, built once; methods compose phases from it
    (DARTS-PT's projection reuses the model, queues and alpha update of the supernet phase)."""

    cfg: CNNSearchConfig
    space: Any
    device: torch.device
    logger: Any
    precision: Precision
    train_data: Any
    model: torch.nn.Module  # a shared.models.supernet.Supernet
    optimizer: torch.optim.Optimizer
    alpha_update: AlphaUpdate
    loop: SearchLoop
    generators: tuple[torch.Generator, ...]


def build_cnn_search(cfg: CNNSearchConfig, save_dir: str, logger, *,
                     weight_grad_hooks: list[Callable] | None = None,
                     numbered_checkpoints: int = 0,
                     max_batches: int | None = None,
                     data_parallel: DataParallel = ONE_PROCESS,
                     device: torch.device | None = None) -> CNNSearch:
    """Data, supernet, optimisers and the loop of a search in ``save_dir`` (nothing run yet).

    The config names the alpha update (``alpha_update``: bilevel, Blank-PT's fixed alpha or
    one-level) and SDARTS' perturbation (``perturb_alpha``, ramped to ``epsilon_alpha``).
    ``data_parallel``: this process's rank in a data-parallel search (``run_cnn_search``
    under torchrun; ``device`` is then the rank's); a caller that did not set one up is refused
    under torchrun."""
    check_data_parallel(data_parallel, cfg.batch_size)
    if cfg.supernet not in SUPERNETS:
        raise ValueError(f"unknown supernet {cfg.supernet!r}; one of {', '.join(SUPERNETS)}")
    supernet = SUPERNETS[cfg.supernet]
    if cfg.grouped_edges and cfg.supernet != "darts":
        raise UserError(f"--grouped_edges runs the DARTS space's supernet; the {cfg.supernet} "
                        "supernet has no grouped path: run it without --grouped_edges")
    space = search_space(cfg, supernet)
    device = device or choose_device(cfg.gpu)
    seed_everything(cfg.seed)
    logger.info("device = %s", device)
    logger.info("cpu threads = %d", cpu_threads())
    logger.info("args = %s", asdict(cfg))

    train_data = D.get_dataset(cfg.dataset, cfg.data, train=True,
                               transform=D.train_transform(cfg.dataset, cfg.cutout,
                                                           cfg.cutout_length, cfg.cutout_prob,
                                                           auto_augment=cfg.auto_augment))
    cfg.data_on_device = decide_data_on_device(cfg, train_data, device, logger,
                                               data_parallel.enabled)
    if cfg.data_on_device:
        g_train, g_valid = device_generator(cfg.seed, device), device_generator(cfg.seed + 1,
                                                                                device)
        train_queue, valid_queue, valid_eval_queue = device_queues(
            cfg, train_data, g_train, g_valid, device, data_parallel, logger)
    else:
        g_train, g_valid = seeded_generator(cfg.seed), seeded_generator(cfg.seed + 1)
        train_queue, valid_queue, valid_eval_queue = search_queues(cfg, train_data, g_train,
                                                                   g_valid, device, logger)
        if cfg.debug:
            train_queue = [next(iter(train_queue))]
            if valid_queue is not None:
                valid_queue.batch_sampler.num_batches = 1

    precision = Precision(cfg.amp, cfg.channels_last)
    model = supernet.build(cfg, space, D.NUM_CLASSES[cfg.dataset], D.IN_CHANNELS[cfg.dataset])
    model = precision.prepare_model(model.to(device))
    logger.info("param size = %fMB", sum(p.numel() for p in model.weight_parameters()) / 1e6)
    optimizer = torch.optim.SGD(model.weight_parameters(), cfg.learning_rate,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # Stepped at the END of each epoch: epoch e trains with the closed-form DARTS lr_e
    # (0.3.1 semantics), and the same lr is the unrolled step's eta.
    scheduler = make_lr_schedule(cfg, optimizer)
    alpha_update = make_alpha_update(cfg, model)
    loop = SearchLoop(
        model=model, optimizer=optimizer, scheduler=scheduler, alpha_update=alpha_update,
        train_queue=train_queue, valid_queue=valid_queue, valid_eval_queue=valid_eval_queue,
        epochs=cfg.epochs, device=device, logger=logger,
        checkpoint_path=os.path.join(save_dir, CHECKPOINT), grad_clip=cfg.grad_clip,
        report_freq=cfg.report_freq, warm_start_epochs=cfg.warm_start_epochs,
        step_order=cfg.step_order,
        perturbation=make_perturbation(cfg.perturb_alpha, cfg.epsilon_alpha, cfg.epochs),
        weight_grad_hooks=list(weight_grad_hooks or []),
        generators=(g_train, g_valid), precision=precision, config=asdict(cfg),
        progress=cfg.progress and data_parallel.is_main,
        numbered_checkpoints=numbered_checkpoints, max_batches=max_batches,
        data_parallel=data_parallel, step_capture=cfg.step_capture,
        compile_mode=cfg.compile)
    alignment = make_alignment(cfg)
    if alignment is not None:
        alignment.attach(loop)
    return CNNSearch(cfg, space, device, logger, precision, train_data, model, optimizer,
                     alpha_update, loop, (g_train, g_valid))


SEARCH_DATA = ("darts", "autodl")


def decide_data_on_device(cfg: CNNSearchConfig, train_data: Any, device: torch.device,
                          logger: Any, data_parallel: bool = False) -> bool:
    """``cfg.data_on_device`` settled (None: on for CUDA where nothing forbids it, and always
    in a data-parallel search, whose shards are rows of batches drawn on the device), logged."""
    requested = cfg.data_on_device
    if data_parallel:
        if requested is False:
            raise UserError("a data-parallel search shards batches of data held on the device: "
                            "drop --no-data_on_device")
        requested = True
    on = resolve_data_on_device(requested, cfg.dataset, train_data, device, cfg.auto_augment)
    logger.info("data on device = %s", on)
    return on


def device_queues(cfg: CNNSearchConfig, train_data: Any, g_train: torch.Generator,
                  g_valid: torch.Generator, device: torch.device,
                  data_parallel: DataParallel, logger: Any) -> tuple:
    """``search_queues`` with the data set on the device (``shared.data.on_device``), each
    rank its rows of every batch; a debug run takes one step per epoch."""
    data = to_device_images(train_data, cfg.dataset, device)
    augment = batch_augment(cfg.dataset, cfg.cutout, cfg.cutout_length, cfg.cutout_prob)
    shard = Shard(data_parallel.rank, data_parallel.world_size)
    if cfg.search_data == "autodl":
        from shared.data.autodl import device_paired_queues

        queues = device_paired_queues(data, *autodl_split(cfg, train_data, logger),
                                      cfg.batch_size, augment, g_train, g_valid, shard)
    else:
        check_search_data(cfg)
        queues = device_search_queues(data, cfg.train_portion, cfg.batch_size, augment,
                                      g_train, g_valid, shard)
    if cfg.debug:
        for queue in queues[:2]:
            if queue is not None:
                queue.num_batches = 1
    return queues


def search_queues(cfg: CNNSearchConfig, train_data: Any, g_train: torch.Generator,
                  g_valid: torch.Generator, device: torch.device, logger: Any) -> tuple:
    """(train_queue, valid_queue, valid_eval_queue) of the config's ``search_data``."""
    pin = device.type == "cuda"
    if cfg.search_data == "darts":
        return D.search_loaders(train_data, cfg.train_portion, cfg.batch_size, cfg.num_workers,
                                g_train, g_valid, pin_memory=pin)
    check_search_data(cfg)
    from shared.data.autodl import paired_search_loaders

    train_idx, valid_idx = autodl_split(cfg, train_data, logger)
    eval_data = D.get_dataset(cfg.dataset, cfg.data, train=True,
                              transform=D.eval_transform(cfg.dataset))
    return paired_search_loaders(train_data, eval_data, train_idx, valid_idx, cfg.batch_size,
                                 cfg.num_workers, g_train, g_valid, pin_memory=pin)


def check_search_data(cfg: CNNSearchConfig) -> None:
    if cfg.search_data not in SEARCH_DATA:
        raise UserError(f"search data {cfg.search_data!r}: one of {', '.join(SEARCH_DATA)}")


def autodl_split(cfg: CNNSearchConfig, train_data: Any, logger: Any
                 ) -> tuple[list[int], list[int]]:
    """AutoDL's (train, valid) indices: ``split_file``'s lists, else DARTS' halves."""
    from shared.data.autodl import load_split

    if cfg.split_file:
        train_idx, valid_idx = load_split(cfg.split_file, len(train_data))
        logger.info("Load split file from %s", cfg.split_file)
    else:
        train_idx, valid_idx = D.search_split(train_data, cfg.train_portion)
        logger.info("no split file: the first %d images for the weights, the other %d for "
                    "alpha", len(train_idx), len(valid_idx))
    return train_idx, valid_idx


def make_alignment(cfg: CNNSearchConfig) -> LayerAlignment | None:
    """Λ-DARTS' regulariser as the config asks (None: neither it nor its records)."""
    return make_layer_alignment(cfg.corr_regularization, lambda_=cfg.lambda_,
                                epsilon_0=cfg.epsilon_0, epochs=cfg.epochs,
                                cells=cfg.lambda_cells, fresh_noise=cfg.fresh_noise,
                                record_corr=cfg.record_corr, plot=cfg.plots)


@contextlib.contextmanager
def search_process(cfg: CNNSearchConfig, save_dir: str, resume: bool = False
                   ) -> Iterator[SearchProcess]:
    """One process of the search (``shared.search.process``); a resumed run's checkpoint
    also settles its data path (``adopt_data_path``)."""
    with process.search_process(cfg.gpu, cfg.batch_size, save_dir, resume,
                                adopt=lambda state: adopt_data_path(cfg, state)) as run:
        yield run


def run_cnn_search(cfg: CNNSearchConfig, save_dir: str, *, resume: bool = False,
                   weight_grad_hooks: list[Callable] | None = None,
                   epoch_start_hooks: list[Callable] | None = None,
                   epoch_end_hooks: list[Callable] | None = None,
                   publish_hooks: list[Callable] | None = None) -> Any:
    """Run (or continue, with ``resume``) a search in ``save_dir``; returns the final genotype.
    The hooks are added after those the config put on the loop (Λ-DARTS' regulariser). Under
    torchrun the search is data-parallel (``search_process``)."""
    with search_process(cfg, save_dir, resume) as run:
        logger = run.logger
        search = build_cnn_search(cfg, run.save_dir, logger,
                                  weight_grad_hooks=weight_grad_hooks,
                                  data_parallel=run.data_parallel, device=run.device)
        loop = search.loop
        loop.epoch_start_hooks += list(epoch_start_hooks or [])
        loop.epoch_end_hooks += list(epoch_end_hooks or [])
        loop.publish_hooks += list(publish_hooks or [])
        if run.state is not None:
            loop.load_state_dict(run.state)
            logger.info("resumed from %s at epoch %d", loop.checkpoint_path, loop.start_epoch)
        genotype = run_phase(loop, run.save_dir, search.space, cfg)
        logger.info("outputs in %s", os.path.abspath(run.save_dir))
        return genotype
