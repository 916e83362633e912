"""Data-parallel search (``shared.search.data_parallel``): two gloo processes with half of every
batch each move alpha and the weights as one process with the whole batch does, for every
alpha update and perturbation that supports it, and for Λ-DARTS' regulariser (each of
``REGULARIZERS``, and corr with SDARTS-ADV: ``shared.search.alignment``); BatchNorm over the
global batch equals one BatchNorm over the concatenated shards (outputs, gradients, running
statistics)."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from shared.data import get_dataset
from shared.data.on_device import (
    DeviceImages,
    Shard,
    batch_augment,
    device_generator,
    device_search_queues,
    to_device_images,
)
from shared.errors import UserError
from shared.models.global_batch_norm import use_global_batch_norm
from shared.models.search_cnn import Network
from shared.models.search_nb1shot1 import NB1Shot1Network
from shared.models.search_nb201 import TinyNetworkDarts
from shared.search.alignment import LayerAlignment
from shared.search.alignment_terms import REGULARIZERS, corr
from shared.search.alpha_update import OneLevel
from shared.search.architect import Architect
from shared.search.context import EpochContext
from shared.search.data_parallel import ONE_PROCESS, DataParallel
from shared.search.hessian import eigenvalue_hook
from shared.search.loop import SearchLoop
from shared.search.perturbation import make_perturbation
from shared.spaces import get_nb201_space, get_space
from tests.conftest import run_ranks

# "nb1shot1:" the NAS-Bench-1Shot1 supernet (space 2, 3 cells) and its Hessian monitor;
# "grouped:" the tiny supernet with grouped edges (--grouped_edges: stacked BNs over the
# global batch, kernels in shared buffers)
KINDS = ("first_order", "second_order", "one_level", "random", "pgd_linf",
         "nb1shot1:first_order", "grouped:second_order")
# Λ-DARTS (first-order DARTS + the regulariser): "lambda_{regulariser}[+{perturbation}]", on
# half the batch and with a 2-step PGD (each attack step is averaged alike): 3 more forward/
# backward passes per step than DARTS, and the test stays cheap
# "nb201:" the NAS-Bench-201 supernet (3 cells) with the weights stepped first, as Λ-DARTS'
# NB201 door (lambda_darts/nasbench201/darts_v1.py)
LAMBDA_KINDS = (*(f"lambda_{name}" for name in REGULARIZERS), "lambda_corr+pgd_linf",
                "nb201:lambda_corr")
LAMBDA_BATCH, LAMBDA_PGD_STEPS = 16, 2
BATCH, STEPS = 16, 2  # 8 rows per rank: the sums still split, at half the work
CPU = torch.device("cpu")


class RecordingAlignment(LayerAlignment):
    """The regulariser, keeping the first step's g_l as this process's backward left them
    (before the hook averages them over the ranks) and, every step, the largest entry of the
    term it added to the weights' gradients."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.local: list[torch.Tensor] | None = None
        self.added: list[torch.Tensor] = []

    def __call__(self, ctx) -> None:
        if self.local is None:
            self.local = [ctx.cell_weights[i].grad.clone() for i in self._cells]
        params = list(ctx.model.weight_parameters())
        before = [p.grad.clone() for p in params]
        super().__call__(ctx)
        self.added.append(max((p.grad - b).abs().max() for p, b in zip(params, before)))


def tiny_network(grouped: bool = False) -> Network:
    """3 cells of 1 node (2 edges each) over s5's candidates (the DARTS space without 'none'):
    every kind of candidate (grouped: the node's two edges as one group). Each BN of a rank
    costs a gloo collective forward and one backward (~1-4 ms on this loopback, more than
    its arithmetic): 2 edges a cell, not 5, take the two ranks' search from ~45 s to ~28 s."""
    return Network(4, 10, 3, get_space("s5"), in_channels=1, steps=1, multiplier=1,
                   grouped_edges=grouped)


