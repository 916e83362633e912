"""NAS-Bench-201 building blocks: space, ops, cell strings, supernet, final network, ImageNet16,
benchmark queries through the real nas_201_api. CPU only, small data written by the tests.

Published parameter counts asserted below (NAS-Bench-201 "Params", in millions):
* best CIFAR-10 cell |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|
  nor_conv_3x3~1|nor_conv_3x3~2| (arch-index 9930): 1.289 (cifar10-valid, cifar10), 1.294
  (cifar100), 1.296 (ImageNet16-120), from the API printout logged in a public darts-pt style
  genotypes.py (GitHub Jianf-l/hepnas, ``nasbench201/genotypes.py``).
* min / max over all 15,625 cells: cifar10-valid 0.073306 / 1.531546, cifar100 0.079156 /
  1.537396, ImageNet16-120 0.080456 / 1.538696, from a public script over the
  NAS-Bench-201-v1_1-096897 JSON (HPOBench data) and the same bounds in an EvoXBench-based NB201
  benchmark. The max is the all-conv3x3 cell; the min is any conv-free cell (all none / skip /
  pool: no parameters in the cells).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.data import (
    DATASET_STATS,
    IMAGE_SIZE,
    NUM_CLASSES,
    eval_transform,
    get_dataset,
    train_transform,
)
from shared.data.imagenet16 import IMAGENET16_URL, ImageNet16
from shared.errors import UserError
from shared.models.nb201 import NB201InferCell, TinyNetwork, count_parameters
from shared.models.search_nb201 import NB201SearchCell, TinyNetworkDarts
from shared.nb201_arch import NUM_ARCHS, NB201Arch, index_space
from shared.ops import OPS, NorConv, ResNetBasicblock, make_op
from shared.search.architect import Architect
from shared.spaces import (
    NB201_EDGES,
    NB201_MAX_NODES,
    NB201_OPS,
    NB201_SPACES,
    SPACES,
    NB201Space,
    get_nb201_space,
    nb201_edge_key,
)

BEST_C10 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
            "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
README_EXAMPLE = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
                  "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
ALL = {op: NB201Arch((op,) * 6) for op in NB201_OPS}
STRINGS = [
    BEST_C10,
    README_EXAMPLE,
    "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|"
    "+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
]


def sample_archs(n: int, seed: int = 0) -> list[NB201Arch]:
    rng = random.Random(seed)
    return [NB201Arch.from_space_index(rng.randrange(NUM_ARCHS)) for _ in range(n)]


# -- space and ops ----------------------------------------------------------------------------
def test_space_is_autodl_sorted_edge_order_and_darts_spaces_are_untouched():
    keys = [nb201_edge_key(e) for e in NB201_EDGES]
    assert keys == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"] == sorted(keys)
    space = get_nb201_space()
    assert space == NB201Space() and space.name == "nas-bench-201"
    assert space.ops == NB201_OPS and space.num_edges == 6 and space.max_nodes == NB201_MAX_NODES
    assert not set(NB201_SPACES) & set(SPACES)
    with pytest.raises(UserError, match="nas-bench-201"):
        get_nb201_space("nb201")


def test_nor_convs_are_autodl_relu_conv_bn():
    for name, k in (("nor_conv_1x1", 1), ("nor_conv_3x3", 3)):
        op = make_op(name, 8, 1, False)
        relu, conv, bn = op.op
        assert isinstance(relu, nn.ReLU) and conv.bias is None and conv.kernel_size == (k, k)
        assert not bn.affine and bn.track_running_stats
        assert make_op(name, 8, 1, True).op[2].affine
        assert op(torch.randn(2, 8, 5, 5)).shape == (2, 8, 5, 5)


def test_shared_ops_equal_autodl_nb201_ops_at_stride_1():
    x = torch.randn(2, 4, 6, 6)
    x[0, 0, 0, 0] = -3.0
    assert torch.equal(OPS["none"](4, 1, False)(x), x * 0.0)
    assert torch.equal(OPS["skip_connect"](4, 1, False)(x), x)
    pool = OPS["avg_pool_3x3"](4, 1, False)
    assert isinstance(pool, nn.AvgPool2d)  # no BN after it, unlike DARTS' search MixedOp
    want = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    assert torch.equal(pool(x), want)
    assert torch.allclose(want[0, 0, 0, 0], x[0, 0, :2, :2].mean())  # corner: 4 real pixels


def test_resnet_basicblock():
    block = ResNetBasicblock(16, 32, 2)
    assert block(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
    # conv_a 3x3 16->32 + BN, conv_b 3x3 32->32 + BN, shortcut AvgPool + 1x1 conv (no BN).
    c = 16
    assert sum(p.numel() for p in block.parameters()) == 18 * c * c + 36 * c * c + 2 * c * c + 8 * c
    assert isinstance(block.downsample[0], nn.AvgPool2d)
    assert isinstance(ResNetBasicblock(8, 16, 1).downsample, NorConv)
    assert ResNetBasicblock(8, 8, 1).downsample is None


# -- NB201Arch --------------------------------------------------------------------------------
@pytest.mark.parametrize("text", STRINGS)
def test_arch_string_round_trip(text):
    arch = NB201Arch.from_str(text)
    assert arch.tostr() == text == str(arch)
    assert NB201Arch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    assert NB201Arch.from_weights(arch.to_weights()) == arch
    assert NB201Arch.from_space_index(arch.space_index()) == arch


def test_arch_agrees_with_nas_201_api_parsing():
    import nas_201_api as api  # a dependency of the project: never skipped
    for text in STRINGS:
        arch = NB201Arch.from_str(text)
        assert [list(node) for node in api.NASBench201API.str2lists(text)] == arch.node_inputs()


def test_arch_accepts_any_input_order_and_writes_the_canonical_one():
    arch = NB201Arch.from_str(" |nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|"
                              "+|skip_connect~2|skip_connect~0|nor_conv_3x3~1| ")
    assert arch.tostr() == README_EXAMPLE


@pytest.mark.parametrize("bad", [
    "",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|",                     # 2 nodes
    README_EXAMPLE + "+|none~0|",                                             # 4 nodes
    README_EXAMPLE.replace("avg_pool_3x3", "max_pool_3x3"),                  # not an NB201 op
    README_EXAMPLE.replace("skip_connect~2", "skip_connect~3"),              # input not before
    README_EXAMPLE.replace("skip_connect~2", "skip_connect~1"),              # input twice
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",  # missing
    README_EXAMPLE.replace("|+|", "+"),                                       # no bars
    README_EXAMPLE.replace("~0", "-0", 1),                                    # no tilde
    "nor_conv_3x3",
])
def test_bad_arch_strings_are_user_errors(bad):
    with pytest.raises(UserError, match="NB201"):
        NB201Arch.from_str(bad)


def test_bad_arch_values():
    with pytest.raises(UserError):
        NB201Arch(("none",) * 5)
    with pytest.raises(UserError):
        NB201Arch.from_dict({"genotype": BEST_C10})
    with pytest.raises(UserError):
        NB201Arch.from_space_index(NUM_ARCHS)
    with pytest.raises(UserError):
        NB201Arch.from_str(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        NB201Arch.from_weights(torch.zeros(6, 4))


def test_from_weights_keeps_none_and_breaks_ties_to_the_first_op():
    w = torch.full((6, 5), 0.1)
    w[:, 0] = 0.5                     # 'none' wins every edge: NB201 keeps it
    w[2] = torch.tensor([0.2, 0.2, 0.2, 0.4, 0.0])
    w[5] = 0.2                        # tie: first op
    arch = NB201Arch.from_weights(w)
    assert arch.ops == ("none", "none", "nor_conv_3x3", "none", "none", "none")
    onehot = arch.to_weights()
    assert onehot.shape == (6, 5) and torch.equal(onehot.sum(1), torch.ones(6))
    sub = ("skip_connect", "nor_conv_3x3")
    assert NB201Arch.from_weights(torch.tensor([[0.0, 1.0]] * 6), sub) == ALL["nor_conv_3x3"]
    with pytest.raises(UserError, match="not in the space"):
        ALL["none"].to_weights(sub)


def test_enumeration_has_all_15625_cells_once():
    archs = list(index_space())
    assert len(archs) == NUM_ARCHS == 15_625 == len({a.tostr() for a in archs})
    assert [a.space_index() for a in archs[:7]] == list(range(7))
    assert archs[-1] == ALL["avg_pool_3x3"] and archs[0] == ALL["none"]
    assert archs[9_876] == NB201Arch.from_space_index(9_876)


# -- final network ----------------------------------------------------------------------------
def test_final_network_builds_and_runs_for_sampled_and_corner_cells():
    x = torch.randn(2, 3, 32, 32)
    for arch in sample_archs(20) + [ALL["none"], ALL["skip_connect"], ALL["avg_pool_3x3"]]:
        net = TinyNetwork(arch, C=16, N=5, num_classes=10)
        out = net(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        n_conv = {k: sum(op == k for op in arch.ops) for k in ("nor_conv_1x1", "nor_conv_3x3")}
        # stem + 2 ResNet blocks + lastact + classifier, plus each conv edge in 15 cells.
        cells = sum(5 * (n_conv["nor_conv_1x1"] * (c * c + 2 * c)
                         + n_conv["nor_conv_3x3"] * (9 * c * c + 2 * c)) for c in (16, 32, 64))
        assert count_parameters(net) == 73_306 + cells


@pytest.mark.parametrize("dataset,classes,best,lo,hi", [
    ("cifar10", 10, 1.289, 73_306, 1_531_546),
    ("cifar100", 100, 1.294, 79_156, 1_537_396),
    ("ImageNet16-120", 120, 1.296, 80_456, 1_538_696),
])
def test_parameter_counts_equal_the_benchmark(dataset, classes, best, lo, hi):
    count = lambda arch: count_parameters(TinyNetwork(arch, num_classes=classes))  # noqa: E731
    assert round(count(NB201Arch.from_str(BEST_C10)) / 1e6, 3) == best
    assert count(ALL["nor_conv_3x3"]) == hi
    for op in ("none", "skip_connect", "avg_pool_3x3"):
        assert count(ALL[op]) == lo


def test_all_none_cell_is_zero_and_none_edges_are_skipped():
    cell = NB201InferCell(ALL["none"], 4)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(cell(x), torch.zeros_like(x))
    arch = NB201Arch.from_str("|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|")
    cell = NB201InferCell(arch, 4)
    assert len(cell.layers) == 6  # AutoDL keeps a module per edge: layers.{e} keys line up
    assert torch.equal(cell(x), torch.zeros_like(x))  # node 2 gets only 'none'


# -- supernet ---------------------------------------------------------------------------------
def tiny_supernet(C=4, N=1, classes=10) -> TinyNetworkDarts:
    return TinyNetworkDarts(C=C, num_classes=classes, N=N)


def batch(n=4, size=8, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_supernet_interface_forward_backward():
    model = TinyNetworkDarts()  # C=16, N=5: 15 search cells, one alpha
    assert len([c for c in model.cells if isinstance(c, NB201SearchCell)]) == 15
    assert model.alpha.shape == (6, 5) and model.alpha.abs().max() < 0.01
    assert model.arch_parameters() == [model.alpha]
    assert all(p is not model.alpha for p in model.weight_parameters())
    assert len(model.weight_parameters()) == len(list(model.parameters())) - 1
    (w,) = model.mixing_weights()
    assert torch.allclose(w, F.softmax(model.alpha, -1))
    x, y = batch(2, 32)
    loss = model.loss(x, y)
    loss.backward()
    assert model.alpha.grad is not None and model.alpha.grad.abs().sum() > 0
    assert model.stem[0].weight.grad is not None
    assert isinstance(model.genotype(), NB201Arch)
    assert model(x).shape == (2, 10)
    assert TinyNetworkDarts(C=4, num_classes=3, N=1, in_channels=1)(torch.randn(2, 1, 8, 8)).shape \
        == (2, 3)


def test_mixing_transform_hook_reaches_forward_and_genotype():
    model = tiny_supernet().eval()
    x, _ = batch()
    arch = NB201Arch.from_str(README_EXAMPLE)
    projected = arch.to_weights()
    model.mixing_transform = lambda plain: (projected,)
    assert torch.equal(model.mixing_weights()[0], projected)
    assert model.genotype() == arch
    assert torch.equal(model(x), model(x, (projected,)))
    model.mixing_transform = None
    assert not torch.equal(model(x), model(x, (projected,)))
    with pytest.raises(TypeError, match="tuple that mixing_weights"):
        model(x, projected)  # type: ignore[arg-type]


def test_none_only_weights_give_zero_cell_output():
    cell = NB201SearchCell(4, get_nb201_space())
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(cell(x, ALL["none"].to_weights()), torch.zeros_like(x))


def _copy_supernet_into(final: TinyNetwork, supernet: TinyNetworkDarts, arch: NB201Arch) -> None:
    """Load the supernet's weights of the chosen ops into the final network (AutoDL key layout)."""
    source = supernet.state_dict()
    target = final.state_dict()
    for name in target:
        src = name
        if ".layers." in name:
            head, rest = name.split(".layers.", 1)
            e, tail = rest.split(".", 1)
            op_index = NB201_OPS.index(arch.ops[int(e)])
            src = f"{head}.edges.{nb201_edge_key(NB201_EDGES[int(e)])}.{op_index}.{tail}"
        if src in source:
            target[name] = source[src].clone()
        else:  # affine BN weight / bias in the final net: the supernet's are the identity (1, 0)
            assert name.endswith((".weight", ".bias")) and ".op.2." in name, name
    final.load_state_dict(target)


