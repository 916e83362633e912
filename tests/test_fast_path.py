"""The fast supernet path (``Network(fast=True)``, shared/models/fast_mixed.py) against the
plain per-candidate reference (``fast=False``): same logits, same weight and mixing-weight
gradients, same BN running statistics, same state_dict layout, on every space.

Exactness is checked in float64 (agreement to ~1e-14: the rewrites are identities). In fp32
the logits and BN statistics agree to ~1e-6, but gradients through max pooling are not
continuous in the input: where two values of a pooling window are within rounding of each
other, any change of summation order (the plain path itself run channels-last, say) can
send that window's gradient to the other element, which moves weight gradients by up to
~1e-1 relative on a tiny net. So fp32 gradients are compared on the spaces without
max pooling (s2, s3, s4), and everything else on every space in float64."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from shared.models import cell_scales, eval_folds, fast_mixed, node_sum
from shared.models.fast_mixed import embed_dilated, poly_in, poly_out
from shared.models.grouped_edges import copies, kernels
from shared.models.search_cnn import Network
from shared.search.architect import Architect
from shared.spaces import NUM_EDGES, SPACES, CellSpace

RTOL, ATOL = 1e-4, 1e-5


def pair(space, C=4, layers=5, in_channels=3, dtype=torch.float32):
    """A plain and a fast supernet with identical parameters and buffers."""
    torch.manual_seed(0)
    plain = Network(C, 10, layers, space, in_channels=in_channels, fast=False).to(dtype)
    fast = Network(C, 10, layers, space, in_channels=in_channels, fast=True).to(dtype)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def data(n=4, hw=8, in_channels=3, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, in_channels, hw, hw, generator=g, dtype=dtype),
            torch.randint(0, 10, (n,), generator=g))


def mixing(space, dtype=torch.float32, seed=2):
    """Random positive mixing weights (not softmax: every op, 'none' included, counts)."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(NUM_EDGES, space.num_ops(r), generator=g, dtype=dtype)
                 .requires_grad_() for r in (False, True))


def assert_close(got, want, rtol=RTOL, atol=ATOL, what=""):
    """Norm-wise: max |got - want| <= atol + rtol * max |want| (tiny BN nets amplify fp32
    rounding on individual near-zero entries; a wrong rewrite is off by O(1))."""
    assert got.shape == want.shape, what
    err = (got.double() - want.double()).abs().max().item()
    bound = atol + rtol * want.double().abs().max().item()
    assert err <= bound, f"{what}: max abs diff {err:.3e} > {bound:.3e}"


def run(model, x, y, seed=3, **kwargs):
    """Logits, weight gradients and the mixing weights' gradients of one training step."""
    torch.manual_seed(seed)  # the S4 'noise' op draws from the global RNG
    model.zero_grad(set_to_none=True)
    logits = model(x, **kwargs)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad for n, p in model.named_weight_parameters()}


def assert_same_step(plain, fast, x, y, weights_key, make_weights, **tol):
    outs = []
    for model in (plain, fast):
        w = make_weights()
        logits, grads = run(model, x, y, **{weights_key: w})
        outs.append((logits, grads, [t.grad for t in w]))
    (la, ga, wa), (lb, gb, wb) = outs
    assert_close(lb, la, what="logits", **tol)
    assert ga.keys() == gb.keys()
    for n in ga:
        assert_close(gb[n], ga[n], what=f"grad {n}", **tol)
    for i, (a, b) in enumerate(zip(wa, wb)):
        assert_close(b, a, what=f"mixing-weight grad {i}", **tol)
    assert_buffers_equal(plain, fast, **tol)


def assert_buffers_equal(plain, fast, **tol):
    bp, bf = dict(plain.named_buffers()), dict(fast.named_buffers())
    assert bp.keys() == bf.keys()
    for n in bp:
        if n.endswith("num_batches_tracked"):
            assert torch.equal(bp[n], bf[n]), n
        else:
            assert_close(bf[n], bp[n], what=f"buffer {n}", **tol)


F64 = dict(rtol=1e-10, atol=1e-12)
# CI runs on the CPU; where a GPU is present the main exactness test runs there too.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MAX_POOL_FREE = [n for n, s in SPACES.items()
                 if not any("max_pool" in op for row in s.normal + s.reduce for op in row)]


def fixed_weights(space, dtype=torch.float32):
    w0 = mixing(space, dtype)
    return lambda: tuple(w.detach().clone().requires_grad_() for w in w0)


# -- exactness ----------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(SPACES))
def test_same_logits_grads_and_running_stats_on_every_space(name, device):
    space = SPACES[name]
    plain, fast = pair(space, dtype=torch.float64)
    plain, fast = plain.to(device), fast.to(device)
    x, y = (t.to(device) for t in data(dtype=torch.float64))
    make = fixed_weights(space, torch.float64)
    assert_same_step(plain, fast, x, y, "weights",
                     lambda: tuple(w.detach().to(device).requires_grad_() for w in make()),
                     **F64)


