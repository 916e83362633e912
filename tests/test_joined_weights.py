"""``shared.models.joined_weights``: the grouped edges' kernels back to back in one buffer, so
that their concatenation is a view, and ``torch.cat`` wherever they do not lie so."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.models import fast_mixed, grouped_edges
from shared.models.candidate import kind, layers
from shared.models.joined_weights import join, joined
from shared.models.search_cnn import Network
from shared.search.architect import Architect, virtual_model
from shared.search.tensor_lists import copies
from shared.spaces import SPACES


def _params(fmt=torch.contiguous_format, n: int = 3) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(4 + i, 3, 2, 2, generator=g, dtype=torch.float64)
                         .contiguous(memory_format=fmt)) for i in range(n)]


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_joined_parameters_are_concatenated_without_a_copy(fmt) -> None:
    params = _params(fmt)
    before = [(p.detach().clone(), p.stride()) for p in params]
    ids = [id(p) for p in params]
    join(params)
    assert [id(p) for p in params] == ids  # the same parameters, the optimiser's
    for p, (value, stride) in zip(params, before):
        assert torch.equal(p, value) and p.stride() == stride
    w = joined(params)
    assert w.data_ptr() == params[0].data_ptr()  # a view of their buffer
    assert torch.equal(w, torch.cat([p.detach() for p in params]))
    assert w.stride() == torch.cat([p.detach() for p in params]).stride()
    g = torch.randn(w.shape, dtype=torch.float64)
    (w * g).sum().backward()
    at = 0
    for p in params:
        assert torch.equal(p.grad, g[at:at + p.shape[0]])
        at += p.shape[0]
    join(params)  # joined already: left as it is
    assert joined(params).data_ptr() == params[0].data_ptr()


def test_tensors_that_do_not_lie_back_to_back_are_concatenated() -> None:
    params = _params()
    join(params)
    for tensors in (params[::-1], params[1:] + [nn.Parameter(torch.ones(2, 3, 2, 2))],
                    [p.detach().clone() for p in params], [params[0], params[2]]):
        w = joined(tensors)
        assert torch.equal(w, torch.cat(tensors))
        assert w.data_ptr() not in {t.data_ptr() for t in tensors}
    # found back to back once, then one of them given a tensor of its own: no longer
    assert joined(params).data_ptr() == params[0].data_ptr()
    with torch.no_grad():
        params[1].data = params[1].detach().clone()
    w = joined(params)
    assert torch.equal(w, torch.cat(params)) and w.data_ptr() != params[0].data_ptr()
    # a parameter not laid out like the others is not moved
    odd = _params()
    odd[1] = nn.Parameter(odd[1].detach().transpose(0, 1).contiguous().transpose(0, 1))
    join(odd)
    assert joined(odd).data_ptr() != odd[0].data_ptr()


def _grouped(layers: int = 3) -> Network:
    torch.manual_seed(0)
    return Network(4, 10, layers, SPACES["s5"], fast=True, grouped_edges=True)


def _all_views(monkeypatch) -> list[bool]:
    """Whether each of the grouped path's concatenations of kernels was a view."""
    views = []

    def recording(tensors):
        w = joined(tensors)
        if len(tensors) > 1:  # one tensor is itself
            views.append(w.data_ptr() == tensors[0].data_ptr())
        return w

    monkeypatch.setattr(grouped_edges, "joined", recording)
    return views


