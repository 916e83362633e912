"""NAS-Bench-1Shot1: the three spaces as data, the one-shot model, alpha -> NB-101 cell, and the
Hessian eigenvalue (nasbench-1shot1 ``nasbench_analysis/``, ``optimizers/darts/model_search.py``;
SmoothDARTS ``optimizers/analyze.py``)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nasbench_analysis.nb101_spec import CONV1X1, MAX_EDGES, MAX_VERTICES, NB101Spec
from nasbench_analysis.one_shot import arch_to_spec, upscale_to_nasbench_format, weights_to_spec
from shared.errors import UserError
from shared.models.search_nb1shot1 import NB1Shot1Network
from shared.nb1shot1_arch import NB1Shot1Arch, top_k
from shared.search.architect import Architect
from shared.search.hessian import alpha_hessian, dominant_eigenvalue
from shared.search.perturbation import LinfPGD, RandomSmoothing
from shared.spaces import NB1SHOT1_SPACES, get_nb1shot1_space
from tests.conftest import perturb

SPACES = sorted(NB1SHOT1_SPACES)


# -- the spaces ---------------------------------------------------------------------------------
def test_space_sizes_match_the_paper_by_enumeration() -> None:
    """6,240 / 29,160 / 363,648 (NAS-Bench-1Shot1 paper). Spaces 1 and 3: parent choices
    times 3^(blocks that feed something); space 2's number is the plain product."""
    s1, s2, s3 = (get_nb1shot1_space(n) for n in "123")
    assert s1.count() == 6240
    assert s3.count() == 363648
    assert s2.count(ops_of_loose_ends=True) == 29160
    # the other rule, so the note in NB1Shot1Space.count stays true
    assert (s1.count(True), s2.count(), s3.count(True)) == (14580, 16632, 1312200)
    # the enumeration agrees with architectures() (space 1 is small enough to list)
    assert sum(1 for _ in s1.architectures()) == 14580


@pytest.mark.parametrize("name,choice_nodes,edges", [
    ("1", (3, 4), 9), ("2", (2, 3, 4), 9), ("3", (2, 3, 4, 5), 9)])
def test_space_tables(name: str, choice_nodes: tuple[int, ...], edges: int) -> None:
    space = get_nb1shot1_space(name)
    assert space.input_choice_nodes == choice_nodes
    assert sum(space.num_parents) == edges
    assert space.ops == ("maxpool3x3", "conv3x3-bn-relu", "conv1x1-bn-relu")
    model = NB1Shot1Network(4, 10, 3, space, in_channels=1)
    assert [tuple(a.shape) for a in model.arch_parameters()] == (
        [(space.steps, 3), (1, space.steps + 1)] + [(1, n) for n in choice_nodes])


def test_unknown_space_is_a_user_error() -> None:
    with pytest.raises(UserError, match="choose from 1, 2, 3"):
        get_nb1shot1_space("4")


@pytest.mark.parametrize("name", SPACES)
def test_every_parent_choice_is_a_valid_nb101_cell(name: str) -> None:
    """Exhaustive over the parent choices (ops do not change validity)."""
    space = get_nb1shot1_space(name)
    ops = tuple(itertools.islice(itertools.cycle(space.ops), space.steps))
    for parents in itertools.product(*(space.parent_choices(n)
                                       for n in range(1, space.num_nodes))):
        spec = arch_to_spec(NB1Shot1Arch(name, ops, parents))
        assert spec.num_vertices == MAX_VERTICES
        assert spec.is_valid(), parents
        pruned = spec.pruned()
        assert pruned.num_vertices <= MAX_VERTICES and pruned.array().sum() <= MAX_EDGES


@pytest.mark.parametrize("name", SPACES)
def test_sampled_alphas_convert_to_valid_cells(name: str) -> None:
    space = get_nb1shot1_space(name)
    g = torch.Generator().manual_seed(0)
    model = NB1Shot1Network(4, 10, 3, space, in_channels=1)
    for _ in range(200):
        weights = [torch.randn(a.shape, generator=g) * 3 for a in model.arch_parameters()]
        spec = weights_to_spec(space, weights)
        assert spec.is_valid()
        p = spec.pruned()
        assert p.num_vertices <= 7 and int(p.array().sum()) <= 9
        assert len(spec.hash()) == 32


