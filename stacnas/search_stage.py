"""One StacNAS search stage on the engine (arXiv 1909.11926, sec. 3; the released
``search.py``): the stage's space, one-level optimisation, the best epoch's α, its files.

* **One-level** (the paper's choice, released ``train``): each step is one forward/backward of
  the training loss on a training batch; the weights (SGD, gradient norm clipped to
  ``--grad_clip``, weights only) and α (Adam 3e-4, betas (0.5, 0.999), weight decay 1e-3, not
  clipped) both step on it. No validation batch is read (``shared.search.alpha_update``).
* **``--train_ratio``**: the first ``floor(r·N)`` training images train both; the rest (when
  r < 1) only chooses the best epoch by its accuracy, never updates α. With r = 1 (the
  release's default and README) there is no validation split and every epoch is the best,
  so the best α is the last epoch's.
* **The genotype** of every epoch's log and of the result is StacNAS' rule
  (``stacnas.spaces.stacnas_genotype``: edges ranked by raw α logits).

Files in the stage folder, besides the engine's (``checkpoint.pth.tar``, ``log.txt``,
``history.json``, TensorBoard ``runs/``, plots, ``genotype.json`` of the last epoch):
``space.json`` (the stage's space), ``alphas.json`` (raw α logits of the last epoch),
``alphas_best.json`` and ``genotype_best.json`` (of the best epoch). The release pickled α
Parameters and genotypes (``alphas.pk``, ``alphas_best.pk``, ``genotypes_best.pk``); JSON
needs no source tree to read. A stage 2 reads its stage 1's ``alphas_best.json`` once; its
space is then saved with its own checkpoint, so it resumes without the stage-1 folder.
"""
from __future__ import annotations

import math
import os
from typing import Any

import torch

from shared.checkpoint import write_json
from shared.errors import UserError
from shared.genotypes import save_genotype
from shared.search.cnn_search import (
    CNNSearchConfig,
    build_cnn_search,
    search_process,
)
from shared.search.context import EpochContext
from shared.search.phase import run_phase
from shared.spaces import CellSpace, PerCellSpace, space_from_dict
from stacnas.spaces import (
    stacnas_genotype,
    stacnas_genotype_per_cell,
    stage2_space,
    stage2_space_per_cell,
)

Space = CellSpace | PerCellSpace  # shared α (--alpha_share) or one α per cell

ALPHAS = "alphas.json"
ALPHAS_BEST = "alphas_best.json"
GENOTYPE_BEST = "genotype_best.json"
SPACE = "space.json"


def raw_alphas(model: torch.nn.Module) -> dict[str, list[list[float]]]:
    """α logits per cell type (``normal``, ``reduce``), as lists."""
    return {kind: a.detach().cpu().tolist()
            for kind, a in zip(model.cell_types, model.arch_parameters())}


