"""``shared.models.candidate``: what each candidate of the supernet is, found once per module."""
from __future__ import annotations

import gc

import pytest
import torch.nn as nn

from shared.models import candidate
from shared.models.search_cnn import Network
from shared.spaces import SPACES


def test_every_darts_candidate_has_its_kind_and_layers() -> None:
    model = Network(4, 10, 3, SPACES["darts"])
    cell = model.cells[1]  # a reduction cell: FactorizedReduce on its stride-2 edges' skips
    kinds = {}
    for mixed in cell._ops:
        for op in mixed._ops:
            kinds.setdefault(candidate.kind(op), op)
    assert set(kinds) == {"none", "pool", "fr", "skip", "sep", "dil"}
    sep = candidate.layers(kinds["sep"])
    assert [type(m) for m in sep] == [nn.Conv2d, nn.Conv2d, nn.BatchNorm2d] * 2
    assert sep[0] is kinds["sep"][0][1] and sep[5] is kinds["sep"][1][3]
    assert candidate.layers(kinds["dil"]) == tuple(list(kinds["dil"])[1:])
    assert candidate.layers(kinds["pool"]) == tuple(kinds["pool"])
    with pytest.raises(ValueError, match="fr candidate has no layers"):
        candidate.layers(kinds["fr"])
    assert candidate.kind(nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3))) == "generic"


def test_an_answer_is_kept_per_module_while_it_lives() -> None:
    calls = []

    @candidate.per_module
    def count(op: nn.Module) -> int:
        calls.append(op)
        return len(calls)

    a, b = nn.ReLU(), nn.ReLU()
    assert (count(a), count(a), count(b), count(a)) == (1, 1, 2, 1)
    del a
    gc.collect()
    assert count(nn.ReLU()) == 3  # a new module (another may reuse a's address)


def test_a_copy_answers_for_itself_and_learn_asks_before_a_trace() -> None:
    """The answers live on the modules: a deep copy's layers are its own modules, and
    ``learn`` has every candidate's answers in place before ``torch.compile`` traces."""
    import copy

    import shared.models.cnn  # noqa: F401  (its question, after_relu, is asked of every module)

    model = Network(4, 10, 2, SPACES["darts"])
    sep = next(op for mixed in model.cells[0]._ops for op in mixed._ops
               if candidate.kind(op) == "sep")
    layers = candidate.layers(sep)
    twin = copy.deepcopy(sep)
    assert candidate.layers(twin)[0] is twin[0][1] and candidate.layers(twin)[0] is not layers[0]
    fresh = Network(4, 10, 2, SPACES["darts"])
    candidate.learn(fresh)
    for mixed in fresh.cells[1]._ops:
        for op in mixed._ops:
            asked = {name for name in vars(op) if name.startswith("_per_module_")}
            want = {"_per_module_candidate_kind", "_per_module_cnn_after_relu"}
            if candidate.kind(op) in ("sep", "dil"):
                want |= {"_per_module_candidate_layers", "_per_module_grouped_edges_group_key",
                         "_per_module_grouped_edges_size_free_key",
                         "_per_module_grouped_edges_groupable"}
            elif candidate.kind(op) == "pool":
                want.add("_per_module_candidate_layers")
            assert asked == want, (candidate.kind(op), asked)
