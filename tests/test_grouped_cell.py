"""The final network's same-shaped separable convs run together (``grouped_ops``,
shared/models/grouped_cell.py) against the cell running them op by op: the same training
steps (drop-path, the auxiliary head, SGD), running statistics, counters and evaluation
output, in float64; with the statistics laid out together or not; and the launches saved."""
import copy
import io

import pytest
import torch

from shared.genotypes import load_genotype
from shared.models import grouped_cell
from shared.models.candidate import kind, layers
from shared.models.cnn import build_final_network
from shared.models.grouped_cell import CellGroup
from tests.test_final_network_step import _steps as sgd_steps

F64 = dict(rtol=0, atol=1e-12)


def _network(layers=5, genotype="DARTS_V2", dataset="cifar10", C=4):
    torch.manual_seed(0)
    net = build_final_network(load_genotype(genotype), dataset, C, layers, True).double()
    net.drop_path_prob = 0.2
    return net


def _steps(net, steps=2):
    """``steps`` SGD steps (``test_final_network_step``'s), drop-path's draws seeded."""
    torch.manual_seed(2)
    return sgd_steps(net, steps)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], **F64), k
        else:
            assert torch.equal(a[k], b[k]), k


def test_darts_v2s_normal_cell_runs_its_five_separable_convs_as_one_group():
    """DARTS_V2's normal cell: 2 ``sep_conv_3x3`` on c_{k-2}, 3 on c_{k-1}, one group; its
    reduction cell (poolings and identities) none."""
    net = _network()
    normal, reduce = net.cells[0], net.cells[1]
    assert grouped_cell.cell_groups(normal) == [CellGroup((0, 2, 1, 3, 4), ((0, 2), (1, 3)))]
    assert grouped_cell.cell_groups(reduce) == []


@pytest.mark.parametrize("laid_out, genotype", [(True, "DARTS_V2"), (False, "DARTS_V2"),
                                               (True, "c10_s1_random")],
                         ids=["joined", "not joined", "dilated convs"])
def test_grouped_ops_train_as_the_cell_op_by_op(laid_out, genotype):
    """Two training steps (drop-path, auxiliary head, SGD with momentum and weight decay):
    the weights, running statistics and counters equal the per-op cell's in float64, and so
    does the evaluation-mode output; where the running statistics do not lie together (a
    buffer replaced), their updates are written back, not lost. SDARTS-RS' S1 genotype on
    CIFAR-10 groups dilated convs too."""
    plain = _network(genotype=genotype)
    kinds = {kind(plain.cells[c]._ops[g.ops[0]]) for c in range(len(plain.cells))
             for g in grouped_cell.cell_groups(plain.cells[c])}
    assert kinds == ({"sep"} if genotype == "DARTS_V2" else {"sep", "dil"})
    grouped = copy.deepcopy(plain)
    grouped.grouped_ops = True
    if not laid_out:
        bn = layers(grouped.cells[0]._ops[0])[5]  # its last BN
        bn.running_mean = bn.running_mean.clone()
    _assert_same(_steps(grouped), _steps(plain))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(grouped.eval()(x)[0], plain.eval()(x)[0], **F64)


def test_the_imagenet_network_groups_as_well():
    """NetworkImageNet (two stems, 224x224): a training step grouped equals the per-op one in
    float64, and its door takes ``--grouped_ops``."""
    from sdarts.sota.cnn import train_imagenet

    torch.manual_seed(0)
    plain = build_final_network(load_genotype("DARTS_V2"), "imagenet", 4, 5, True).double()
    plain.drop_path_prob = 0.2
    grouped = copy.deepcopy(plain)
    grouped.grouped_ops = True
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 224, 224, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (2,), generator=g)
    for net in (plain, grouped):
        torch.manual_seed(2)
        logits, aux = net(x)
        (torch.nn.functional.cross_entropy(logits, y)
         + 0.4 * torch.nn.functional.cross_entropy(aux, y)).backward()
        torch.optim.SGD(net.parameters(), 0.1).step()
    _assert_same(grouped.state_dict(), plain.state_dict())
    args = train_imagenet.build_parser().parse_args(["--grouped_ops"])
    assert train_imagenet.to_config(args).grouped_ops is True


def test_grouped_ops_survive_a_cast_and_a_checkpoint():
    """Cast after grouping (new tensors: laid out again) and a state_dict round trip
    (``weights_only``) into a grouped network: the same output as op by op."""
    plain = _network(layers=3).float()
    grouped = copy.deepcopy(plain)
    grouped.grouped_ops = True
    grouped.double()
    plain.double()
    buffer = io.BytesIO()
    torch.save(grouped.state_dict(), buffer)
    other = _network(layers=3)
    other.grouped_ops = True
    other.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    _assert_same(_steps(other), _steps(plain))


