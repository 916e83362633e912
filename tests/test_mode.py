"""``shared.models.mode.set_mode``: the model's mode switched only when it changes."""
from __future__ import annotations

import torch.nn as nn

from shared.models.mode import set_mode


def test_the_mode_is_switched_only_when_it_changes() -> None:
    model = nn.Sequential(nn.BatchNorm2d(2), nn.Sequential(nn.Dropout(), nn.BatchNorm2d(2)))
    switches: list[bool] = []
    train = model.train
    model.train = lambda mode=True: switches.append(mode) or train(mode)
    set_mode(model)
    assert switches == []
    set_mode(model, False)
    set_mode(model, False)
    assert switches == [False] and not any(m.training for m in model.modules())
    set_mode(model)
    assert switches == [False, True] and all(m.training for m in model.modules())
