"""NAS-Bench-101 cells: pruning, the domain check and the graph hash, as Google's ``nasbench``
computes them (``ModelSpec._prune``, ``api._check_spec``, ``graph_util.hash_module``), without
importing that package (it needs TensorFlow 1).

A cell is an upper-triangular 0/1 adjacency matrix over V <= 7 vertices plus one label per
vertex: ``input``, then ops from ``AVAILABLE_OPS``, then ``output``. The benchmark stores every
cell pruned and looks it up by its hash, so a cell derived from a one-shot model must be
pruned and hashed exactly like this to be found.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

INPUT, OUTPUT = "input", "output"
CONV3X3, CONV1X1, MAXPOOL3X3 = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"
AVAILABLE_OPS = (CONV3X3, CONV1X1, MAXPOOL3X3)  # also nasbench's canonical order for hashing
MAX_VERTICES, MAX_EDGES = 7, 9


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def hash_module(matrix: np.ndarray, labeling: Sequence[int]) -> str:
    """nasbench's ``graph_util.hash_module``: a Weisfeiler-Lehman-style fingerprint, invariant
    to vertex order. Degrees are Python ints: the text of a float sum ("2.0") would change
    the hash, so an int and a float matrix of the same graph hash alike."""
    a = np.asarray(matrix).astype(np.int64)
    v = a.shape[0]
    in_edges = [int(x) for x in a.sum(axis=0)]
    out_edges = [int(x) for x in a.sum(axis=1)]
    hashes = [_md5(str((out_edges[i], in_edges[i], int(labeling[i])))) for i in range(v)]
    for _ in range(v):
        hashes = [_md5("".join(sorted(hashes[w] for w in range(v) if a[w, i]))
                       + "|" + "".join(sorted(hashes[w] for w in range(v) if a[i, w]))
                       + "|" + hashes[i]) for i in range(v)]
    return _md5(str(sorted(hashes)))


@dataclass(frozen=True)
class NB101Spec:
    """An NB-101 cell as given (``matrix``, ``ops``); :meth:`pruned` is what the benchmark
    stores. Construction checks the shape rules nasbench asserts on."""

    matrix: tuple[tuple[int, ...], ...]
    ops: tuple[str, ...]

    @staticmethod
    def create(matrix, ops: Sequence[str]) -> "NB101Spec":
        a = np.asarray(matrix)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"adjacency matrix must be square, got shape {a.shape}")
        if a.shape[0] != len(ops):
            raise ValueError(f"{a.shape[0]} vertices but {len(ops)} ops")
        if np.any((a != 0) & (a != 1)):
            raise ValueError("adjacency matrix entries must be 0 or 1")
        if np.any(np.tril(a) != 0):
            raise ValueError("adjacency matrix must be strictly upper-triangular (a DAG in order)")
        return NB101Spec(tuple(tuple(int(x) for x in row) for row in a), tuple(ops))

    @property
    def num_vertices(self) -> int:
        return len(self.ops)

    def array(self) -> np.ndarray:
        return np.array(self.matrix, dtype=np.int64).reshape(self.num_vertices,
                                                             self.num_vertices)

    def pruned(self) -> "NB101Spec | None":
        """Drop vertices not on a path input -> output (``ModelSpec._prune``); None when the
        input does not reach the output at all (nasbench's invalid spec)."""
        a, v = self.array(), self.num_vertices
        from_input, to_output = {0}, {v - 1}
        for i in range(v):  # upper-triangular: one forward sweep reaches everything reachable
            if i in from_input:
                from_input.update(int(j) for j in np.nonzero(a[i])[0])
        for j in range(v - 1, -1, -1):
            if j in to_output:
                to_output.update(int(i) for i in np.nonzero(a[:, j])[0])
        keep = sorted(from_input & to_output)  # a vertex on some input -> output path
        if len(keep) < 2:  # nasbench: more than V - 2 extraneous vertices
            return None
        return NB101Spec.create(a[np.ix_(keep, keep)], [self.ops[i] for i in keep])

    def is_valid(self) -> bool:
        """nasbench's ``_check_spec`` on the pruned cell: connected, <= 7 vertices, <= 9 edges,
        'input' first, 'output' last, known ops between."""
        p = self.pruned()
        if p is None:
            return False
        return (p.num_vertices <= MAX_VERTICES and int(p.array().sum()) <= MAX_EDGES
                and p.ops[0] == INPUT and p.ops[-1] == OUTPUT
                and all(op in AVAILABLE_OPS for op in p.ops[1:-1]))

    def hash(self) -> str:
        """The benchmark's key (``ModelSpec.hash_spec``) of the pruned cell."""
        p = self.pruned()
        if p is None:
            raise ValueError("the input does not reach the output: no NAS-Bench-101 cell")
        unknown = [op for op in p.ops[1:-1] if op not in AVAILABLE_OPS]
        if unknown:
            raise ValueError(f"unknown NAS-Bench-101 ops {unknown}; expected {AVAILABLE_OPS}")
        labeling = [-1] + [AVAILABLE_OPS.index(op) for op in p.ops[1:-1]] + [-2]
        return hash_module(p.array(), labeling)
