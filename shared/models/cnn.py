"""Final CNNs built from a genotype: NetworkCIFAR and NetworkImageNet (DARTS' model.py), and
``build_final_network`` / ``count_parameters`` as the evaluation protocol uses them.

A ``Genotype`` gives every cell of a kind the same cell (DARTS); a ``PerCellGenotype`` gives
cell i its own (StacNAS without ``--alpha_share``: susan0199/StacNAS ``augment_cnn.py``,
``AugmentCNN``, builds cell i from ``genotypes[cell_id]``). The rest of the network is the same
for both."""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.errors import UserError
from shared.genotypes import Genotype, Pair, PerCellGenotype
from shared.models.batch_counters import advance_batch_counters, count_batches_together
from shared.models.candidate import every_module, per_module
from shared.models.drop_path import drop_path_scales, dropped_sum
from shared.models.grouped_cell import cell_groups, join_cell_groups, run_group
from shared.ops import FactorizedReduce, Identity, ReLUConvBN, SepConv, make_op
from shared.spaces import kinds_of_cells

CellGene = tuple[Sequence[Pair], Sequence[int]]  # one cell's (op, input) pairs and concat


@per_module(asked_of=every_module)
def after_relu(op: nn.Module) -> tuple[nn.Module, ...] | None:
    """The layers of ``op`` after the ReLU it begins with (``op(x)`` is them applied in turn
    to ``relu(x)``): a ``ReLUConvBN``, ``DilConv`` or ``FactorizedConv``, or a ``SepConv``,
    whose first half is a ``DilConv``; None for any other op. Found once per op (asked on
    every forward)."""
    def tail(seq: nn.Module) -> tuple[nn.Module, ...] | None:
        if (isinstance(seq, nn.Sequential) and len(seq) > 1 and type(seq[0]) is nn.ReLU
                and not seq[0].inplace):
            return tuple(seq)[1:]
        return None

    if isinstance(op, SepConv):
        first = tail(op[0])
        return None if first is None else first + tuple(op)[1:]
    return tail(op)


def _begins_with_relu(m: nn.Module) -> bool:
    """Whether a cell's preprocessing ``m`` begins with its input's ReLU and can take it done
    (``Cell._preprocess``): a ``ReLUConvBN`` or a ``FactorizedReduce``."""
    return (isinstance(m, FactorizedReduce) and not m.relu.inplace) or after_relu(m) is not None