@pytest.mark.parametrize("name", SPACES)
def test_one_hot_weights_round_trip_to_the_arch(name: str) -> None:
    """from_weights(weights of an arch) gives back that arch: every choice is reachable."""
    space = get_nb1shot1_space(name)
    rng = np.random.default_rng(1)
    for _ in range(50):
        ops = tuple(rng.choice(space.ops) for _ in range(space.steps))
        parents = tuple(space.parent_choices(n)[rng.integers(len(space.parent_choices(n)))]
                        for n in range(1, space.num_nodes))
        arch = NB1Shot1Arch(name, ops, parents)
        mixed = torch.zeros(space.steps, 3)
        for b, op in enumerate(ops):
            mixed[b, space.ops.index(op)] = 1
        output = torch.zeros(1, space.steps + 1)
        output[0, list(parents[-1])] = 1
        inputs = []
        for node in space.input_choice_nodes:
            w = torch.zeros(1, node)
            w[0, list(parents[node - 1])] = 1
            inputs.append(w)
        assert NB1Shot1Arch.from_weights(space, [mixed, output, *inputs]) == arch
        assert NB1Shot1Arch.from_dict(arch.to_dict()) == arch


def test_top_k_ties_go_to_the_lower_index() -> None:
    assert top_k([0.2, 0.5, 0.5, 0.1], 1) == (1,)
    assert top_k([0.3, 0.3, 0.3], 2) == (0, 1)
    assert top_k([0.1, 0.9, 0.5], 2) == (1, 2)


def test_an_arch_outside_its_space_is_refused() -> None:
    with pytest.raises(ValueError, match="node 2 cannot take parents"):
        NB1Shot1Arch("1", ("maxpool3x3",) * 4, ((0,), (0,), (0, 1), (0, 1), (0, 1)))


# -- conversion to NB-101 -----------------------------------------------------------------------
def test_spaces_1_and_2_are_upscaled_with_an_isolated_dummy_before_the_output() -> None:
    arch = NB1Shot1Arch("1", ("conv3x3-bn-relu", "maxpool3x3", "conv1x1-bn-relu",
                              "conv3x3-bn-relu"),
                        ((0,), (0, 1), (1, 2), (0, 3), (2, 4)))
    spec = arch_to_spec(arch)
    a = spec.array()
    assert a.shape == (7, 7) and spec.ops[5] == CONV1X1 and spec.ops[-1] == "output"
    assert a[5].sum() == 0 and a[:, 5].sum() == 0
    assert a[4, 6] == 1 and a[2, 6] == 1  # the output's parents moved to column 6
    small = NB101Spec.create(np.array(arch.adjacency()), ["input", *arch.ops, "output"])
    assert small.hash() == spec.hash()  # the dummy changes nothing after pruning
    assert upscale_to_nasbench_format(np.zeros((7, 7))).shape == (7, 7)


def test_loose_ends_are_pruned() -> None:
    # node 4 feeds nothing (the output takes 0 and 2): pruned away with its op
    arch = NB1Shot1Arch("1", ("conv3x3-bn-relu", "maxpool3x3", "conv1x1-bn-relu",
                              "conv3x3-bn-relu"),
                        ((0,), (0, 1), (0, 2), (1, 3), (0, 2)))
    assert arch.used_blocks() == (1, 2)
    pruned = arch_to_spec(arch).pruned()
    assert pruned.ops == ("input", "conv3x3-bn-relu", "maxpool3x3", "output")


