"""Tests for shared.data: datasets (real torchvision loaders on tiny fake files),
transforms, cutout, the search split and the search loaders. CPU only, no network."""
from __future__ import annotations

import pickle
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd

from shared.data import (
    DATASET_STATS,
    IMAGE_SIZE,
    IN_CHANNELS,
    NUM_CLASSES,
    Cutout,
    RandomBatches,
    eval_transform,
    get_dataset,
    search_loaders,
    search_split,
    train_transform,
)
from shared.errors import UserError

# ---------------------------------------------------------------- helpers


class NoMd5CIFAR10(tvd.CIFAR10):
    """Real torchvision CIFAR10 loader, with md5 checks off so fake files pass."""

    train_list = [[f, None] for f, _ in tvd.CIFAR10.train_list]
    test_list = [[f, None] for f, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


class NoMd5CIFAR100(tvd.CIFAR100):
    train_list = [[f, None] for f, _ in tvd.CIFAR100.train_list]
    test_list = [[f, None] for f, _ in tvd.CIFAR100.test_list]
    meta = {**tvd.CIFAR100.meta, "md5": None}


class NoMd5SVHN(tvd.SVHN):
    split_list = {k: [url, fname, None] for k, (url, fname, _) in tvd.SVHN.split_list.items()}


def _dump(path: Path, obj: dict) -> None:
    # The real files are Python-2 pickles whose str keys load as str ("data"),
    # so str keys here match what torchvision reads; bytes keys would not.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _fake_cifar(root: Path, n: int, hundred: bool = False) -> None:
    rng = np.random.RandomState(1)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    label_key = "fine_labels" if hundred else "labels"
    classes = 100 if hundred else 10
    files = (["train", "test"] if hundred
             else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    for name in files:
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        _dump(folder / name, {"data": data, label_key: rng.randint(0, classes, n).tolist()})
    if hundred:
        _dump(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    else:
        _dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every download fail the way it does offline, at the socket boundary.

    Patching urlopen (not torchvision's download helpers) keeps torchvision's own
    "file already here?" checks in play, so the real code path is exercised.
    """

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# ---------------------------------------------------------------- digits


def test_digits_dataset_shapes_and_split() -> None:
    train = get_dataset("digits", "/nonexistent", True, eval_transform("digits"))
    test = get_dataset("digits", "/nonexistent", False, None)
    assert len(train) + len(test) == 1797
    assert len(train) == int(0.8 * 1797)
    img, label = train[0]
    assert img.shape == (1, 8, 8) and img.dtype == torch.float32
    assert isinstance(label, int)
    raw, _ = test[0]
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    assert set(train.targets) == set(range(10)) == set(test.targets)
    assert NUM_CLASSES["digits"] == 10 and IN_CHANNELS["digits"] == 1 and IMAGE_SIZE["digits"] == 8
    # Deterministic split: a second build gives the same images.
    again = get_dataset("digits", "/x", False, None)
    assert torch.equal(again.data, test.data) and again.targets == test.targets


def test_digits_stats_match_data() -> None:
    from sklearn.datasets import load_digits

    x = load_digits().images / 16.0
    (mean,), (std,) = DATASET_STATS["digits"]
    assert mean == pytest.approx(x.mean()) and std == pytest.approx(x.std())


def test_digits_train_transform_is_tensor_based() -> None:
    torch.manual_seed(0)
    ds = get_dataset("digits", "", True, train_transform("digits", cutout=True, cutout_length=4))
    img, _ = ds[3]
    assert img.shape == (1, 8, 8)
    assert ds.data[3].min() >= 0  # the stored image was not modified in place


# ---------------------------------------------------------------- CIFAR / SVHN


@pytest.mark.parametrize("name,cls,hundred", [("cifar10", NoMd5CIFAR10, False),
                                              ("cifar100", NoMd5CIFAR100, True)])
def test_cifar_real_loader_on_fake_files(tmp_path: Path, monkeypatch, name, cls, hundred) -> None:
    _no_network(monkeypatch)
    _fake_cifar(tmp_path, n=4, hundred=hundred)
    train = get_dataset(name, tmp_path, True, train_transform(name, cutout=True), dataset_cls=cls)
    test = get_dataset(name, tmp_path, False, eval_transform(name), dataset_cls=cls)
    assert len(train) == (4 if hundred else 20) and len(test) == 4
    img, label = train[0]
    assert img.shape == (3, 32, 32) and 0 <= label < NUM_CLASSES[name]
    assert test[1][0].shape == (3, 32, 32)


def test_cifar_missing_and_no_network_is_user_error(tmp_path: Path, monkeypatch) -> None:
    _no_network(monkeypatch)
    root = tmp_path / "data"
    with pytest.raises(UserError) as info:
        get_dataset("cifar10", root, True, None)
    msg = str(info.value)
    assert str(root.resolve()) in msg and "cifar-10" in msg
    assert "cifar.html" in msg and "--dataset digits" in msg


def test_svhn_real_loader_on_fake_mat(tmp_path: Path, monkeypatch) -> None:
    _no_network(monkeypatch)
    n = 5
    x = np.random.RandomState(2).randint(0, 256, size=(32, 32, 3, n)).astype(np.uint8)
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)  # 10 means digit 0
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    ds = get_dataset("svhn", tmp_path, True, train_transform("svhn"), dataset_cls=NoMd5SVHN)
    assert len(ds) == n
    img, label = ds[0]
    assert img.shape == (3, 32, 32) and label == 0
    assert [ds[i][1] for i in range(n)] == [0, 1, 2, 0, 9]
    with pytest.raises(UserError, match="test_32x32.mat"):
        get_dataset("svhn", tmp_path, False, None)


def test_imagenet_missing_folder_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="image-net.org") as info:
        get_dataset("imagenet", tmp_path, True, None)
    assert str(tmp_path / "train") in str(info.value)


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(UserError, match="cifar10.*digits"):
        get_dataset("tinyimagenet", "/tmp", True, None)
    with pytest.raises(UserError):
        train_transform("tinyimagenet")


# ---------------------------------------------------------------- cutout


def test_cutout_zeroes_square_of_right_size() -> None:
    torch.manual_seed(0)
    img = torch.ones(3, 32, 32)
    out = Cutout(16)(img)
    zero = (out == 0).all(dim=0)
    rows, cols = zero.any(dim=1).sum().item(), zero.any(dim=0).sum().item()
    assert 1 <= rows <= 16 and 1 <= cols <= 16
    assert zero.sum().item() == rows * cols  # a (clipped) rectangle
    assert (out == 0).sum().item() == 3 * rows * cols  # every channel
    assert img.min() == 1  # input untouched
    # Away from the borders the square is exactly length x length.
    sizes = set()
    for _ in range(200):
        z = (Cutout(16)(img) == 0).all(dim=0)
        sizes.add((z.any(dim=1).sum().item(), z.any(dim=0).sum().item()))
    assert (16, 16) in sizes and max(sizes) == (16, 16)


def test_cutout_prob_zero_is_identity_and_seeded() -> None:
    img = torch.randn(3, 8, 8)
    assert torch.equal(Cutout(4, prob=0.0)(img), img)
    torch.manual_seed(5)
    a = Cutout(4, prob=0.5)(img)
    torch.manual_seed(5)
    assert torch.equal(Cutout(4, prob=0.5)(img), a)


# ---------------------------------------------------------------- split / loaders


def test_search_split_sizes() -> None:
    data = list(range(11))
    tr, va = search_split(data, 0.5)
    assert tr == list(range(5)) and va == list(range(5, 11))
    for bad in (0.0, -0.1, 1.5, 0.01):
        with pytest.raises(UserError):
            search_split(data, bad)
    assert search_split(data, 1.0) == (list(range(11)), [])  # one-level: no validation half


def test_random_batches_distinct_and_reproducible() -> None:
    indices = list(range(100, 130))
    sampler = RandomBatches(indices, batch_size=8, num_batches=5,
                            generator=torch.Generator().manual_seed(3))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    for b in batches:
        assert len(b) == 8 and len(set(b)) == 8 and set(b) <= set(indices)
    again = list(RandomBatches(indices, 8, 5, generator=torch.Generator().manual_seed(3)))
    assert again == batches
    sampler.num_batches = 2
    assert len(sampler) == 2 and len(list(sampler)) == 2


def test_search_loaders_on_digits() -> None:
    data = get_dataset("digits", "", True, train_transform("digits"))
    train_q, valid_q, eval_q = search_loaders(
        data, 0.5, 64, 0, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), False
    )
    n = len(data)
    assert len(valid_q) == len(train_q) == -(-(n // 2) // 64)
    x, y = next(iter(valid_q))
    assert x.shape == (64, 1, 8, 8) and y.shape == (64,)
    assert sum(len(b[1]) for b in eval_q) == n - n // 2
    assert sorted(train_q.sampler) == list(range(n // 2))


def test_search_loaders_without_a_validation_half() -> None:
    data = get_dataset("digits", "", True, train_transform("digits"))
    train_q, valid_q, eval_q = search_loaders(
        data, 1.0, 64, 0, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), False
    )
    assert valid_q is None and eval_q is None
    assert sorted(train_q.sampler) == list(range(len(data)))


def test_search_loaders_reproducible_from_generators() -> None:
    data = get_dataset("digits", "", True, train_transform("digits", cutout=True, cutout_length=4))

    def first_batches() -> list[torch.Tensor]:
        torch.manual_seed(7)  # transforms use the global RNG when num_workers == 0
        qs = search_loaders(data, 0.5, 32, 0, torch.Generator().manual_seed(0),
                            torch.Generator().manual_seed(1), False)
        return [next(iter(q))[0] for q in qs[:2]]

    a, b = first_batches(), first_batches()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_digits_file_is_read_as_scikit_learn_reads_it() -> None:
    """The embedded digits are read from the file scikit-learn ships without importing it
    (~1 s per door process); the data must equal ``sklearn.datasets.load_digits``."""
    import numpy as np
    from sklearn.datasets import load_digits

    from shared.data.digits import load_digits_file

    pixels, labels = load_digits_file()
    bunch = load_digits()
    assert np.array_equal(pixels, bunch.data.astype(np.float32))
    assert np.array_equal(labels, bunch.target) and labels.dtype == np.int64