@pytest.mark.parametrize("embed", [False, True], ids=["cpu", "as on cuda"])
def test_a_grouped_network_runs_on_views_moved_or_reloaded(embed, monkeypatch) -> None:
    """Every kernel concatenation of a grouped forward is a view (in evaluation mode every
    concatenation of running statistics too): as built, after a cast
    (which gives each parameter a new tensor), after a checkpoint round trip, and when the
    grouping is turned on later, and in the second-order α step's unrolled forward; with
    parameters substituted (``functional_call``) the concatenations are copies, and equal. As on
    CUDA too, where each kind's kernel sizes share a group: each size's kernels a view."""
    if embed:
        monkeypatch.setattr(fast_mixed, "EMBED", {"cpu"})
        monkeypatch.setattr(fast_mixed, "UNDILATE", set())
    views = _all_views(monkeypatch)
    net = _grouped()
    x = torch.randn(2, 3, 8, 8)
    net(x)
    assert views and all(views)
    kernels = len(views)
    views.clear()
    net.eval()(x)  # the BNs read their running statistics side by side too
    assert len(views) > kernels and all(views)
    net.train()
    net.double()
    views.clear()
    out = net(x.double())
    assert views and all(views)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    other = _grouped().double()
    other.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    views.clear()
    assert torch.equal(other(x.double()), out)
    assert views and all(views)
    later = Network(4, 10, 3, SPACES["s5"], fast=True)
    later.load_state_dict(other.state_dict())
    later.grouped_edges = True
    views.clear()
    later.double()(x.double())
    assert views and all(views)
    # as trained, requiring gradients: without, torch 2.11 on the CPU runs this forward by
    # other kernels, which round differently (1e-16 apart in float64; 2.14 gives the same bits)
    params = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    views.clear()
    substituted = torch.func.functional_call(net, params, (x.double(),))
    assert views and not any(views)
    assert torch.equal(substituted, out)
    # the second-order step's unrolled forward runs on the weights themselves (moved to w' and
    # back, architect.virtual_model): views again
    weights = net.weight_parameters()
    optimizer = torch.optim.SGD(weights, 0.1, momentum=0.9)
    step = Architect(net, unrolled=True).virtual_step(
        weights, [torch.zeros_like(w) for w in weights], 0.0, optimizer)
    views.clear()
    with virtual_model(net, weights, step, copies(weights)):
        unrolled = net(x.double())
    assert views and all(views)
    assert torch.equal(unrolled, out)


def test_a_grouped_step_equals_the_one_with_copied_kernels(monkeypatch) -> None:
    """Two SGD steps with weight decay and momentum (the optimiser updating the parameters
    in place inside their shared buffer) give the same weights as with ``torch.cat``."""
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    results = []
    for copy in (False, True):
        if copy:
            monkeypatch.setattr(grouped_edges, "joined", lambda ts: torch.cat(list(ts)))
        net = _grouped().double()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
        for _ in range(2):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        results.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)


@pytest.mark.parametrize("supernet", ["darts", "nb201", "nb1shot1"])
def test_the_search_builds_its_supernet_grouped_or_refuses(supernet, tmp_path) -> None:
    """``--grouped_edges`` reaches the DARTS-space supernet (its kernels joined); the supernets
    with no grouped path refuse it, before any data is read."""
    from shared.errors import UserError
    from shared.logs import setup_logger
    from shared.search.cnn_search import CNNSearchConfig, build_cnn_search

    space = {"darts": "s5", "nb201": "nas-bench-201", "nb1shot1": "1"}[supernet]
    cfg = CNNSearchConfig(dataset="digits", epochs=1, layers=3, init_channels=4, batch_size=64,
                          gpu=-1, search_space=space, progress=False, supernet=supernet,
                          grouped_edges=True)
    logger = setup_logger(str(tmp_path), "log.txt", name=f"test-grouped-{supernet}")
    if supernet != "darts":
        with pytest.raises(UserError, match="--grouped_edges runs the DARTS space's supernet"):
            build_cnn_search(cfg, str(tmp_path), logger, max_batches=1)
        return
    model = build_cnn_search(cfg, str(tmp_path), logger, max_batches=1).model
    assert model.grouped_edges
    first, second = ([layers(op)[0].weight for op in model.cells[0]._ops[e]._ops
                      if kind(op) == "sep"][0] for e in (0, 2))
    # edges 0 and 2 leave state 0: their first depthwise kernels lie back to back
    assert joined([first, second]).data_ptr() == first.data_ptr()


def test_stacnas_hands_grouped_edges_to_its_searches_only() -> None:
    """StacNAS' ``run_all.py --grouped_edges`` passes it to both searches, whose parser takes
    it into the engine's config, and to neither augment nor test (no supernet there)."""
    from shared.cli.parser import parse
    from shared.errors import UserError
    from stacnas import augment, run_all, search
    from stacnas.spaces import stage1_space

    args, _ = parse(run_all.build_parser(), ["--grouped_edges", "--test"])
    args.save_dir = "x"
    stages = {stage: argv for stage, _, argv in run_all.stage_commands(args)}
    assert "--grouped_edges" in stages["search1"] and "--grouped_edges" in stages["search2"]
    assert "--grouped_edges" not in stages["augment"] + stages["test"]
    parsed = search.build_parser().parse_args(["--name", "x", "--grouped_edges"])
    assert search.search_config(parsed, stage1_space("groups", 8), {}).grouped_edges
    with pytest.raises(UserError, match="unrecognized arguments: --grouped_edges"):
        augment.build_parser().parse_args(["--name", "x", "--grouped_edges"])