@pytest.mark.parametrize("arch", [NB201Arch.from_str(BEST_C10), NB201Arch.from_str(README_EXAMPLE)]
                         + sample_archs(3, seed=1))
def test_one_hot_supernet_computes_the_final_network(arch):
    supernet = tiny_supernet(C=4, N=2)
    x, _ = batch(4, 16)
    with torch.no_grad():
        supernet.train()(x, (arch.to_weights(),))  # non-trivial BN running statistics
    final = TinyNetwork(arch, C=4, N=2, num_classes=10)
    _copy_supernet_into(final, supernet, arch)
    supernet.eval(), final.eval()
    x2, _ = batch(3, 16, seed=1)
    with torch.no_grad():
        assert torch.allclose(supernet(x2, (arch.to_weights(),)), final(x2), atol=1e-6)


@pytest.mark.parametrize("unrolled", [False, True])
def test_architect_drives_the_nb201_supernet_unchanged(unrolled):
    model = tiny_supernet()
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    model.loss(*batch(seed=2)).backward()  # a momentum buffer for the unrolled step
    optimizer.step()
    architect = Architect(model, unrolled=unrolled)
    weights = [p.detach().clone() for p in model.weight_parameters()]
    alpha = model.alpha.detach().clone()
    (x, y), (xv, yv) = batch(seed=3), batch(seed=4)
    architect.step(x, y, xv, yv, eta=0.025, network_optimizer=optimizer)
    assert not torch.equal(model.alpha, alpha)
    assert all(torch.equal(p, w) for p, w in zip(model.weight_parameters(), weights))