@pytest.mark.parametrize("name", list(SPACES))
def test_fp32_logits_and_running_stats_within_float_tolerance(name):
    space = SPACES[name]
    plain, fast = pair(space)
    x, y = data()
    make = fixed_weights(space)
    la, _ = run(plain, x, y, weights=make())
    lb, _ = run(fast, x, y, weights=make())
    assert_close(lb, la, what="logits")
    assert_buffers_equal(plain, fast)


@pytest.mark.parametrize("name", MAX_POOL_FREE)
def test_fp32_gradients_within_float_tolerance(name):
    space = SPACES[name]
    plain, fast = pair(space)
    x, y = data()
    assert_same_step(plain, fast, x, y, "weights", fixed_weights(space))


@pytest.mark.parametrize("name", ["s5", "darts"])
def test_polyphase_dilated_path_at_16x16(name):
    # 16x16 cells send dil_conv_5x5 through the polyphase rewrite (8x8 and below: dense 9x9)
    space = SPACES[name]
    plain, fast = pair(space, layers=3, dtype=torch.float64)
    x, y = data(hw=16, dtype=torch.float64)
    assert_same_step(plain, fast, x, y, "weights", fixed_weights(space, torch.float64), **F64)


def test_odd_spatial_size_and_default_softmax_alpha():
    # 12x12 -> 6x6 -> 3x3: the 3x3 cells fall back from the polyphase rewrite (the plain
    # path's FactorizedReduce needs even sizes at its input, so odd ones come last)
    space = SPACES["darts"]
    plain, fast = pair(space, dtype=torch.float64)
    x, y = data(hw=12, dtype=torch.float64)
    la, ga = run(plain, x, y)
    lb, gb = run(fast, x, y)
    assert_close(lb, la, what="logits", **F64)
    for n in ga:
        assert_close(gb[n], ga[n], what=n, **F64)
    for a, b in zip(plain.arch_parameters(), fast.arch_parameters()):
        assert_close(b.grad, a.grad, what="alpha grad", **F64)


def test_per_cell_weights():
    space = SPACES["s1"]  # per-edge op lists differ, normal vs reduce differ
    plain, fast = pair(space, dtype=torch.float64)
    x, y = data(dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    fixed = [torch.rand(NUM_EDGES, space.num_ops(c.reduction), generator=g,
                        dtype=torch.float64) for c in plain.cells]
    assert_same_step(plain, fast, x, y, "cell_weights",
                     lambda: [w.clone().requires_grad_() for w in fixed], **F64)


def test_eval_mode_uses_each_edges_running_stats():
    space = SPACES["darts"]
    plain, fast = pair(space, dtype=torch.float64)
    x, y = data(dtype=torch.float64)
    for _ in range(2):  # move the running statistics away from their init, alike
        run(plain, x, y)
        run(fast, x, y)
    assert_buffers_equal(plain, fast, **F64)
    plain.eval()
    fast.eval()
    x2, y2 = data(seed=7, dtype=torch.float64)
    assert_same_step(plain, fast, x2, y2, "weights", fixed_weights(space, torch.float64), **F64)
    with torch.no_grad():
        assert_close(fast(x2), plain(x2), what="no_grad eval logits", **F64)


@pytest.mark.parametrize("grouped", [False, True], ids=["fast", "grouped as on cuda"])
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "an eps differs: each its BN"])
def test_eval_mode_poolings_fold_their_bns_into_the_node_sums(fold, grouped, monkeypatch):
    """In evaluation mode each edge's pooling BN reads its own running statistics: where node
    sums are batched (CUDA), the fast path folds them (``eval_folds``: ``a * p`` a weighted
    term, ``-sum a * mean`` one more term of the node), running no BN for them; where their
    eps differ, each runs its BN. Logits, weight and mixing-weight gradients equal the plain
    path's in float64 (statistics moved by two training steps first, so that every edge's
    differ)."""
    monkeypatch.setattr(node_sum, "BATCHED", {"cpu"})
    monkeypatch.setattr(fast_mixed, "EMBED", {"cpu"} if grouped else set())
    monkeypatch.setattr(fast_mixed, "UNDILATE", set() if grouped else {"cpu"})
    space = SPACES["darts"]
    plain, fast = pair(space, dtype=torch.float64)
    fast.grouped_edges = grouped
    x, y = data(dtype=torch.float64)
    for _ in range(2):
        run(plain, x, y)
        run(fast, x, y)
    pool_bns = {id(m) for cell in fast.cells for mixed in cell._ops for op in mixed._ops
                if fast_mixed.candidate.kind(op) == "pool"
                for m in fast_mixed.candidate.layers(op)[1:]}
    if not fold:
        for net in (plain, fast):
            net.cells[0]._ops[0]._ops[1][1].eps = 2e-5
    pooled_bns = []
    bn = fast_mixed._bn

    def counted(ctx, y, m, scale=None):
        pooled_bns.append(id(m) in pool_bns)
        return bn(ctx, y, m, scale)
    monkeypatch.setattr(fast_mixed, "_bn", counted)
    plain.eval()
    fast.eval()
    x2, y2 = data(seed=7, dtype=torch.float64)
    assert_same_step(plain, fast, x2, y2, "weights", fixed_weights(space, torch.float64), **F64)
    # cell 0 runs its own BNs where an eps differs; the other cells fold theirs
    assert any(pooled_bns) != fold
    assert sum(pooled_bns) == (0 if fold else NUM_EDGES * 2)  # max and avg on each edge


