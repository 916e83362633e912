"""How alpha moves in a search step: the strategy the search loop holds.

* bilevel, first or second order (DARTS, Liu et al., ICLR'19, sec. 2.3, eq. 6-8): alpha steps
  on a validation batch, before or after the weight step (``SearchLoop.step_order``). That is
  ``shared.search.architect.Architect`` (and its recurrent variant);
* ``FixedAlpha`` (Blank-PT, Wang et al., ICLR'21, sec. 4): alpha never moves, the weights
  train under the initial, near-uniform softmax(alpha);
* ``OneLevel`` (StacNAS, Li et al.; one-level DARTS): alpha and the weights step from the
  gradients of one forward/backward of the *training* batch; no validation split is needed.

The loop asks three things of a strategy: whether a step needs a validation batch, whether the
weight step's forward must keep alpha in the graph (``one_level``), and what to do at the two
moments it may act (``step_alpha``: the bilevel alpha step; ``after_weight_backward``: right
after the weights' gradients are clipped). Its optimiser state is part of every checkpoint.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from shared.search.data_parallel import ONE_PROCESS

if TYPE_CHECKING:
    from shared.search.context import StepContext


class AlphaUpdate:
    """No alpha step at all; the base of every strategy."""

    name = "fixed"
    moves_alpha = False
    # The alpha batch is still drawn when alpha is fixed or warming up, so the data stream (and
    # the augmentation it draws from the global RNG) is the same whatever moves alpha.
    needs_valid_batch = True
    one_level = False  # the weight step's forward keeps alpha in the graph
    optimizer: torch.optim.Optimizer | None = None
    # a data-parallel search: the loop averages the weight step's gradients (one-level alpha's
    # too); a strategy that computes gradients of its own averages them (Architect)
    data_parallel = ONE_PROCESS
    supports_data_parallel = True  # a strategy that computes gradients must average them
    # its step may be recorded as a CUDA graph (shared.search.step_capture): no host reads of
    # the device, nothing but per-epoch numbers baked in; a strategy says so itself
    graph_safe = False

    def step_alpha(self, ctx: "StepContext") -> None:
        """The bilevel alpha step on ``ctx.x_val``/``ctx.y_val`` (nothing here)."""

    def after_weight_backward(self, ctx: "StepContext") -> None:
        """Called after the weights' gradients are clipped, when ``one_level`` (nothing here)."""

    def state_dict(self) -> dict[str, Any] | None:
        return self.optimizer.state_dict() if self.optimizer is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.optimizer is not None and state is not None:
            self.optimizer.load_state_dict(state)


class FixedAlpha(AlphaUpdate):
    """Blank-PT's fixed alpha."""

    graph_safe = True


def arch_adam(model: torch.nn.Module, lr: float, weight_decay: float,
              betas: tuple[float, float] = (0.5, 0.999)) -> torch.optim.Adam:
    """DARTS' alpha optimiser: Adam with coupled L2 (Adam's weight_decay, not AdamW)."""
    return torch.optim.Adam(model.arch_parameters(), lr=lr, betas=betas,
                            weight_decay=weight_decay)


class OneLevel(AlphaUpdate):
    """One-level optimisation: the weight step's backward fills alpha's gradient too, and
    alpha's optimiser steps on it (StacNAS ``search.py``: Adam 3e-4, (0.5, 0.999), wd 1e-3;
    the gradient clipping covers the weights only)."""

    name = "one_level"
    moves_alpha = True
    needs_valid_batch = False
    one_level = True
    graph_safe = True

    def __init__(self, model: torch.nn.Module, arch_learning_rate: float = 3e-4,
                 arch_weight_decay: float = 1e-3,
                 betas: tuple[float, float] = (0.5, 0.999)) -> None:
        self.model = model
        self.optimizer = arch_adam(model, arch_learning_rate, arch_weight_decay, betas)

    def after_weight_backward(self, ctx: "StepContext") -> None:
        self.optimizer.step()