def test_search_loop_runs_the_nb201_supernet(tmp_path):
    from shared.search.loop import SearchLoop

    model = tiny_supernet()
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 2, eta_min=0.001)
    data = [batch(seed=s) for s in range(3)]
    loop = SearchLoop(model, optimizer, scheduler, Architect(model), data, data, data, 2,
                      torch.device("cpu"), logging.getLogger("test_nb201"),
                      str(tmp_path / "checkpoint.pth.tar"), progress=False)
    arch = loop.run()
    assert isinstance(arch, NB201Arch) and loop.history[-1]["genotype"] == arch.to_dict()
    assert (tmp_path / "checkpoint.pth.tar").is_file()


# -- ImageNet16-120 ---------------------------------------------------------------------------
class NoMd5ImageNet16(ImageNet16):
    """The real loader with md5 checks off, so the small files below pass."""

    train_list = [(f, None) for f, _ in ImageNet16.train_list]
    valid_list = [(f, None) for f, _ in ImageNet16.valid_list]


LABELS = [1, 120, 121, 7, 1000, 60]  # 1-based; 121 and 1000 are outside ImageNet16-120


def _fake_imagenet16(root: Path) -> Path:
    """Downsampled-ImageNet pickles in the real layout: data uint8 (N, 768), 1-based labels."""
    folder = root / "imagenet16"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i, (name, _) in enumerate(ImageNet16.train_list + ImageNet16.valid_list):
        data = rng.randint(0, 256, size=(len(LABELS), 3 * 16 * 16)).astype(np.uint8)
        data[0] = np.arange(768) % 241 + i  # a known picture, first of every file
        entry = {"data": data, "labels": list(LABELS)}
        if name.startswith("train"):
            entry["mean"] = data.mean(0)
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    return folder


