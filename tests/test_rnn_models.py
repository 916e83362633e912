"""The DARTS recurrent cell: published genotypes, the evaluation and the search model
(DARTS ``rnn/genotypes.py``, ``rnn/model.py``, ``rnn/model_search.py``)."""
from __future__ import annotations

import json

import pytest
import torch

from shared.errors import UserError
from shared.models.rnn import RNNModel, repackage_hidden
from shared.models.search_rnn import RNNModelSearch
from shared.rnn_genotype import RNNGenotype, load_rnn_genotype, published_rnn
from shared.spaces import RNNSpace

NAMES = ["DARTS_V1", "DARTS_V2", "DARTS", "ENAS", "penn_random", "penn_pgd"]


def test_the_registry_holds_the_published_cells() -> None:
    assert set(NAMES) <= set(published_rnn())
    assert published_rnn()["DARTS"].genotype == published_rnn()["DARTS_V2"].genotype
    assert published_rnn()["penn_pgd"].method == "SDARTS-ADV"
    assert published_rnn()["penn_random"].method == "SDARTS-RS"
    assert published_rnn()["DARTS_V2"].reported["ptb_test_ppl"] == 55.68
    v2 = published_rnn()["DARTS_V2"].genotype
    assert v2.recurrent[0] == ("sigmoid", 0) and v2.concat == tuple(range(1, 9))
    assert str(v2).startswith("Genotype(recurrent=[('sigmoid', 0), ('relu', 1)")
    assert str(v2).endswith("concat=range(1, 9))")


def test_darts_v2_ptb_model_has_the_reported_23m_parameters() -> None:
    model = RNNModel(10000, 850, 850, 850, genotype=published_rnn()["DARTS_V2"].genotype)
    n = sum(p.numel() for p in model.parameters())  # tied decoder counted once
    assert n == 10000 * 850 + 1700 * 1700 + 8 * 850 * 1700 + 10000 == 22_960_000
    assert round(n / 1e6) == 23


@pytest.mark.parametrize("name", NAMES)
def test_every_published_cell_trains_with_hidden_state_carried(name: str) -> None:
    torch.manual_seed(0)
    model = RNNModel(50, 12, 12, 12, 0.2, 0.1, 0.2, 0.1, 0.1,
                     genotype=published_rnn()[name].genotype)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    hidden = model.init_hidden(3)
    data = torch.randint(0, 50, (21, 3))
    for i in range(0, 20, 5):  # truncated BPTT over consecutive batches
        hidden = repackage_hidden(hidden)
        log_prob, hidden, raw, dropped = model(data[i:i + 5], hidden, return_h=True)
        assert log_prob.shape == (5, 3, 50) and hidden[0].shape == (1, 3, 12)
        assert raw[0].shape == dropped[0].shape == (5, 3, 12)
        loss = torch.nn.functional.nll_loss(log_prob.view(-1, 50), data[i + 1:i + 6].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert torch.exp(log_prob).sum(-1).allclose(torch.ones(5, 3), atol=1e-5)


def _one_hot_weights(genotype: RNNGenotype, space: RNNSpace) -> torch.Tensor:
    w = torch.zeros(space.num_edges, len(space.ops))
    for row, (node, pred) in enumerate(space.edges()):
        op, j = genotype.recurrent[node - 1]
        if j == pred:
            w[row, space.ops.index(op)] = 1.0
    return w


@pytest.mark.parametrize("name", ["DARTS_V2", "penn_pgd", "penn_random"])
def test_search_cell_with_one_hot_alpha_equals_the_evaluation_cell(name: str) -> None:
    """Same weights, dropout off, BN made the identity: the search model reduces to the cell."""
    torch.manual_seed(0)
    genotype = published_rnn()[name].genotype
    search = RNNModelSearch(40, 10, 10, 10, 0.3, 0.3, 0.3, 0.3, 0.1).double().eval()
    # running mean 0, var 1 and an eps below float64's rounding of 1: BN is the identity
    # (torch 2.11 refuses eps 0)
    search.rnns[0].bn.eps = 1e-300
    final = RNNModel(40, 10, 10, 10, 0.3, 0.3, 0.3, 0.3, 0.1, genotype=genotype).double().eval()
    final.load_state_dict({k: v for k, v in search.state_dict().items()
                           if k in final.state_dict()})
    weights = (_one_hot_weights(genotype, search.space).double(),)
    data = torch.randint(0, 40, (6, 2))
    hidden = final.init_hidden(2)
    got, got_h = search(data, hidden, weights=weights)
    want, want_h = final(data, hidden)
    assert torch.allclose(got, want, atol=1e-12) and torch.allclose(got_h[0], want_h[0])


def test_derivation_picks_one_predecessor_and_op_per_node() -> None:
    space = RNNSpace()
    for name in ("DARTS_V1", "DARTS_V2", "penn_pgd", "penn_random"):
        genotype = published_rnn()[name].genotype
        w = _one_hot_weights(genotype, space) * 0.9 + 0.02  # 'none' never wins
        w[:, 0] = 0.95  # not even when it is the largest entry: 'none' is excluded
        assert RNNGenotype.from_weights(w, space) == genotype


def test_search_model_interface() -> None:
    torch.manual_seed(0)
    model = RNNModelSearch(30, 8, 8, 8)
    assert tuple(model.weights.shape) == (36, 5)
    assert id(model.weights) not in {id(p) for p in model.weight_parameters()}
    hidden = model.init_hidden(2)
    x, y = torch.randint(0, 30, (4, 2)), torch.randint(0, 30, (8,))
    loss, next_hidden = model._loss(hidden, x, y)
    loss.backward()
    assert model.weights.grad is not None and next_hidden[0].shape == (1, 2, 8)
    assert isinstance(model.genotype(), RNNGenotype)


def test_load_rnn_genotype_by_name_or_json(tmp_path) -> None:
    assert load_rnn_genotype("penn_pgd") == published_rnn()["penn_pgd"].genotype
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps({"genotype": published_rnn()["ENAS"].genotype.to_dict()}))
    assert load_rnn_genotype(str(path)) == published_rnn()["ENAS"].genotype
    with pytest.raises(UserError, match="neither a published RNN genotype"):
        load_rnn_genotype("DARTS_V3")
    with pytest.raises(ValueError, match="predecessor 3 must be in 0..0"):
        RNNGenotype((("tanh", 3),), (1,))
