"""``shared.search.tensor_lists`` and the second-order step's list arithmetic
(``Architect.virtual_step``): the same numbers, bit for bit, as the per-tensor loops of DARTS'
architect.py they replace (the finite difference's restore: ``test_search_engine``)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from shared.models.search_cnn import Network
from shared.search.architect import Architect, virtual_model
from shared.search.tensor_lists import assign_where, copies, copy_back, mirrored, restored
from shared.spaces import get_space


def test_copies_are_bit_for_bit_and_own_their_storage() -> None:
    tensors = [torch.tensor([-0.0, 1e-40, float("inf"), 3.5]), torch.tensor(7),
               torch.randn(2, 3, dtype=torch.float64), torch.randn(4, 1, 3, 3).to(
                   memory_format=torch.channels_last)]
    out = copies(tensors)
    for t, c in zip(tensors, out):
        assert c.dtype == t.dtype and c.shape == t.shape and torch.equal(c, t)
        assert c.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()
    assert len({c.untyped_storage().data_ptr() for c in out}) == len(out)
    assert torch.signbit(out[0][0]) and out[0][1] == 1e-40  # -0.0 and a denormal kept


def test_mirrored_tensors_share_storages_as_the_originals_do() -> None:
    base = torch.randn(30)
    own = torch.randn(2, 3, 4).permute(2, 0, 1)  # strided, a storage of its own
    tensors = [base[:6].view(2, 3), base[6:30].view(2, 3, 4), own]
    out = mirrored(tensors)
    for t, m in zip(tensors, out):
        assert (m.shape, m.stride(), m.storage_offset(), m.dtype) == \
            (t.shape, t.stride(), t.storage_offset(), t.dtype)
        assert m.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()
    assert out[0].untyped_storage().data_ptr() == out[1].untyped_storage().data_ptr()
    assert out[2].untyped_storage().data_ptr() != out[0].untyped_storage().data_ptr()


@pytest.mark.parametrize("grouped", [False, True])
def test_virtual_step_is_darts_unrolled_model(grouped) -> None:
    """w plus the step is w - eta (buf * momentum + g + wd w) per weight, bit for bit, with and
    without a momentum buffer; the step laid out as the weights are (a grouped network's
    kernels back to back: one allocation per storage)."""
    torch.manual_seed(0)
    model = Network(4, 10, 3, get_space("s5"), in_channels=1, steps=2, multiplier=2,
                    grouped_edges=grouped)
    weights = list(model.weight_parameters())
    optimizer = torch.optim.SGD(weights, 0.1, momentum=0.9, weight_decay=3e-4)
    for p in weights[::2]:  # half the weights get a momentum buffer
        p.grad = torch.randn_like(p)
    optimizer.step()
    grads = [torch.randn_like(p) for p in weights]
    architect = Architect(model, momentum=0.9, weight_decay=3e-4, unrolled=True)
    step = architect.virtual_step(weights, grads, 0.025, optimizer)
    for p, g, s in zip(weights, grads, step):
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        moment = buf * 0.9 if buf is not None else torch.zeros_like(p)
        assert torch.equal(p.detach() + s, p.detach() - 0.025 * (moment + g + 3e-4 * p.detach()))
        assert (s.stride(), s.storage_offset()) == (p.stride(), p.storage_offset())
    shared = [(p, s) for p, s in zip(weights, step) if p.untyped_storage().nbytes()
              > p.numel() * p.element_size()]  # laid out with others
    assert bool(shared) == grouped
    storage = {p.untyped_storage().data_ptr(): s.untyped_storage().data_ptr() for p, s in shared}
    assert all(storage[p.untyped_storage().data_ptr()] == s.untyped_storage().data_ptr()
               for p, s in shared)
    assert sum(optimizer.state.get(p, {}).get("momentum_buffer") is None for p in weights) > 0


@pytest.mark.parametrize("grouped", [False, True])
def test_the_virtual_model_is_w_prime_inside_and_the_model_as_it_was_after(grouped) -> None:
    """DARTS' unrolled model w' as the supernet itself (``architect.virtual_model``): inside,
    the weights are w + step and a training forward moves the BN statistics; after, weights
    and every buffer (running statistics, counters) are bit for bit as before, also when the
    forward inside raises."""
    torch.manual_seed(0)
    model = Network(4, 10, 3, get_space("s5"), in_channels=1, steps=2, multiplier=2,
                    grouped_edges=grouped)
    x = torch.randn(4, 1, 8, 8)
    model(x)  # statistics not at their initial values
    weights = model.weight_parameters()
    before = [t.clone() for t in weights]
    buffers = [b.clone() for b in model.buffers()]
    assert {b.dtype for b in buffers} == {torch.float32, torch.int64}
    step = [torch.randn_like(w) for w in weights]
    for fail in (False, True):
        with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
            with virtual_model(model, weights, step, copies(weights)):
                assert all(torch.equal(w, b + s) for w, b, s in zip(weights, before, step))
                model(x)
                assert any(not torch.equal(b, c) for b, c in zip(model.buffers(), buffers))
                if fail:
                    raise RuntimeError("a forward that fails")
        assert all(torch.equal(w, b) for w, b in zip(weights, before))
        assert all(torch.equal(b, c) for b, c in zip(model.buffers(), buffers))


def test_copy_back_copies_each_kind_and_restored_undoes_changes_made_inside() -> None:
    targets = [torch.zeros(3), torch.zeros(2, dtype=torch.int64), torch.zeros(4)]
    sources = [torch.randn(3), torch.tensor([5, -7]), torch.randn(4)]
    copy_back(targets, sources)
    assert all(torch.equal(t, s) for t, s in zip(targets, sources))
    for fail in (False, True):
        with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
            with restored(targets):
                for t in targets:
                    t.add_(1)
                if fail:
                    raise RuntimeError("a forward that fails")
        assert all(torch.equal(t, s) for t, s in zip(targets, sources))


def test_assign_where_takes_the_values_or_keeps_the_targets_without_a_host_read() -> None:
    for flag in (True, False):
        targets = [torch.randn(2, 3), torch.randn(4, 2, 3, 3).to(memory_format=torch.channels_last),
                   torch.randn(5, dtype=torch.float64)]
        before = [t.clone() for t in targets]
        values = [torch.randn_like(t) for t in targets]
        assign_where(torch.tensor(flag), targets, values)
        for t, b, v in zip(targets, before, values):
            assert torch.equal(t, v if flag else b)
        assert targets[1].is_contiguous(memory_format=torch.channels_last)  # layout kept