def test_imagenet16_120_loader_on_files_in_the_real_format(tmp_path):
    _fake_imagenet16(tmp_path)
    train = get_dataset("imagenet16-120", tmp_path, True, None, dataset_cls=NoMd5ImageNet16)
    valid = get_dataset("ImageNet16-120", tmp_path, False, None, dataset_cls=NoMd5ImageNet16)
    assert len(train) == 10 * 4 and len(valid) == 4   # labels 121 and 1000 dropped
    assert train.targets[:4] == [0, 119, 6, 59] == valid.targets
    img, label = valid[0]
    assert img.size == (16, 16) and img.mode == "RGB" and label == 0
    # Channel-major rows become HWC images: ToTensor gives back the row as (3, 16, 16).
    tensor = eval_transform("imagenet16-120").transforms[0](img)
    row = (np.arange(768) % 241 + 10).astype(np.float32) / 255
    assert np.allclose(tensor.numpy(), row.reshape(3, 16, 16))
    x, _ = NoMd5ImageNet16(tmp_path / "imagenet16", True, train_transform("imagenet-16-120"))[0]
    assert x.shape == (3, 16, 16)
    assert NUM_CLASSES["imagenet16-120"] == 120 and IMAGE_SIZE["imagenet16-120"] == 16
    mean, std = DATASET_STATS["imagenet16-120"]
    assert np.allclose(mean, [0.48109804, 0.45749020, 0.40788235])
    assert np.allclose(std, [0.24792157, 0.24023529, 0.25525490])
    steps = [type(t).__name__ for t in train_transform("imagenet16-120").transforms]
    assert steps == ["RandomHorizontalFlip", "RandomCrop", "ToTensor", "Normalize"]
    assert train_transform("imagenet16-120").transforms[1].padding == 2


