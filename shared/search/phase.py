"""One phase of a search: a ``SearchLoop`` run in its own folder with its outputs (TensorBoard,
``history.json``, plots every epoch; ``genotype.json`` and the final plots at the end).

A plain search is one phase; a method with several (DARTS-PT: supernet, then projection;
StacNAS: operation groups, then operations) runs one after another, each phase continuing the
model of the one before or starting from a checkpoint.
"""
from __future__ import annotations

from typing import Any, Callable

from shared.search.loop import SearchLoop
from shared.search.outputs import attach_outputs, write_outputs

# finish(genotype, writer) -> extra genotype.json entries (e.g. benchmark numbers), written to
# the phase's TensorBoard as the caller likes before the writer closes.
Finish = Callable[[Any, Any], dict[str, Any]]


def run_phase(loop: SearchLoop, out_dir: str, space: Any, cfg: Any, *,
              finish: Finish | None = None) -> Any:
    """Run ``loop`` (from its ``start_epoch``) with its outputs in ``out_dir``; returns the
    phase's genotype. Hooks already on the loop run before the output hooks, so the numbers
    they add to an epoch's history entry reach ``history.json`` and TensorBoard."""
    if not loop.data_parallel.is_main:  # rank 0 writes every output
        return loop.run()
    writer = attach_outputs(loop, out_dir, space, cfg.plots)
    try:
        genotype = loop.run()
        extra = finish(genotype, writer) if finish is not None else None
        write_outputs(out_dir, space, loop.history, genotype, cfg, extra=extra)
        return genotype
    finally:
        writer.close()
