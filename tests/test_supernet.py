"""The supernet contract (``shared.models.supernet``) on all four search models: parameters split
once, per-cell mixing weights everywhere (NAS-Bench-201's shared alpha included), the
``mixing_transform`` hook, ``loss`` with per-cell weights."""
from __future__ import annotations

import pytest
import torch

from shared.models.search_cnn import Network
from shared.models.search_nb1shot1 import NB1Shot1Network
from shared.models.search_nb201 import TinyNetworkDarts
from shared.models.search_rnn import RNNModelSearch
from shared.models.supernet import Supernet
from shared.spaces import get_space


def darts():
    torch.manual_seed(0)
    model = Network(4, 10, 5, get_space("s3")).double().eval()
    return model, torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([1, 7])


def nb201():
    torch.manual_seed(0)
    model = TinyNetworkDarts(C=4, num_classes=10, N=2).double().eval()
    return model, torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([1, 7])


def nb1shot1():
    torch.manual_seed(0)
    model = NB1Shot1Network(4, 10, 3, "2", in_channels=1).double().eval()
    return model, torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([1, 7])


def rnn():
    torch.manual_seed(0)
    model = RNNModelSearch(20, 6, 6, 6, 0.0, 0.0, 0.0, 0.0, 0.0).double().eval()
    words = torch.randint(0, 20, (5, 2))
    hidden = [h.double() for h in model.init_hidden(2)]
    return model, (words, hidden), torch.randint(0, 20, (10,))


BUILDERS = {"darts": darts, "nb201": nb201, "nb1shot1": nb1shot1, "rnn": rnn}
CELLS = {"darts": 5, "nb201": 6, "nb1shot1": 3, "rnn": 1}


def out(model, x, **kw):
    if isinstance(model, RNNModelSearch):
        words, hidden = x
        return model(words, hidden, **kw)[0]
    return model(x, **kw)


@pytest.fixture(params=list(BUILDERS))
def built(request):
    return (request.param, *BUILDERS[request.param]())


def test_parameters_split_into_alpha_and_weights(built) -> None:
    name, model, _, _ = built
    assert isinstance(model, Supernet)
    arch = {id(p) for p in model.arch_parameters()}
    weights = {id(p) for p in model.weight_parameters()}
    assert not arch & weights and arch | weights == {id(p) for p in model.parameters()}
    assert len(model.arch_parameters()) == len(model.cell_types) == len(model.mixing_weights())
    assert len(model.cell_kinds()) == CELLS[name]


def test_the_weights_are_found_once_and_anew_after_a_move_or_an_assignment(built) -> None:
    """``named_weight_parameters`` and ``buffer_list`` walk the modules once (host time every
    search step paid); a cast or move, an assignment on the supernet, or a copy of it finds
    its own anew."""
    import copy

    _, model, _, _ = built

    def walked(m):
        arch = {id(p) for p in m.arch_parameters()}
        return [(n, p) for n, p in m.named_parameters() if id(p) not in arch]

    def same(m):
        got = list(m.named_weight_parameters())
        want = walked(m)
        buffers = m.buffer_list()
        return [n for n, _ in got] == [n for n, _ in want] and all(
            a is b for (_, a), (_, b) in zip(got, want)) and len(buffers) == len(
            list(m.buffers())) and all(a is b for a, b in zip(buffers, m.buffers()))

    assert same(model) and list(model.named_weight_parameters())  # found, then kept
    assert model.__dict__["_weight_parameters"] is not None
    assert model.__dict__["_buffer_list"] is not None
    model.float()
    assert "_weight_parameters" not in model.__dict__ and "_buffer_list" not in model.__dict__
    assert same(model)
    twin = copy.deepcopy(model)
    assert same(twin) and not {id(p) for p in twin.weight_parameters()} & {
        id(p) for p in model.weight_parameters()}
    model.extra = torch.nn.BatchNorm1d(2)  # a parameter and buffers come: found anew
    assert same(model) and any(n.startswith("extra.") for n, _ in model.named_weight_parameters())
    assert any(b is model.extra.running_mean for b in model.buffer_list())


def test_expanded_weights_equal_the_shared_forward(built) -> None:
    _, model, x, _ = built
    shared = model.mixing_weights()
    cells = model.expand_weights(shared)
    assert len(cells) == len(model.cell_kinds())
    assert torch.equal(out(model, x, weights=shared), out(model, x, cell_weights=cells))


def test_one_cell_can_be_perturbed_alone(built) -> None:
    _, model, x, y = built
    cells = model.expand_weights(model.mixing_weights())

    def bumped(i):
        moved = list(cells)
        c = cells[i]
        moved[i] = (tuple(t + 0.05 for t in c) if isinstance(c, tuple) else c + 0.05)
        return moved

    base = out(model, x, cell_weights=cells)
    changed = [out(model, x, cell_weights=bumped(i)) for i in range(len(cells))]
    assert all(not torch.equal(base, c) for c in changed)
    if len(cells) > 1:  # a different cell moved, a different function
        assert not torch.equal(changed[0], changed[-1])
    loss = model.loss(x, y, cell_weights=bumped(0))
    assert loss.shape == () and not torch.equal(loss, model.loss(x, y))


def test_cell_gradients_add_up_to_the_shared_gradient(built) -> None:
    _, model, x, y = built
    shared = tuple(w.detach().requires_grad_() for w in model.mixing_weights())
    g_shared = torch.autograd.grad(model.loss(x, y, shared), shared)
    leaves = [tuple(t.detach().clone().requires_grad_() for t in c) if isinstance(c, tuple)
              else c.detach().clone().requires_grad_() for c in model.expand_weights(shared)]
    flat = [t for c in leaves for t in (c if isinstance(c, tuple) else (c,))]
    g_cells = torch.autograd.grad(model.loss(x, y, cell_weights=leaves), flat)
    total = [torch.zeros_like(w) for w in shared]
    kinds = list(model.cell_types)
    it = iter(g_cells)
    for kind, cell in zip(model.cell_kinds(), leaves):
        if isinstance(cell, tuple):  # NB-1Shot1: every cell reads every tensor
            for i in range(len(cell)):
                total[i] += next(it)
        else:
            total[kinds.index(kind)] += next(it)
    for a, b in zip(total, g_shared):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_mixing_transform_reaches_every_supernet(built) -> None:
    _, model, x, _ = built
    plain = model.mixing_weights()
    fixed = tuple(torch.zeros_like(w).index_fill_(-1, torch.tensor([0]), 1.0) for w in plain)
    model.mixing_transform = lambda weights: fixed
    assert all(torch.equal(a, b) for a, b in zip(model.mixing_weights(), fixed))
    assert torch.equal(out(model, x), out(model, x, weights=fixed))
    assert not torch.equal(out(model, x), out(model, x, weights=plain))


def test_wrong_weights_are_refused(built) -> None:
    _, model, x, _ = built
    with pytest.raises(TypeError, match="tuple that mixing_weights"):
        out(model, x, weights=model.mixing_weights()[0])
    with pytest.raises(ValueError, match="search cells"):
        out(model, x, cell_weights=model.expand_weights(model.mixing_weights())[:-1] or [1, 2])
    with pytest.raises(ValueError, match="mixing-weight tensors"):
        model.expand_weights(model.mixing_weights() * 2)