def test_imagenet16_missing_folder_names_it_and_the_download(tmp_path):
    with pytest.raises(UserError) as err:
        get_dataset("imagenet16-120", tmp_path, True, None)
    assert str(tmp_path / "imagenet16") in str(err.value) and IMAGENET16_URL in str(err.value)


def test_imagenet16_incomplete_corrupt_or_bad_checksum(tmp_path):
    folder = _fake_imagenet16(tmp_path)
    with pytest.raises(UserError, match="md5 mismatch"):  # the real loader checks AutoDL's md5s
        ImageNet16(folder, False)
    (folder / "train_data_batch_7").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="train_data_batch_7"):
        NoMd5ImageNet16(folder, True)
    (folder / "val_data").unlink()
    with pytest.raises(UserError, match="missing val_data"):
        NoMd5ImageNet16(folder, True)  # AutoDL requires all 11 files for either split


# -- benchmark API ----------------------------------------------------------------------------
API_ARCHS = [BEST_C10, README_EXAMPLE, ALL["none"].tostr()]
# dataset -> eval sets it has, in the v1_0 layout (cifar10 has only ori-test besides train)
API_SETS = {"cifar10-valid": ("x-valid",), "cifar10": ("ori-test",),
            "cifar100": ("x-valid", "x-test", "ori-test"),
            "ImageNet16-120": ("x-valid", "x-test", "ori-test")}