def supernet(kind: str) -> torch.nn.Module:
    """The kind's supernet (the default: ``tiny_network``), as seeded by the caller."""
    if kind.startswith("nb201:"):
        return TinyNetworkDarts(4, 10, 1, get_nb201_space("nas-bench-201"), in_channels=1)
    if kind.startswith("nb1shot1:"):
        return NB1Shot1Network(4, 10, 3, "2", in_channels=1)
    return tiny_network(grouped=kind.startswith("grouped:"))


def search(kind: str, dp: DataParallel, tmp: str) -> dict:
    """``STEPS`` search steps of a tiny DARTS supernet on digits, this process's shard."""
    import logging

    nb201, nb1shot1 = kind.startswith("nb201:"), kind.startswith("nb1shot1:")
    method = kind.partition(":")[2] if ":" in kind else kind
    regularizer, perturb_name = None, method if method in ("random", "pgd_linf") else "none"
    if method.startswith("lambda_"):
        regularizer, _, perturb_name = method.removeprefix("lambda_").partition("+")
        perturb_name = perturb_name or "none"
    torch.manual_seed(0)
    # float64: the ranks sum in another order than one process, and the second-order step's
    # finite difference magnifies float32 rounding to ~1e-5; in float64 all agree to ~1e-15
    model = supernet(kind).double()
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.05, momentum=0.9,
                                weight_decay=3e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 4, eta_min=0.01)
    if method == "one_level":
        alpha = OneLevel(model, 3e-3, 1e-3)
    else:
        alpha = Architect(model, 3e-3, 1e-3, 0.9, 3e-4, unrolled=method == "second_order")
    perturb = make_perturbation(perturb_name, 0.3, 4)
    if regularizer is not None and perturb is not None:
        perturb.steps = LAMBDA_PGD_STEPS
    host = to_device_images(get_dataset("digits", "", True, None), "digits", CPU)
    data = DeviceImages(host.images.double(), host.labels, "digits")
    train, valid, ordered = device_search_queues(
        data, 1.0 if kind == "one_level" else 0.5, LAMBDA_BATCH if regularizer else BATCH,
        batch_augment("digits", cutout=True, cutout_length=4), device_generator(1, CPU),
        device_generator(2, CPU), Shard(dp.rank, dp.world_size))
    loop = SearchLoop(model=model, optimizer=optimizer, scheduler=scheduler, alpha_update=alpha,
                      train_queue=train, valid_queue=valid, valid_eval_queue=ordered, epochs=1,
                      device=CPU, logger=logging.getLogger("dp-test"),
                      checkpoint_path=os.path.join(tmp, f"{kind}-{dp.rank}.pth.tar"),
                      perturbation=perturb, max_batches=STEPS, progress=False,
                      data_parallel=dp, step_order="weights_first" if nb201 else "alpha_first")
    alignment = None
    if regularizer is not None:
        # every cell of the 3 aligned (2 normal cells need 5), constant λ: train_epoch runs no
        # epoch_start hook, and the released ramp is 0 in epoch 0; attach shares the group
        alignment = RecordingAlignment(regularizer, 0.5, 1e-3, 1, cells="all", schedule=False)
        alignment.attach(loop)
    train_acc, train_loss = loop.train_epoch(1, 0.05)
    valid_acc, _ = loop.infer()
    out = {"alphas": [a.detach().clone() for a in model.arch_parameters()],
           "state": {k: v.clone() for k, v in model.state_dict().items()},
           "train": (train_acc, train_loss), "valid_acc": valid_acc}
    if nb1shot1:  # the dominant eigenvalue on the last alpha batch, as the door's epoch end
        loop.history.append({})
        eigenvalue_hook(1e-3)(EpochContext(loop, 1, 0.05))
        out["eigenvalue"] = loop.history[-1]["hessian_eigenvalue"]
    if alignment is not None:
        out.update(train_corr=torch.stack(alignment._train), local=alignment.local,
                   valid_corr=torch.stack(alignment._valid), added=torch.stack(alignment.added))
    return out


def work(dp: DataParallel, folder: str) -> dict:
    results = {kind: search(kind, dp, folder) for kind in KINDS + LAMBDA_KINDS}
    results["bn"] = global_bn_case(dp)
    return results