@pytest.mark.parametrize("matmul", [False, True], ids=["products", "NCHW matrix products"])
@pytest.mark.parametrize("grouped", [False, True], ids=["fast", "grouped as on cuda"])
def test_eval_mode_convs_fold_their_last_bns_into_the_node_sums(grouped, matmul, monkeypatch):
    """Where node sums are batched and dilated convs run as they are (CUDA), evaluation mode
    folds each separable and dilated conv's last BN, and each FactorizedReduce candidate's BN,
    into its node's sum as it does the poolings' (``eval_folds``: ``a * y`` a weighted term of
    the op's output before the BN), running none of those BNs (on the grouped path their one
    stacked BN a group either): logits, weight and mixing-weight gradients equal the plain
    path's in float64, the per-channel sums computed as products and reductions or as batched
    matrix products (``node_sum.MATMUL``)."""
    from shared.models import global_batch_norm, grouped_edges

    monkeypatch.setattr(node_sum, "BATCHED", {"cpu"})
    monkeypatch.setattr(node_sum, "MATMUL", {"cpu"} if matmul else set())
    if matmul:  # NCHW, as on CUDA (a channels-last stack has no run of pixels per channel)
        monkeypatch.delitem(fast_mixed.DEVICE_FORMAT, "cpu")
    used = set()

    def spied(name):
        f = getattr(node_sum, name)
        return lambda *a: (used.add(name), f(*a))[1]
    for name in ("_per_channel_matmul", "_per_channel_dots"):  # forward, the scales' backward
        monkeypatch.setattr(node_sum, name, spied(name))
    monkeypatch.setattr(fast_mixed, "EMBED", {"cpu"} if grouped else set())
    monkeypatch.setattr(fast_mixed, "UNDILATE", set())
    space = SPACES["darts"]
    plain, fast = pair(space, dtype=torch.float64)
    fast.grouped_edges = grouped
    x, y = data(dtype=torch.float64)
    for _ in range(2):  # running statistics of every BN moved, each its own
        run(plain, x, y)
        run(fast, x, y)
    last = {id(eval_folds.last_bn(op)) for cell in fast.cells
            for mixed in cell._ops for op in mixed._ops
            if fast_mixed.candidate.kind(op) in ("sep", "dil", "fr")}
    assert len(last) == 2 * 8 + 5 * NUM_EDGES * 4  # 2 reduction cells, 8 FR each
    ran = []
    for module in (fast_mixed, grouped_edges):
        monkeypatch.setattr(module, "batch_norm", lambda m, *a, **k: (
            ran.append(id(m)), global_batch_norm.batch_norm(m, *a, **k))[1])
    plain.eval()
    fast.eval()
    x2, y2 = data(seed=7, dtype=torch.float64)
    assert_same_step(plain, fast, x2, y2, "weights", fixed_weights(space, torch.float64), **F64)
    assert ran and not last & set(ran)  # the middle BNs of separable convs still run
    assert used == ({"_per_channel_matmul", "_per_channel_dots"} if matmul else set())


def test_channels_last_input_gives_the_same_result():
    space = SPACES["s5"]
    plain, fast = pair(space, dtype=torch.float64)
    x, y = data(dtype=torch.float64)
    la, ga = run(plain, x, y)
    lb, gb = run(fast, x.contiguous(memory_format=torch.channels_last), y)
    assert_close(lb, la, what="logits", **F64)
    for n in ga:
        assert_close(gb[n], ga[n], what=n, **F64)