# -- the one-shot model --------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPACES)
def test_model_forward_backward_and_downsampling(name: str) -> None:
    torch.manual_seed(0)
    model = NB1Shot1Network(4, 10, 9, name, in_channels=3)
    pools = [m for m in model.cells if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 2 and all(p.padding == 1 for p in pools)  # before cells 3 and 6
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    assert all(a.grad is not None for a in model.arch_parameters())
    arch_ids = {id(a) for a in model.arch_parameters()}
    assert not arch_ids & {id(p) for p in model.weight_parameters()}
    assert isinstance(model.genotype(), NB1Shot1Arch)


def test_output_weights_select_what_the_cell_passes_on() -> None:
    """With w_out one-hot on the input, the cell's concat part is zero: only proj_out(s0)."""
    torch.manual_seed(0)
    model = NB1Shot1Network(4, 10, 3, "1", in_channels=1).eval()
    cell = model.cells[0]
    s0 = torch.randn(2, 4, 8, 8)
    w = [wi.detach().clone() for wi in model.mixing_weights()]
    w[1] = torch.tensor([[1.0, 0, 0, 0, 0]])
    out = cell(s0, w)
    assert torch.allclose(out, cell.output_projection(s0))
    w[1] = torch.tensor([[0.0, 0, 0, 0, 1]])  # only block 3 (graph node 4): last C channels
    out = cell(s0, w)
    assert torch.count_nonzero(out[:, :12]) == 0 and torch.count_nonzero(out[:, 12:]) > 0


@pytest.mark.parametrize("name", SPACES)
def test_second_order_architect_moves_every_alpha_tensor(name: str) -> None:
    torch.manual_seed(0)
    model = NB1Shot1Network(4, 10, 3, name, in_channels=1)
    opt = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9)
    arch = Architect(model, arch_learning_rate=1e-2, unrolled=True)
    before = [a.detach().clone() for a in model.arch_parameters()]
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    arch.step(x, y, x, y, 0.025, opt)
    assert all(not torch.equal(b, a) for b, a in zip(before, model.arch_parameters()))


@pytest.mark.parametrize("attack", [RandomSmoothing(0.3, 10), LinfPGD(0.3, 10, steps=2)])
def test_perturbations_cover_input_and_output_alphas(attack) -> None:
    torch.manual_seed(0)
    model = NB1Shot1Network(4, 10, 3, "3", in_channels=1)
    weights = tuple(w.detach() for w in model.mixing_weights())
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    out = perturb(attack, model, weights, x, y, epoch=9)
    assert len(out) == len(weights) == 6
    for w, p in zip(weights, out):
        assert p.shape == w.shape
        assert torch.allclose(p.sum(-1), torch.ones(p.shape[0]), atol=1e-6)
        assert (p >= 0).all()
    if isinstance(attack, RandomSmoothing):  # every tensor moved, input/output included
        assert all(not torch.equal(w, p) for w, p in zip(weights, out))


# -- Hessian --------------------------------------------------------------------------------------
def test_alpha_hessian_equals_autograd_hessian_and_keeps_buffers() -> None:
    torch.manual_seed(0)
    model = NB1Shot1Network(3, 10, 3, "2", in_channels=1).double()
    model.train()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (6,))
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    H = alpha_hessian(model, x, y, arch_weight_decay=1e-3)
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n

    alphas = model.arch_parameters()
    shapes = [a.shape for a in alphas]
    flat0 = torch.cat([a.detach().reshape(-1) for a in alphas])

    def objective(flat: torch.Tensor) -> torch.Tensor:
        parts, i = [], 0
        for s in shapes:
            n = int(np.prod(s))
            parts.append(flat[i:i + n].reshape(s))
            i += n
        weights = tuple(torch.softmax(p, dim=-1) for p in parts)
        return model.loss(x, y, weights) + 0.5e-3 * (flat ** 2).sum()

    expected = torch.autograd.functional.hessian(objective, flat0)
    for n, b in model.named_buffers():  # restore what the reference computation moved
        b.copy_(buffers[n])
    assert H.shape == (flat0.numel(), flat0.numel())
    assert torch.allclose(H, expected, atol=1e-8, rtol=1e-6)
    ev = dominant_eigenvalue(H)
    assert ev == pytest.approx(abs(torch.linalg.eigvalsh(expected).max().item()), rel=1e-6)
