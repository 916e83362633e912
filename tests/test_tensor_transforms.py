"""The digits' torch-op transforms (``shared.data.tensor_transforms``) against torchvision's:
the same random draws and the same floats, bit for bit; and a digits pipeline leaves
torchvision unimported (its import costs every digits process ~0.6 s)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision.transforms as T

from shared.data import DATASET_STATS, DigitsDataset, eval_transform, train_transform
from shared.data import tensor_transforms as TT
from tests.conftest import ROOT, door_env


def _images() -> torch.Tensor:
    return DigitsDataset(train=True).data[:40]


@pytest.mark.parametrize("size,padding", [(8, 1), (8, 0), (6, 2), (3, 0)])
def test_random_crop_draws_and_cuts_as_torchvisions(size, padding) -> None:
    ours, theirs = TT.RandomCrop(size, padding), T.RandomCrop(size, padding=padding)
    torch.manual_seed(5)
    mine = [ours(img) for img in _images()]
    after_mine = torch.rand(())
    torch.manual_seed(5)
    reference = [theirs(img) for img in _images()]
    assert torch.equal(torch.stack(mine), torch.stack(reference))
    assert torch.equal(after_mine, torch.rand(()))  # the same number of draws, no more
    assert len({tuple(x.flatten().tolist()) for x in mine}) > 1


def test_random_crop_refuses_a_crop_larger_than_the_image() -> None:
    with pytest.raises(ValueError, match="cannot crop 9x9 from 8x8"):
        TT.RandomCrop(9)(_images()[0])


def test_normalize_is_torchvisions_to_the_bit() -> None:
    mean, std = DATASET_STATS["digits"]
    x = _images()
    assert torch.equal(TT.Normalize(mean, std)(x[0]), T.Normalize(mean, std)(x[0]))
    three = torch.rand(3, 5, 5, dtype=torch.float64)
    stats = ([0.1, 0.2, 0.3], [0.7, 0.8, 0.9])
    assert torch.equal(TT.Normalize(*stats)(three), T.Normalize(*stats)(three))
    assert torch.equal(x, _images())  # out of place
    with pytest.raises(ValueError, match="zero"):
        TT.Normalize([0.5], [0.0])


def test_the_digits_pipelines_equal_torchvisions_composition() -> None:
    """train_transform("digits", cutout) and eval_transform("digits") as they were built from
    torchvision's classes: the same images from the same seed."""
    from shared.data import Cutout

    mean, std = DATASET_STATS["digits"]
    reference = T.Compose([T.RandomCrop(8, padding=1), T.Normalize(mean, std), Cutout(4, 0.5)])
    ours = train_transform("digits", cutout=True, cutout_length=4, cutout_prob=0.5)
    assert [type(t).__name__ for t in ours.transforms] == ["RandomCrop", "Normalize", "Cutout"]
    torch.manual_seed(1)
    mine = torch.stack([ours(img) for img in _images()])
    torch.manual_seed(1)
    assert torch.equal(mine, torch.stack([reference(img) for img in _images()]))
    assert torch.equal(eval_transform("digits")(_images()[2]), T.Normalize(mean, std)(_images()[2]))
    assert "RandomCrop(size=8, padding=1)" in repr(ours)


@pytest.mark.slow
def test_a_digits_pipeline_never_imports_torchvision() -> None:
    """The data a digits search builds (datasets, both transforms, the search loaders) in a
    fresh process: torchvision stays out of ``sys.modules``."""
    code = ("import sys\n"
            "import shared.data as D\n"
            "data = D.get_dataset('digits', '', True, D.train_transform('digits', cutout=True,"
            " cutout_length=4))\n"
            "import torch\n"
            "queues = D.search_loaders(data, 0.5, 16, 0, torch.Generator(), torch.Generator(),"
            " False)\n"
            "next(iter(queues[0]))\n"
            "D.get_dataset('digits', '', False, D.eval_transform('digits'))[0]\n"
            "print(sorted(m for m in sys.modules if m.startswith('torchvision')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=door_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
