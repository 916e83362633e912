"""What a hook of the search loop is handed: one object per moment, holding what the moment knows.

A hook that only got the model could not see the batch, the mixing weights or the epoch, and
the next method would have to fork the loop; so every step-level moment gets a ``StepContext``
and every epoch-level moment an ``EpochContext``, and new fields can be added without touching
a hook's signature.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from shared.models.supernet import MixingWeights

if TYPE_CHECKING:  # the loop imports this module
    from shared.search.loop import EpochResult, SearchLoop



@dataclass
class StepContext:
    """One search step: the batches, then what the weight step made of them.

    Filled in as the step goes: ``weights`` once the weight step chose its mixing weights
    (after any perturbation), ``cell_weights`` (one leaf per search cell; their ``.grad`` is
    dL/dA_l after the backward) and ``rng_state`` only when a weight-gradient hook asks for
    them (``needs_cell_grads``, ``needs_rng_state``), ``loss`` and ``logits`` after the
    forward. ``records``: numbers a hook computed in the step for its epoch's summary
    (Λ-DARTS' train_/valid_corr), which its ``step_report`` part reads after the step: outside
    a recorded step, whose replays run no Python (``shared.search.step_capture``).
    """

    loop: "SearchLoop"
    model: torch.nn.Module       # the supernet as this step's hooks see it
    epoch: int
    step: int
    lr: float                    # the weight step's lr (eta of the unrolled alpha step)
    x: Any                       # training inputs (the recurrent search: (words, hidden))
    y: torch.Tensor
    x_val: Any = None            # the alpha batch (None where no validation split is used)
    y_val: torch.Tensor | None = None
    update_alpha: bool = True    # False before --warm_start_epochs and with a fixed alpha
    weights: MixingWeights | None = None
    cell_weights: list[Any] | None = None
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    rng_state: dict[str, torch.Tensor] | None = None  # RNG state right before the forward
    records: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> a device tensor
    extra: dict[str, Any] = field(default_factory=dict)  # a loop subclass's own (RNN: hidden)


@dataclass
class EpochContext:
    """An epoch boundary: ``result`` is None at its start and the epoch's numbers at its end;
    an end hook may add numbers to the epoch's history entry (``entry``)."""

    loop: "SearchLoop"
    epoch: int
    lr: float
    result: "EpochResult | None" = None

    @property
    def entry(self) -> dict[str, Any]:
        """The epoch's ``history`` entry (history.json, TensorBoard ``analysis/*``)."""
        return self.loop.history[-1]


def hook_owner(hook: Any) -> Any:
    """A bound method's object (a hook's declarations, ``graph_safe``,
    ``supports_data_parallel``, are its object's), else the hook itself."""
    return getattr(hook, "__self__", hook)


def capture_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch RNG state a forward draws from (dropout masks, noise ops), to replay it."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
