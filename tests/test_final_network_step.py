"""The final network's training step with fewer launches: drop-path's factors drawn once per
forward (``cnn.drop_path_scales``) and the BN batch counters advanced together
(``shared.models.batch_counters``), against what DARTS' modules do one by one."""
import contextlib
import copy
import functools

import torch
import torch.nn as nn

from shared.genotypes import load_genotype
from shared.models.batch_counters import NetworkCountedBatchNorm2d
from shared.models.cnn import Cell, build_final_network, drop_path_scales


def _network(layers=5):
    torch.manual_seed(0)
    return build_final_network(load_genotype("DARTS_V2"), "cifar10", 4, layers, True).double()


def _steps(net, steps=2):
    optimizer = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(3, 3, 32, 32, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (3,), generator=g)
        optimizer.zero_grad()
        logits, aux = net(x)
        (nn.functional.cross_entropy(logits, y) + 0.4 * nn.functional.cross_entropy(aux, y)
         ).backward()
        optimizer.step()
    return net.state_dict()


def test_counters_advanced_together_are_nn_batch_norm_bit_for_bit():
    """Weights, running statistics and counters after two training steps, and the
    evaluation-mode output, equal those of the same network with plain ``nn.BatchNorm2d``s."""
    counted = _network()
    plain = copy.deepcopy(counted)
    bns = [m for m in plain.modules() if isinstance(m, NetworkCountedBatchNorm2d)]
    assert len(bns) == len(counted._batch_norms) > 0
    for m in bns:
        m.__class__ = nn.BatchNorm2d
    plain._batch_norms = ()
    a, b = _steps(counted), _steps(plain)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(int(m.num_batches_tracked) == 2 for m in counted._batch_norms)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.equal(counted.eval()(x)[0], plain.eval()(x)[0])


def test_a_batch_norm_outside_the_count_counts_itself():
    """A BN with a cumulative average (momentum None) reads its counter: it keeps counting
    itself, and the network does not count it twice."""
    net = _network(layers=3)
    bn = net._batch_norms[0]
    bn.momentum = None
    _steps(net, steps=3)
    assert int(bn.num_batches_tracked) == 3
    assert int(net._batch_norms[1].num_batches_tracked) == 3


def test_drop_path_scales_zero_whole_samples_at_the_rate_and_rescale_the_rest():
    p = 0.3
    torch.manual_seed(0)
    scales = drop_path_scales(50, 400, p, torch.empty(0, dtype=torch.float64))
    assert scales.shape == (50, 400, 1, 1, 1) and scales.dtype == torch.float64
    values = scales.unique()
    assert torch.equal(values, torch.tensor([0.0, 1 / (1 - p)], dtype=torch.float64))
    dropped = (scales == 0).double().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / scales.numel()) ** 0.5  # 5 sigma


def test_a_cell_drops_its_ops_not_its_identities():
    """All factors 0: each node keeps only its identity inputs (DARTS_V2's normal cell: nodes
    2 and 3 add skip(c_{k-2}) to a dropped op); all 1: the cell as without drop-path."""
    torch.manual_seed(0)
    cell = Cell(load_genotype("DARTS_V2"), 8, 8, 4, False, False).double()
    s0, s1 = torch.randn(2, 2, 8, 6, 6, dtype=torch.float64)
    assert cell.droppable == 6
    ones = torch.ones(cell.droppable, 2, 1, 1, 1, dtype=torch.float64)
    assert torch.equal(cell(s0, s1, ones), cell(s0, s1))
    out = cell(s0, s1, torch.zeros_like(ones)).split(4, dim=1)  # concat of nodes 2..5
    skip = cell.preprocess0(s0)
    assert out[0].eq(0).all() and out[1].eq(0).all()
    assert torch.equal(out[2], skip) and torch.equal(out[3], skip)


def test_the_network_draws_one_factor_per_droppable_op_and_sample_in_training_only():
    net = _network(layers=3)
    net.drop_path_prob = 0.5
    seen = []
    for cell in net.cells:
        cell.register_forward_hook(lambda m, args, out: seen.append(args[2]))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    net.train()(x)
    assert [s.shape for s in seen] == [(c.droppable, 2, 1, 1, 1) for c in net.cells]
    seen.clear()
    net.eval()(x)
    assert seen == [None] * len(net.cells)


