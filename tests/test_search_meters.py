"""No host synchronisation inside a search step (``shared.search.meters``, the loop's report,
SDARTS-ADV's keep-if-the-loss-rose rule): the numbers stay on the device until a line is
logged, and they equal DARTS' AverageMeter bit for bit."""
from __future__ import annotations

import contextlib
import logging
import os

import pytest
import torch
import torch.nn.functional as F

from shared.logs import AverageMeter, accuracy
from shared.models.search_cnn import Network
from shared.search.alpha_update import FixedAlpha, OneLevel
from shared.search.architect import Architect
from shared.search.loop import SearchLoop
from shared.search.meters import DeviceMeters
from shared.search.perturbation import make_perturbation
from shared.spaces import get_space

TORCH = os.path.dirname(torch.__file__)


def test_device_meters_equal_average_meters_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    meters = DeviceMeters(torch.device("cpu"))
    objs, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
    for n in (7, 3, 16, 1, 9):
        logits = torch.randn(n, 10, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        loss = F.cross_entropy(logits, y)
        meters.update(loss, logits, y)
        p1, p5 = accuracy(logits, y, topk=(1, 5))
        objs.update(loss.item(), n)
        top1.update(p1, n)
        top5.update(p5, n)
        assert meters.averages() == [objs.avg, top1.avg, top5.avg]  # ==, not approx
    assert DeviceMeters(torch.device("cpu")).averages() == [0.0, 0.0, 0.0]


class HostRead(AssertionError):
    pass


@contextlib.contextmanager
def no_host_reads():
    """Fail on a read of a tensor's value into Python made by anything but PyTorch itself
    (its CPU optimisers read their step counter: on CUDA they run ``capturable``)."""
    names = ("item", "tolist", "__bool__", "__float__", "__int__")
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def guard(name):
        real = saved[name]

        def read(self, *args, **kwargs):
            import sys

            caller = sys._getframe(1).f_code.co_filename
            if not caller.startswith(TORCH):
                raise HostRead(f"Tensor.{name} called from {caller}")
            return real(self, *args, **kwargs)
        return read

    for name in names:
        setattr(torch.Tensor, name, guard(name))
    try:
        yield
    finally:
        for name, real in saved.items():
            setattr(torch.Tensor, name, real)


def tiny_loop(tmp_path, update: str, perturb: str = "none") -> SearchLoop:
    """5 cells (Λ-DARTS' regulariser needs 2 normal ones) of 2 nodes: every candidate and
    every kind of edge a step reads, at less than half the 4-node cells' work."""
    torch.manual_seed(0)
    model = Network(4, 10, 5, get_space("s5"), in_channels=1, steps=2, multiplier=2)
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 4, eta_min=0.01)
    alpha = {"first_order": lambda: Architect(model, 3e-3, 1e-3, 0.9, 3e-4),
             "second_order": lambda: Architect(model, 3e-3, 1e-3, 0.9, 3e-4, unrolled=True),
             "one_level": lambda: OneLevel(model),
             "fixed": FixedAlpha}[update]()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
            for _ in range(3)]
    return SearchLoop(model=model, optimizer=optimizer, scheduler=scheduler, alpha_update=alpha,
                      train_queue=data, valid_queue=data if update != "one_level" else None,
                      valid_eval_queue=None, epochs=1, device=torch.device("cpu"),
                      logger=logging.getLogger("test_search_meters"),
                      checkpoint_path=str(tmp_path / "c.pth.tar"), progress=False,
                      report_freq=2, perturbation=make_perturbation(perturb, 0.3, 1))


@pytest.mark.parametrize("update, perturb", [("first_order", "none"), ("second_order", "none"),
                                             ("one_level", "none"),
                                             ("fixed", "none"), ("first_order", "random"),
                                             ("first_order", "pgd_linf")])
def test_a_search_step_reads_nothing_back_from_the_device(tmp_path, update, perturb) -> None:
    loop = tiny_loop(tmp_path, update, perturb)
    before = [p.detach().clone() for p in loop.model.parameters()]
    contexts = list(loop.batches(0, 0.1, update != "fixed"))
    with no_host_reads():
        for ctx in contexts:
            loop.step(ctx)
    assert any(not torch.equal(a, b) for a, b in zip(before, loop.model.parameters()))


def test_an_epoch_reads_the_meters_once_per_report(tmp_path, caplog) -> None:
    loop = tiny_loop(tmp_path, "first_order")
    reads = []
    real = DeviceMeters.averages
    DeviceMeters.averages = lambda self, *a: reads.append(1) or real(self, *a)
    try:
        with caplog.at_level(logging.INFO, logger="test_search_meters"):
            loop.train_epoch(0, 0.1)
    finally:
        DeviceMeters.averages = real
    assert len(reads) == 3  # steps 0 and 2 (report_freq 2) and the epoch's summary
    assert [r.message.split()[:2] for r in caplog.records] == [["train", "000"],
                                                               ["train", "002"]]


def test_the_guard_catches_a_host_read() -> None:
    with no_host_reads(), pytest.raises(HostRead):
        torch.ones(1).item()
