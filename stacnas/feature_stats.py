"""Streaming statistics of a stage-1 supernet's per-operation features (StacNAS, arXiv
1909.11926, sec. 3: ops whose outputs correlate are grouped; the released ``feature.py``,
``compute_online``, and ``feature_map.py``, ``compute_covariance_online``).

For two "concern edges" per cell (node 0 <- c_{k-2} and the last node <- the node before it)
every candidate except ``none`` is hooked; its output, flattened per sample, is one feature
vector. Per edge we keep the per-op running mean and the op x op co-moments
``C_ij = sum over samples and feature dims of (f_i - m_i)(f_j - m_j)`` (``m`` per dim), from
which ``R_ij = C_ij / sqrt(C_ii C_jj)``. The released code updated them sample by sample
(Welford) after pickling every batch's outputs to disk; here whole batches are merged in
memory (Chan et al.'s pairwise update, equal in exact arithmetic) and only one edge's outputs
of one batch are held at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from shared.errors import UserError


class StreamingCorrelation:
    """Running means and co-moments of ``ops`` feature vectors (float64, on the device of the
    first batch). ``op_names`` (optional) label the rows."""

    def __init__(self, op_names: Sequence[str] | None = None) -> None:
        self.op_names = tuple(op_names) if op_names is not None else None
        self._n = 0
        self._mean: torch.Tensor | None = None  # (ops, d)
        self._com: torch.Tensor | None = None  # (ops, ops)

    def update(self, features: Sequence[torch.Tensor]) -> None:
        """Merge one batch: one (n, ...) tensor per op (all of one shape), flattened to (n, d)
        per sample; an empty batch changes nothing."""
        if len(features) == 0:
            raise ValueError("update needs one feature tensor per op, got none")
        n_b = features[0].shape[0]
        x = torch.stack([f.detach().flatten(1).to(torch.float64) for f in features])
        if self._mean is not None and x.shape[::2] != (self._mean.shape[0], self._mean.shape[1]):
            raise ValueError(f"batch of {x.shape[0]} ops x {x.shape[2]} dims, earlier batches "
                             f"{self._mean.shape[0]} x {self._mean.shape[1]}")
        if n_b == 0:
            return
        mean_b = x.mean(dim=1)  # (ops, d)
        xc = (x - mean_b[:, None]).reshape(x.shape[0], -1)
        com_b = xc @ xc.T  # centred on the batch's own mean: no cancellation
        if self._mean is None:
            self._n, self._mean, self._com = n_b, mean_b, com_b
            return
        n = self._n + n_b
        delta = mean_b - self._mean.to(x.device)
        # Chan et al.: C = C_a + C_b + n_a n_b / n * sum_dims delta_i delta_j
        self._com = self._com.to(x.device) + com_b + (self._n * n_b / n) * (delta @ delta.T)
        self._mean = self._mean.to(x.device) + delta * (n_b / n)
        self._n = n

    @property
    def count(self) -> int:
        return self._n

    @property
    def means(self) -> np.ndarray:
        """Per-op mean feature vector, (ops, d) float64."""
        self._require()
        return self._mean.cpu().numpy()

    @property
    def comoments(self) -> np.ndarray:
        """Op x op co-moments summed over samples and feature dims, (ops, ops) float64."""
        self._require()
        return self._com.cpu().numpy()

    def correlation(self) -> np.ndarray:
        """``C_ij / sqrt(C_ii C_jj)``. An op of zero variance (e.g. all-zero outputs) gets NaN
        in its row and column (the released ``compute_correlation`` added 1e-16 to the
        denominator and reported 0 instead)."""
        com = self.comoments
        var = np.diag(com).copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = com / np.sqrt(np.outer(var, var))
        dead = var <= 0
        corr[dead, :] = np.nan
        corr[:, dead] = np.nan
        return corr

    def _require(self) -> None:
        if self._mean is None:
            raise UserError("no samples were accumulated: the feature statistics are empty")


@dataclass(frozen=True)
class ConcernEdge:
    """An edge of the cell DAG: intermediate node ``node`` <- state ``input`` (0, 1: the cell
    inputs c_{k-2}, c_{k-1}; 2 + i: node i)."""

    node: int
    input: int

    @property
    def index(self) -> int:
        """Position in ``SearchCell._ops``: node n's edges start at sum_{i<n} (2 + i)."""
        return self.node * (self.node + 3) // 2 + self.input

    def key(self, cell: int) -> str:
        # the released feature.py's name: "cell{}_node{}_edge{}" with the node's input index
        return f"cell{cell}_node{self.node}_edge{self.input}"