def global_bn_case(dp: DataParallel) -> dict:
    """A BN(affine) forward/backward on this rank's half of a fixed batch."""
    torch.manual_seed(3)
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64)
    bn = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    use_global_batch_norm(bn, dp)
    start, stop = Shard(dp.rank, dp.world_size).rows(8)
    part = x[start:stop].clone().requires_grad_()
    y = bn(part)
    (y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum().div(8).backward()
    grads = [bn.weight.grad.clone(), bn.bias.grad.clone()]
    dp.average(g for g in grads)
    gathered = [torch.zeros_like(part) for _ in range(dp.world_size)]
    dist.all_gather(gathered, part.grad)
    outs = [torch.zeros_like(y) for _ in range(dp.world_size)]
    dist.all_gather(outs, y.detach())
    return {"y": torch.cat(outs), "dx": torch.cat(gathered), "dw": grads[0] * dp.world_size,
            "db": grads[1] * dp.world_size, "rm": bn.running_mean, "rv": bn.running_var}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    ranks = run_ranks(work, tmp_path_factory.mktemp("dp"))
    return {**ranks[0], "ranks": ranks}  # "ranks": every rank's (Λ-DARTS: their shards' g_l)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_equal_one_process(two_ranks: dict, kind: str, tmp_path) -> None:
    one = search(kind, ONE_PROCESS, str(tmp_path))
    two = two_ranks[kind]
    for a, b in zip(one["alphas"], two["alphas"]):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), (a - b).abs().max()
    moved = max((a - b).abs().max() for a, b in zip(one["alphas"],
                                                    search_start_alphas(kind)))
    assert moved > 1e-3  # alpha moved: the comparison means something
    for key, value in one["state"].items():
        if value.is_floating_point():
            assert torch.allclose(value, two["state"][key], rtol=0, atol=1e-10), key
    assert one["train"] == pytest.approx(two["train"], rel=1e-12)
    if one["valid_acc"] is not None:
        assert one["valid_acc"] == pytest.approx(two["valid_acc"], abs=1e-6)
    if "eigenvalue" in one:  # each rank's, on the gathered global batch
        assert one["eigenvalue"] > 1e-3
        assert one["eigenvalue"] == pytest.approx(two["eigenvalue"], rel=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("kind", LAMBDA_KINDS)
def test_lambda_darts_two_ranks_equal_one_process(two_ranks: dict, one_process, kind: str
                                                  ) -> None:
    """Λ-DARTS: Λ, p and ε of the global batch's g_l, and the ± passes' gradients averaged,
    move alpha, the weights and BN's statistics as one process does (float64, ~1e-14)."""
    one, two = one_process(kind), two_ranks[kind]
    for a, b in zip(one["alphas"], two["alphas"]):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), (a - b).abs().max()
    for key, value in one["state"].items():
        if value.is_floating_point():
            assert torch.allclose(value, two["state"][key], rtol=0, atol=1e-12), key
    for key in ("train_corr", "valid_corr"):
        assert torch.allclose(one[key], two[key], rtol=0, atol=1e-12), key
    # the regulariser's term is there, and the same: λ (g₋ - g₊) / 2ε averaged over the ranks
    assert (one["added"] > 1e-3).all(), one["added"]
    assert torch.allclose(one["added"], two["added"], rtol=1e-10, atol=0)
    assert one["train"] == pytest.approx(two["train"], rel=1e-12)
    # every rank took the same decisions on the same numbers: bit for bit the same state
    rank0, rank1 = (r[kind] for r in two_ranks["ranks"])
    assert all(torch.equal(a, b) for a, b in zip(rank0["alphas"], rank1["alphas"]))
    assert all(torch.equal(v, rank1["state"][k]) for k, v in rank0["state"].items())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """``search(kind, ONE_PROCESS)``, run once per kind for the tests that compare with it."""
    tmp, done = str(tmp_path_factory.mktemp("one")), {}

    def get(kind: str) -> dict:
        if kind not in done:
            done[kind] = search(kind, ONE_PROCESS, tmp)
        return done[kind]
    return get


