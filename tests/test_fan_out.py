"""``shared.models.fan_out``: many readers of one tensor, their gradients summed in one batch
where node sums are batched (the GPU's way, run here on the CPU), and the fast path's plans
of who reads a cell state."""
from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F

from shared.models import cell_plan, fast_mixed, node_sum
from shared.models.fan_out import MIN_READERS, Readers, _FanOut
from shared.models.search_cnn import Network
from shared.spaces import SPACES


@pytest.fixture
def batched(monkeypatch) -> None:
    monkeypatch.setattr(node_sum, "BATCHED", {"cpu"})


def _x(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64).requires_grad_()


@pytest.mark.usefixtures("batched")
@pytest.mark.parametrize("reads", [1, 3, 5, 6, 11])
def test_each_reader_gets_an_alias_and_the_gradient_is_the_sum(reads: int) -> None:
    """Fewer reads than planned (unread aliases), as many, and more (a second batch)."""
    x = _x()
    readers = Readers(x, 5)
    taken = [readers.take() for _ in range(reads)]
    assert all(t is not x and torch.equal(t, x) for t in taken)
    assert all(type(t.grad_fn).__name__ == "_FanOutBackward" for t in taken)
    coefficient = torch.arange(1, reads + 1, dtype=torch.float64)
    sum(c * t.sin() for c, t in zip(coefficient, taken)).sum().backward()
    assert torch.allclose(x.grad, coefficient.sum() * x.detach().cos(), rtol=0, atol=1e-13)


def test_left_to_autograd_off_the_batched_devices_without_grad_or_with_few_readers(
        monkeypatch) -> None:
    x = _x()
    monkeypatch.setattr(node_sum, "BATCHED", set())
    assert Readers(x, 8).take() is x
    monkeypatch.setattr(node_sum, "BATCHED", {"cpu"})
    assert Readers(x, MIN_READERS - 1).take() is x
    assert Readers(x.detach(), 8).take() is not x  # its own tensor, with no graph
    assert Readers(x.detach(), 8).take().grad_fn is None
    with torch.no_grad():
        assert Readers(x, 8).take() is x
    assert Readers(x, MIN_READERS).take() is not x


@pytest.mark.usefixtures("batched")
def test_gradcheck_and_gradgradcheck() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        readers = Readers(x, 6)
        a, b, c, d = (readers.take() for _ in range(4))
        return a * b + c.exp() - d ** 3  # two aliases unread

    x = _x()
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def _readers(model: Network, x: torch.Tensor, y: torch.Tensor,
             weights=None) -> tuple[dict, int]:
    """For every (autograd node, output) the loss's backward reaches: the kinds of the nodes
    that read it; and how many aliases the fan-outs made."""
    made = []
    apply = _FanOut.apply

    def counting(t, n):
        made.append(n)
        return apply(t, n)

    _FanOut.apply = counting
    try:
        loss = F.cross_entropy(model(x, weights), y)
    finally:
        _FanOut.apply = apply
    reads = collections.defaultdict(list)
    seen, todo = set(), [loss.grad_fn]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for nxt, slot in node.next_functions:
            if nxt is not None:
                reads[(nxt, slot)].append(type(node).__name__)
                todo.append(nxt)
    return reads, sum(made)


@pytest.mark.usefixtures("batched")
@pytest.mark.parametrize("name", list(SPACES))
@pytest.mark.parametrize("grouped", [False, True, "cuda"],
                         ids=["fast", "grouped", "grouped as on cuda"])
@pytest.mark.parametrize("mode", ["train", "eval", "skip_zero"])
def test_the_fast_path_plans_every_reader_of_a_state(name: str, grouped: bool | str,
                                                     mode: str, monkeypatch) -> None:
    """Every tensor of the supernet that more than three ops read (a state, its ReLU, its even
    pixels, its polyphase components, a shared pooling) is read through one fan-out, except
    the mixing weights' softmax, which every cell of a kind reads; and the plan is exact: the
    fan-outs make as many aliases as are read (in training, in evaluation mode, as SDARTS'
    attack runs it, and with the candidates of weight 0 skipped, as DARTS-PT does); grouped
    also as on CUDA (each kind's kernel sizes in one group, the dilation as it is)."""
    if grouped == "cuda":
        monkeypatch.setattr(fast_mixed, "EMBED", {"cpu"})
        monkeypatch.setattr(fast_mixed, "UNDILATE", set())
    torch.manual_seed(0)
    model = Network(4, 10, 5, SPACES[name], fast=True, grouped_edges=bool(grouped),
                    skip_zero_weights=mode == "skip_zero")
    model.train(mode != "eval")
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 3, 16, 16, generator=g), torch.randint(0, 10, (2,), generator=g)
    weights = None
    if mode == "skip_zero":  # every third candidate off
        weights = tuple(w * (torch.arange(w.numel()) % 3 != 0).reshape(w.shape)
                        for w in model.mixing_weights())
    reads, made = _readers(model, x, y, weights)
    fan_outs = 0
    for (node, _), readers in reads.items():
        kind = type(node).__name__
        if "_FanOutBackward" in readers:
            fan_outs += 1
            assert readers == ["_FanOutBackward"], f"{kind} also read by {readers}"
        elif kind not in ("SoftmaxBackward0", "AccumulateGrad"):
            assert len(readers) < MIN_READERS, f"{kind} read by {readers}"
    read = sum(len(r) for (node, _), r in reads.items()
               if type(node).__name__ == "_FanOutBackward")
    assert made == read
    # on S4 (separable convs and noise) grouped, no tensor has more than three readers
    assert fan_outs > 0 or (name, bool(grouped)) == ("s4", True)


def test_a_cell_keeps_its_plans_by_what_they_depend_on(monkeypatch) -> None:
    """Made once per state, size, grouping and set of running candidates, and at most
    ``PLANS_PER_CELL`` of them per cell."""

    cell = Network(4, 10, 3, SPACES["s5"]).cells[0]
    x = torch.randn(2, 16, 8, 8)
    live = [[True] * 8 for _ in range(14)]
    inputs = cell_plan.INPUTS
    plans = fast_mixed._plans(cell, inputs, x, None, False)
    assert fast_mixed._plans(cell, inputs, x, None, False) is plans
    assert fast_mixed._plans(cell, inputs, x, live, False) == plans  # all running: equal
    assert fast_mixed._plans(cell, inputs, torch.randn(2, 16, 16, 16), None, False) is not plans
    live[0][4] = False  # edge 0's sep_conv_3x3 does not run
    assert fast_mixed._plans(cell, inputs, x, live, False)[0].relu_reads == plans[0].relu_reads - 1
    monkeypatch.setattr(cell_plan, "PLANS_PER_CELL", 4)
    for j in range(2, 6):
        fast_mixed._plans(cell, (j,), x, None, True)
    assert len(cell_plan._PLANS[cell]) <= 4