def test_grouped_ops_launch_fewer_kernels():
    """``bench/kernel_count.py --eval``'s step: grouped, the 18 normal cells' five separable
    convs as one group each, drop-path's products too."""
    from argparse import Namespace

    from bench import kernel_count

    args = Namespace(init_channels=4, eval_arch="DARTS_V2")
    plain = kernel_count.count_eval_step("cuda", args)
    grouped = kernel_count.count_eval_step("cuda", args, grouped=True)
    # 18 cells: 5 ops x 4 convolutions -> 4 (and in the backward, as many fewer again)
    assert plain["convolution"] - grouped["convolution"] == 18 * (5 - 1) * 4
    # and drop-path: the group's factors stacked once, one product forward and backward,
    # where op by op (drop_path.dropped_sum) each normal cell's two nodes of two separable
    # convs take a product and an addcmul forward and one product backward, its node of a
    # separable conv and a skip an addcmul forward and a product backward (the grouped cell
    # adds the group's outputs and the skip)
    assert plain["mul"] - grouped["mul"] == 18 * (2 * 2 + 1 - 2)
    assert plain["addcmul"] - grouped["addcmul"] == 18 * (2 + 1)
    assert grouped["stack"] - plain["stack"] == 18
    assert sum(grouped.values()) < 0.6 * sum(plain.values())


@pytest.mark.parametrize("door", ["sdarts", "darts_pt", "stacnas"])
def test_the_evaluation_doors_take_grouped_ops(door) -> None:
    """``--grouped_ops`` on SmoothDARTS' (and Λ-DARTS') ``train.py``, DARTS-PT's ``train.py``
    and StacNAS' ``augment.py`` reaches the run's configuration; ``run_all.py`` hands it to
    the augment stage only."""
    from shared.cli.config import config_from_args
    from shared.evaluation.config import EvalConfig

    if door == "sdarts":
        from shared.evaluation.cli import build_train_door_parser
        args = build_train_door_parser().parse_args(["--grouped_ops"])
        assert config_from_args(EvalConfig, args).grouped_ops is True
        assert build_train_door_parser().parse_args([]).grouped_ops is False
    elif door == "darts_pt":
        from darts_pt.sota.cnn import train
        assert train.to_config(train.build_parser().parse_args(["--grouped_ops"])).grouped_ops
    else:
        from shared.cli.parser import parse
        from stacnas import augment, run_all

        args = augment.build_parser().parse_args(["--name", "x", "--genotype", "DARTS_V2",
                                                  "--grouped_ops"])
        assert augment.eval_config(args).grouped_ops is True
        args, _ = parse(run_all.build_parser(), ["--grouped_ops", "--test"])
        args.save_dir = "x"
        stages = {stage: argv for stage, _, argv in run_all.stage_commands(args)}
        assert "--grouped_ops" in stages["augment"]
        assert all("--grouped_ops" not in f for s, f in stages.items() if s != "augment")


def _ddp_steps(dp, folder, grouped: bool = True) -> dict:
    """Two DDP training steps of DARTS_V2 (3 cells) on this rank's half of a batch of 6, in
    float64; grouped or op by op. (Three samples a rank: over two, a BN's statistics magnify
    a rounding apart, as drop-path's ``addcmul`` op by op against the group's product and
    sum, to 6e-12 in two steps.)"""
    net = _network(layers=3)
    net.grouped_ops = grouped
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    optimizer = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (6,), generator=g)
        x, y = x[dp.rank::dp.world_size], y[dp.rank::dp.world_size]
        optimizer.zero_grad()
        logits, aux = ddp(x)
        (torch.nn.functional.cross_entropy(logits, y)
         + 0.4 * torch.nn.functional.cross_entropy(aux, y)).backward()
        optimizer.step()
    return {k: v.clone() for k, v in net.state_dict().items()}


def _ddp_plain_steps(dp, folder) -> dict:
    return _ddp_steps(dp, folder, grouped=False)


@pytest.mark.slow
def test_grouped_ops_under_ddp_train_as_op_by_op(tmp_path):
    """Two gloo processes under DDP (what ``torchrun ... train.py --grouped_ops`` runs):
    DDP broadcasts rank 0's buffers before every forward into the joined running statistics'
    views and all-reduces the joined kernels' gradients; the weights and statistics equal the
    per-op network's under DDP in float64, on each rank (whose running statistics are its
    own shard's since the last broadcast)."""
    from tests.conftest import run_ranks

    (tmp_path / "g").mkdir()
    (tmp_path / "p").mkdir()
    grouped = run_ranks(_ddp_steps, tmp_path / "g")
    plain = run_ranks(_ddp_plain_steps, tmp_path / "p")
    for rank in (0, 1):
        _assert_same(grouped[rank], plain[rank])
    assert torch.equal(grouped[0]["cells.0._ops.0.0.1.weight"],
                       grouped[1]["cells.0._ops.0.0.1.weight"])