def test_ops_outside_the_spaces_fall_back_or_are_rewritten():
    ops = ("sep_conv_7x7", "conv_7x1_1x7", "conv_3x1_1x3", "dil_conv_3x3", "none")
    rows = tuple(ops for _ in range(NUM_EDGES))
    space = CellSpace("extra", rows, rows)
    plain, fast = pair(space, layers=3, dtype=torch.float64)
    x, y = data(dtype=torch.float64)
    assert_same_step(plain, fast, x, y, "weights", fixed_weights(space, torch.float64), **F64)


# -- functional_call and the second-order architect ----------------------------------------------
def test_functional_call_with_substituted_parameters_and_buffers():
    space = SPACES["darts"]
    plain, fast = pair(space, dtype=torch.float64)
    x, y = data(dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    names = [n for n, _ in plain.named_weight_parameters()]
    shift = {n: 0.05 * torch.randn(p.shape, generator=g, dtype=torch.float64)
             for n, p in plain.named_weight_parameters()}
    results = []
    for model in (plain, fast):
        before = {n: t.detach().clone() for n, t in model.state_dict().items()}
        params = {n: (p.detach() + shift[n]).requires_grad_()
                  for n, p in model.named_weight_parameters()}
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        logits = functional_call(model, {**params, **buffers}, (x,))
        loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, [params[n] for n in names] + model.arch_parameters())
        results.append((logits.detach(), grads, buffers))
        # the real model is untouched: parameters and running statistics
        for n, t in model.state_dict().items():
            assert torch.equal(t, before[n]), n
    (la, ga, ba), (lb, gb, bb) = results
    assert_close(lb, la, what="logits", **F64)
    for i, (a, b) in enumerate(zip(ga, gb)):
        assert_close(b, a, what=f"grad {i}", **F64)
    for n in ba:  # the substituted buffers got the running-statistic updates
        assert_close(bb[n], ba[n], what=n, **F64)


def test_second_order_architect_gradient_matches():
    space = SPACES["s3"]
    plain, fast = pair(space, layers=3, in_channels=1, dtype=torch.float64)
    x_trn, y_trn = data(in_channels=1, seed=11, dtype=torch.float64)
    x_val, y_val = data(in_channels=1, seed=12, dtype=torch.float64)
    grads = []
    for model in (plain, fast):
        opt = torch.optim.SGD(model.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
        torch.manual_seed(0)
        model.loss(x_trn, y_trn).backward()
        opt.step()
        opt.zero_grad()
        arch = Architect(model, momentum=0.9, weight_decay=3e-4, unrolled=True)
        grads.append(arch.unrolled_gradient(x_trn, y_trn, x_val, y_val, 0.1, opt))
    for a, b in zip(*grads):
        assert_close(b, a, what="hypergradient", **F64)


@pytest.mark.parametrize("undilate", [True, False], ids=["rewritten", "dilated"])
@pytest.mark.parametrize("name", list(SPACES))
def test_node_sums_batched_as_on_the_gpu_are_the_plain_path(name, undilate, monkeypatch):
    """On CUDA a node's sums run over stacks of its terms (``node_sum.BATCHED``, with the
    gradients of a state's readers: ``fan_out``) and dilated convs run as they are
    (``fast_mixed.UNDILATE``); run so on the CPU, with and without the CPU's rewrites of
    dilation, they give the plain path's logits, gradients and statistics, grouped or not."""
    monkeypatch.setattr(node_sum, "BATCHED", {"cpu"})
    monkeypatch.setattr(fast_mixed, "UNDILATE", {"cpu"} if undilate else set())
    for grouped in (False, True):
        plain, fast = grouped_pair(SPACES[name]) if grouped else pair(SPACES[name],
                                                                      dtype=torch.float64)
        x, y = data(dtype=torch.float64)
        assert_same_step(plain, fast, x, y, "weights",
                         fixed_weights(SPACES[name], torch.float64), **F64)


@pytest.mark.parametrize("name", ["s5", "s4"])
def test_node_sums_declared_uniform_have_uniform_scales(name, monkeypatch):
    """A node sum read as one matrix-vector product (``uniform``) must have one value per
    scale: so in training, whose scales are mixing weights expanded (the s4 noise op's
    too), and not in evaluation mode, whose folded BNs scale each channel apart."""
    monkeypatch.setattr(node_sum, "BATCHED", {"cpu"})
    seen = []
    weighted_sum = node_sum.weighted_sum

    def spy(scales, terms, plain=(), uniform=False):
        seen.append((uniform, all(bool((s == s.reshape(-1)[0]).all()) for s in scales)))
        return weighted_sum(scales, terms, plain, uniform)
    monkeypatch.setattr(node_sum, "weighted_sum", spy)
    x, _ = data()
    for grouped in (False, True):
        _, fast = pair(SPACES[name])
        fast.grouped_edges = grouped
        for mode in ("train", "eval"):
            seen.clear()
            getattr(fast, mode)()
            fast(x)
            assert seen and all(really for declared, really in seen if declared)
            if mode == "train":
                assert all(declared for declared, _ in seen)
            elif name == "s5":  # the poolings' folded BNs' per-channel factors
                assert not all(really for _, really in seen)


@pytest.mark.parametrize("batched", [False, True])
def test_double_backward_through_the_fast_path(batched, monkeypatch):
    monkeypatch.setattr(node_sum, "BATCHED", {"cpu"} if batched else set())
    # the exact-hypergradient check in test_search_engine differentiates twice
    space = SPACES["s3"]
    plain, fast = pair(space, layers=3, in_channels=1, dtype=torch.float64)
    x, y = data(in_channels=1, dtype=torch.float64)
    out = []
    for model in (plain, fast):
        weights = list(model.weight_parameters())
        gw = torch.autograd.grad(model.loss(x, y), weights, create_graph=True)
        gnorm = sum((g * g).sum() for g in gw)
        out.append(torch.autograd.grad(gnorm, model.arch_parameters()))
    for a, b in zip(*out):
        assert_close(b, a, rtol=1e-8, atol=1e-12, what="d|grad|^2/dalpha")


# -- layout, checkpoints, pieces ------------------------------------------------------------------
def test_state_dict_layout_is_shared_and_checkpoints_interchange():
    plain, fast = pair(SPACES["s1"])
    sp, sf = plain.state_dict(), fast.state_dict()
    assert list(sp) == list(sf)
    assert all(sp[k].shape == sf[k].shape for k in sp)
    assert [n for n, _ in plain.named_weight_parameters()] == \
        [n for n, _ in fast.named_weight_parameters()]
    x, y = data()
    run(fast, x, y)  # change the fast model's running statistics, then move them over
    other = Network(4, 10, 5, SPACES["s1"], fast=False)
    other.load_state_dict(fast.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(),
                                                   fast.state_dict().values()))
    assert fast.genotype() == plain.genotype()


