"""Train / eval preprocessing pipelines per dataset (DARTS defaults; StacNAS' released
``data_loader.py`` for MNIST, Fashion-MNIST and ``--auto_aug``).

torchvision is imported where a pipeline needs it, not with this module: the embedded digits
take ``shared.data.tensor_transforms`` (torch ops), so a digits run never pays torchvision's
import (~0.6 s per process)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from shared.errors import UserError

from . import tensor_transforms
from .cutout import Cutout
from .names import check_dataset
from .stats import DATASET_STATS, IMAGE_SIZE

if TYPE_CHECKING:
    import torchvision.transforms as T

# Where ``auto_augment`` applies: the release's data_loader.py appends its CIFAR10Policy for
# cifar10 and cifar100 only (its mnist / fashionmnist branches ignore --auto_aug); digits is the
# embedded stand-in for CIFAR in tests and demos, so it takes the same policy.
AUTO_AUGMENT_DATASETS = ("cifar10", "cifar100", "digits")


def _normalize(dataset: str) -> T.Normalize:
    import torchvision.transforms as T

    mean, std = DATASET_STATS[dataset]
    return T.Normalize(mean, std)


def _digits_train(size: int, auto_augment: bool) -> list[Callable]:
    """Tensor in, no ToTensor; no flips: a mirrored 2 or 7 is not a 2 or 7."""
    steps: list[Callable] = [tensor_transforms.RandomCrop(size, padding=1)]
    if auto_augment:
        from .autoaugment import FloatTensorAutoAugment

        steps.append(FloatTensorAutoAugment(channels=1))
    return steps + [tensor_transforms.Normalize(*DATASET_STATS["digits"])]


def _mnist_steps(dataset: str) -> list[Callable]:
    """StacNAS' data_loader.py for mnist / fashionmnist: a random affine map (torchvision reads
    ``shear=0.1`` as +-0.1 degrees, a negligible shear, kept as released), plus a vertical
    flip for Fashion-MNIST only, as released; no crop."""
    import torchvision.transforms as T

    steps: list[Callable] = [T.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1),
                                            shear=0.1)]
    if dataset == "fashionmnist":
        steps.append(T.RandomVerticalFlip())
    return steps + [T.ToTensor(), _normalize(dataset)]


def train_transform(
    dataset: str,
    cutout: bool = False,
    cutout_length: int = 16,
    cutout_prob: float = 1.0,
    auto_augment: bool = False,
) -> Callable:
    """Augmenting transform used for training (and for both halves during search).

    CIFAR / SVHN / MNIST take PIL images; digits take a 1x8x8 float tensor in [0, 1].
    For digits ``cutout_length`` is used as given (clipped at the 8x8 borders), so
    pick a small length (e.g. 4): the default 16 blanks the whole image.

    ``auto_augment``: StacNAS' ``--auto_aug``, AutoAugment's CIFAR-10 policy (torchvision's,
    see ``shared.data.autoaugment``) after crop + flip and before ToTensor, where the
    released data_loader.py puts it (also for CIFAR-100). Digits take the same policy on
    their float tensor, through uint8 (torchvision's posterize / equalize need uint8; the
    round trip moves a pixel by at most 0.5/255), after the crop and before Normalize.
    Other datasets refuse it (UserError): the release applies it to CIFAR only.
    """
    dataset = check_dataset(dataset)
    if auto_augment and dataset not in AUTO_AUGMENT_DATASETS:
        raise UserError(f"--auto_aug (AutoAugment's CIFAR-10 policy) is for "
                        f"{', '.join(AUTO_AUGMENT_DATASETS)}, not {dataset}: StacNAS' "
                        f"data_loader.py applies it to CIFAR-10/100 only")
    size = IMAGE_SIZE[dataset]
    if dataset == "digits":
        digits = _digits_train(size, auto_augment)
        cut = [Cutout(cutout_length, cutout_prob)] if cutout else []
        return tensor_transforms.Compose(digits + cut)
    import torchvision.transforms as T

    from .autoaugment import cifar10_policy

    steps: list[Callable]
    if dataset == "imagenet":
        steps = [
            T.RandomResizedCrop(size),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
            T.ToTensor(),
            _normalize(dataset),
        ]
    elif dataset == "imagenet16-120":
        # AutoDL / darts-pt order: flip first, then crop with 2 pixels of padding.
        steps = [
            T.RandomHorizontalFlip(),
            T.RandomCrop(size, padding=2),
            T.ToTensor(),
            _normalize(dataset),
        ]
    elif dataset in ("mnist", "fashionmnist"):
        steps = _mnist_steps(dataset)
    else:
        # Flip is kept for SVHN too, as in the original code, even though digits
        # are not mirror-symmetric; changing it would change published numbers.
        steps = [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
        if auto_augment:
            steps.append(cifar10_policy(channels=3))
        steps += [T.ToTensor(), _normalize(dataset)]
    if cutout:
        steps.append(Cutout(cutout_length, cutout_prob))
    return T.Compose(steps)


def eval_transform(dataset: str) -> Callable:
    """Deterministic transform for test-set evaluation."""
    dataset = check_dataset(dataset)
    if dataset == "digits":
        return tensor_transforms.Compose([tensor_transforms.Normalize(*DATASET_STATS[dataset])])
    import torchvision.transforms as T

    if dataset == "imagenet":
        return T.Compose(
            [T.Resize(256), T.CenterCrop(IMAGE_SIZE[dataset]), T.ToTensor(), _normalize(dataset)]
        )
    return T.Compose([T.ToTensor(), _normalize(dataset)])