@pytest.mark.slow
def test_a_rank_local_regulariser_would_differ(two_ranks: dict, one_process) -> None:
    """Why g_l is averaged before Λ: each rank's shard gives other per-cell gradients, whose Λ
    (and p, ε) is not the global batch's (Λ is not linear in g_l); their mean is the global
    g_l, which every rank then aligns."""
    kind = "lambda_corr"
    one = one_process(kind)["local"]
    shards = [r[kind]["local"] for r in two_ranks["ranks"]]
    scale = max(g.abs().max() for g in one)
    for g, g0, g1 in zip(one, *shards):
        assert torch.allclose((g0 + g1) / 2, g, rtol=0, atol=1e-12 * scale)
        assert (g0 - g1).abs().max() > 0.05 * scale
    assert all(abs(corr(s) - corr(one)) > 1e-2 for s in shards)


def search_start_alphas(kind: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [a.detach().double() for a in supernet(kind).arch_parameters()]


@pytest.mark.slow
def test_global_batch_norm_is_one_batch_norm(two_ranks: dict) -> None:
    torch.manual_seed(3)
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64).requires_grad_()
    bn = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    # each rank weighted its half by arange over the half and divided by the global batch
    w = torch.cat([torch.arange(y_half_numel(), dtype=x.dtype).view(4, 3, 5, 5)] * 2)
    y = bn(x)
    (y * w).sum().div(8).backward()
    got = two_ranks["bn"]
    assert torch.allclose(got["y"], y, atol=1e-12)
    assert torch.allclose(got["dx"], x.grad, atol=1e-12)
    assert torch.allclose(got["dw"], bn.weight.grad, atol=1e-12)
    assert torch.allclose(got["db"], bn.bias.grad, atol=1e-12)
    assert torch.allclose(got["rm"], bn.running_mean, atol=1e-12)
    assert torch.allclose(got["rv"], bn.running_var, atol=1e-12)


def y_half_numel() -> int:
    return 4 * 3 * 5 * 5


def test_parts_that_cannot_run_data_parallel_are_refused() -> None:
    import logging

    model = Network(4, 10, 3, get_space("s5"), in_channels=1)
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.05)

    def hook(ctx):
        pass

    with pytest.raises(UserError, match="does not support hook"):
        SearchLoop(model=model, optimizer=optimizer,
                   scheduler=torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0),
                   alpha_update=None, train_queue=[], valid_queue=[], valid_eval_queue=[],
                   epochs=1, device=CPU, logger=logging.getLogger("x"), checkpoint_path="x",
                   weight_grad_hooks=[hook], data_parallel=DataParallel(rank=0, world_size=2))


def test_hooks_that_declare_support_get_the_process_group() -> None:
    """A function, an object and a bound method (its object declares) are handed the loop's
    ``DataParallel``; Λ-DARTS' hooks, attached after the loop is built, get it too."""
    import logging

    def hook(ctx):
        pass

    hook.supports_data_parallel = True

    class Owner:
        supports_data_parallel = True

        def end(self, ctx) -> None:
            pass

    owner, dp = Owner(), DataParallel(rank=0, world_size=2)
    model = Network(4, 10, 3, get_space("s5"), in_channels=1)
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.05)
    loop = SearchLoop(model=model, optimizer=optimizer,
                      scheduler=torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0),
                      alpha_update=Architect(model), train_queue=[], valid_queue=[],
                      valid_eval_queue=[], epochs=1, device=CPU, logger=logging.getLogger("x"),
                      checkpoint_path="x", weight_grad_hooks=[hook], step_end_hooks=[owner.end],
                      data_parallel=dp)
    assert hook.data_parallel is dp and owner.data_parallel is dp
    alignment = LayerAlignment("corr", 0.5, 1e-3, 2, cells="all")
    alignment.attach(loop)
    assert alignment.data_parallel is dp and alignment in loop.weight_grad_hooks