def test_default_is_fast_and_plain_is_a_flag():
    assert Network(4, 10, 3, SPACES["s5"]).fast is True
    assert Network(4, 10, 3, SPACES["s5"], fast=False).fast is False


def test_rewrites_are_exact_identities():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, 6, generator=g, dtype=torch.float64)
    assert torch.equal(poly_out(poly_in(x)), x)
    for k in (3, 5):
        w = torch.randn(5, 1, k, k, generator=g, dtype=torch.float64)
        want = F.conv2d(x, w, None, 1, 2 * (k // 2), 2, 5)
        dense = embed_dilated(w, 2)
        assert dense.shape[-1] == 2 * (k - 1) + 1
        assert torch.allclose(F.conv2d(x, dense, None, 1, k - 1 if k == 3 else 4, 1, 5), want)
        poly = poly_out(F.conv2d(poly_in(x), w, None, 1, k // 2, 1, 5))
        assert torch.allclose(poly, want)
        strided = F.conv2d(x, w, None, 2, 2 * (k // 2), 2, 5)
        assert torch.allclose(F.conv2d(x[:, :, ::2, ::2], w, None, 1, k // 2, 1, 5), strided)


# -- grouped edges (shared/models/grouped_edges.py) ---------------------------------------------
def grouped_pair(space, dtype=torch.float64, **kwargs):
    plain, fast = pair(space, dtype=dtype, **kwargs)
    fast.grouped_edges = True
    return plain, fast


# The CPU's groups (one per kernel size, dilated convs rewritten), the kernel sizes of the
# separable convs merged (``EMBED``), and CUDA's (both kinds merged, dilation as it is)
GROUPINGS = {"cpu": (False, True), "sep sizes merged": (True, True),
             "cuda": (True, False)}


@pytest.fixture(params=list(GROUPINGS))
def grouping(request):
    """Run the grouped path on the CPU as ``request.param`` groups (``GROUPINGS``)."""
    embed, undilate = GROUPINGS[request.param]
    with fast_mixed.embedded("cpu", embed), fast_mixed.undilated("cpu", undilate):
        yield request.param


@pytest.mark.parametrize("name", list(SPACES))
def test_grouped_edges_are_the_plain_path(name, grouping):
    """The separable and dilated convs of every state's edges as one kernel per stage: the
    same logits, gradients, mixing-weight gradients and running statistics as the
    per-candidate path. 8x8 input, 5 cells (8, 8->4, 4, 4->2, 2): dil_conv_3x3 at stride 1
    polyphase, dil_conv_5x5 embedded (components under POLY_MIN_SIDE), both at stride 2 on
    the even pixels; or (CUDA's grouping) dilated as they are, each kind's 3x3 kernels
    embedded in its 5x5 ones."""
    plain, fast = grouped_pair(SPACES[name])
    x, y = data(dtype=torch.float64)
    assert_same_step(plain, fast, x, y, "weights", fixed_weights(SPACES[name], torch.float64),
                     **F64)
    plain.eval()
    fast.eval()
    w = fixed_weights(SPACES[name], torch.float64)()
    logits = []
    for model in (plain, fast):
        torch.manual_seed(3)  # S4's noise op draws in eval mode too
        logits.append(model(x, w))
    assert_close(logits[1], logits[0], what="eval logits", **F64)


@pytest.mark.parametrize("hw, want", [
    (16, {("poly", 5, 16), ("poly", 3, 16), ("even", 5, 16), ("dense", 5, 8), ("poly", 3, 4)}),
    (12, {("poly", 3, 12), ("dense", 5, 12), ("even", 3, 6), ("dense", 3, 3)}),
])
def test_grouped_dilated_convs_under_every_rewrite(hw, want, monkeypatch):
    """The dilated-conv groups run the fast path's rewrite of their shape, on the stacked
    kernels ((rewrite, kernel size, state side) of the groups run, below). 16x16, 3 cells
    (16, 16->8, 8->4): 5x5 polyphase at 16 (components of side 8 = POLY_MIN_SIDE), dense
    below, 3x3 polyphase down to 4, stride 2 on the even pixels; 12x12 (12, 12->6, 6->3):
    the 3x3 states (odd) fall back to the dense kernel. Training and eval mode."""
    seen = set()
    dil_conv, dil_group = fast_mixed._State.dil_conv, fast_mixed.dil_group

    def tagged(st, dw, blocks=None):
        conv, poly = dil_conv(st, dw, blocks)
        mode = "even" if dw.stride[0] == 2 else "poly" if poly else "dense"
        conv.tag = (mode, dw.kernel_size[0], st.x.shape[-1])
        return conv, poly

    def recording(ctx, conv, members, *args):
        seen.add(conv.tag)
        return dil_group(ctx, conv, members, *args)

    monkeypatch.setattr(fast_mixed._State, "dil_conv", tagged)
    monkeypatch.setattr(fast_mixed, "dil_group", recording)
    space = SPACES["darts"]
    plain, fast = grouped_pair(space, layers=3)
    x, y = data(hw=hw, dtype=torch.float64)
    assert_same_step(plain, fast, x, y, "weights", fixed_weights(space, torch.float64), **F64)
    assert want <= seen, seen
    plain.eval()
    fast.eval()
    assert_same_step(plain, fast, x, y, "weights", fixed_weights(space, torch.float64), **F64)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("runs", [((0, 4),), ((0, 3), (1, 2)), ((0, 3), (1, 2), (0, 3), (1, 2)),
                                  ((0, 3), (1, 2), (0, 1))],
                         ids=["one state", "the two inputs", "two sizes", "irregular"])
def test_a_groups_copies_of_its_input(fmt, runs):
    """``grouped_edges.copies``: runs of copies of each state side by side on the channel
    axis, in the states' layout, as ``cat`` makes them; each state's gradient is the sum of
    its copies', in its layout too: one reduction per state where its runs are alike and
    evenly spaced (the two inputs, once per kernel size: ``EMBED``)."""
    xs = [torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=fmt)
          .requires_grad_() for _ in range(1 + max(j for j, _ in runs))]
    y = copies([(xs[j], m) for j, m in runs])
    want_y = torch.cat([xs[j] for j, m in runs for _ in range(m)], dim=1)
    assert torch.equal(y, want_y) and y.is_contiguous(memory_format=fmt)
    g = torch.randn(y.shape, dtype=torch.float64).contiguous(memory_format=fmt)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        got = torch.autograd.grad(y, xs, g)
    want = torch.autograd.grad(want_y, xs, g)
    for gx, w in zip(got, want):
        assert_close(gx, w, what="a state's gradient", **F64)
        assert gx.is_contiguous(memory_format=fmt)
    # irregular: state 0's two runs differ, summed run by run
    reductions = sum(e.count for e in prof.key_averages() if e.key == "aten::sum")
    assert reductions == len(xs) + (len(runs) == 3), reductions


@pytest.mark.parametrize("k, d", [(3, 1), (3, 2)])
@pytest.mark.parametrize("stride", [1, 2])
def test_smaller_kernels_embedded_in_the_widest(k, d, stride):
    """``grouped_edges.kernels``: a group's kernels of two sizes (as their members come, by
    size) as one stack of the widest size; the depthwise conv by it at the widest's padding
    is each conv's own, and the kernels' gradients are theirs."""
    torch.manual_seed(0)
    small = [torch.nn.Conv2d(4, 4, k, stride, d * (k // 2), d, groups=4, bias=False)
             for _ in range(2)]
    wide = [torch.nn.Conv2d(4, 4, k + 2, stride, d * (k // 2 + 1), d, groups=4, bias=False)]
    convs = [c.double() for c in small + wide]
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    stacked = kernels(convs)
    assert stacked.shape == (12, 1, k + 2, k + 2)
    y = F.conv2d(x.repeat(1, 3, 1, 1), stacked, None, stride, convs[-1].padding, d, 12)
    want = torch.cat([c(x) for c in convs], dim=1)
    assert_close(y, want, what="outputs", **F64)
    g = torch.randn(y.shape, dtype=torch.float64)
    got = torch.autograd.grad(y, [c.weight for c in convs], g)
    expected = torch.autograd.grad(want, [c.weight for c in convs], g)
    for a, b in zip(got, expected):
        assert_close(a, b, what="kernel gradients", **F64)


@pytest.mark.parametrize("live", [False, True])
def test_a_grouped_cells_scales_are_blocks_of_one_table(live, grouping, monkeypatch):
    """``fast_mixed._grouped_scales``: every running candidate's mixing weight as C values
    once, either as its own row or as a block of its group's vector (one group per candidate,
    or kind where sizes merge, and state or the two inputs; by kernel size, state, edge), the
    same values as ``cell_scales.scales``; gradients as autograd's of the reference; the
    table's index made once per device (never while a graph records)."""
    torch.manual_seed(0)
    cell = Network(4, 10, 3, SPACES["s5"], fast=True, grouped_edges=True).cells[0]
    edges, ops = len(cell._ops), len(cell._ops[0]._ops)
    state = {}  # edge -> the state it leaves: node i reads states 0 .. i+1
    for i in range(cell._steps):
        state.update({len(state) + j: j for j in range(2 + i)})

    def state_edge(e):
        return state[e], e

    # each candidate's kernel size (3, 5), or its name
    SIZE = {k: op[-1] if op[:3] in ("sep", "dil") else op
            for k, op in enumerate(SPACES["s5"].normal[0])}

    w = torch.rand(edges, ops, dtype=torch.float64, requires_grad=True)  # distinct values
    alive = [[(e + k) % 3 != 0 for k in range(ops)] for e in range(edges)] if live else None
    got = fast_mixed._grouped_scales(cell, w, 4, alive)
    want = cell_scales.scales(w, 4)
    values = w.detach()
    where = {float(values[e, k]): (e, k) for e in range(edges) for k in range(ops)}
    factors = torch.rand(edges, ops, 4, dtype=torch.float64)
    seen, loss = [], 0
    for (e0, k0), vector in got.groups.items():
        blocks = vector.reshape(-1, 4)
        members = [where[float(b[0].detach())] for b in blocks]
        assert members[0] == (e0, k0) and len(members) > 1
        kind = SPACES["s5"].normal[0][k0][:3]
        merged = grouping == "cuda" or (grouping == "sep sizes merged" and kind == "sep")
        assert len({SIZE[k] for _, k in members}) == (2 if merged else 1) or live
        assert members == sorted(members, key=lambda m: (SIZE[m[1]], *state_edge(m[0])))
        for (e, k), b in zip(members, blocks):
            assert torch.equal(b, want[e][k])
            loss = loss + (b * factors[e, k]).sum()
        seen += members
    for e in range(edges):
        for k in range(ops):
            if got.rows[e][k] is not None:
                assert torch.equal(got.rows[e][k], want[e][k])
                loss = loss + (got.rows[e][k] * factors[e, k]).sum()
                seen.append((e, k))
    assert sorted(seen) == [(e, k) for e in range(edges) for k in range(ops)]
    (g,) = torch.autograd.grad(loss, w)
    assert_close(g, factors.sum(-1), what="alpha gradient", **F64)

    def no_copy_to_the_device(*args, **kwargs):
        raise AssertionError("the index is made again")

    monkeypatch.setattr(fast_mixed.torch, "tensor", no_copy_to_the_device)
    fast_mixed._grouped_scales(cell, w, 4, alive)


def test_grouped_edges_launch_fewer_convolutions(monkeypatch):
    """DARTS space: each separable conv is 4 convolutions and 2 BNs per edge, each dilated
    conv 2 convolutions and a BN; grouped, per (state, kind, kernel size): the kernels
    launched (convolutions, 1x1 products, BNs) drop; as on CUDA, per (state, kind), fewer
    still."""
    calls = []

    def counting(real):
        def call(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)
        return call

    _, fast = grouped_pair(SPACES["s5"], dtype=torch.float32)
    x, _ = data()
    w = fixed_weights(SPACES["s5"])()
    for name in ("conv2d", "linear", "batch_norm"):
        monkeypatch.setattr(F, name, counting(getattr(F, name)))
    # a BN whose batch statistics several modules fold in (``batch_statistics.normalised``)
    monkeypatch.setattr(torch, "native_batch_norm", counting(torch.native_batch_norm))
    counts = []
    for grouped, embed in ((False, False), (True, False), (True, True)):
        with fast_mixed.embedded("cpu", embed), fast_mixed.undilated("cpu", not embed):
            fast.grouped_edges = grouped
            calls.clear()
            fast(x, w)
        counts.append(len(calls))
    # per cell and kernel size: the 13 separable convs on edges from states fed to 2+ nodes
    # (4 + 4 + 3 + 2 edges) go from 6 calls each (2 depthwise, 2 1x1, 2 BN) to 6 per group,
    # and the 13 dilated convs from 3 calls each (depthwise, 1x1, BN) to 3 per group (every
    # rewrite of the dilation is one depthwise conv: polyphase or even pixels or embedded);
    # a group per state, the two inputs' edges in one: 3 groups
    cells, sizes = 5, 2
    assert counts[0] - counts[1] == cells * sizes * (6 + 3) * ((4 + 4 + 3 + 2) - 3), counts
    # each kind's two sizes in one group: per cell, 4 runs of each kind (3 groups and the
    # last node's edge) where there were 8
    assert counts[1] - counts[2] == cells * 4 * (6 + 3), counts


def test_grouped_edges_leave_out_candidates_that_do_not_run(grouping):
    """DARTS-PT's skip of candidates at weight 0: a dead separable or dilated conv is not in
    its group (no output, no gradient, no BN update), as in the plain path; a group left with
    one member runs alone; under every grouping (with CUDA's, a state's runs of copies are
    then uneven)."""
    space = SPACES["s5"]
    torch.manual_seed(0)
    plain = Network(4, 10, 5, space, fast=False, skip_zero_weights=True).double()
    fast = Network(4, 10, 5, space, fast=True, skip_zero_weights=True,
                   grouped_edges=True).double()
    fast.load_state_dict(plain.state_dict())
    base = fixed_weights(space, torch.float64)()
    sep = [i for i, op in enumerate(space.normal[0]) if op.startswith("sep_conv")]
    dil = [i for i, op in enumerate(space.normal[0]) if op.startswith("dil_conv")]
    masked = []
    for w in base:
        w = w.detach().clone()
        w[0, sep[0]] = 0.0  # edge 0's first separable conv does not run
        w[2, sep[0]] = 0.0  # nor edge 2's: state 0 has 2 of one size, 3 of the other
        w[5, sep[-1]] = 0.0
        w[1, dil[0]] = 0.0  # state 1's dil_conv_3x3 group: 3 members
        w[8, dil[0]] = 0.0  # state 3 feeds edges 8 and 12: edge 12's runs alone
        w[6, dil[-1]] = 0.0
        masked.append(w)
    x, y = data(dtype=torch.float64)
    (la, ga), (lb, gb) = (run(m, x, y, weights=tuple(t.clone() for t in masked))
                          for m in (plain, fast))
    assert_close(lb, la, what="logits", **F64)
    dead = [n for n, g in ga.items() if g is None]
    assert dead and dead == [n for n, g in gb.items() if g is None]  # not run, not stepped
    for n in ga:
        if ga[n] is not None:
            assert_close(gb[n], ga[n], what=f"grad {n}", **F64)
    assert_buffers_equal(plain, fast, **F64)


@pytest.mark.parametrize("batched", [False, True], ids=["term by term", "batched"])
def test_autocast_keeps_the_node_sums_in_the_autocast_dtype(batched, monkeypatch):
    """The mixing weights come as (C,) fp32 rows (``cell_scales.scales``); multiplied into a
    bf16 term they would promote it, and every node sum, to fp32. The plain path's 0-d weight
    keeps bf16, and so must the fast path (the same logits as before the table); in
    evaluation mode with batched sums too, where the poolings' BNs are folded into them."""
    monkeypatch.setattr(node_sum, "BATCHED", {"cpu"} if batched else set())
    plain, fast = pair(SPACES["s5"])
    dtypes = set()
    node = fast_mixed._node

    def spy(*args):
        out = node(*args)
        dtypes.add(out.dtype)
        return out
    monkeypatch.setattr(fast_mixed, "_node", spy)
    x, _ = data()
    for mode in ("train", "eval"):  # eval, sums batched: the poolings' BNs folded (fp32 factors)
        getattr(plain, mode)(), getattr(fast, mode)()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = plain(x), fast(x)
        assert dtypes == {torch.bfloat16} and a.dtype == b.dtype == torch.bfloat16
        assert (a.float() - b.float()).abs().max() < 0.1
