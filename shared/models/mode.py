"""A model's training or evaluation mode, switched only when it changes.

``nn.Module.train()`` walks every submodule: the DARTS space's 8-cell supernet has ~4,700 of
them, 11 ms of host time a walk, and the search step asks for training mode three times (the
step, its alpha step, its weight step), 34 ms a step that an eager GPU step waits for. Every
switch of mode in the project is the whole model's (``model.train()``, ``model.eval()``), so
the model's own flag says which mode all of it is in.
"""
from __future__ import annotations

import torch.nn as nn


def set_mode(model: nn.Module, training: bool = True) -> None:
    """``model.train(training)``, unless the model is in that mode already."""
    if model.training != training:
        model.train(training)
