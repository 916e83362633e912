"""DARTS-PT: perturbation-based architecture selection ("projection"), Wang et al., ICLR'21.

Instead of keeping the op with the largest alpha, DARTS-PT measures how much each op
*matters* to the trained supernet: on a random undecided edge it masks one op at a time
(sets its mixing weight to 0, no renormalisation), evaluates the supernet on the whole
validation half, and keeps the op whose removal hurts most (lowest accuracy, or highest
loss). The edge's row becomes one-hot, the supernet is tuned for ``proj_intv`` epochs, and
the next edge follows. On the DARTS space a topology phase then keeps, per intermediate
node, the two input edges whose removal hurts most (``project_edge``). Everything follows
the released code (darts-pt ``sota/cnn/projection.py`` and ``nasbench201/projection.py``):

* evaluation runs with BN in training mode (batch statistics) and no gradient;
* ties: ``project_op`` keeps the first op index, ``project_edge`` removes the later edge;
* ``project_edge`` masks only the candidate edge in each round (edges removed in earlier
  rounds of the same node stay live until the node is decided), as the released code;
* a projected row is a constant: no alpha gradient reaches it, and an SDARTS perturbation
  of the weight step cannot move it (the released model re-projects inside its forward).

The decisions live in :class:`ProjectionState`, which the supernet applies through its
``mixing_transform`` hook and which is saved in every checkpoint of the tuning phase.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from shared.errors import UserError
from shared.runtime import Precision, to_device
from shared.search.data_parallel import ONE_PROCESS, DataParallel
from shared.search.meters import DeviceMeters

Weights = tuple[torch.Tensor, ...]
CRITERIA = ("acc", "loss")


def darts_nid2eids(steps: int = 4) -> dict[int, list[int]]:
    """Intermediate nodes that need a topology decision -> their input edges.

    Node 0 (state 2) has exactly two inputs and needs none; node k >= 1 has 2 + k inputs.
    For the DARTS cell this is the released code's {0: [2, 3, 4], 1: [5..8], 2: [9..13]}."""
    out, start = {}, 0
    for node in range(steps):
        n = 2 + node
        if node > 0:
            out[node - 1] = list(range(start, start + n))
        start += n
    return out


