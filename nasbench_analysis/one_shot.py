"""One-shot architecture -> NAS-Bench-101 cell (nasbench-1shot1's ``eval_one_shot_model`` in
``nasbench_analysis/eval_darts_one_shot_model_in_nasbench.py``).

The space's own adjacency (every chosen edge) becomes an NB-101 ``ModelSpec``-like
``NB101Spec``; NB-101's pruning then keeps the ancestor sub-DAG of the output, which is the
cell the one-shot model actually evaluates, and gives the same hash as the original's
walk-back-from-the-output construction.

Spaces 1 and 2 have 6 graph nodes; NB-101 cells of the benchmark have 7 vertices at most, and
the released code "upscales" to 7 x 7 by inserting an isolated dummy vertex (op
``conv1x1-bn-relu``) just before the output. Pruning removes it again, so it changes nothing
but the shape; it is kept so a saved matrix reads like the original's.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nasbench_analysis.nb101_spec import CONV1X1, INPUT, MAX_VERTICES, OUTPUT, NB101Spec
from shared.nb1shot1_arch import NB1Shot1Arch
from shared.spaces import NB1Shot1Space


def upscale_to_nasbench_format(matrix: np.ndarray) -> np.ndarray:
    """Insert an all-zero row and column at index V-1 (before the output) until 7 x 7."""
    a = np.asarray(matrix)
    while a.shape[0] < MAX_VERTICES:
        k = a.shape[0] - 1
        a = np.insert(np.insert(a, k, 0, axis=1), k, 0, axis=0)
    return a


def arch_to_spec(arch: NB1Shot1Arch) -> NB101Spec:
    """The NB-101 cell (7 x 7, unpruned) of a discrete one-shot architecture."""
    a = np.array(arch.adjacency(), dtype=np.int64)
    dummies = MAX_VERTICES - a.shape[0]
    ops = [INPUT, *arch.ops, *([CONV1X1] * dummies), OUTPUT]
    return NB101Spec.create(upscale_to_nasbench_format(a), ops)


def weights_to_spec(space: NB1Shot1Space, weights: Sequence[Any]) -> NB101Spec:
    """Mixing weights (or alphas) ``(mixed_op, output, *inputs)`` -> NB-101 cell."""
    return arch_to_spec(NB1Shot1Arch.from_weights(space, weights))
