"""Cosine-power annealing (shared/lr_schedules.py), StacNAS' --power_lr."""
import math

import pytest
import torch

from shared.lr_schedules import cosine_power_lr, cosine_power_scheduler


def test_cosine_power_starts_high_ends_low_and_stays_below_the_cosine() -> None:
    lr, lr_min, E = 0.025, 0.001, 10
    assert cosine_power_lr(0, E, lr, lr_min) == pytest.approx(lr)
    assert cosine_power_lr(E, E, lr, lr_min) == pytest.approx(lr_min)
    # halfway, c = 1/2: (2^1.5 - 2) / 2 = sqrt(2) - 1 of the range
    assert cosine_power_lr(5, E, lr, lr_min) == pytest.approx(
        lr_min + (lr - lr_min) * (math.sqrt(2) - 1))
    values = [cosine_power_lr(e, E, lr, lr_min) for e in range(E + 1)]
    assert all(a > b for a, b in zip(values, values[1:]))
    cosine = [lr_min + (lr - lr_min) * (1 + math.cos(math.pi * e / E)) / 2 for e in range(E + 1)]
    assert all(p <= c + 1e-15 for p, c in zip(values, cosine))


def test_the_scheduler_gives_epoch_e_its_closed_form_lr() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.025)
    sched = cosine_power_scheduler(opt, 4, 0.001)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([cosine_power_lr(e, 4, 0.025, 0.001) for e in range(4)])


def test_searches_and_evaluations_take_it_by_name() -> None:
    from shared.evaluation.config import LR_SCHEDULERS
    from shared.search.cnn_search import CNNSearchConfig, make_lr_schedule

    assert "cosine_power" in LR_SCHEDULERS
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.025)
    sched = make_lr_schedule(CNNSearchConfig(epochs=3, lr_schedule="cosine_power"), opt)
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)
    from shared.errors import UserError

    with pytest.raises(UserError, match="lr schedule 'steps'"):
        make_lr_schedule(CNNSearchConfig(lr_schedule="steps"), opt)
