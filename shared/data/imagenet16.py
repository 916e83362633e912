"""ImageNet16-120: NAS-Bench-201's 16x16 ImageNet subset, from the downsampled-ImageNet pickles.

Format (Chrabaszcz et al. 2017, "A Downsampled Variant of ImageNet as an Alternative to the
CIFAR datasets", as AutoDL's ``ImageNet16`` reads it): ``train_data_batch_1`` ..
``train_data_batch_10`` and ``val_data``, each a pickle of a dict with ``'data'`` (uint8,
N x 3*16*16, channel-major like CIFAR) and ``'labels'`` (1-based class ids 1..1000).
ImageNet16-120 keeps the images whose label is <= 120 (151,700 train, 6,000 val) and shifts
labels to 0..119. AutoDL
refuses to load unless all 11 files exist and match their md5, whichever split is asked for;
so does this loader (``md5=None`` entries skip the sum, as tests do).

Where the data sets live: darts-pt reads ``<data>/imagenet16`` (``--data ../data``), so
``--dataset imagenet16-120`` looks there.

Splits darts-pt's ``nasbench201/train_search.py`` searches on (read in its code):
for cifar10, cifar100 and imagenet16-120 alike it takes the TRAINING set (CIFAR: 50,000;
ImageNet16-120: 151,700, asserted), splits its indices at floor(train_portion * N) with
train_portion 0.5, unshuffled: the first half feeds the weight step (``train_queue``), the second
half the alpha step (``valid_queue``), both through SubsetRandomSampler and the training
augmentation. The official test / val set is loaded but unused by the search. (AutoDL's own NB201
search scripts differ: they search on the proposed train/valid splits of the benchmark.)
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from shared.errors import UserError

# The NAS-Bench-201 authors' download of the data they trained on (README of D-X-Y/NAS-Bench-201,
# "training and evaluation data"; ImageNet16 is the ImageNet16/ folder in it).
IMAGENET16_URL = "https://drive.google.com/open?id=1L0Lzq8rWpZLPfiQGd6QR8q5xLV88emU7"
FOLDER = "imagenet16"  # under --data, as darts-pt
IMAGE_SHAPE = (3, 16, 16)
# Sizes AutoDL asserts for ImageNet16-120 (get_dataset_with_transform.py).
NUM_TRAIN_120, NUM_VALID_120 = 151_700, 6_000


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class ImageNet16(Dataset):
    """Downsampled ImageNet at 16x16; ``num_classes=120`` gives ImageNet16-120 (None: all 1000).

    Items are ``(transform(PIL RGB image), label in 0..num_classes-1)``; ``data`` is the uint8
    (N, 16, 16, 3) array and ``targets`` the 0-based labels.
    """

    train_list: list[tuple[str, str | None]] = [
        ("train_data_batch_1", "27846dcaa50de8e21a7d1a35f30f0e91"),
        ("train_data_batch_2", "c7254a054e0e795c69120a5727050e3f"),
        ("train_data_batch_3", "4333d3df2e5ffb114b05d2ffc19b1e87"),
        ("train_data_batch_4", "1620cdf193304f4a92677b695d70d10f"),
        ("train_data_batch_5", "348b3c2fdbb3940c4e9e834affd3b18d"),
        ("train_data_batch_6", "6e765307c242a1b3d7d5ef9139b48945"),
        ("train_data_batch_7", "564926d8cbf8fc4818ba23d2faac7564"),
        ("train_data_batch_8", "f4755871f718ccb653440b9dd0ebac66"),
        ("train_data_batch_9", "bb6dd660c38c58552125b1a92f86b5d4"),
        ("train_data_batch_10", "8f03f34ac4b42271a294f91bf480f29b"),
    ]
    valid_list: list[tuple[str, str | None]] = [
        ("val_data", "3410e3017fdaefba8d5073aaa65e4bd6"),
    ]

    def __init__(self, root: str | Path, train: bool, transform: Callable | None = None,
                 num_classes: int | None = 120) -> None:
        if num_classes is not None and not 0 < num_classes < 1000:
            raise ValueError(f"num_classes must be in 1..999 or None, got {num_classes}")
        self.root = Path(root).expanduser()
        self.train, self.transform, self.num_classes = train, transform, num_classes
        self._check_integrity()
        chunks, labels = [], []
        for name, _ in (self.train_list if train else self.valid_list):
            data, lab = self._read(self.root / name)
            chunks.append(data)
            labels.append(lab)
        data = np.concatenate(chunks).reshape(-1, *IMAGE_SHAPE).transpose(0, 2, 3, 1)  # HWC
        target = np.concatenate(labels)
        if num_classes is not None:
            keep = (target >= 1) & (target <= num_classes)
            data, target = data[keep], target[keep]
        self.data = np.ascontiguousarray(data)
        self.targets: list[int] = (target - 1).tolist()

    def _check_integrity(self) -> None:
        if not self.root.is_dir():
            raise UserError(missing_message(self.root))
        entries = self.train_list + self.valid_list
        absent = [name for name, _ in entries if not (self.root / name).is_file()]
        if absent:
            raise UserError(f"ImageNet16 in {self.root} is incomplete: missing "
                            f"{', '.join(absent)}. " + _GET_IT)
        for name, md5 in entries:
            if md5 is not None and _md5(self.root / name) != md5:
                raise UserError(f"ImageNet16 file {self.root / name} is corrupted (md5 mismatch). "
                                + _GET_IT)

    @staticmethod
    def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")  # Python-2 pickles, as AutoDL reads them
            data = np.asarray(entry["data"], dtype=np.uint8)
            labels = np.asarray(entry["labels"], dtype=np.int64)
        except Exception as exc:  # noqa: BLE001 - any unreadable pickle is the same user problem
            raise UserError(f"cannot read ImageNet16 file {path} ({type(exc).__name__}: {exc}). "
                            + _GET_IT) from exc
        size = int(np.prod(IMAGE_SHAPE))
        if data.ndim != 2 or data.shape[1] != size or len(labels) != len(data):
            raise UserError(f"ImageNet16 file {path} has data {data.shape} and {len(labels)} "
                            f"labels; expected (N, {size}) and N labels. " + _GET_IT)
        return data, labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = Image.fromarray(self.data[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]

    def __repr__(self) -> str:
        split = "train" if self.train else "val"
        return f"{type(self).__name__}({split}, {len(self)} images, {self.num_classes} classes)"


_GET_IT = (f"Download the NAS-Bench-201 training data from {IMAGENET16_URL} (the authors' link in "
           "the NAS-Bench-201 README) and put the ImageNet16 files (train_data_batch_1..10, "
           "val_data) in <data>/imagenet16/.")


def missing_message(folder: Path) -> str:
    return (f"ImageNet16-120 folder {folder} not found; it needs train_data_batch_1..10 and "
            f"val_data (downsampled ImageNet 16x16 pickles; there is no auto-download). "
            + _GET_IT)
