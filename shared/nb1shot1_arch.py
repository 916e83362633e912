"""A discrete NAS-Bench-1Shot1 cell: the op of every choice block and the parents of every node.

This is what the one-shot model's alphas discretise to (nasbench-1shot1's
``eval_one_shot_model`` in ``nasbench_analysis/eval_darts_one_shot_model_in_nasbench.py``):
block b's op is the argmax of its row of ``alphas_mixed_op``; a node with a choice of inputs
keeps its top-k input weights (k = the space's parent count of that node), the output keeps the
top-k of ``alphas_output``; nodes without a choice keep all their candidate parents.
``nasbench_analysis.one_shot`` turns it into an NAS-Bench-101 cell.

Ties: nasbench-1shot1 takes ``np.argpartition(..)[-k:]``, whose choice among equal weights is
unspecified; here equal weights go to the lower node index (a stable sort), and equal op
weights to the first op, so the result is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from shared.spaces import NB1Shot1Space, get_nb1shot1_space


def top_k(weights: Sequence[float], k: int) -> tuple[int, ...]:
    """Indices of the k largest weights (ties: lower index first), returned sorted."""
    order = sorted(range(len(weights)), key=lambda i: (-float(weights[i]), i))
    return tuple(sorted(order[:k]))


@dataclass(frozen=True)
class NB1Shot1Arch:
    """``ops[b]`` = op of choice block b (graph node b + 1); ``parents[n - 1]`` = the sorted
    parents of graph node n, for n = 1..output. Loose ends (blocks feeding nothing) are kept
    here as chosen; they drop out when the NB-101 cell is pruned."""

    space: str
    ops: tuple[str, ...]
    parents: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        sp = get_nb1shot1_space(self.space)
        if len(self.ops) != sp.steps or any(op not in sp.ops for op in self.ops):
            raise ValueError(f"space {sp.name}: need {sp.steps} ops from {sp.ops}, "
                             f"got {self.ops}")
        if len(self.parents) != sp.num_nodes - 1:
            raise ValueError(f"space {sp.name}: need parents of nodes 1..{sp.output_node}")
        for node, ps in enumerate(self.parents, start=1):
            if tuple(ps) not in sp.parent_choices(node):
                raise ValueError(f"space {sp.name}: node {node} cannot take parents {ps} "
                                 f"({sp.num_parents[node]} of 0..{node - 1})")

    @staticmethod
    def from_weights(space: NB1Shot1Space, weights: Sequence[Any]) -> "NB1Shot1Arch":
        """Discretise mixing weights ``(mixed_op, output, *inputs)`` (softmax(alpha) or raw
        alpha: only the order matters), as the one-shot model's ``mixing_weights()`` gives."""
        rows = [torch.as_tensor(w, dtype=torch.float64).reshape(-1, torch.as_tensor(w).shape[-1])
                for w in weights]
        expected = 2 + len(space.input_choice_nodes)
        if len(rows) != expected:
            raise ValueError(f"space {space.name}: need {expected} weight tensors "
                             f"(mixed_op, output, one per input choice), got {len(rows)}")
        mixed, output, inputs = rows[0], rows[1], dict(zip(space.input_choice_nodes, rows[2:]))
        ops = tuple(space.ops[int(torch.argmax(mixed[b]))] for b in range(space.steps))
        parents = []
        for node in range(1, space.num_nodes):
            if node == space.output_node:
                parents.append(top_k(output[0].tolist(), space.num_parents[node]))
            elif node in inputs:
                parents.append(top_k(inputs[node][0].tolist(), space.num_parents[node]))
            else:  # no choice: all candidates
                parents.append(tuple(range(node)))
        return NB1Shot1Arch(space.name, ops, tuple(parents))

    @property
    def search_space(self) -> NB1Shot1Space:
        return get_nb1shot1_space(self.space)

    def adjacency(self) -> list[list[int]]:
        """The space's own (num_nodes x num_nodes) matrix, every chosen edge, loose ends too."""
        n = len(self.parents) + 1
        a = [[0] * n for _ in range(n)]
        for node, ps in enumerate(self.parents, start=1):
            for p in ps:
                a[p][node] = 1
        return a

    def used_blocks(self) -> tuple[int, ...]:
        """Graph nodes on a path to the output (the cell that is actually built)."""
        keep, stack = set(), [len(self.parents)]
        while stack:
            v = stack.pop()
            if v not in keep:
                keep.add(v)
                stack.extend(self.parents[v - 1] if v > 0 else ())
        return tuple(sorted(keep - {0, len(self.parents)}))

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "ops": list(self.ops),
                "parents": {str(n): list(ps) for n, ps in enumerate(self.parents, start=1)}}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "NB1Shot1Arch":
        parents = d["parents"]
        ordered = [tuple(int(p) for p in parents[str(n)]) for n in range(1, len(parents) + 1)]
        return NB1Shot1Arch(str(d["space"]), tuple(d["ops"]), tuple(ordered))

    def __str__(self) -> str:
        parents = " ".join(f"{n}<-{','.join(map(str, ps))}"
                           for n, ps in enumerate(self.parents, start=1))
        return f"NB1Shot1Arch(space {self.space}: ops=[{', '.join(self.ops)}] parents {parents})"
