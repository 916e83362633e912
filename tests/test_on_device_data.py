"""Data held on the device (``shared.data.on_device``): the batched crop / flip / Cutout has the
distribution of the torchvision pipeline it replaces, image for image the same floats for the
same draw, and the queues serve the search as DARTS' loaders do."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from scipy.stats import binomtest, chi2_contingency, chisquare

from shared.data import get_dataset, train_transform
from shared.data.on_device import (
    AugmentDraw,
    DeviceImages,
    EpochBatches,
    OrderedBatches,
    RandomDeviceBatches,
    Shard,
    batch_augment,
    device_generator,
    device_search_queues,
    resolve_data_on_device,
    to_device_images,
)
from shared.errors import UserError
from tests.test_data import NoMd5CIFAR10, _fake_cifar

CPU = torch.device("cpu")
P_MIN = 1e-4  # seeded draws: a correct pipeline passes with these seeds, a wrong one fails


def _image(seed: int = 0) -> np.ndarray:
    """A CIFAR-like HWC uint8 image with no black pixel (black marks the padding)."""
    return np.random.RandomState(seed).randint(1, 256, (32, 32, 3)).astype(np.uint8)


def _forced(augment, x: torch.Tensor, i: int, j: int, flip: bool, y: int = 0, xc: int = 0,
            cut: bool = False) -> torch.Tensor:
    one = lambda v: torch.tensor([v])  # noqa: E731
    draw = AugmentDraw(one(i), one(j), one(flip), one(y), one(xc), one(cut))
    return augment(x, draw)[0]


def test_crop_and_flip_have_torchvision_s_support_and_distribution() -> None:
    """Every torchvision output is exactly one of the 9 x 9 x 2 (offset, flip) images the batched
    path makes; both pick them uniformly (chi-square) and alike (contingency test)."""
    img = _image()
    augment = batch_augment("cifar10")
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255)
    keys = list(itertools.product(range(9), range(9), (False, True)))
    candidates = torch.stack([_forced(augment, x, *k) for k in keys])
    flat = candidates.reshape(len(keys), -1)

    torch.manual_seed(0)
    reference = train_transform("cifar10")
    pil = Image.fromarray(img)
    n = 20 * len(keys)
    seen_tv = np.zeros(len(keys), dtype=int)
    for _ in range(n):
        out = reference(pil).reshape(1, -1)
        hits = (flat == out).all(dim=1).nonzero().flatten()
        assert len(hits) == 1, "a torchvision output the batched path never makes"
        seen_tv[int(hits[0])] += 1

    draw = augment.draw(n, 32, 32, device_generator(0, CPU))
    seen_dev = np.zeros(len(keys), dtype=int)
    for i, j, f in zip(draw.crop_i.tolist(), draw.crop_j.tolist(), draw.flip.tolist()):
        seen_dev[keys.index((i, j, f))] += 1
    assert chisquare(seen_tv).pvalue > P_MIN
    assert chisquare(seen_dev).pvalue > P_MIN
    assert chi2_contingency(np.stack([seen_tv, seen_dev])).pvalue > P_MIN


def _hole(out: torch.Tensor) -> tuple[int, int] | None:
    """The Cutout centre (y, x) read off a normalised image with no other exact zero."""
    zero = (out == 0).all(dim=0)
    if not zero.any():
        return None
    rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()

    def centre(first: int, last: int, size: int) -> int:  # half-width 8, clipped at borders
        return first + 8 if first > 0 else last + 1 - 8

    return centre(int(rows[0]), int(rows[-1]), 32), centre(int(cols[0]), int(cols[-1]), 32)


@pytest.mark.parametrize("prob", [1.0, 0.5])
def test_cutout_matches_darts_cutout(prob: float) -> None:
    """Cutout(16) after crop + flip: the same hole for the same centre, centres uniform over the
    pixels (rows and columns, chi-square, both paths) and a hole with probability ``prob``."""
    img = _image(1)
    augment = batch_augment("cifar10", cutout=True, cutout_length=16, cutout_prob=prob)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255)
    for y, xc in ((0, 0), (5, 30), (31, 12), (16, 16)):
        out = _forced(augment, x, 4, 4, False, y, xc, True)
        assert _hole(out) == (y, xc)
        plain = _forced(batch_augment("cifar10"), x, 4, 4, False)
        keep = (out != 0).all(dim=0)
        assert torch.equal(out[:, keep], plain[:, keep])

    n = 1600
    torch.manual_seed(1)
    reference = train_transform("cifar10", cutout=True, cutout_length=16, cutout_prob=prob)
    pil = Image.fromarray(img)
    tv = [_hole(reference(pil)) for _ in range(n)]
    g = device_generator(1, CPU)
    dev = [_hole(out) for out in augment(x.expand(n, -1, -1, -1), augment.draw(n, 32, 32, g))]
    for holes in (tv, dev):
        found = [h for h in holes if h is not None]
        assert binomtest(len(found), n, prob).pvalue > P_MIN
        for axis in (0, 1):
            assert chisquare(np.bincount([h[axis] for h in found], minlength=32)).pvalue > P_MIN


def test_digits_crop_without_flip_as_torchvision() -> None:
    """Digits: RandomCrop(8, padding=1) on a float tensor, no flip, same floats."""
    data = get_dataset("digits", "", True, None)
    images = to_device_images(data, "digits", CPU)
    augment = batch_augment("digits")
    assert augment.padding == 1 and not augment.flip
    x = images.pixels(torch.tensor([3]))
    keys = list(itertools.product(range(3), range(3)))
    flat = torch.stack([_forced(augment, x, i, j, False).reshape(-1) for i, j in keys])
    torch.manual_seed(2)
    reference = train_transform("digits")
    seen = np.zeros(len(keys), dtype=int)
    for _ in range(450):
        hits = (flat == reference(data.data[3]).reshape(1, -1)).all(dim=1).nonzero().flatten()
        assert len(hits) == 1
        seen[int(hits[0])] += 1
    assert chisquare(seen).pvalue > P_MIN


def test_cifar_files_load_onto_the_device_as_uint8(tmp_path) -> None:
    """torchvision's CIFAR10 class reads the files; the device copy holds the same pixels."""
    _fake_cifar(tmp_path, 6)
    data = get_dataset("cifar10", tmp_path, True, None, download=False,
                       dataset_cls=NoMd5CIFAR10)
    images = to_device_images(data, "cifar10", CPU)
    assert images.images.dtype == torch.uint8 and images.images.shape == (30, 3, 32, 32)
    x, y = images.eval_batch(torch.tensor([7]))
    expected = T.Compose([T.ToTensor(), T.Normalize(*_stats("cifar10"))])(data[7][0])
    assert torch.equal(x[0], expected) and int(y[0]) == data[7][1]


