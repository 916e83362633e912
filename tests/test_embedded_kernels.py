"""``shared.models.embedded_kernels``: a cell's group stages of several kernel sizes, built at
once, are autograd's pad-and-concatenate stage by stage bit for bit, in fewer launches."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.kernel_count import LaunchCount
from shared.models import cell_plan, fast_mixed
from shared.models.embedded_kernels import embedded
from shared.models.joined_weights import join, joined_view
from shared.models.search_cnn import Network
from shared.spaces import get_space

# three stages: two sizes in the group's order, one run of each; the widest first (any order
# of runs is laid out as it comes); and one of a single size
SIZES = [(3, 3, 5), (5, 3), (5, 5)]


def _stages(joined: bool) -> list[list[torch.nn.Parameter]]:
    g = torch.Generator().manual_seed(0)
    stages = [[torch.nn.Parameter(torch.randn(4 + i, 1, k, k, generator=g))
               for i, k in enumerate(sizes)] for sizes in SIZES]
    if joined:  # each size's kernels back to back, all stages' (join_group_weights)
        for k in (3, 5):
            join([w for stage in stages for w in stage if w.shape[-1] == k])
    return stages


def _reference(stage, dtype=None) -> torch.Tensor:
    """A stage's kernels as autograd's own operations build them: each padded, concatenated."""
    out = torch.cat([F.pad(w, ((5 - w.shape[-1]) // 2,) * 4) for w in stage])
    return out if dtype is None else out.to(dtype)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("joined", [True, False])
def test_the_kernels_and_their_gradients_are_autograds_bit_for_bit(dtype, joined) -> None:
    """Every stage's kernels, and every kernel's gradient, equal those of padding and
    concatenating stage by stage (in autocast's dtype where given: the gradients come back
    as the weights' float32); a stage not used hands its kernels no gradient."""
    stages = _stages(joined)
    weights = [w for stage in stages for w in stage]
    built = embedded(stages, dtype)
    want = [_reference(stage, dtype) for stage in stages]
    for got, expected in zip(built, want):
        assert got.dtype == expected.dtype and torch.equal(got, expected)
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(t.shape, generator=g).to(t.dtype) for t in want]
    used = [0, 2]  # stage 1 not run
    got = torch.autograd.grad([built[i] for i in used], weights, [grads[i] for i in used],
                              allow_unused=True)
    expected = torch.autograd.grad([want[i] for i in used], weights, [grads[i] for i in used],
                                   allow_unused=True)
    for a, b in zip(got, expected):
        assert (a is None) == (b is None)
        assert a is None or (a.dtype == torch.float32 and torch.equal(a, b))
    assert sum(a is None for a in got) == len(stages[1])


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_a_cells_stages_build_in_one_pad_and_one_concatenation(dtype) -> None:
    """Forward: one pad per smaller size and one concatenation, the kernels read as views
    where laid out (each size's of all stages back to back); backward: one concatenation per
    size, no pad (stage by stage: a pad and a concatenation per stage, and a pad's backward).
    In autocast's dtype: one cast of the whole, and one back per size (autograd would cast
    each kernel's gradient)."""
    stages = _stages(joined=True)
    assert joined_view([w for stage in stages for w in stage if w.shape[-1] == 3]) is not None
    with LaunchCount() as forward:
        built = embedded(stages, dtype)
    casts = {} if dtype is None else {"_to_copy": 1}
    assert forward.counts == {"constant_pad_nd": 1, "cat": 1, **casts}
    ones = [torch.ones_like(t) for t in built]
    with LaunchCount() as backward:
        torch.autograd.grad(built, [w for stage in stages for w in stage], ones)
    assert backward.counts == {"cat": 2, **{k: 2 * n for k, n in casts.items()}}


def test_a_grouped_network_pads_once_per_cell() -> None:
    """In a grouped supernet as CUDA groups it (EMBED), a forward and backward pads once per
    cell (the cell's 3x3 kernels, all its stages', laid back to back): not once per stage
    forward and again backward."""
    with fast_mixed.embedded("cpu", True), fast_mixed.undilated("cpu", False):
        torch.manual_seed(0)
        net = Network(4, 10, 3, get_space("s5"), grouped_edges=True)
        for cell in net.cells:
            stages = cell_plan.embedded_stages(cell, None, fast_mixed._merges("cpu"))
            assert len(stages) == 12  # 4 sets of states x (2 separable + 1 dilated stages)
            assert joined_view([c.weight for stage in stages for c in stage
                                if c.kernel_size == (3, 3)]) is not None
        x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
        with LaunchCount() as counter:
            F.cross_entropy(net(x), y).backward()
    assert counter.counts["constant_pad_nd"] == len(net.cells)
