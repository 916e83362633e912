"""The engine's pieces: spaces, genotype derivation, the second-order Architect, SDARTS."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from shared.errors import UserError
from shared.genotypes import genotype_from_alpha
from shared.models.search_cnn import Network
from shared.search.architect import Architect
from shared.search.perturbation import LinfPGD, RandomSmoothing, clip_to_simplex, epsilon_at
from shared.spaces import NUM_EDGES, SPACES, edge_inputs, get_space
from tests.conftest import perturb


def tiny(space="s5", C=4, layers=3, dtype=torch.float32):
    return Network(C, 10, layers, get_space(space), in_channels=1).to(dtype)


def batch(n=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 1, 8, 8, generator=g, dtype=dtype),
            torch.randint(0, 10, (n,), generator=g))


# -- spaces ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPACES))
def test_every_space_builds_runs_and_derives_a_legal_genotype(name):
    space = SPACES[name]
    model = tiny(name)
    x, y = batch()
    model.loss(x, y).backward()
    assert model.alphas_normal.shape == (NUM_EDGES, space.num_ops(False))
    assert all(p.grad is not None for p in model.arch_parameters())
    g = model.genotype()
    for cell, pairs in (("normal", g.normal), ("reduce", g.reduce)):
        ops = space.ops(cell == "reduce")
        for node in range(4):
            inputs = [j for _, j in pairs[2 * node: 2 * node + 2]]
            assert len(set(inputs)) == 2 and all(j < 2 + node for j in inputs)
            for op, j in pairs[2 * node: 2 * node + 2]:
                edge = edge_inputs().index((node, j))
                assert op in ops[edge] and op != "none"


def test_s1_edges_match_the_reference_table():
    s1 = SPACES["s1"]
    assert s1.normal[0] == ("skip_connect", "dil_conv_3x3")
    assert s1.normal[5] == ("max_pool_3x3", "skip_connect")
    assert s1.reduce[1] == ("max_pool_3x3", "dil_conv_3x3")
    assert s1.reduce[6] == ("max_pool_3x3", "sep_conv_3x3")
    assert SPACES["s5"].num_ops(False) == 7 and "none" not in SPACES["s5"].normal[0]
    assert SPACES["s4"].normal[0] == ("noise", "sep_conv_3x3")


def test_unknown_space():
    with pytest.raises(UserError, match="s9"):
        get_space("s9")


# -- derivation -----------------------------------------------------------------------------
def test_derivation_on_hand_built_alpha():
    space = SPACES["darts"]  # none, max, avg, skip, sep3, sep5, dil3, dil5
    w = torch.full((NUM_EDGES, 8), 0.01)
    # node 0 (edges 0, 1): both inputs kept whatever their strength
    w[0, 4] = 0.5   # sep_conv_3x3 from input 0
    w[1, 3] = 0.6   # skip from input 1 (stronger -> listed first)
    # node 1 (edges 2..4): 'none' is huge on edge 2 but must be ignored
    w[2, 0] = 0.99
    w[2, 1] = 0.02
    w[3, 5] = 0.7   # sep5 from input 1
    w[4, 6] = 0.3   # dil3 from node 0
    # node 2 (edges 5..8): a tie between edges 6 and 7 goes to the lower input
    w[6, 7] = 0.4
    w[7, 7] = 0.4
    # node 3 (edges 9..13): tie inside an edge: the first maximal op wins
    w[12, 2] = 0.8
    w[12, 3] = 0.8
    w[13, 4] = 0.5
    g = genotype_from_alpha(w, w, space)
    assert g.normal == (("skip_connect", 1), ("sep_conv_3x3", 0),
                        ("sep_conv_5x5", 1), ("dil_conv_3x3", 2),
                        ("dil_conv_5x5", 1), ("dil_conv_5x5", 2),
                        ("avg_pool_3x3", 3), ("sep_conv_3x3", 4))
    assert g.normal_concat == (2, 3, 4, 5)


def test_derivation_uses_each_edges_own_op_list():
    space = SPACES["s1"]
    w = torch.tensor([[0.2, 0.8]] * NUM_EDGES)
    g = genotype_from_alpha(w, w, space)
    assert g.normal[0] == ("dil_conv_3x3", 0) or g.normal[1] == ("dil_conv_3x3", 0)
    assert ("skip_connect", 1) in g.normal[2:4] or ("sep_conv_3x3", 1) in g.normal[2:4]
    assert {op for op, _ in g.reduce[:2]} <= {"avg_pool_3x3", "dil_conv_3x3"}


# -- second order ---------------------------------------------------------------------------
def test_second_order_gradient_matches_exact_hypergradient():
    torch.manual_seed(0)
    model = tiny("s3", dtype=torch.float64)
    x_trn, y_trn = batch(8, torch.float64, seed=1)
    x_val, y_val = batch(8, torch.float64, seed=2)
    eta, momentum, wd = 0.1, 0.9, 3e-4
    opt = torch.optim.SGD(model.weight_parameters(), eta, momentum=momentum, weight_decay=wd)
    model.loss(x_trn, y_trn).backward()  # one step so a momentum buffer exists
    opt.step()
    opt.zero_grad()
    # DARTS' finite-difference step r = 0.01 is coarse for a 4-channel net; a small step in
    # float64 checks that the formula is the exact hypergradient.
    architect = Architect(model, momentum=momentum, weight_decay=wd, unrolled=True,
                          fd_step=1e-5)

    got = architect.unrolled_gradient(x_trn, y_trn, x_val, y_val, eta, opt)

    # Exact: d/dalpha L_val(w - eta (m buf + dL_trn/dw + wd w), alpha) by double backward.
    names, weights = zip(*model.named_weight_parameters())
    alphas = model.arch_parameters()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    loss_trn = F.cross_entropy(functional_call(model, {**buffers}, (x_trn,)), y_trn)
    grads = torch.autograd.grad(loss_trn, weights, create_graph=True)
    unrolled = {n: w.detach() - eta * (opt.state[w]["momentum_buffer"] * momentum + g
                                       + wd * w.detach())
                for n, w, g in zip(names, weights, grads)}
    loss_val = F.cross_entropy(functional_call(model, {**unrolled, **buffers}, (x_val,)), y_val)
    exact = torch.autograd.grad(loss_val, alphas)

    for a, b in zip(got, exact):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7), (a - b).abs().max()
    # and it is not just the first-order gradient at w
    assert not all(torch.allclose(a, b, atol=1e-9)
                   for a, b in zip(got, torch.autograd.grad(model.loss(x_val, y_val), alphas)))


def test_architect_restores_weights_exactly_after_finite_difference():
    model = tiny("s2")
    x, y = batch()
    before = [p.detach().clone() for p in model.weight_parameters()]
    architect = Architect(model, unrolled=True)
    vector = [torch.randn_like(p) for p in model.weight_parameters()]
    architect.hessian_vector_product(vector, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, model.weight_parameters()))


def test_first_order_backward_computes_alphas_gradient_alone():
    """DARTS' architect.py calls ``loss.backward()``, which fills every weight's gradient too
    (the weight step zeroes it unread); here the backward is asked for alpha alone: the same
    alpha gradient, bit for bit, and the weights' ``.grad`` untouched."""
    import copy

    model = tiny()
    reference = copy.deepcopy(model)
    x, y = batch()
    reference.loss(x, y).backward()
    Architect(model).first_order_backward(model.loss(x, y), None)
    for a, b in zip(model.arch_parameters(), reference.arch_parameters()):
        assert torch.equal(a.grad, b.grad)
    assert all(p.grad is None for p in model.weight_parameters())
    assert all(p.grad is not None for p in reference.weight_parameters())