class Cell(nn.Module):
    """One cell of the final network: ``genotype``'s cell of this kind, or the (pairs, concat)
    of this cell itself (a ``PerCellGenotype``'s cell)."""

    def __init__(self, genotype: Genotype | CellGene, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        if isinstance(genotype, Genotype):
            pairs, concat = ((genotype.reduce, genotype.reduce_concat) if reduction
                             else (genotype.normal, genotype.normal_concat))
        else:
            pairs, concat = genotype
        self.reduction = reduction
        self._steps = len(pairs) // 2
        self._concat = tuple(concat)
        self.multiplier = len(concat)
        self._indices = tuple(j for _, j in pairs)
        self._ops = nn.ModuleList(
            make_op(name, C, 2 if reduction and j < 2 else 1, True) for name, j in pairs)
        # ops that read the ReLU of a state two or more ops begin with: computed once for them
        # (DARTS_V2's normal cell: two of its state c_{k-2}, three of c_{k-1}), not once each;
        # those ops run as their layers after the ReLU (their own forward hooks do not run)
        readers = [j if after_relu(op) is not None else None
                   for op, j in zip(self._ops, self._indices)]
        self._shared_relu = tuple(j is not None and readers.count(j) > 1 for j in readers)
        # which inputs the preprocessing takes from their ReLU (``relus`` in ``forward``)
        self.reads_relu = tuple(_begins_with_relu(m) for m in (self.preprocess0,
                                                                self.preprocess1))
        # same-shaped separable (or dilated) convs reading the same states run together
        # (``shared.models.grouped_cell``; the network's ``grouped_ops``)
        self.grouped = False
        self._groups = {k: g for g in cell_groups(self) for k in g.ops}
        # each op's row of the cell's drop-path factors (None: an identity, never dropped)
        rows = itertools.accumulate(not isinstance(op, Identity) for op in self._ops)
        self._drop_row = tuple(r - 1 if not isinstance(op, Identity) else None
                               for r, op in zip(rows, self._ops))

    @staticmethod
    def _preprocess(m: nn.Module, x: torch.Tensor, r: torch.Tensor | None,
                    reads: bool) -> torch.Tensor:
        """``m(x)``, from ``r = relu(x)`` when given and ``m`` begins with that ReLU (its
        layers after it: their own hooks run, ``m``'s do not)."""
        if r is None or not reads:
            return m(x)
        if isinstance(m, FactorizedReduce):
            return m.after_relu(r)
        for layer in after_relu(m):
            r = layer(r)
        return r

    @property
    def droppable(self) -> int:
        """How many of its ops drop-path applies to (all but the identities)."""
        return sum(not isinstance(op, Identity) for op in self._ops)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor,
                drop_scales: torch.Tensor | None = None,
                relus: Sequence[torch.Tensor | None] = (None, None)) -> torch.Tensor:
        """``drop_scales``: drop-path's factors for this cell's droppable ops, in order
        (:func:`drop_path_scales`), or None for none. ``relus``: ``relu(s0)``, ``relu(s1)``
        where the network computed them once for the two cells that read each state (None:
        the preprocessing takes its own); used where ``reads_relu`` says."""
        states = [self._preprocess(m, x, r, reads) for m, x, r, reads in zip(
            (self.preprocess0, self.preprocess1), (s0, s1), relus, self.reads_relu)]
        relus: dict[int, torch.Tensor] = {}  # state -> its ReLU, where shared

        def relu_of(j: int) -> torch.Tensor:
            if j not in relus:
                relus[j] = F.relu(states[j])
            return relus[j]

        made: dict[int, torch.Tensor] = {}  # grouped ops' outputs not yet taken
        for i in range(self._steps):
            h, rows = [], []
            for k in (2 * i, 2 * i + 1):
                op, j = self._ops[k], self._indices[k]
                row = self._drop_row[k] if drop_scales is not None else None
                if self.grouped and k in self._groups:
                    if k not in made:  # drop-path applied by the group, one product
                        group = self._groups[k]
                        factors = None if row is None else torch.stack(
                            [drop_scales[self._drop_row[g]] for g in group.ops])
                        made.update(run_group(self, group, relu_of, factors))
                    out = made.pop(k)
                    row = None
                elif self._shared_relu[k]:
                    out = relu_of(j)
                    for layer in after_relu(op):
                        out = layer(out)
                else:
                    out = op(states[j])
                h.append(out)
                rows.append(row)
            states.append(dropped_sum(h[0], h[1], drop_scales, tuple(rows)))
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the 8x8 output of cell 2L//3 (training only)."""

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.size(-1)
        if size == 8:  # CIFAR: the original path
            x = self.features(x)
        elif size >= 6:
            # MNIST's 28x28 reaches this head at 7x7: StacNAS' AuxiliaryHead pools with stride
            # input_size // 4 - 5 (released augment_cnn.py), i.e. size - 5, to the same 2x2.
            x = nn.functional.avg_pool2d(torch.relu(x), 5, stride=size - 5,
                                         count_include_pad=False)
            x = self.features[2:](x)
        else:
            # Smaller inputs (the 8x8 digits reach this head at 2x2): pool to the 2x2 the head
            # expects instead of failing.
            x = nn.functional.adaptive_avg_pool2d(torch.relu(x), 2)
            x = self.features[2:](x)
        return self.classifier(x.flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            # DARTS omits the BatchNorm after this conv (a typo kept for its released models).
            nn.Conv2d(128, 768, 2, bias=False), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class _Network(nn.Module):
    """The cell stack shared by the CIFAR and ImageNet networks."""

    drop_path_prob: float = 0.0
    _grouped_ops: bool = False

    @property
    def grouped_ops(self) -> bool:
        """Whether each cell's same-shaped separable convs reading the same states run
        together (``shared.models.grouped_cell``); turning it on lays their parameters and
        running statistics out back to back, again whenever the network is moved or cast."""
        return self._grouped_ops

    @grouped_ops.setter
    def grouped_ops(self, on: bool) -> None:
        self._grouped_ops = bool(on)
        for cell in self.cells:
            cell.grouped = self._grouped_ops
            if self._grouped_ops:
                join_cell_groups(cell)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if self._grouped_ops:  # new tensors: laid out again
            for cell in self.cells:
                join_cell_groups(cell)
        return out

    def _build_cells(self, C: int, layers: int, genotype: Genotype | PerCellGenotype,
                     C_curr: int, reduction_prev: bool, C_stem: int, num_classes: int,
                     auxiliary: bool, aux_cls: type[nn.Module]) -> None:
        per_cell = isinstance(genotype, PerCellGenotype)
        if per_cell:
            check_per_cell(genotype, layers)
        C_prev_prev, C_prev = C_stem, C_stem
        self.cells = nn.ModuleList()
        self._layers = layers
        self._auxiliary = auxiliary
        self._aux_index = 2 * layers // 3
        C_aux = None
        for i, kind in enumerate(kinds_of_cells(layers)):
            reduction = kind == "reduce"
            if reduction:
                C_curr *= 2
            gene = (genotype.cells[i], genotype.concats[i]) if per_cell else genotype
            cell = Cell(gene, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self._aux_index:
                C_aux = C_prev
        if auxiliary:
            self.auxiliary_head = aux_cls(C_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def _run_cells(self, s0: torch.Tensor, s1: torch.Tensor):
        if self.training:  # every BN's, the stem's too: a training forward runs each once
            advance_batch_counters(self._batch_norms)
        logits_aux = None
        scales = [None] * len(self.cells)
        if self.training and self.drop_path_prob > 0:  # drawn at once for every cell
            counts = [cell.droppable for cell in self.cells]
            scales = drop_path_scales(sum(counts), s0.shape[0], self.drop_path_prob,
                                      s0).split(counts)
        # a state's ReLU, taken once for the two cells whose preprocessing begins with it
        # (cell k+1's preprocess1, cell k+2's preprocess0), only where one of them will
        r0 = r1 = None
        for i, (cell, drop_scales) in enumerate(zip(self.cells, scales)):
            if cell.reads_relu[1] and r1 is None:
                r1 = F.relu(s1)
            if cell.reads_relu[0] and r0 is None:
                r0 = r1 if s0 is s1 and r1 is not None else F.relu(s0)
            s0, s1 = s1, cell(s0, s1, drop_scales, (r0, r1))
            r0, r1 = r1, None
            if i == self._aux_index and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux


def check_per_cell(genotype: PerCellGenotype, layers: int) -> None:
    """A per-cell genotype fits DARTS' ``layers``-cell network: one cell per layer, reduction
    cells where the network reduces (L//3 and 2L//3); else a UserError saying what differs."""
    if genotype.layers != layers:
        raise UserError(f"the genotype has {genotype.layers} cells, the network {layers} "
                        f"(a per-cell genotype builds a network of as many cells as it has)")
    want = kinds_of_cells(layers)
    if tuple(genotype.kinds) != want:
        bad = [i for i, (k, w) in enumerate(zip(genotype.kinds, want)) if k != w]
        raise UserError(f"the genotype's cell kinds differ from the network's at cells {bad}: "
                        f"a {layers}-cell network reduces at cells {layers // 3} and "
                        f"{2 * layers // 3}")


class NetworkCIFAR(_Network):
    """forward returns (logits, logits_aux); logits_aux is None unless training with --auxiliary."""

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool,
                 genotype: Genotype | PerCellGenotype, in_channels: int = 3,
                 stem_multiplier: int = 3) -> None:
        super().__init__()
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        self._build_cells(C, layers, genotype, C, False, C_curr, num_classes, auxiliary,
                          AuxiliaryHeadCIFAR)
        self._batch_norms = count_batches_together(self)

    def forward(self, x: torch.Tensor):
        s = self.stem(x)
        return self._run_cells(s, s)


class NetworkImageNet(_Network):
    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool,
                 genotype: Genotype | PerCellGenotype) -> None:
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C))
        self._build_cells(C, layers, genotype, C, True, C, num_classes, auxiliary,
                          AuxiliaryHeadImageNet)
        self._batch_norms = count_batches_together(self)

    def forward(self, x: torch.Tensor):
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        return self._run_cells(s0, s1)


FINAL_DATASETS = {"cifar10": 10, "cifar100": 100, "svhn": 10, "imagenet": 1000, "digits": 10,
                  "mnist": 10, "fashionmnist": 10}
GRAY = ("digits", "mnist", "fashionmnist")  # one input channel


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters as DARTS counts them: everything but the auxiliary head."""
    return sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n)


def build_final_network(genotype: Genotype | PerCellGenotype, dataset: str, init_channels: int,
                        layers: int, auxiliary: bool = False) -> torch.nn.Module:
    """The evaluation network for ``dataset`` (ImageNet gets NetworkImageNet); a per-cell
    genotype needs ``layers`` equal to its number of cells."""
    if dataset not in FINAL_DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose from {', '.join(FINAL_DATASETS)}")
    classes = FINAL_DATASETS[dataset]
    if dataset == "imagenet":
        return NetworkImageNet(init_channels, classes, layers, auxiliary, genotype)
    in_ch = 1 if dataset in GRAY else 3
    return NetworkCIFAR(init_channels, classes, layers, auxiliary, genotype, in_channels=in_ch)