SET_CODES = {"train": 0.0, "x-valid": 0.1, "x-test": 0.2, "ori-test": 0.3}


def _acc(index: int, dataset: str, set_name: str, shift: float) -> float:
    """Final-epoch accuracy stored for a trial: distinct per arch, data set, set and seed."""
    return 10.0 * index + list(API_SETS).index(dataset) + SET_CODES[set_name] + shift


def _expected(index: int, dataset: str, set_name: str) -> float:
    """get_more_info(is_random=False) averages the two seeds (shifts 0 and 0.5)."""
    return float(np.mean([_acc(index, dataset, set_name, s) for s in (0.0, 0.5)]))


def _write_benchmark(path: Path, extra: object = None) -> None:
    """A small benchmark file built with the package's own classes, in the layout it loads."""
    import nas_201_api as api
    epochs = 3
    arch2infos = {}
    for index, arch_str in enumerate(API_ARCHS):
        full = api.ArchResults(index, arch_str)
        less = api.ArchResults(index, arch_str)
        for dataset, sets in API_SETS.items():
            for seed, shift in ((777, 0.0), (888, 0.5)):
                final = {s: _acc(index, dataset, s, shift) for s in ("train",) + sets}
                # earlier epochs differ, so a wrong epoch would show
                curve = lambda v: {e: v - (epochs - 1 - e) for e in range(epochs)}  # noqa: E731
                result = api.ResultsCount(dataset, None, curve(final["train"]),
                                          {e: 1.0 for e in range(epochs)}, 0.1, 10.0,
                                          {"arch_str": arch_str}, seed, epochs, None)
                for s in sets:
                    result.update_OLD_eval(s, curve(final[s]), {e: 1.0 for e in range(epochs)})
                full.update(dataset, seed, result)
                if dataset == "cifar10-valid":  # v1_0: 12-epoch results on cifar10-valid only
                    less.update(dataset, seed, api.ResultsCount.create_from_state_dict(
                        result.state_dict()))
        arch2infos[index] = {"less": less.state_dict(), "full": full.state_dict()}
    data = {"meta_archs": list(API_ARCHS) + [ALL["skip_connect"].tostr()],  # last: unevaluated
            "arch2infos": arch2infos, "evaluated_indexes": list(range(len(API_ARCHS)))}
    if extra is not None:
        data["extra"] = extra
    torch.save(data, path)


def test_benchmark_query_reads_the_package_structurally(tmp_path, caplog):
    from shared.nb201_api import QUERY_KEYS, NB201Benchmark

    path = tmp_path / "NAS-Bench-201-v1_0-e61699.pth"
    _write_benchmark(path)
    with caplog.at_level(logging.INFO, logger="shared.nb201_api"):
        bench = NB201Benchmark.open(path, required=True)  # plain containers: weights-only
    assert bench is not None and not caplog.records
    for index, text in enumerate(API_ARCHS):
        arch = NB201Arch.from_str(text)
        assert bench.index(arch) == index
        got = bench.query(arch)
        assert tuple(got) == QUERY_KEYS
        names = {"train": "train", "valid": "x-valid"}
        for key, value in got.items():
            dataset, split = key.split("/")
            set_name = names.get(split) or ("ori-test" if dataset == "cifar10" else "x-test")
            assert value == pytest.approx(_expected(index, dataset, set_name)), key
    with pytest.raises(UserError, match="no 200-epoch results"):
        bench.query(ALL["skip_connect"])      # listed in meta_archs, never evaluated
    with pytest.raises(UserError, match="not in"):
        bench.query(ALL["nor_conv_1x1"])      # not in this (small) file at all


def test_benchmark_absent_file_is_none_with_one_message(tmp_path, caplog):
    from shared.nb201_api import BENCHMARK_FILE, NB201Benchmark

    path = tmp_path / BENCHMARK_FILE
    with caplog.at_level(logging.INFO, logger="shared.nb201_api"):
        assert NB201Benchmark.open(path) is None
    assert len(caplog.records) == 1
    assert str(path) in caplog.text and "drive.google.com" in caplog.text


