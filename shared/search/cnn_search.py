"""Compose a CNN search from a config: data, supernet, optimisers, loop, outputs.

The paper doors (``sdarts/sota/cnn/train_search.py``, DARTS-PT's two ``train_search.py``, later
Lambda-DARTS) parse their flags into a ``CNNSearchConfig`` and hand in what their paper adds (a
perturbation, a gradient hook); the rest is here once. ``CNNSearchConfig.supernet`` picks the
supernet and the table of spaces it reads (``SUPERNETS``): the DARTS-space ``Network``, the
NAS-Bench-201 ``TinyNetworkDarts`` or the NAS-Bench-1Shot1 ``NB1Shot1Network``; everything
else (data, optimisers, loop, checkpoints, TensorBoard, history, plots) is the same for all.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from shared import data as D
from shared.checkpoint import load_checkpoint, write_json
from shared.genotypes import Genotype, save_genotype
from shared.logs import close_logger, setup_logger, tensorboard_writer
from shared.models.search_cnn import Network
from shared.models.search_nb1shot1 import NB1Shot1Network
from shared.models.search_nb201 import TinyNetworkDarts
from shared.nb201_arch import NB201Arch
from shared.runtime import Precision, choose_device, seed_everything
from shared.search.architect import Architect
from shared.search.loop import EpochResult, Perturbation, SearchLoop, cell_types
from shared.spaces import get_nb1shot1_space, get_nb201_space, get_space

CHECKPOINT = "checkpoint.pth.tar"


@dataclass
class CNNSearchConfig:
    data: str = "../../data"
    dataset: str = "cifar10"
    batch_size: int = 64
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
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
    seed: int = 2
    grad_clip: float = 5.0
    train_portion: float = 0.5
    unrolled: bool = False
    arch_learning_rate: float = 3e-4
    arch_weight_decay: float = 1e-3
    search_space: str = "s1"
    warm_start_epochs: int = 0
    num_workers: int = 0
    amp: bool = False
    channels_last: bool = False
    debug: bool = False  # one step per epoch, as the original's 'debug' in --save
    progress: bool = True
    supernet: str = "darts"  # a key of SUPERNETS
    extra: dict[str, Any] = field(default_factory=dict)  # method flags, logged and saved


@dataclass(frozen=True)
class Supernet:
    """A supernet class and the table of spaces it reads: ``space(name)`` looks a space up
    (a UserError for unknown names), ``build(cfg, space, num_classes, in_channels)`` makes the
    model (alpha included; the caller moves it to the device)."""

    space: Callable[[str], Any]
    build: Callable[[CNNSearchConfig, Any, int, int], torch.nn.Module]


SUPERNETS: dict[str, Supernet] = {
    "darts": Supernet(get_space, lambda cfg, space, classes, in_channels: Network(
        cfg.init_channels, classes, cfg.layers, space, in_channels=in_channels)),
    "nb201": Supernet(get_nb201_space, lambda cfg, space, classes, in_channels: TinyNetworkDarts(
        cfg.init_channels, classes, cfg.layers, space, in_channels=in_channels)),
    "nb1shot1": Supernet(get_nb1shot1_space, lambda cfg, space, classes, in_channels:
                         NB1Shot1Network(cfg.init_channels, classes, cfg.layers, space,
                                         in_channels=in_channels)),
}


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@dataclass
class CNNSearch:
    """Everything a CNN search run is made of, built once; methods compose phases from it
    (DARTS-PT's projection reuses the model, queues and architect after the supernet phase)."""

    cfg: CNNSearchConfig
    space: Any
    device: torch.device
    logger: Any
    precision: Precision
    train_data: Any
    model: torch.nn.Module  # Network or TinyNetworkDarts
    optimizer: torch.optim.Optimizer
    architect: Architect | None
    loop: SearchLoop
    generators: tuple[torch.Generator, ...]


def build_cnn_search(cfg: CNNSearchConfig, save_dir: str, logger, *,
                     perturbation: Perturbation | None = None,
                     weight_grad_hooks: list[Callable] | None = None,
                     fixed_alpha: bool = False, numbered_checkpoints: int = 0,
                     max_batches: int | None = None) -> CNNSearch:
    """Data, supernet, optimisers and the loop of a search in ``save_dir`` (nothing run yet).

    ``fixed_alpha``: no alpha step at all (Blank-PT trains the weights under the initial,
    near-uniform softmax(alpha))."""
    if cfg.supernet not in SUPERNETS:
        raise ValueError(f"unknown supernet {cfg.supernet!r}; one of {', '.join(SUPERNETS)}")
    supernet = SUPERNETS[cfg.supernet]
    space = supernet.space(cfg.search_space)
    device = choose_device(cfg.gpu)
    seed_everything(cfg.seed)
    logger.info("device = %s", device)
    logger.info("args = %s", asdict(cfg))

    train_data = D.get_dataset(cfg.dataset, cfg.data, train=True,
                               transform=D.train_transform(cfg.dataset, cfg.cutout,
                                                           cfg.cutout_length, cfg.cutout_prob))
    g_train, g_valid = _generator(cfg.seed), _generator(cfg.seed + 1)
    train_queue, valid_queue, valid_eval_queue = D.search_loaders(
        train_data, cfg.train_portion, cfg.batch_size, cfg.num_workers, g_train, g_valid,
        pin_memory=device.type == "cuda")
    if cfg.debug:
        train_queue = [next(iter(train_queue))]
        valid_queue.batch_sampler.num_batches = 1

    precision = Precision(cfg.amp, cfg.channels_last)
    model = supernet.build(cfg, space, D.NUM_CLASSES[cfg.dataset], D.IN_CHANNELS[cfg.dataset])
    model = precision.prepare_model(model.to(device))
    logger.info("param size = %fMB", sum(p.numel() for p in model.weight_parameters()) / 1e6)
    optimizer = torch.optim.SGD(model.weight_parameters(), cfg.learning_rate,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # Stepped at the END of each epoch: epoch e trains with the closed-form DARTS lr_e
    # (0.3.1 semantics), and the same lr is the unrolled step's eta.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, float(cfg.epochs), eta_min=cfg.learning_rate_min)
    architect = None if fixed_alpha else Architect(
        model, cfg.arch_learning_rate, cfg.arch_weight_decay, cfg.momentum, cfg.weight_decay,
        cfg.unrolled)
    loop = SearchLoop(
        model=model, optimizer=optimizer, scheduler=scheduler, architect=architect,
        train_queue=train_queue, valid_queue=valid_queue, valid_eval_queue=valid_eval_queue,
        epochs=cfg.epochs, device=device, logger=logger,
        checkpoint_path=os.path.join(save_dir, CHECKPOINT), grad_clip=cfg.grad_clip,
        report_freq=cfg.report_freq, warm_start_epochs=cfg.warm_start_epochs,
        perturbation=perturbation, weight_grad_hooks=list(weight_grad_hooks or []),
        generators=(g_train, g_valid), precision=precision, config=asdict(cfg),
        progress=cfg.progress, numbered_checkpoints=numbered_checkpoints,
        max_batches=max_batches)
    return CNNSearch(cfg, space, device, logger, precision, train_data, model, optimizer,
                     architect, loop, (g_train, g_valid))


def attach_outputs(loop: SearchLoop, out_dir: str, space) -> Any:
    """TensorBoard (``out_dir/runs``), ``history.json`` and the plots, refreshed every epoch.

    Hooks already on the loop run first, so what they add to the epoch's history entry (e.g.
    a benchmark query's numbers under one key) reaches ``history.json`` and TensorBoard.
    Returns the SummaryWriter (the caller closes it)."""
    writer = tensorboard_writer(out_dir, purge_step=loop.start_epoch)
    loop.epoch_end_hooks = [*loop.epoch_end_hooks, _tensorboard_hook(writer),
                            _outputs_hook(out_dir, space)]
    return writer


def write_outputs(out_dir: str, space, history: list[dict], genotype: Genotype | NB201Arch,
                  cfg: CNNSearchConfig, extra: dict[str, Any] | None = None) -> None:
    """``genotype.json`` (with ``extra``, e.g. benchmark numbers) and the final plots.

    A DARTS genotype is stored as ``{"genotype": {...}, ...}``; an NB201 cell as
    ``NB201Arch.to_dict()`` (``{"arch": "|...|"}``) plus the same context keys."""
    path = os.path.join(out_dir, "genotype.json")
    context = {k: getattr(cfg, k) for k in ("search_space", "dataset") if hasattr(cfg, k)}
    context.update(extra or {})
    if isinstance(genotype, Genotype):
        save_genotype(genotype, path, **context)
    else:
        write_json(path, {**genotype.to_dict(), **context})
    _write_plots(out_dir, space, history, genotype)


def run_cnn_search(cfg: CNNSearchConfig, save_dir: str, *, resume: bool = False,
                   perturbation: Perturbation | None = None,
                   weight_grad_hooks: list[Callable] | None = None,
                   epoch_end_hooks: list[Callable] | None = None) -> Genotype:
    """Run (or continue, with ``resume``) a search in ``save_dir``; returns the final genotype."""
    logger = setup_logger(save_dir)
    writer = None
    try:
        search = build_cnn_search(cfg, save_dir, logger, perturbation=perturbation,
                                  weight_grad_hooks=weight_grad_hooks)
        loop = search.loop
        loop.epoch_end_hooks = list(epoch_end_hooks or [])
        if resume:
            loop.load_state_dict(load_checkpoint(loop.checkpoint_path, map_location=search.device))
            logger.info("resumed from %s at epoch %d", loop.checkpoint_path, loop.start_epoch)
        writer = attach_outputs(loop, save_dir, search.space)
        genotype = loop.run()
        write_outputs(save_dir, search.space, loop.history, genotype, cfg)
        logger.info("outputs in %s", os.path.abspath(save_dir))
        return genotype
    finally:
        if writer is not None:
            writer.close()
        close_logger(logger)


_RESULT_FIELDS = set(EpochResult.__dataclass_fields__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tensorboard_hook(writer) -> Callable[[SearchLoop, EpochResult], None]:
    def hook(loop: SearchLoop, r: EpochResult) -> None:
        name = r.metric.capitalize()  # "Acc" as the original; "Ppl" for the RNN search
        writer.add_scalar(f"{name}/train", r.train_acc, r.epoch)
        writer.add_scalar("Obj/train", r.train_loss, r.epoch)
        writer.add_scalar(f"{name}/valid", r.valid_acc, r.epoch)
        writer.add_scalar("Obj/valid", r.valid_loss, r.epoch)
        writer.add_scalar("lr", r.lr, r.epoch)
        for name, w in zip(cell_types(loop.model), r.alphas):
            t = torch.tensor(w)
            writer.add_histogram(f"alpha/{name}", t, r.epoch)
            # Entropy per edge: collapse to one op shows as entropy -> 0.
            ent = -(t.clamp_min(1e-12).log() * t).sum(-1).mean()
            writer.add_scalar(f"alpha_entropy/{name}", ent.item(), r.epoch)
        # Numbers an earlier hook added to the entry: a dict of them (e.g. "nasbench201") or
        # one number (e.g. "hessian_eigenvalue", under "analysis/").
        entry = loop.history[-1] if loop.history else {}
        for key, table in entry.items():
            if (key not in _RESULT_FIELDS | {f"train_{r.metric}", f"valid_{r.metric}"}
                    and _is_number(table)):
                writer.add_scalar(f"analysis/{key}", table, r.epoch)
            if isinstance(table, dict):
                for name, value in table.items():
                    if _is_number(value):
                        writer.add_scalar(f"{key}/{name}", value, r.epoch)
        writer.flush()
    return hook


# Redraw the live plots at most this often: drawing them takes seconds (matplotlib), which on
# a short epoch (a small data set, --fast) would cost more than the epoch itself.
PLOT_INTERVAL_S = 60.0


def _outputs_hook(save_dir: str, space) -> Callable[[SearchLoop, EpochResult], None]:
    last_drawn = [float("-inf")]

    def hook(loop: SearchLoop, r: EpochResult) -> None:
        write_json(os.path.join(save_dir, "history.json"), loop.history, indent=None)
        now = time.monotonic()
        if now - last_drawn[0] >= PLOT_INTERVAL_S:  # the final plots: write_outputs
            _write_plots(save_dir, space, loop.history, r.genotype)
            last_drawn[0] = time.monotonic()
    return hook


def _write_plots(save_dir: str, space, history: list[dict],
                 genotype: Genotype | NB201Arch) -> None:
    from shared.plots import plot_alpha_trajectories, plot_curves, plot_genotype

    plot_alpha_trajectories(history, space, os.path.join(save_dir, "alpha_trajectories.png"))
    if history and "valid_ppl" in history[-1]:  # a language model: perplexity, lower is better
        plot_curves(history, os.path.join(save_dir, "perplexity.png"),
                    keys=("train_ppl", "valid_ppl"))
    else:
        plot_curves(history, os.path.join(save_dir, "accuracy.png"))
    plot_genotype(genotype, os.path.join(save_dir, "genotype"))