def _stats(name):
    from shared.data import DATASET_STATS

    return DATASET_STATS[name]


def _toy(n: int = 40) -> DeviceImages:
    images = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 8, 8) / n
    return DeviceImages(images.contiguous(), torch.arange(n), "digits")


def test_queues_serve_full_batches_and_the_split() -> None:
    data = _toy(43)
    augment = batch_augment("digits")
    train, valid, ordered = device_search_queues(data, 0.5, 8, augment,
                                                 device_generator(0, CPU),
                                                 device_generator(1, CPU))
    assert len(train) == 21 // 8 == len(valid)
    for _ in range(2):  # each epoch: full batches, no image twice, only the weight half
        labels = torch.cat([y for x, y in train])
        assert all(x.shape == (8, 1, 8, 8) for x, _ in train)
        assert len(labels) == 16 and len(set(labels.tolist())) == 16
        assert labels.max() < 21
    for _, y in valid:
        assert len(set(y.tolist())) == 8 and y.min() >= 21
    assert torch.cat([y for _, y in ordered]).tolist() == list(range(21, 43))
    assert len(ordered) == 3  # 8 + 8 + 6: the accuracy reads every image
    _, none, also_none = device_search_queues(data, 1.0, 8, augment, device_generator(0, CPU),
                                              device_generator(1, CPU))
    assert none is None and also_none is None
    with pytest.raises(UserError, match="fewer than one batch"):
        EpochBatches(data, range(5), 8, augment, device_generator(0, CPU))