class BestAlpha:
    """The α of the best epoch so far (the highest validation accuracy; without a validation
    split, every epoch is the best, as released). Checkpointed with the loop (``extra_state``),
    so a resumed stage picks the same epoch."""

    def __init__(self) -> None:
        self.epoch = -1
        self.valid_acc: float | None = None
        self.alphas: dict[str, list[list[float]]] = {}

    def update(self, ctx: EpochContext) -> None:
        """An epoch-end hook. A strictly higher accuracy wins: ties keep the earlier epoch."""
        acc = ctx.result.valid_acc
        better = (acc is None or self.valid_acc is None
                  or (math.isfinite(acc) and acc > self.valid_acc))
        if better:
            self.epoch, self.valid_acc = ctx.epoch, acc
            self.alphas = raw_alphas(ctx.loop.model)
        ctx.entry["best_epoch"] = self.epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "valid_acc": self.valid_acc,
                "alphas": {k: torch.tensor(v) for k, v in self.alphas.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.valid_acc = int(state["epoch"]), state["valid_acc"]
        self.alphas = {k: v.tolist() for k, v in state["alphas"].items()}


def alpha_file(alphas: dict[str, Any], space: Space, epoch: int,
               valid_acc: float | None) -> dict[str, Any]:
    return {"alphas": alphas, "space": space.to_dict(), "epoch": epoch, "valid_acc": valid_acc}


def alpha_tensors(alphas: dict[str, Any], space: Space) -> list[torch.Tensor]:
    """The α logits in the supernet's order of ``cell_types``: normal, reduce (shared) or
    cell0, cell1, ... (per cell)."""
    names = ([f"cell{i}" for i in range(space.layers)] if isinstance(space, PerCellSpace)
             else ["normal", "reduce"])
    missing = [n for n in names if n not in alphas]
    if missing:
        raise UserError(f"the α file has no entry for {', '.join(missing)} (it does not fit "
                        f"the space {space.name})")
    return [torch.tensor(alphas[n]) for n in names]


def genotype_of(alphas: dict[str, Any], space: Space):
    """StacNAS' genotype of raw α logits: one pair of cells, or one cell per cell."""
    tensors = alpha_tensors(alphas, space)
    if isinstance(space, PerCellSpace):
        return stacnas_genotype_per_cell(tensors, space)
    return stacnas_genotype(*tensors, space)


def publish_alphas(out_dir: str, space: Space, best: BestAlpha, cfg: CNNSearchConfig):
    """A publish hook (after the epoch's checkpoint): the last and the best epoch's α and the
    best genotype, so a reader never sees an epoch a resume would redo."""
    def hook(ctx: EpochContext) -> None:
        write_json(os.path.join(out_dir, ALPHAS),
                   alpha_file(raw_alphas(ctx.loop.model), space, ctx.epoch,
                              ctx.result.valid_acc))
        write_json(os.path.join(out_dir, ALPHAS_BEST),
                   alpha_file(best.alphas, space, best.epoch, best.valid_acc))
        save_genotype(genotype_of(best.alphas, space), os.path.join(out_dir, GENOTYPE_BEST),
                      dataset=cfg.dataset, epoch=best.epoch, valid_acc=best.valid_acc)
    return hook


def read_stage1(stage1_dir: str) -> tuple[Space, dict[str, Any]]:
    """The stage-1 result a stage 2 starts from: (its space, its best α)."""
    path = os.path.join(stage1_dir, ALPHAS_BEST)
    if not os.path.isfile(path):
        started = os.path.isfile(os.path.join(stage1_dir, "checkpoint.pth.tar"))
        raise UserError(f"no stage-1 result {path}: " + (
            "stage 1 has not finished an epoch; continue it with --stage search1 --resume"
            if started else "run --stage search1 first with the same --name/--save_dir "
            "(or pass its folder with --stage1_dir)"))
    import json

    try:
        with open(path) as f:
            data = json.load(f)
        space = space_from_dict(data["space"])
        alphas = data["alphas"]
        if not alphas:
            raise KeyError("alphas")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read the stage-1 result {path}: {exc}") from None
    return space, alphas


def stage2_from(stage1: Space, stage1_alphas: dict[str, Any], *, alpha_share: bool,
                layers: int) -> Space:
    """The stage-2 space a stage-1 result defines (``stacnas.spaces``); both stages share α
    or neither does."""
    per_cell = isinstance(stage1, PerCellSpace)
    if per_cell == alpha_share:
        raise UserError("stage 1 was searched " + ("with one α per cell (no --alpha_share): "
                        "run stage 2 without --alpha_share too" if per_cell else
                        "with --alpha_share: run stage 2 with --alpha_share too"))
    tensors = alpha_tensors(stage1_alphas, stage1)
    if per_cell:
        return stage2_space_per_cell(tensors, stage1, layers)
    return stage2_space(*tensors, stage1)


def run_stage(cfg: CNNSearchConfig, out_dir: str, *, resume: bool) -> Any:
    """Run (or continue) one stage in ``out_dir``; returns the best epoch's genotype."""
    with search_process(cfg, out_dir, resume) as run:
        out_dir, logger = run.save_dir, run.logger
        search = build_cnn_search(cfg, out_dir, logger, data_parallel=run.data_parallel,
                                  device=run.device)
        loop, space = search.loop, search.space
        best = BestAlpha()
        loop.select = lambda model: genotype_of(raw_alphas(model), space)
        loop.extra_state["best_alpha"] = best
        loop.epoch_end_hooks.append(best.update)
        loop.publish_hooks.append(publish_alphas(out_dir, space, best, cfg))
        if run.state is not None:
            loop.load_state_dict(run.state)
            logger.info("resumed from %s at epoch %d", loop.checkpoint_path, loop.start_epoch)
        elif run.data_parallel.is_main:
            write_json(os.path.join(out_dir, SPACE), space.to_dict())
        run_phase(loop, out_dir, space, cfg)
        genotype = genotype_of(best.alphas, space)
        logger.info("best epoch %d (valid_acc %s): genotype = %s", best.epoch,
                    "n/a, no validation split" if best.valid_acc is None else
                    f"{best.valid_acc:f}", genotype)
        logger.info("outputs in %s", os.path.abspath(out_dir))
        return genotype