# -- SDARTS ---------------------------------------------------------------------------------
def test_epsilon_schedule():
    assert epsilon_at(0, 50, 0.3) == pytest.approx(0.03)
    assert epsilon_at(49, 50, 0.3) == pytest.approx(0.3 - 0.27 / 50)


def test_clip_to_simplex():
    p = torch.tensor([[0.5, -0.2, 0.9], [-0.1, -0.3, -0.2]])
    q = clip_to_simplex(p)
    assert torch.allclose(q.sum(-1), torch.ones(2))
    assert torch.allclose(q[0], torch.tensor([0.5, 0.0, 0.9]) / 1.4)
    assert torch.equal(q[1], torch.tensor([1.0, 0.0, 0.0]))  # dead row -> its argmax


def test_random_smoothing_noise_is_in_the_ball_and_rows_sum_to_one():
    model = tiny()
    weights = tuple(w.detach() for w in model.mixing_weights())
    rs = RandomSmoothing(0.3, epochs=10)
    for epoch in (0, 5, 9):
        eps = rs.epsilon(epoch)
        torch.manual_seed(epoch)
        out = perturb(rs, model, weights, None, None, epoch)
        torch.manual_seed(epoch)
        noise = [torch.empty_like(w).uniform_(-eps, eps) for w in weights]
        for w, n, o in zip(weights, noise, out):
            assert n.abs().max() <= eps
            assert torch.allclose(o, clip_to_simplex(w + n))
            assert torch.allclose(o.sum(-1), torch.ones(o.size(0)))
            assert (o >= 0).all() and (o <= 1).all()
            assert not torch.allclose(o, w)


@pytest.mark.parametrize("space", ["s5", "s3", "darts"])
def test_pgd_never_lowers_the_loss(space):
    torch.manual_seed(1)
    model = tiny(space)
    model.train()
    pgd = LinfPGD(0.3, epochs=10)
    for seed in range(4):
        x, y = batch(16, seed=seed)
        weights = tuple(w.detach() for w in model.mixing_weights())
        adv, before, after = pgd.attack(model, weights, x, y, eps=0.3)
        model.eval()
        with torch.no_grad():
            clean = F.cross_entropy(model(x, weights), y).item()
            attacked = F.cross_entropy(model(x, adv), y).item()
        model.train()
        assert attacked >= clean - 1e-6
        assert float(before) == pytest.approx(clean, rel=1e-5)
        for a in adv:
            assert torch.allclose(a.sum(-1), torch.ones(a.size(0)), atol=1e-6)
        assert model.training  # train mode restored


def test_pgd_finds_a_worse_point_than_none_on_a_trained_net():
    torch.manual_seed(0)
    model = tiny("s5")
    x, y = batch(32)
    opt = torch.optim.SGD(model.weight_parameters(), 0.1)
    for _ in range(5):
        opt.zero_grad()
        model.loss(x, y).backward()
        opt.step()
    weights = tuple(w.detach() for w in model.mixing_weights())
    adv, before, after = LinfPGD(0.3, 10).attack(model, weights, x, y, eps=0.3)
    assert after > before  # the attack raised the loss, so it was kept
    assert any(not torch.equal(a, w) for a, w in zip(adv, weights))