def test_autodl_pairs_on_the_device() -> None:
    """AutoDL's pairing (``shared.data.autodl``) on the device: full weight batches of the
    train split, and per step an alpha batch of the valid split drawn with replacement (so a
    batch larger than the split repeats images), the valid split in order for the accuracy."""
    from shared.data.autodl import device_paired_queues

    data = _toy(43)
    train_idx, valid_idx = list(range(30)), list(range(30, 36))
    train, valid, ordered = device_paired_queues(
        data, train_idx, valid_idx, 8, batch_augment("digits"), device_generator(0, CPU),
        device_generator(1, CPU))
    assert len(train) == len(valid) == 30 // 8
    pairs = [y for _, y in valid]
    assert all(len(y) == 8 and 30 <= y.min() and y.max() < 36 for y in pairs)
    assert all(len(set(y.tolist())) < 8 for y in pairs)  # 8 draws from 6 images: repeats
    seen = torch.cat([torch.cat([y for _, y in valid]) for _ in range(20)])
    assert chisquare(torch.bincount(seen - 30, minlength=6).numpy()).pvalue > P_MIN
    assert torch.cat([y for _, y in ordered]).tolist() == valid_idx


def test_a_pass_keeps_the_short_batch_in_unequal_shards() -> None:
    """DARTS-PT's scoring pass (``PassBatches``): every image once, the last batch short; its
    shards differ by a row and, stacked, are the one-process batch."""
    from shared.data.on_device import PassBatches

    data, augment = _toy(), batch_augment("digits", cutout=True, cutout_length=4)

    def batches(shard):
        return list(PassBatches(data, range(19), 8, augment, device_generator(5, CPU), shard))

    whole = batches(Shard())
    assert [len(y) for _, y in whole] == [8, 8, 3]
    assert sorted(torch.cat([y for _, y in whole]).tolist()) == list(range(19))
    parts = [batches(Shard(r, 2)) for r in range(2)]
    assert [len(y) for _, y in parts[0]] == [4, 4, 1] and [len(y) for _, y in parts[1]] == [4, 4, 2]
    for k, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][k][0], parts[1][k][0]]), x)
        assert torch.equal(torch.cat([parts[0][k][1], parts[1][k][1]]), y)


def test_shards_of_every_rank_make_the_single_process_batch() -> None:
    """Each rank draws the global batch and its augmentation and keeps its rows: the ranks'
    rows, stacked, are the one-process batch bit for bit."""
    data, augment = _toy(), batch_augment("digits", cutout=True, cutout_length=4)

    def batches(queue_cls, shard, **kw):
        q = queue_cls(data, range(40), 8, augment, device_generator(5, CPU), shard=shard, **kw)
        return list(q)

    for cls, kw in ((EpochBatches, {}), (RandomDeviceBatches, {"num_batches": 3})):
        whole = batches(cls, Shard(), **kw)
        parts = [batches(cls, Shard(r, 2), **kw) for r in range(2)]
        for k, (x, y) in enumerate(whole):
            assert torch.equal(torch.cat([parts[0][k][0], parts[1][k][0]]), x)
            assert torch.equal(torch.cat([parts[0][k][1], parts[1][k][1]]), y)
    split = [OrderedBatches(data, range(40), 8, Shard(r, 2)) for r in range(2)]
    labels = sorted(torch.cat([y for q in split for _, y in q]).tolist())
    assert labels == list(range(40))


def test_same_generator_state_same_batches() -> None:
    """The checkpointed generator state replays the stream (what resume relies on)."""
    data, augment = _toy(), batch_augment("digits", cutout=True, cutout_length=4)
    g = device_generator(3, CPU)
    queue = EpochBatches(data, range(40), 8, augment, g)
    list(queue)
    state = g.get_state()
    first = list(queue)
    g.set_state(state)
    again = list(queue)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))


def test_when_the_data_goes_on_the_device() -> None:
    data = get_dataset("digits", "", True, None)
    assert resolve_data_on_device(None, "digits", data, CPU) is False  # auto: CUDA only
    assert resolve_data_on_device(True, "digits", data, CPU) is True
    assert resolve_data_on_device(False, "digits", data, CPU) is False
    with pytest.raises(UserError, match="imagenet is not held on the device"):
        resolve_data_on_device(True, "imagenet", data, CPU)
    with pytest.raises(UserError, match="--auto_aug"):
        resolve_data_on_device(True, "digits", data, CPU, auto_augment=True)
    assert resolve_data_on_device(False, "imagenet", data, CPU) is False


class Interrupt(Exception):
    pass


