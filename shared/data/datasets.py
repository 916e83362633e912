"""Build a dataset by name, turning missing data into one actionable UserError."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch.utils.data import Dataset

from shared.errors import UserError

from .digits import DigitsDataset
from .imagenet16 import FOLDER as IMAGENET16_FOLDER
from .imagenet16 import ImageNet16
from .names import check_dataset

# What each downloadable dataset needs on disk, for the error message.
_CIFAR_HINTS = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz"),
}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_NO_DOWNLOAD_HINT = "or run with --dataset digits, which needs no download"
# MNIST / Fashion-MNIST: torchvision's classes read four unpacked idx files from
# ``root/<class name>/raw`` (both splits' files must be there, whichever split is asked for).
_MNIST_TITLES = {"mnist": "MNIST", "fashionmnist": "Fashion-MNIST"}
_MNIST_PAGES = {"mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision's mirror)",
                "fashionmnist": "https://github.com/zalandoresearch/fashion-mnist"}


def _default_class(name: str) -> type:
    # imported here, not with the module: digits runs never need torchvision (~0.6 s per
    # process; see shared.data.tensor_transforms)
    import torchvision.datasets as tvd

    return {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "svhn": tvd.SVHN,
            "mnist": tvd.MNIST, "fashionmnist": tvd.FashionMNIST}[name]


def get_dataset(
    name: str,
    root: str | Path,
    train: bool,
    transform: Callable | None,
    download: bool = True,
    dataset_cls: type | None = None,
) -> Dataset:
    """Return the train or test split of dataset ``name`` stored under ``root``.

    CIFAR / SVHN use torchvision with ``download`` (as the original code did); if the
    files are absent and the download fails, a UserError says which files to put
    where. ImageNet and ImageNet16-120 (read from ``root/imagenet16``, as darts-pt) are
    never downloaded. MNIST / Fashion-MNIST (StacNAS' data_loader.py) use torchvision's
    classes, which read the unpacked idx files in ``root/MNIST/raw`` /
    ``root/FashionMNIST/raw``; they are never downloaded (``download`` is ignored), a
    missing file is a UserError naming it. ``digits`` is built in and ignores ``root``.

    ``dataset_cls`` replaces the class for CIFAR / SVHN / MNIST / ImageNet / ImageNet16-120;
    it must take the same constructor arguments. Tests use it to inject a subclass
    whose md5 checks are disabled, so the real loading code runs on tiny fake files.
    """
    name = check_dataset(name)
    if name == "digits":
        return DigitsDataset(train=train, transform=transform)
    root = Path(root).expanduser().resolve()
    if name == "imagenet":
        if dataset_cls is None:
            from torchvision.datasets import ImageFolder as dataset_cls
        return _imagenet(root, train, transform, dataset_cls)
    if name == "imagenet16-120":
        # Never downloaded (Google Drive only); ImageNet16 raises the UserError itself.
        return (dataset_cls or ImageNet16)(root / IMAGENET16_FOLDER, train=train,
                                           transform=transform, num_classes=120)
    cls = dataset_cls or _default_class(name)
    if name in _MNIST_TITLES:
        return _mnist(name, cls, root, train, transform)
    kwargs: dict[str, Any]
    if name == "svhn":
        kwargs = {"split": "train" if train else "test"}
    else:
        kwargs = {"train": train}
    try:
        return cls(str(root), transform=transform, download=download, **kwargs)
    except Exception as exc:  # noqa: BLE001 - URLError, OSError, RuntimeError("not found or corrupted"), ...
        # Any failure here means "the files are not usable"; say how to fix it once.
        raise UserError(_missing_message(name, root, train, download, exc)) from exc


def _missing_message(name: str, root: Path, train: bool, download: bool, exc: Exception) -> str:
    tried = (f"download failed ({type(exc).__name__}: {exc})" if download
             else f"download disabled ({exc})")
    if name == "svhn":
        mat = "train_32x32.mat" if train else "test_32x32.mat"
        return (
            f"SVHN not found in {root}: expected {root / mat}; {tried}. "
            f"Get {mat} from {_SVHN_URL} and put it in {root}, {_NO_DOWNLOAD_HINT}."
        )
    title, folder, archive = _CIFAR_HINTS[name]
    return (
        f"{title} not found in {root}: expected {root / folder}/ (or {root / archive}); {tried}. "
        f"Get {archive} from {_CIFAR_URL} and extract it in {root}, {_NO_DOWNLOAD_HINT}."
    )


def _imagenet(root: Path, train: bool, transform: Callable | None, cls: type) -> Dataset:
    folder = root / ("train" if train else "val")
    layout = (
        "ImageNet needs the ILSVRC2012 train/ and val/ folders in ImageFolder layout "
        "(one sub-folder per class, e.g. train/n01440764/*.JPEG), "
        "downloaded by hand from https://image-net.org (there is no auto-download)"
    )
    if not folder.is_dir():
        raise UserError(f"ImageNet folder {folder} not found; {layout}.")
    try:
        return cls(str(folder), transform=transform)
    except (OSError, RuntimeError) as exc:  # e.g. FileNotFoundError: no class folders / images
        raise UserError(f"cannot read ImageNet folder {folder} ({exc}); {layout}.") from exc


def _mnist(name: str, cls: type, root: Path, train: bool, transform: Callable | None) -> Dataset:
    """torchvision's MNIST / FashionMNIST without download, or a UserError naming the files."""
    folder = root / cls.__name__
    raw = folder / "raw"
    # torchvision's _check_exists wants all four unpacked files (its resources minus ".gz"),
    # unless the processed/ tensors of torchvision < 0.9 are there (read instead, as it does).
    files = [Path(url).stem for url, _ in cls.resources]
    legacy = all((folder / "processed" / f).is_file() for f in ("training.pt", "test.pt"))
    missing = [] if legacy else [f for f in files if not (raw / f).is_file()]
    title = _MNIST_TITLES[name]
    get = (f"get {', '.join(f + '.gz' for f in files)} from {_MNIST_PAGES[name]} and gunzip "
           f"them into {raw}, {_NO_DOWNLOAD_HINT}")
    if missing:
        more = f" (and {len(missing) - 1} more idx file(s))" if len(missing) > 1 else ""
        packed = [f"{f}.gz" for f in missing if (raw / f"{f}.gz").is_file()]
        found = f"; {', '.join(packed)} found: gunzip" if packed else ""
        raise UserError(f"{title} not found in {root}: expected {raw / missing[0]}{more}"
                        f"{found}; it is never downloaded here: {get}.")
    try:
        return cls(str(root), train=train, transform=transform, download=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: AssertionError, ...
        raise UserError(f"cannot read {title} in {raw} ({type(exc).__name__}: {exc}); the idx "
                        f"files look corrupt: {get}.") from exc