@dataclass
class ProjectionState:
    """Which op each edge was projected to, and which input edges each node keeps.

    ``cell_types`` names the mixing-weight tensors in the order the supernet takes them:
    ("normal", "reduce") for the DARTS space, ("cell",) for NAS-Bench-201 (one alpha shared
    by every cell). ``nid2eids`` is empty where there is no topology selection (NB201)."""

    cell_types: tuple[str, ...]
    num_edges: int
    nid2eids: dict[int, list[int]] = field(default_factory=dict)
    proj_ops: dict[str, list[int]] = field(default_factory=dict)        # -1: undecided
    selected_eids: dict[str, dict[int, list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in self.cell_types:
            self.proj_ops.setdefault(c, [-1] * self.num_edges)
            self.selected_eids.setdefault(c, {})
        self._cache: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- decisions ------------------------------------------------------------------------
    def undecided_edges(self, cell: str) -> list[int]:
        return [e for e, o in enumerate(self.proj_ops[cell]) if o < 0]

    def undecided_nodes(self, cell: str) -> list[int]:
        return [n for n in self.nid2eids if n not in self.selected_eids[cell]]

    def project_op(self, cell: str, eid: int, opid: int) -> None:
        self.proj_ops[cell][eid] = opid
        self._cache.clear()

    def project_edge(self, cell: str, nid: int, eids: Sequence[int]) -> None:
        self.selected_eids[cell][nid] = sorted(int(e) for e in eids)
        self._cache.clear()

    def complete(self) -> bool:
        return all(not self.undecided_edges(c) and not self.undecided_nodes(c)
                   for c in self.cell_types)

    def dropped_edges(self, cell: str) -> set[int]:
        return {e for nid, kept in self.selected_eids[cell].items()
                for e in self.nid2eids[nid] if e not in kept}

    # -- the projected mixing weights -----------------------------------------------------
    def _keep_fill(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (index, like.shape, like.device, like.dtype)
        if key not in self._cache:
            cell = self.cell_types[index]
            keep = torch.ones(like.shape[0], 1, dtype=like.dtype)
            fill = torch.zeros(like.shape, dtype=like.dtype)
            dropped = self.dropped_edges(cell)
            for e, o in enumerate(self.proj_ops[cell]):
                if o >= 0 or e in dropped:
                    keep[e] = 0
                if o >= 0 and e not in dropped:
                    fill[e, o] = 1
            self._cache[key] = (keep.to(like.device), fill.to(like.device))
        return self._cache[key]

    def apply(self, weights: Weights) -> Weights:
        """Projected rows become their one-hot row, dropped edges 0; the rest pass through."""
        out = []
        for i, w in enumerate(weights):
            keep, fill = self._keep_fill(i, w)
            out.append(w * keep + fill)
        return tuple(out)

    # -- checkpoints (plain lists and ints: loadable with weights_only=True) ---------------
    def state_dict(self) -> dict[str, Any]:
        return {"proj_ops": {c: list(v) for c, v in self.proj_ops.items()},
                "selected_eids": {c: {int(n): list(e) for n, e in d.items()}
                                  for c, d in self.selected_eids.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.proj_ops = {c: [int(o) for o in v] for c, v in state["proj_ops"].items()}
        self.selected_eids = {c: {int(n): [int(e) for e in eids] for n, eids in d.items()}
                              for c, d in state["selected_eids"].items()}
        self._cache.clear()


# -- the schedule --------------------------------------------------------------------------
def projection_schedule(num_edges: int, num_nodes: int, proj_intv: int
                        ) -> tuple[int, dict[int, str]]:
    """(tune_epochs, {epoch: 'op' | 'edge'}) of the released code.

    With topology selection (DARTS space): tune_epochs = proj_intv * (edges + nodes - 1) + 1,
    a projection at every multiple of proj_intv and at the last epoch; op events first
    (epoch < proj_intv * edges), then edge events. Without (NB201): tune_epochs =
    proj_intv * (edges - 1), same rule. Each event is followed by that epoch's tuning."""
    if proj_intv < 1:
        raise UserError("--proj_intv must be >= 1")
    if num_nodes:
        tune_epochs = proj_intv * (num_edges + num_nodes - 1) + 1
    else:
        tune_epochs = proj_intv * (num_edges - 1)
    events = {t: ("op" if t < proj_intv * num_edges else "edge") for t in range(tune_epochs)
              if t % proj_intv == 0 or t == tune_epochs - 1}
    kinds = list(events.values())
    if kinds.count("op") != num_edges or kinds.count("edge") != num_nodes:
        raise UserError(f"--proj_intv {proj_intv}: the released schedule ({tune_epochs} tuning "
                        f"epochs) would make {kinds.count('op')} op projections for {num_edges} "
                        f"edges; use --proj_intv 2 or more")
    return tune_epochs, events


# -- scoring a masked supernet -------------------------------------------------------------
@torch.no_grad()
def evaluate(model: torch.nn.Module, queue: Iterable, weights: Weights, device: torch.device,
             precision: Precision, max_batches: int | None = None,
             data_parallel: DataParallel = ONE_PROCESS) -> tuple[float, float]:
    """(top-1 %, mean cross-entropy) of the supernet with ``weights`` over ``queue``, BN in
    training mode (batch statistics; running statistics update as a side effect), as DARTS-PT
    scores its projections. The sums stay on the device until the end (``DeviceMeters``, the
    numbers of DARTS' ``AverageMeter``) and, data-parallel, are summed over the ranks' shards."""
    model.train()
    meters = DeviceMeters(device, topk=(1,))
    with precision.autocast(device):
        for i, batch in enumerate(queue):
            if max_batches is not None and i >= max_batches:
                break
            x, y = to_device(batch, device, precision)
            logits = model(x, weights).float()  # every rank: its BNs gather the statistics
            if len(y):  # a rank's empty shard of a short last batch adds nothing
                meters.update(F.cross_entropy(logits, y), logits, y)
    loss, top1 = meters.averages(data_parallel)
    return top1, loss


Evaluator = Callable[[Weights], tuple[float, float]]


def _worse(crit: str, value: tuple[float, float], best: tuple[float, float] | None) -> bool:
    """Is ``value`` strictly worse for the supernet than ``best`` (lower acc / higher loss)?"""
    if best is None:
        return True
    return value[0] < best[0] if crit == "acc" else value[1] > best[1]


def _pick(options: Sequence[int], rng: torch.Generator) -> int:
    return int(options[int(torch.randint(len(options), (1,), generator=rng))])


def project_op(state: ProjectionState, cell: str, crit: str, base: Weights, score: Evaluator,
               rng: torch.Generator, logger: logging.Logger) -> tuple[int, int]:
    """Pick a random undecided edge of ``cell``; keep the op whose masking hurts most."""
    index = state.cell_types.index(cell)
    eid = _pick(state.undecided_edges(cell), rng)
    logger.info("selected edge: %d %s", eid, cell)
    best_op, best = 0, None
    for opid in range(base[index].shape[1]):
        weights = list(base)
        w = base[index].clone()
        w[eid, opid] = 0
        weights[index] = w
        value = score(tuple(weights))
        logger.info("valid_acc  %f", value[0])
        logger.info("valid_loss %f", value[1])
        if _worse(crit, value, best):  # strict: the first op wins a tie
            best_op, best = opid, value
    logger.info("best opid: %d", best_op)
    state.project_op(cell, eid, best_op)
    return eid, best_op


def project_edge(state: ProjectionState, cell: str, crit: str, base: Weights, score: Evaluator,
                 rng: torch.Generator, logger: logging.Logger) -> tuple[int, list[int]]:
    """Pick a random undecided node of ``cell``; drop, one at a time, the input edge whose
    removal hurts least, until two remain."""
    index = state.cell_types.index(cell)
    nid = _pick(state.undecided_nodes(cell), rng)
    logger.info("selected node: %d %s", nid, cell)
    eids = list(state.nid2eids[nid])
    while len(eids) > 2:
        to_drop, best = None, None
        for eid in eids:
            weights = list(base)
            w = base[index].clone()
            w[eid] = 0
            weights[index] = w
            value = score(tuple(weights))
            logger.info("valid_acc %f", value[0])
            logger.info("valid_loss %f", value[1])
            if best is None or not _worse(crit, value, best):  # the later edge wins a tie
                to_drop, best = eid, value
        eids.remove(to_drop)
    logger.info("top2 edges: (%d, %d)", eids[0], eids[1])
    state.project_edge(cell, nid, eids)
    return nid, eids


def projected_genotype(state: ProjectionState, space, steps: int = 4, multiplier: int = 4):
    """The DARTS genotype of a finished projection, read from the decisions themselves.

    With every row one-hot this is what DARTS' parsing of the projected weights gives, but
    read directly it also represents an edge projected to ``none`` (possible in S3), which
    the released ``_parse`` could not (it then picked by ties)."""
    from shared.genotypes import Genotype

    if not state.complete():
        raise ValueError("projection not finished")
    genes = []
    for cell, reduction in zip(("normal", "reduce"), (False, True)):
        ops = space.ops(reduction)
        gene, start = [], 0
        for node in range(steps):
            eids = [0, 1] if node == 0 else state.selected_eids[cell][node - 1]
            for e in (range(start, start + 2) if node == 0 else eids):
                gene.append((ops[e][state.proj_ops[cell][e]], e - start))
            start += 2 + node
        genes.append(tuple(gene))
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return Genotype(normal=genes[0], normal_concat=concat, reduce=genes[1], reduce_concat=concat)
