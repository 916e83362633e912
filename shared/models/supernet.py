"""The supernet contract: what every search model offers the search loop, the alpha updates and
the methods' hooks. The DARTS-space ``Network``, the NAS-Bench-201 ``TinyNetworkDarts``, the
NAS-Bench-1Shot1 ``NB1Shot1Network`` and the recurrent ``RNNModelSearch`` all implement it.

* **alpha**: ``arch_parameters()``, one ``nn.Parameter`` per name of ``cell_types`` (DARTS:
  normal, reduce; NAS-Bench-201: one shared "cell"; the recurrent cell: "recurrent").
  ``weight_parameters()`` is everything else: the weight optimiser, its weight decay and the
  gradient clipping never touch alpha.
* **mixing weights**: the continuous relaxation of DARTS (Liu et al., ICLR'19, eq. 2),
  softmax(alpha) along the candidates, one tensor per ``cell_types`` entry, passed through
  ``mixing_transform`` when a method sets it (DARTS-PT fixes projected edges there).
* **cells**: ``cell_kinds()`` names, for every search cell in forward order, the entry of
  ``cell_types`` it reads; ``expand_weights(weights)`` gives one mixing-weight entry per cell.
  ``forward(x, weights=None, cell_weights=None)`` takes either the shared weights or one entry
  per cell, so a method can perturb each cell on its own (Lambda-DARTS, Movahedi et al.,
  ICLR'23, sec. 3) although alpha is shared, on every supernet, NAS-Bench-201's 15 cells
  included.
* ``loss(x, y, weights=None, cell_weights=None)``: the training objective the alpha step,
  SDARTS' attack and the Hessian differentiate; ``genotype()``: the discrete architecture.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.ops import NoiseOp

MixingWeights = tuple[torch.Tensor, ...]
# One cell's mixing weights: a tensor (DARTS, NAS-Bench-201, the recurrent cell), or the whole
# tuple where every cell reads several alpha tensors (NAS-Bench-1Shot1).
CellWeights = Any
MixingTransform = Callable[[MixingWeights], MixingWeights]


class Supernet(nn.Module):
    """Base class of the search models; subclasses define alpha, the cells and the forward."""

    cell_types: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        # A function of the mixing weights applied by mixing_weights() (and hence by the
        # default forward, the alpha step and genotype()); explicit weights bypass it.
        self.mixing_transform: MixingTransform | None = None

    # -- parameters -------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Every parameter but alpha, with its name. Found once: ``named_parameters()`` walks
        every submodule (the DARTS space's 8-cell supernet: ~4,700 of them, 7.6 ms of host
        time on a 2-core CPU, ~1,400 weights), and a search step asks two to five times (the
        clipping, the data-parallel average, the second-order step, Λ-DARTS' hook), host time
        an eager GPU step waits for. A supernet's parameters are fixed once it is built (no
        door adds or replaces one; joining a group's kernels and moving the model keep each
        parameter object, changing its ``data``); a move or cast (``_apply``) or an
        assignment on the supernet finds them anew all the same. Inside a
        ``torch.func.functional_call`` these are the supernet's own parameters, not the
        substitutes."""
        def walk() -> tuple[tuple[str, nn.Parameter], ...]:
            arch = {id(p) for p in self.arch_parameters()}
            return tuple((n, p) for n, p in self.named_parameters() if id(p) not in arch)
        return iter(self._found("_weight_parameters", walk))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]

    def buffer_list(self) -> tuple[torch.Tensor, ...]:
        """Every buffer (BN running statistics and counters), found once as the weights are
        (a walk of the 8-cell supernet's modules for its ~2,800 buffers: 15 ms of host time);
        the second-order step and the Hessian monitor keep and restore them around forwards
        whose BN statistics must not stay (``tensor_lists.restored``)."""
        return self._found("_buffer_list", lambda: tuple(self.buffers()))

    # what _found keeps, by key: dropped where the modules may have changed
    _FOUND = ("_weight_parameters", "_buffer_list")

    def _found(self, key: str, walk: Callable[[], tuple]) -> tuple:
        """``walk()``, kept under ``key`` (one of ``_FOUND``) until :meth:`_forget_found`."""
        found = self.__dict__.get(key)
        if found is None:
            found = self.__dict__[key] = walk()
        return found

    def __setattr__(self, name: str, value: Any) -> None:
        self._forget_found()  # a parameter or buffer may come or go
        super().__setattr__(name, value)

    def _apply(self, fn: Callable, recurse: bool = True):
        self._forget_found()  # a move may replace the parameters and buffers
        return super()._apply(fn, recurse)

    def _forget_found(self) -> None:
        for key in self._FOUND:
            self.__dict__.pop(key, None)

    # -- mixing weights ---------------------------------------------------------------------
    def mixing_weights(self) -> MixingWeights:
        """softmax(alpha) per ``cell_types`` entry, through ``mixing_transform`` if set."""
        weights = tuple(F.softmax(a, dim=-1) for a in self.arch_parameters())
        if self.mixing_transform is None:
            return weights
        return tuple(self.mixing_transform(weights))

    def cell_kinds(self) -> tuple[str, ...]:
        """For each search cell, in forward order, the ``cell_types`` entry it reads."""
        raise NotImplementedError

    def forward_draws_random(self) -> bool:
        """Whether a training forward draws random numbers (noise ops, dropout masks), so
        that a second forward on the same batch differs unless the RNG state is put back
        (Λ-DARTS' ± passes do). True unless a supernet knows better (``draws_in_modules``)."""
        return True

    def expand_weights(self, weights: Sequence[torch.Tensor]) -> list[CellWeights]:
        """One mixing-weight entry per search cell (the same tensor object for cells of one
        kind, so a forward with the expansion equals one with the shared weights)."""
        if len(weights) != len(self.cell_types):
            raise ValueError(f"{len(weights)} mixing-weight tensors for the {len(self.cell_types)} "
                             f"of this supernet ({', '.join(self.cell_types)})")
        by_kind = dict(zip(self.cell_types, weights))
        return [by_kind[kind] for kind in self.cell_kinds()]

    def per_cell_weights(self, weights: Sequence[torch.Tensor] | None = None,
                         cell_weights: Sequence[CellWeights] | None = None
                         ) -> list[CellWeights]:
        """What ``forward`` feeds its cells: ``cell_weights`` as given, else the expansion of
        ``weights`` (default: ``mixing_weights()``)."""
        if cell_weights is not None:
            cells = list(cell_weights)
            if len(cells) != len(self.cell_kinds()):
                raise ValueError(f"cell_weights has {len(cells)} entries for "
                                 f"{len(self.cell_kinds())} search cells")
            return cells
        if isinstance(weights, torch.Tensor):  # a bare tensor would unpack by rows
            raise TypeError("weights must be the tuple that mixing_weights() returns")
        return self.expand_weights(tuple(weights) if weights is not None
                                   else self.mixing_weights())

    # -- objective and result ---------------------------------------------------------------
    def loss(self, x: Any, y: torch.Tensor, weights: Sequence[torch.Tensor] | None = None,
             cell_weights: Sequence[CellWeights] | None = None) -> torch.Tensor:
        return F.cross_entropy(self(x, weights, cell_weights=cell_weights), y)

    def genotype(self) -> Any:
        raise NotImplementedError


def draws_in_modules(model: nn.Module) -> bool:
    """``forward_draws_random`` of a network whose random draws are all its modules': a noise
    op (RobustDARTS' S4) or a dropout that drops something."""
    return any(isinstance(m, NoiseOp)
               or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
               for m in model.modules())
