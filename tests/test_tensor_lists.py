"""``shared.search.tensor_lists`` and the second-order step's list arithmetic
(``Architect.virtual_step``): the same numbers, bit for bit, as the per-tensor loops of DARTS'
architect.py they replace (the finite difference's restore: ``test_search_engine``)."""
from __future__ import annotations

import pytest
import torch

from shared.models.search_cnn import Network
from shared.search.architect import Architect
from shared.search.tensor_lists import assign_where, copies, mirrored
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
    """w - eta (buf * momentum + g + wd w) per weight, with and without a momentum buffer;
    laid out as the weights are (a grouped network's kernels back to back: so are the
    unrolled ones, whose concatenation the unrolled forward then reads as a view)."""
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
    got = architect.virtual_step(weights, grads, 0.025, optimizer)
    for p, g, w in zip(weights, grads, got):
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        moment = buf * 0.9 if buf is not None else torch.zeros_like(p)
        assert torch.equal(w, p.detach() - 0.025 * (moment + g + 3e-4 * p.detach()))
        assert w.requires_grad and w.is_leaf
        assert (w.stride(), w.storage_offset()) == (p.stride(), p.storage_offset())
    shared = [(p, w) for p, w in zip(weights, got) if p.untyped_storage().nbytes()
              > p.numel() * p.element_size()]  # laid out with others
    assert bool(shared) == grouped
    storage = {p.untyped_storage().data_ptr(): w.untyped_storage().data_ptr() for p, w in shared}
    assert all(storage[p.untyped_storage().data_ptr()] == w.untyped_storage().data_ptr()
               for p, w in shared)
    assert sum(optimizer.state.get(p, {}).get("momentum_buffer") is None for p in weights) > 0



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