@pytest.mark.slow  # whole runs, killed and resumed
def test_search_on_device_data_resumes_bit_identically(tmp_path) -> None:
    """A search that holds digits on the device: killed after its first epoch and resumed, it
    ends where an uninterrupted one ends; resuming it through the DataLoader is refused."""
    import json

    from shared.checkpoint import load_checkpoint
    from shared.search.cnn_search import CNNSearchConfig, run_cnn_search

    def cfg(**kw):
        return CNNSearchConfig(dataset="digits", epochs=2, layers=3, init_channels=4,
                               batch_size=128, gpu=-1, search_space="s3", progress=False,
                               plots=False, cutout=True, cutout_length=4, data_on_device=True, **kw)

    run_cnn_search(cfg(), str(tmp_path / "whole"))

    def stop(ctx):
        raise Interrupt

    with pytest.raises(Interrupt):
        run_cnn_search(cfg(), str(tmp_path / "cut"), publish_hooks=[stop])
    with pytest.raises(UserError, match="resume it with --data_on_device"):
        run_cnn_search(cfg().__class__(**{**cfg().__dict__, "data_on_device": False}),
                       str(tmp_path / "cut"), resume=True)
    run_cnn_search(cfg(), str(tmp_path / "cut"), resume=True)

    whole, cut = (load_checkpoint(str(tmp_path / d / "checkpoint.pth.tar"))
                  for d in ("whole", "cut"))
    assert whole["config"]["data_on_device"] is True
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, cut["state_dict"][key]), key
    assert json.loads((tmp_path / "whole" / "history.json").read_text()) == \
        json.loads((tmp_path / "cut" / "history.json").read_text())
    assert "data on device = True" in (tmp_path / "whole" / "log.txt").read_text()


@pytest.mark.slow  # whole runs, killed and resumed
def test_evaluation_on_device_data_resumes_bit_identically(tmp_path) -> None:
    """Evaluation training from the device copy (a held-out tenth too): killed after its first
    epoch and resumed, the same weights as an uninterrupted run; the other data path refused."""
    from shared.evaluation.config import EvalConfig
    from shared.evaluation.run import run_evaluation
    from shared.genotypes import load_genotype

    def cfg(**kw):
        base = dict(dataset="digits", epochs=2, layers=3, init_channels=8, batch_size=128,
                    gpu=-1, auxiliary=True, cutout=True, cutout_length=4, progress=False,
                    num_workers=0, train_ratio=0.9, data_on_device=True)
        return EvalConfig(**{**base, **kw})

    genotype = load_genotype("DARTS_V2")
    whole = run_evaluation(cfg(), genotype, str(tmp_path / "whole"))
    assert whole.holdout_acc is not None

    def stop(trainer, stats):
        raise Interrupt

    with pytest.raises(Interrupt):
        run_evaluation(cfg(), genotype, str(tmp_path / "cut"), hooks=[stop])
    with pytest.raises(UserError, match="resume it with --data_on_device"):
        run_evaluation(cfg(data_on_device=False), genotype, str(tmp_path / "cut"), resume=True)
    run_evaluation(cfg(), genotype, str(tmp_path / "cut"), resume=True)
    a, b = (torch.load(tmp_path / d / "weights.pt", weights_only=True) for d in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "data on device = True" in (tmp_path / "whole" / "log.txt").read_text()


def test_the_flag_is_typed_and_forwarded() -> None:
    """``--data_on_device`` / ``--no-data_on_device`` count as typed (resume compares them) and
    StacNAS' run_all hands them to both searches and augment, not to test."""
    from shared.cli.parser import parse
    from shared.cli.search_door import build_search_parser
    from stacnas import run_all

    parser = build_search_parser("train_search.py", batch_size=64, epochs=50, layers=8,
                                 spaces=("s1",), default_space="s1")
    for argv, value in (([], None), (["--data_on_device"], True),
                        (["--no-data_on_device"], False)):
        args, typed = parse(parser, argv)
        assert args.data_on_device is value
        assert ("data_on_device" in typed) == bool(argv)
    args, _ = parse(run_all.build_parser(), ["--no-data_on_device", "--test"])
    args.save_dir = "x"
    stages = {stage: argv for stage, _, argv in run_all.stage_commands(args)}
    assert all("--no-data_on_device" in stages[s] for s in ("search1", "search2", "augment"))
    assert "--no-data_on_device" not in stages["test"]


@pytest.mark.slow
def test_door_refuses_data_it_cannot_hold(tmp_path, capsys) -> None:
    from stacnas import search as search_door

    with pytest.raises(SystemExit) as info:
        search_door.main(["--name", "x", "--dataset", "digits", "--auto_aug", "--data_on_device",
                          "--gpu", "-1", "--save_dir", str(tmp_path / "run"), "--epochs", "1",
                          "--num_cells", "3", "--init_channels", "4", "--num_workers", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--data_on_device: --auto_aug" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
