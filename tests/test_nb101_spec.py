"""NAS-Bench-101 cell pruning, validity and hashing (nasbench_analysis.nb101_spec) against an
independent small implementation of Google's algorithm, written here from its description
(google-research/nasbench ``nasbench/lib/model_spec.py``, ``nasbench/lib/graph_util.py``):
string-built tuples, a dict-of-sets graph, explicit rounds."""
from __future__ import annotations

import hashlib
import itertools
import random

import numpy as np
import pytest

from nasbench_analysis.nb101_spec import (
    AVAILABLE_OPS,
    CONV1X1,
    CONV3X3,
    INPUT,
    MAXPOOL3X3,
    OUTPUT,
    NB101Spec,
)


def reference_hash(matrix: list[list[int]], ops: list[str]) -> str:
    """Google's graph_util.hash_module on an already pruned cell, written independently."""
    n = len(ops)
    preds = {v: {w for w in range(n) if matrix[w][v]} for v in range(n)}
    succs = {v: {w for w in range(n) if matrix[v][w]} for v in range(n)}
    label = {0: -1, n - 1: -2}
    for v in range(1, n - 1):
        label[v] = ["conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"].index(ops[v])
    md5 = lambda s: hashlib.md5(s.encode("utf-8")).hexdigest()  # noqa: E731
    h = {v: md5("(%d, %d, %d)" % (len(succs[v]), len(preds[v]), label[v])) for v in range(n)}
    for _ in range(n):
        h = {v: md5("".join(sorted(h[w] for w in preds[v])) + "|"
                    + "".join(sorted(h[w] for w in succs[v])) + "|" + h[v]) for v in range(n)}
    return md5("[" + ", ".join("'%s'" % x for x in sorted(h.values())) + "]")


def random_cell(rng: random.Random, v: int) -> tuple[np.ndarray, list[str]]:
    a = np.zeros((v, v), dtype=np.int64)
    for i, j in itertools.combinations(range(v), 2):
        a[i, j] = rng.random() < 0.4
    return a, [INPUT] + [rng.choice(AVAILABLE_OPS) for _ in range(v - 2)] + [OUTPUT]


def test_hash_equals_the_reference_on_many_random_cells() -> None:
    rng, checked = random.Random(0), 0
    for _ in range(400):
        a, ops = random_cell(rng, rng.randint(2, 7))
        pruned = NB101Spec.create(a, ops).pruned()
        if pruned is None:
            continue
        assert NB101Spec.create(a, ops).hash() == reference_hash(
            [list(r) for r in pruned.array()], list(pruned.ops))
        checked += 1
    assert checked > 150


def test_hash_ignores_vertex_order_and_matrix_dtype() -> None:
    a = np.array([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    h = NB101Spec.create(a, [INPUT, CONV3X3, MAXPOOL3X3, OUTPUT]).hash()
    swapped = NB101Spec.create(a, [INPUT, MAXPOOL3X3, CONV3X3, OUTPUT]).hash()
    assert h == swapped  # vertices 1 and 2 play symmetric roles
    assert NB101Spec.create(a.astype(np.float32), [INPUT, CONV3X3, MAXPOOL3X3, OUTPUT]).hash() == h
    other = NB101Spec.create(a, [INPUT, CONV3X3, CONV1X1, OUTPUT]).hash()
    assert other != h


def test_pruning_drops_vertices_off_every_input_output_path() -> None:
    # vertex 2 is a dead end (no path to the output), vertex 3 is unreachable from the input
    a = np.zeros((6, 6), dtype=int)
    a[0, 1] = a[1, 5] = a[0, 2] = a[3, 4] = a[4, 5] = 1
    spec = NB101Spec.create(a, [INPUT, CONV3X3, CONV1X1, MAXPOOL3X3, CONV3X3, OUTPUT])
    p = spec.pruned()
    assert p.ops == (INPUT, CONV3X3, OUTPUT)
    assert p.array().tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert spec.hash() == NB101Spec.create(p.array(), list(p.ops)).hash()
    assert spec.is_valid()


def test_disconnected_and_oversized_cells_are_invalid() -> None:
    a = np.zeros((3, 3), dtype=int)
    a[0, 1] = 1
    spec = NB101Spec.create(a, [INPUT, CONV3X3, OUTPUT])
    assert spec.pruned() is None and not spec.is_valid()
    with pytest.raises(ValueError, match="does not reach"):
        spec.hash()
    full = np.triu(np.ones((7, 7), dtype=int), 1)  # 21 edges > 9
    assert not NB101Spec.create(full, [INPUT] + [CONV3X3] * 5 + [OUTPUT]).is_valid()
    with pytest.raises(ValueError, match="upper-triangular"):
        NB101Spec.create(full.T, [INPUT] + [CONV3X3] * 5 + [OUTPUT])