def concern_edges(steps: int = 4) -> list[ConcernEdge]:
    """The released ``feature.py``'s edges: node 0 <- c_{k-2} and last node <- the one before."""
    return [ConcernEdge(0, 0), ConcernEdge(steps - 1, steps)]


def collect_features(model: nn.Module, loader: Iterable, *, max_samples: int | None,
                     device: torch.device | str | None = None,
                     edges: Sequence[ConcernEdge] | None = None,
                     cells: Sequence[int] | None = None) -> dict[str, StreamingCorrelation]:
    """Run the first ``max_samples`` samples of ``loader`` (batches, or (inputs, labels)
    pairs; the released code: 10,000 training images without cutout, batch 64) through
    ``model`` (a ``shared.models.search_cnn.Network``) in eval mode without gradients, and
    return the statistics of every non-``none`` candidate's output per cell and edge, keyed
    ``cell{c}_node{n}_edge{input}``. The last batch is trimmed so exactly ``max_samples``
    count (``None``: the whole loader); a loader that runs out earlier is a UserError.

    ``device``: where inputs go (default: the model's parameters'); the model is not moved.
    The model's ``fast`` flag and train/eval mode are restored and every hook removed, also
    on error.
    """
    if max_samples is not None and max_samples < 1:
        raise UserError(f"max_samples must be at least 1, got {max_samples}")
    edges = list(edges) if edges is not None else concern_edges(model._steps)
    cells = list(cells) if cells is not None else list(range(len(model.cells)))
    if device is None:
        device = next(model.parameters()).device
    stats: dict[str, StreamingCorrelation] = {}
    handles = []
    was_fast, was_training = getattr(model, "fast", False), model.training
    try:
        for c in cells:
            for edge in edges:
                mixed = model.cells[c]._ops[edge.index]
                keep = [k for k, name in enumerate(mixed.op_names) if name != "none"]
                key = edge.key(c)
                stats[key] = StreamingCorrelation([mixed.op_names[k] for k in keep])
                outs: dict[int, torch.Tensor] = {}
                for slot, k in enumerate(keep):
                    handles.append(mixed._ops[k].register_forward_hook(_stash(outs, slot)))
                handles.append(mixed.register_forward_hook(_flush(outs, len(keep), stats[key])))
        # the fast path fuses candidates and may never call their modules: hooks need the
        # plain per-candidate forward
        model.fast = False
        model.eval()  # BN on running statistics: trimming a batch changes no sample's output
        seen = 0
        with torch.no_grad():
            for batch in loader:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if max_samples is not None:
                    x = x[:max_samples - seen]
                model(x.to(device, non_blocking=True))
                seen += x.shape[0]
                if max_samples is not None and seen >= max_samples:
                    break
        if max_samples is not None and seen < max_samples:
            raise UserError(f"the loader gave {seen} samples, {max_samples} were asked for: "
                            "pass a smaller max_samples or a larger data set")
    finally:
        for h in handles:
            h.remove()
        model.fast = was_fast
        model.train(was_training)
    return stats


def _stash(outs: dict[int, torch.Tensor], slot: int):  # noqa: ANN202 - a forward hook
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        outs[slot] = output
    return hook


def _flush(outs: dict[int, torch.Tensor], n_ops: int, stat: StreamingCorrelation):  # noqa: ANN202
    # fires after the MixedOp ran all its candidates: merge this edge's batch, then drop it
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if len(outs) != n_ops:
            raise UserError(f"{n_ops - len(outs)} candidate(s) of an analysed edge did not run "
                            "(a mixing weight of exactly 0 with skip_zero_weights?)")
        stat.update([outs[k] for k in range(n_ops)])
        outs.clear()
    return hook
