"""The projection phase of DARTS-PT: project, tune, repeat (darts-pt's ``pt_project``).

It runs on the engine's :class:`~shared.search.loop.SearchLoop`, with the projection as an
epoch-start hook and the decisions as extra checkpoint state, so a killed projection resumes
where it stopped and ends with the same genotype:

* the weights get a fresh SGD at ``learning_rate / 10``, held constant (the released code
  builds a cosine schedule but never steps it);
* alpha keeps training with the supernet's Adam, restored from the checkpoint (``darts-proj``,
  ``sdarts-proj``); ``blank-proj`` never updates alpha;
* every forward uses the projected mixing weights (``Network.mixing_transform``);
* ``--step_capture`` records the tuning steps as the supernet's (``shared.search.step_capture``;
  a projection changes the zeros of the mixing weights only at an epoch's start, before that
  epoch's recording, ``shared.models.live``); the supernet's compiled model stays compiled;
* ``sdarts-proj`` perturbs the weight step with the constant ``epsilon_alpha``; projected rows
  stay one-hot (the released model re-projects inside its forward, so does the proxy here);
* before each projection event ``checkpoint_{epoch}.pth.tar`` is written, as the released code
  (``--dev_resume_epoch``/``--dev_resume_log`` restart from one), and every epoch ends with the
  rolling ``checkpoint.pth.tar`` (``--resume``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch.utils.data import DataLoader, Subset

from darts_pt.projection import (
    ProjectionState,
    Weights,
    evaluate,
    project_edge,
    project_op,
    projection_schedule,
)
from shared.checkpoint import save_checkpoint
from shared.data.on_device import PassBatches, RandomDeviceBatches, device_generator
from shared.search.context import EpochContext, StepContext
from shared.search.data_parallel import DataParallel
from shared.search.loop import SearchLoop, format_rows
from shared.search.perturbation import make_perturbation

CHECKPOINT = "checkpoint.pth.tar"


@dataclass
class ProjectionConfig:
    proj_intv: int = 5
    crit: dict[str, str] | None = None   # cell type -> 'acc' | 'loss' (op selection)
    crit_edge: str = "acc"               # topology selection
    learning_rate: float = 0.025         # the supernet's; tuning uses a tenth of it
    momentum: float = 0.9
    weight_decay: float = 3e-4
    seed: int = 2
    fast: bool = False                   # one batch per loop, as the released --fast


class _ProjectingModel:
    """The supernet seen through the projection: explicit mixing weights are projected too.

    SDARTS' attack calls ``model(x, weights)`` with its perturbed weights; the released
    DARTS-PT model re-applied the projection inside its forward, so projected rows stayed
    one-hot under the attack. Everything else is the wrapped model's."""

    def __init__(self, model: torch.nn.Module, state: ProjectionState) -> None:
        self._model, self._state = model, state

    def __call__(self, x: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        return self._model(x, None if weights is None else self._state.apply(weights))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class ProjectedPerturbation:
    """An SDARTS perturbation of the projected mixing weights (``sdarts-proj``)."""

    supports_data_parallel = True  # the inner perturbation's process group is its own

    def __init__(self, inner: Callable, state: ProjectionState) -> None:
        self.inner, self.state = inner, state

    @property
    def data_parallel(self) -> DataParallel:
        return self.inner.data_parallel

    @data_parallel.setter
    def data_parallel(self, value: DataParallel) -> None:
        self.inner.data_parallel = value

    def epsilon(self, epoch: int) -> float:
        return self.inner.epsilon(epoch)

    def __call__(self, ctx: StepContext) -> Weights:
        seen = dataclasses.replace(ctx, model=_ProjectingModel(ctx.model, self.state))
        return self.state.apply(self.inner(seen))


class ProjectionHook:
    """Epoch-start hook: at the schedule's epochs, checkpoint, then project every cell type.

    Data-parallel, every rank scores its shard of each pass and the sums are reduced, so
    every rank sees the same numbers, draws the same edges from ``rng`` and takes the same
    decisions; rank 0 writes the checkpoint."""

    def __init__(self, state: ProjectionState, cfg: ProjectionConfig, events: dict[int, str],
                 proj_queue, rng: torch.Generator, out_dir: str) -> None:
        self.state, self.cfg, self.events = state, cfg, events
        self.proj_queue, self.rng, self.out_dir = proj_queue, rng, out_dir

    def __call__(self, ctx: EpochContext) -> None:
        loop, epoch = ctx.loop, ctx.epoch
        kind = self.events.get(epoch)
        if kind is None:
            return
        if loop.data_parallel.is_main:  # nothing reads it during the run: no barrier
            save_checkpoint(loop.state_dict(epoch),
                            os.path.join(self.out_dir, f"checkpoint_{epoch}.pth.tar"))
        model = loop.model

        def score(weights: Weights) -> tuple[float, float]:
            return evaluate(model, self.proj_queue, weights, loop.device, loop.precision,
                            1 if self.cfg.fast else None, loop.data_parallel)

        loop.logger.info("project %s", kind)
        for cell in self.state.cell_types:
            base = tuple(w.detach() for w in model.mixing_weights())
            if kind == "op":
                project_op(self.state, cell, self.cfg.crit[cell], base, score, self.rng,
                           loop.logger)
            else:
                project_edge(self.state, cell, self.cfg.crit_edge, base, score, self.rng,
                             loop.logger)
        for cell, w in zip(self.state.cell_types, model.mixing_weights()):
            loop.logger.info("projected weights (%s) =\n%s", cell, format_rows(w))


def projection_queue(supernet: SearchLoop, batch_size: int, num_workers: int,
                     rng: torch.Generator, seed: int
                     ) -> tuple[Iterable, tuple[torch.Generator, ...]]:
    """The whole validation half, reshuffled on every pass (the released code iterates its
    ``SubsetRandomSampler`` valid queue, training augmentation included), and the generators
    it draws from besides ``rng``. With the data on the device (``shared.data.on_device``)
    the pass is drawn there, from a generator of its own (``seed``), each rank its shard of every
    batch; else a DataLoader over the supernet's validation subset shuffles with ``rng``."""
    valid = supernet.valid_queue
    if isinstance(valid, RandomDeviceBatches):
        g = device_generator(seed, supernet.device)
        return PassBatches(valid.data, valid.indices.tolist(), batch_size, valid.augment, g,
                           valid.shard), (g,)
    subset: Subset = supernet.valid_eval_queue.dataset
    return DataLoader(subset, batch_size=batch_size, shuffle=True, generator=rng,
                      num_workers=num_workers,
                      pin_memory=supernet.device.type == "cuda"), ()


def tuning_loop(supernet: SearchLoop, state: ProjectionState, cfg: ProjectionConfig,
                out_dir: str, *, batch_size: int, num_workers: int = 0,
                select: Callable | None = None) -> SearchLoop:
    """The tuning SearchLoop over the supernet loop's model, queues and alpha update; the
    supernet's SDARTS perturbation (if any) continues at its full ``epsilon_alpha``."""
    num_nodes = len(state.nid2eids)
    tune_epochs, events = projection_schedule(state.num_edges, num_nodes, cfg.proj_intv)
    rng = torch.Generator().manual_seed(cfg.seed + 2)
    model = supernet.model
    model.mixing_transform = state.apply
    optimizer = torch.optim.SGD(model.weight_parameters(), cfg.learning_rate / 10,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    proj_queue, queue_generators = projection_queue(supernet, batch_size, num_workers, rng,
                                                    cfg.seed + 3)
    hook = ProjectionHook(state, cfg, events, proj_queue, rng, out_dir)
    perturbation = make_perturbation(supernet.config["perturb_alpha"],
                                     supernet.config["epsilon_alpha"], supernet.epochs,
                                     ramp=False)
    if perturbation is not None:
        perturbation = ProjectedPerturbation(perturbation, state)
    return SearchLoop(
        model=model, optimizer=optimizer, scheduler=scheduler,
        alpha_update=supernet.alpha_update,
        train_queue=supernet.train_queue, valid_queue=supernet.valid_queue,
        valid_eval_queue=supernet.valid_eval_queue, epochs=tune_epochs, device=supernet.device,
        logger=supernet.logger, checkpoint_path=os.path.join(out_dir, CHECKPOINT),
        grad_clip=supernet.grad_clip, report_freq=supernet.report_freq,
        perturbation=perturbation, epoch_start_hooks=[hook], select=select,
        generators=(*supernet.generators, rng, *queue_generators),
        precision=supernet.precision, config=supernet.config, progress=supernet.progress,
        extra_state={"projection": state}, max_batches=1 if cfg.fast else None,
        data_parallel=supernet.data_parallel, step_capture=supernet.step_capture)