def test_ops_that_begin_with_the_same_relu_share_it():
    """DARTS_V2's normal cell: two separable convs read c_{k-2} and three c_{k-1}; each
    state's ReLU is computed once for them (the ops' own ReLUs do not run), with the output
    of the op-by-op cell, bit for bit, and its gradients (summed in another order)."""
    torch.manual_seed(0)
    cell = Cell(load_genotype("DARTS_V2"), 8, 8, 4, False, False).double()
    assert cell._shared_relu == (True, True, True, True, True, False, False, False)
    apart = copy.deepcopy(cell)
    apart._shared_relu = (False,) * 8
    relus = []
    for c in (cell, apart):
        for m in c._ops.modules():
            if type(m) is nn.ReLU:
                m.register_forward_hook(lambda *_: relus.append(1))
    s0, s1 = torch.randn(2, 2, 8, 6, 6, dtype=torch.float64, requires_grad=True)
    grads = []
    for c in (cell, apart):
        relus.clear()
        out = c(s0, s1)
        grads.append((out, len(relus), *torch.autograd.grad(out.square().sum(), (s0, s1))))
    (out, seen, *g), (want, seen_apart, *g_apart) = grads
    assert torch.equal(out, want)
    # the ops' ReLU modules: 2 per separable conv, 1 for the dilated one; shared, the five
    # separable convs' first ReLUs give way to two of the states (F.relu, not a module)
    assert (seen, seen_apart) == (6, 11)
    for a, b in zip(g, g_apart):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_a_states_relu_is_taken_once_for_the_two_cells_that_read_it():
    """Cell k's output is read by cell k+1's preprocess1 and cell k+2's preprocess0, both
    beginning with its ReLU (a ``FactorizedReduce`` after a reduction): the network takes it
    once (the preprocessing's own ReLU modules do not run), and trains bit for bit as the
    network whose cells take their own. CIFAR (stem output read by both of cell 0's and by
    cell 1's) and ImageNet (two stems), auxiliary head and drop-path on."""
    relus = []
    for dataset, size in (("cifar10", 32), ("imagenet", 224)):
        torch.manual_seed(0)
        net = build_final_network(load_genotype("DARTS_V2"), dataset, 4, 5, True).double()
        net.drop_path_prob = 0.2
        apart = copy.deepcopy(net)
        for cell in apart.cells:
            cell.reads_relu = (False, False)
        assert all(cell.reads_relu == (True, True) for cell in net.cells)
        for n in (net, apart):
            for cell in n.cells:
                for m in (cell.preprocess0, cell.preprocess1):
                    for r in m.modules():
                        if type(r) is nn.ReLU:
                            r.register_forward_hook(lambda *_: relus.append(1))
        states, seen = [], []
        for n in (net, apart):
            relus.clear()
            torch.manual_seed(1)  # the same drop-path draws
            g = torch.Generator().manual_seed(2)
            optimizer = torch.optim.SGD(n.parameters(), 0.1, momentum=0.9)
            for _ in range(2):
                x = torch.randn(2, 3, size, size, generator=g, dtype=torch.float64)
                y = torch.randint(0, 10, (2,), generator=g)
                optimizer.zero_grad()
                logits, aux = n(x)
                (nn.functional.cross_entropy(logits, y)
                 + 0.4 * nn.functional.cross_entropy(aux, y)).backward()
                optimizer.step()
            states.append(n.state_dict())
            seen.append(len(relus))
        assert seen == [0, 2 * 2 * 5], (dataset, seen)  # 2 steps, 2 preprocessings a cell
        for key, value in states[1].items():
            assert torch.equal(states[0][key], value), (dataset, key)


def test_the_trainer_clips_the_optimizers_list_of_the_models_parameters(monkeypatch):
    """``EvalTrainer.train_step`` clips the gradients of the optimizer's parameters (listed
    already, where ``model.parameters()`` walks every module each step): the same weights,
    bit for bit, as DARTS' ``clip_grad_norm_(model.parameters(), grad_clip)``, with a clip
    small enough to bind; the step walks no module."""
    import types

    from shared.evaluation.config import EvalConfig
    from shared.evaluation.trainer import EvalTrainer

    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    y = torch.tensor([1, 4, 7])
    cfg = EvalConfig(auxiliary=True, layers=5, init_channels=4, grad_clip=1e-3)
    states, walked, walk = [], [], nn.Module.named_modules
    for ours in (True, False):
        net = _network()
        optimizer = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
        if ours:
            trainer = types.SimpleNamespace(
                cfg=cfg, model=net, net=net, cast_once=False, optimizer=optimizer,
                precision=types.SimpleNamespace(autocast=lambda device: contextlib.nullcontext()),
                device=torch.device("cpu"), criterion=nn.CrossEntropyLoss(),
                scaler=torch.amp.GradScaler("cpu", enabled=False))
            trainer._loss = functools.partial(EvalTrainer._loss, trainer)
            monkeypatch.setattr(nn.Module, "named_modules",
                                lambda *a, **k: (walked.append(1), walk(*a, **k))[1])
            EvalTrainer.train_step(trainer, x, y)
            monkeypatch.undo()
            assert not walked
        else:
            optimizer.zero_grad()
            logits, aux = net(x)
            (nn.functional.cross_entropy(logits, y) + cfg.auxiliary_weight
             * nn.functional.cross_entropy(aux, y)).backward()
            norm = nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            assert norm > 100 * cfg.grad_clip  # the clip binds
            optimizer.step()
        states.append(net.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