def test_benchmark_corrupt_wrong_or_pickled_files(tmp_path, monkeypatch):
    from shared.nb201_api import NB201Benchmark

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="corrupt"):
        NB201Benchmark.open(corrupt)
    good = tmp_path / "good.pth"
    _write_benchmark(good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    with pytest.raises(UserError, match=r"not a complete PyTorch file: .*download .* again") as e:
        NB201Benchmark.open(truncated)
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)
    wrong = tmp_path / "wrong.pth"
    torch.save({"meta_archs": []}, wrong)
    with pytest.raises(UserError, match="not a NAS-Bench-201 benchmark file"):
        NB201Benchmark.open(wrong)
    # A file holding arbitrary Python objects would need full unpickling, which is never done.
    pickled = tmp_path / "pickled.pth"
    _write_benchmark(pickled, extra=argparse.Namespace(note="not weights-only"))
    with pytest.raises(UserError, match="holds the Python object argparse.Namespace") as e:
        NB201Benchmark.open(pickled)
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)
    assert "drive.google.com" in str(e.value)
    monkeypatch.setitem(sys.modules, "nas_201_api", None)
    with pytest.raises(UserError, match="pip install nas-bench-201"):
        NB201Benchmark.open(good)


class _Payload:
    """Pickles as a call of ``os.system``: what a crafted benchmark file would hold."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _numpy_floats(value):
    """``value`` with every float a numpy float64 (a benchmark saved with numpy numbers)."""
    if isinstance(value, float):
        return np.float64(value)
    if isinstance(value, dict):
        return {k: _numpy_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy_floats(v) for v in value)
    return value


def test_benchmark_file_is_never_unpickled(tmp_path, caplog):
    from shared.nb201_api import BENCHMARK_FILE, BENCHMARK_URL, NB201Benchmark

    # (a) a payload: refused by name, one line, and never run
    marker = tmp_path / "marker"
    payload = tmp_path / "payload.pth"
    torch.save({"meta_archs": _Payload(f"touch {marker}")}, payload)
    with pytest.raises(UserError) as e:
        NB201Benchmark.open(payload, required=True)
    message = str(e.value)
    assert f"holds the Python object {os.system.__module__}.system" in message  # posix.system
    assert "weights_only" not in message and "\n" not in message
    assert "was run" in message and BENCHMARK_URL in message
    assert not marker.exists()
    probe = tmp_path / "probe"  # the payload is real: a full unpickle would run it
    pickle.loads(pickle.dumps(_Payload(f"touch {probe}")))
    assert probe.exists()
    # (b) numpy floats load (numpy's scalar reconstructor is allowlisted), and query as floats
    plain = tmp_path / "plain.pth"
    _write_benchmark(plain)
    numpy_file = tmp_path / "numpy.pth"
    data = _numpy_floats(torch.load(plain, weights_only=True))
    assert isinstance(data["arch2infos"][0]["full"]["all_results"][("cifar10", 777)]
                      ["train_acc1es"][2], np.float64)
    torch.save(data, numpy_file)
    bench = NB201Benchmark.open(numpy_file, required=True)
    arch = NB201Arch.from_str(BEST_C10)
    assert bench is not None
    assert bench.query(arch) == NB201Benchmark.open(plain, required=True).query(arch)
    # (c) a directory is refused always; a missing file when required, else None and a warning
    for required in (True, False):
        with pytest.raises(UserError, match="is a directory; pass the benchmark file"):
            NB201Benchmark.open(tmp_path, required=required)
    missing = tmp_path / BENCHMARK_FILE
    with pytest.raises(UserError, match="not found") as e:
        NB201Benchmark.open(missing, required=True)
    assert str(missing) in str(e.value) and BENCHMARK_URL in str(e.value)
    with caplog.at_level(logging.INFO, logger="shared.nb201_api"):
        assert NB201Benchmark.open(missing, required=False) is None
    assert len(caplog.records) == 1
