"""What a search writes besides its checkpoints, refreshed every epoch: TensorBoard events
(``runs/``), ``history.json`` and the plots (alpha trajectories, accuracy or perplexity curves,
the cell), and at the end ``genotype.json``. The same for every supernet and every method;
``--no_plots`` (a config's ``plots`` False) leaves the plots out, the rest unchanged.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import torch

from shared.checkpoint import write_json
from shared.genotypes import Genotype, PerCellGenotype, save_genotype
from shared.logs import tensorboard_writer
from shared.search.context import EpochContext
from shared.search.loop import EpochResult, SearchLoop


def attach_outputs(loop: SearchLoop, out_dir: str, space, plots: bool = True) -> Any:
    """TensorBoard (``out_dir/runs``), ``history.json`` and the plots (``plots``), refreshed
    every epoch.

    They are publish hooks: they run once the epoch's checkpoint is written, after the
    epoch-end hooks, so what those add to the epoch's history entry (e.g. a benchmark query's
    numbers under one key) reaches ``history.json`` and TensorBoard, and no file shows an
    epoch that was not checkpointed. Returns the SummaryWriter (the caller closes it)."""
    writer = tensorboard_writer(out_dir, purge_step=loop.start_epoch)
    loop.publish_hooks = [*loop.publish_hooks, _tensorboard_hook(writer),
                          _outputs_hook(out_dir, space, plots)]
    return writer


def write_outputs(out_dir: str, space, history: list[dict], genotype: Any, cfg: Any,
                  extra: dict[str, Any] | None = None) -> None:
    """``genotype.json`` (with ``extra``, e.g. benchmark numbers) and the final plots (none
    where ``cfg.plots`` is False).

    A DARTS genotype is stored as ``{"genotype": {...}, ...}``; an NB201 cell as
    ``NB201Arch.to_dict()`` (``{"arch": "|...|"}``) plus the same context keys."""
    path = os.path.join(out_dir, "genotype.json")
    context = {k: getattr(cfg, k) for k in ("search_space", "dataset") if hasattr(cfg, k)}
    context.update(extra or {})
    if isinstance(genotype, (Genotype, PerCellGenotype)):
        save_genotype(genotype, path, **context)
    else:
        write_json(path, {**genotype.to_dict(), **context})
    if cfg.plots:
        _write_plots(out_dir, space, history, genotype)


_RESULT_FIELDS = set(EpochResult.__dataclass_fields__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tensorboard_hook(writer) -> Callable[[EpochContext], None]:
    def hook(ctx: EpochContext) -> None:
        loop, r = ctx.loop, ctx.result
        name = r.metric.capitalize()  # "Acc" as the original; "Ppl" for the RNN search
        writer.add_scalar(f"{name}/train", r.train_acc, r.epoch)
        writer.add_scalar("Obj/train", r.train_loss, r.epoch)
        if r.valid_acc is not None:  # None: no validation split
            writer.add_scalar(f"{name}/valid", r.valid_acc, r.epoch)
            writer.add_scalar("Obj/valid", r.valid_loss, r.epoch)
        writer.add_scalar("lr", r.lr, r.epoch)
        for name, w in zip(loop.model.cell_types, r.alphas):
            t = torch.tensor(w)
            writer.add_histogram(f"alpha/{name}", t, r.epoch)
            # Entropy per edge: collapse to one op shows as entropy -> 0.
            ent = -(t.clamp_min(1e-12).log() * t).sum(-1).mean()
            writer.add_scalar(f"alpha_entropy/{name}", ent.item(), r.epoch)
        # Numbers an earlier hook added to the entry: a dict of them (e.g. "nasbench201") or
        # one number (e.g. "hessian_eigenvalue", under "analysis/" unless the loop names its
        # tag: Λ-DARTS' "Corr/train").
        entry = loop.history[-1] if loop.history else {}
        for key, table in entry.items():
            if (key not in _RESULT_FIELDS | {f"train_{r.metric}", f"valid_{r.metric}"}
                    and _is_number(table)):
                writer.add_scalar(loop.scalar_tags.get(key, f"analysis/{key}"), table, r.epoch)
            if isinstance(table, dict):
                for name, value in table.items():
                    if _is_number(value):
                        writer.add_scalar(f"{key}/{name}", value, r.epoch)
        writer.flush()
    return hook


# Draw the live plots at most this often, the first time once the run has gone this long:
# drawing them takes seconds (matplotlib), which on a short epoch or a short run (a small data
# set, --fast, a test) would cost more than the epochs; the final plots are drawn in any case.
PLOT_INTERVAL_S = 60.0


def _outputs_hook(save_dir: str, space, plots: bool) -> Callable[[EpochContext], None]:
    last_drawn = [time.monotonic()]

    def hook(ctx: EpochContext) -> None:
        write_json(os.path.join(save_dir, "history.json"), ctx.loop.history, indent=None)
        now = time.monotonic()
        if plots and now - last_drawn[0] >= PLOT_INTERVAL_S:  # the final: write_outputs
            _write_plots(save_dir, space, ctx.loop.history, ctx.result.genotype)
            last_drawn[0] = time.monotonic()
    return hook


def _write_plots(save_dir: str, space, history: list[dict], genotype: Any) -> None:
    from shared.plots import plot_alpha_trajectories, plot_curves, plot_genotype

    plot_alpha_trajectories(history, space, os.path.join(save_dir, "alpha_trajectories.png"))
    if history and "valid_ppl" in history[-1]:  # a language model: perplexity, lower is better
        plot_curves(history, os.path.join(save_dir, "perplexity.png"),
                    keys=("train_ppl", "valid_ppl"))
    else:
        plot_curves(history, os.path.join(save_dir, "accuracy.png"))
    plot_genotype(genotype, os.path.join(save_dir, "genotype"))
