"""StacNAS' data additions to shared.data (released ``data_loader.py``): AutoAugment's CIFAR-10
policy (``--auto_aug``), MNIST and Fashion-MNIST through torchvision's own classes, read from
tiny files written in the real idx format. CPU only, no network."""
from __future__ import annotations

import gzip
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from shared.data import (
    DATASET_STATS,
    IMAGE_SIZE,
    IN_CHANNELS,
    NUM_CLASSES,
    check_dataset,
    eval_transform,
    get_dataset,
    train_transform,
)
from shared.data.autoaugment import FILL, FloatTensorAutoAugment, cifar10_policy
from shared.errors import UserError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt fails as offline (nothing here may download)."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _pil(seed: int = 0, size: int = 32) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, size=(size, size, 3)).astype(np.uint8))


# ---------------------------------------------------------------- AutoAugment


def test_auto_augment_sits_after_crop_flip_before_to_tensor() -> None:
    plain = train_transform("cifar10", cutout=True, cutout_length=16).transforms
    auto = train_transform("cifar10", cutout=True, cutout_length=16, auto_augment=True).transforms
    # Without the flag the DARTS pipeline is untouched.
    assert [type(t).__name__ for t in plain] == [
        "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize", "Cutout"]
    assert [type(t).__name__ for t in auto] == [
        "RandomCrop", "RandomHorizontalFlip", "AutoAugment", "ToTensor", "Normalize", "Cutout"]
    policy = auto[2]
    assert policy.policy == T.AutoAugmentPolicy.CIFAR10 and policy.fill == [FILL] * 3
    assert len(policy.policies) == 25  # the published CIFAR-10 table
    c100 = train_transform("cifar100", auto_augment=True).transforms  # as released, CIFAR-100 too
    assert c100[2].policy == T.AutoAugmentPolicy.CIFAR10


def test_auto_augment_changes_cifar_images_shape_and_dtype_kept() -> None:
    img = _pil()
    policy = cifar10_policy()
    reference = np.asarray(img)
    changed = sum(not np.array_equal(np.asarray(policy(img)), reference) for _ in range(40))
    assert changed >= 20  # most sub-policies change the image (a few draws apply nothing)
    out = train_transform("cifar10", auto_augment=True)(img)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    # torch's RNG drives it (checkpointed with the run): same seed, same images.
    pipe = train_transform("cifar10", auto_augment=True)
    torch.manual_seed(3)
    a = [pipe(img) for _ in range(5)]
    torch.manual_seed(3)
    b = [pipe(img) for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_auto_augment_on_digits_float_tensors() -> None:
    digits = get_dataset("digits", "", True, None)
    img = digits.data[0]  # 1x8x8 float in [0, 1]
    aug = FloatTensorAutoAugment(channels=1)
    outs = [aug(img) for _ in range(60)]  # every sub-policy (posterize, equalize...) on uint8
    assert all(o.shape == (1, 8, 8) and o.dtype == torch.float32 for o in outs)
    assert all(0.0 <= o.min() and o.max() <= 1.0 for o in outs)
    assert sum(not torch.allclose(o, img, atol=1 / 255) for o in outs) >= 20
    assert torch.equal(digits.data[0], img)  # the stored image is untouched
    # The uint8 round trip alone moves a pixel by at most half a level.
    aug.policy = lambda x: x
    assert (aug(img) - img).abs().max() <= 0.5 / 255 + 1e-6
    steps = train_transform("digits", cutout=True, cutout_length=4, auto_augment=True).transforms
    assert [type(t).__name__ for t in steps] == [
        "RandomCrop", "FloatTensorAutoAugment", "Normalize", "Cutout"]
    out = train_transform("digits", auto_augment=True)(img)
    assert out.shape == (1, 8, 8) and out.dtype == torch.float32


@pytest.mark.parametrize("name", ["svhn", "mnist", "fashionmnist", "imagenet16-120"])
def test_auto_augment_elsewhere_is_refused(name: str) -> None:
    with pytest.raises(UserError, match="--auto_aug.*CIFAR"):
        train_transform(name, auto_augment=True)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST


def _write_idx(path: Path, array: np.ndarray, packed: bool = False) -> None:
    """The idx format MNIST ships in: 0, 0, type 0x08 (uint8), ndim; big-endian dims; data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    if packed:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)


def _fake_mnist(root: Path, folder: str, n_train: int = 6, n_test: int = 4,
                skip: tuple[str, ...] = (), packed: tuple[str, ...] = ()) -> dict:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{split}-images-idx3-ubyte"] = rng.randint(0, 256, size=(n, 28, 28))
        arrays[f"{split}-labels-idx1-ubyte"] = rng.randint(0, 10, size=n)
    for name, array in arrays.items():
        if name not in skip:
            _write_idx(raw / name, array, packed=name in packed)
    return arrays


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_mnist_loads_real_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    arrays = _fake_mnist(tmp_path, folder)
    train = get_dataset(name, tmp_path, True, train_transform(name, cutout=True, cutout_length=8))
    test = get_dataset(name, tmp_path, False, eval_transform(name))
    assert type(train).__name__ == folder  # torchvision's own class
    assert (len(train), len(test)) == (6, 4)
    img, label = train[0]
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32
    assert label == arrays["train-labels-idx1-ubyte"][0]
    # The eval transform is ToTensor + Normalize with the release's statistics.
    (mean,), (std,) = DATASET_STATS[name]
    expected = (torch.from_numpy(arrays["t10k-images-idx3-ubyte"][2]).float() / 255 - mean) / std
    x, y = test[2]
    assert torch.allclose(x[0], expected, atol=1e-5) and y == arrays["t10k-labels-idx1-ubyte"][2]
    assert (NUM_CLASSES[name], IN_CHANNELS[name], IMAGE_SIZE[name]) == (10, 1, 28)


def test_mnist_train_transforms_are_the_released_ones() -> None:
    mnist = train_transform("mnist").transforms
    fashion = train_transform("fashionmnist").transforms
    assert [type(t).__name__ for t in mnist] == ["RandomAffine", "ToTensor", "Normalize"]
    assert [type(t).__name__ for t in fashion] == [
        "RandomAffine", "RandomVerticalFlip", "ToTensor", "Normalize"]
    affine = mnist[0]
    assert affine.degrees == [-15.0, 15.0] and affine.translate == (0.1, 0.1)
    assert affine.scale == (0.9, 1.1) and affine.shear == [-0.1, 0.1]
    assert DATASET_STATS["mnist"] == ((0.13066051707548254,), (0.30810780244715075,))
    assert DATASET_STATS["fashionmnist"] == ((0.28604063146254594,), (0.35302426207299326,))
    assert check_dataset("Fashion-MNIST") == "fashionmnist"


def test_mnist_missing_file_is_one_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        get_dataset("mnist", tmp_path, True, None)
    msg = str(info.value)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in msg
    assert "3 more" in msg and "ossci-datasets" in msg and "--dataset digits" in msg
    # One file short (the test labels) is named, even when the train split is asked for.
    _fake_mnist(tmp_path, "FashionMNIST", skip=("t10k-labels-idx1-ubyte",))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte; .*fashion-mnist"):
        get_dataset("fashionmnist", tmp_path, True, None)


def test_mnist_packed_or_corrupt_files(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, "MNIST", packed=("train-images-idx3-ubyte",))
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz found: gunzip"):
        get_dataset("mnist", tmp_path, True, None)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")  # truncated header
    with pytest.raises(UserError, match="cannot read MNIST.*corrupt"):
        get_dataset("mnist", tmp_path, True, None)
