"""StacNAS' search spaces as data, and its genotype rule (arXiv 1909.11926, sec. 3; the
released ``genotypes.py``: ``OPS_LIST``, ``OPS_DICT``, ``build_primitive_from_alpha``,
``build_genotype_from_alpha``).

* **Stage 1** searches operation *groups*: every edge of the DARTS cell holds one
  representative per group, ``max_pool_3x3, skip_connect, sep_conv_3x3, dil_conv_3x3`` and
  ``none`` (last, as released). ``--ops all`` instead holds the 7 DARTS operations and
  ``none`` (the released ``OPS_LIST``, the commented-out alternative), to reproduce the
  paper's feature-correlation evidence; a stage 2 cannot follow it.
* **Stage 2** searches the operation inside the group each edge chose in stage 1 (argmax of
  the stage-1 α without ``none``, so no edge is pruned in stage 1): the group's members and
  ``none``; the identity group holds ``skip_connect`` twice, two independent candidates with
  their own α entries (and, at stride 2, their own FactorizedReduce). The space is a
  ``CellSpace`` saved with the run (``to_dict``), so a stage 2 resumes without its stage 1.
* **The genotype rule** (both stages): per node, each incoming edge's best operation is the
  argmax of its α without ``none``, the edge's score is that operation's **raw α logit** (not
  its softmax weight, as DARTS), and the 2 best-scoring edges are kept. The released code took
  them with ``torch.topk`` (tie order unspecified); here ties keep the lower input.
"""
from __future__ import annotations

from typing import Sequence

import torch

from shared.errors import UserError
from shared.genotypes import (
    Genotype,
    PerCellGenotype,
    genotype_from_alpha,
    per_cell_genotype_from_alpha,
)
from shared.spaces import NUM_EDGES, CellSpace, PerCellSpace

GROUP_OPS = ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "none")
ALL_OPS = ("avg_pool_3x3", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
           "dil_conv_3x3", "dil_conv_5x5", "none")
# representative -> the stage-2 candidates of its group (none last, as released)
GROUPS: dict[str, tuple[str, ...]] = {
    "max_pool_3x3": ("avg_pool_3x3", "max_pool_3x3", "none"),
    "skip_connect": ("skip_connect", "skip_connect", "none"),
    "sep_conv_3x3": ("sep_conv_3x3", "sep_conv_5x5", "none"),
    "dil_conv_3x3": ("dil_conv_3x3", "dil_conv_5x5", "none"),
}
STAGE1_SPACES = {"groups": GROUP_OPS, "all": ALL_OPS}


def stage1_space(ops: str = "groups", per_cell_layers: int | None = None
                 ) -> CellSpace | PerCellSpace:
    """The stage-1 space: the group representatives (``groups``) or all DARTS ops (``all``);
    with ``per_cell_layers``, one α per cell of a network that deep (no ``--alpha_share``)."""
    if ops not in STAGE1_SPACES:
        raise UserError(f"--ops {ops!r}: one of {', '.join(STAGE1_SPACES)}")
    rows = tuple(STAGE1_SPACES[ops] for _ in range(NUM_EDGES))
    space = CellSpace(f"stacnas-stage1-{ops}", rows, rows,
                      "StacNAS stage 1: " + ("one representative per operation group"
                                             if ops == "groups" else "all DARTS operations"))
    if per_cell_layers is None:
        return space
    return PerCellSpace.repeat(space, per_cell_layers, name=f"{space.name}-per-cell")


def chosen_groups(alpha: torch.Tensor, ops: Sequence[Sequence[str]]) -> list[str]:
    """Each edge's stage-1 choice: the argmax of its α without ``none`` (the first maximum)."""
    out = []
    for e, row in enumerate(ops):
        cands = [(float(alpha[e, k]), k) for k, name in enumerate(row) if name != "none"]
        top = max(v for v, _ in cands)
        out.append(row[next(k for v, k in cands if v == top)])
    return out


def _check_groups(name: str, rows: Sequence[Sequence[str]]) -> None:
    if any(set(row) != set(GROUP_OPS) for row in rows):
        raise UserError(f"the stage-1 result was searched on {name}, not on the group "
                        f"representatives ({', '.join(GROUP_OPS)}): a stage 2 needs a stage 1 "
                        "run with --ops groups")


def _groups_of(cell: str, alpha: torch.Tensor, ops: Sequence[Sequence[str]]
               ) -> tuple[tuple[str, ...], ...]:
    """One cell's stage-2 rows: each edge's chosen group (its α: raw logits, edges x ops)."""
    if tuple(alpha.shape) != (len(ops), len(ops[0])):
        raise UserError(f"stage-1 α of {cell} has shape {tuple(alpha.shape)}, the "
                        f"space {len(ops)} x {len(ops[0])}")
    return tuple(GROUPS[g] for g in chosen_groups(alpha.detach().cpu(), ops))


STAGE2_DESCRIPTION = "StacNAS stage 2: the members of the group each edge chose in stage 1"


def stage2_space(alpha_normal: torch.Tensor, alpha_reduce: torch.Tensor,
                 stage1: CellSpace) -> CellSpace:
    """The stage-2 space a shared-α stage-1 result defines (α: raw logits, edges x ops per
    cell type)."""
    _check_groups(stage1.name, stage1.normal + stage1.reduce)
    return CellSpace("stacnas-stage2",
                     _groups_of("the normal cell", alpha_normal, stage1.normal),
                     _groups_of("the reduce cell", alpha_reduce, stage1.reduce),
                     STAGE2_DESCRIPTION)


def stage2_space_per_cell(alphas: Sequence[torch.Tensor], stage1: PerCellSpace,
                          layers: int) -> PerCellSpace:
    """The stage-2 space of a per-cell stage 1 (no ``--alpha_share``): cell i searches the
    groups cell i chose. Stage 2 must then be as deep as stage 1 (cell i of one is cell i of
    the other; the release indexed its stage-1 results by cell and crashed with an IndexError
    on a deeper stage 2)."""
    if layers != stage1.layers:
        raise UserError(f"without --alpha_share every cell has its own stage-1 result: stage 2 "
                        f"needs --num_cells {stage1.layers} as stage 1 had, not {layers} (or "
                        "run both stages with --alpha_share)")
    _check_groups(stage1.name, [row for cell in stage1.cells for row in cell])
    cells = tuple(_groups_of(f"cell {i}", alpha, stage1.ops_of(i))
                  for i, alpha in enumerate(alphas))
    return PerCellSpace("stacnas-stage2-per-cell", cells, stage1.kinds, STAGE2_DESCRIPTION)


def stacnas_genotype(alpha_normal: torch.Tensor, alpha_reduce: torch.Tensor,
                     space: CellSpace) -> Genotype:
    """StacNAS' rule: DARTS' derivation with edges ranked by the raw α logit of their best
    non-``none`` operation (``shared.genotypes.genotype_from_alpha`` on logits)."""
    return genotype_from_alpha(alpha_normal, alpha_reduce, space)


def stacnas_genotype_per_cell(alphas: Sequence[torch.Tensor], space: PerCellSpace
                              ) -> PerCellGenotype:
    """StacNAS' rule on every cell of a per-cell search (one genotype per cell)."""
    return per_cell_genotype_from_alpha(alphas, space)
