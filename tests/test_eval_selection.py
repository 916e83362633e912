"""Evaluation model selection (shared.evaluation): ``train_ratio`` holds out the end of the
training set and keeps the best held-out epoch in ``best_weights.pt``; ``select_on_test`` (StacNAS'
augment.py) keeps the best test epoch, loudly; ``auto_aug`` reaches the training transform.
In-process runs of 3 epochs on the 8x8 digits with a tiny network (C=4, 3 cells), CPU only."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from shared.data import DigitsDataset, TransformedSubset, eval_transform
from shared.data.autoaugment import FloatTensorAutoAugment
from shared.errors import UserError
from shared.evaluation.config import (
    BEST_WEIGHTS,
    CHECKPOINT,
    NUMBERED_CHECKPOINT,
    WEIGHTS,
    EvalConfig,
    validate_config,
)
from shared.evaluation.run import run_evaluation
from shared.evaluation.trainer import EvalTrainer, load_datasets
from shared.genotypes import load_genotype

N_TRAIN = 1437  # the digits' training split


def _cfg(**kw) -> EvalConfig:
    base = dict(dataset="digits", init_channels=4, layers=3, epochs=3, batch_size=128, gpu=-1,
                num_workers=0, progress=False, arch="DARTS_V2", report_freq=1000)
    return EvalConfig(**{**base, **kw})


def _run(cfg: EvalConfig, run_dir: Path, **kw) -> list[dict[str, torch.Tensor]]:
    """Run; return a copy of the network's weights after each epoch."""
    per_epoch: list[dict[str, torch.Tensor]] = []

    def keep(trainer, stats) -> None:
        per_epoch.append({k: v.clone() for k, v in trainer.net.state_dict().items()})
    run_evaluation(cfg, load_genotype("DARTS_V2"), str(run_dir), hooks=[keep], **kw)
    return per_epoch


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _scripted(monkeypatch, tag: str, accs: list[float]) -> None:
    """Make the accuracy of split ``tag`` ('holdout' or 'valid') follow ``accs``, epoch by
    epoch; the other split is evaluated for real."""
    real: Callable = EvalTrainer.evaluate
    seq = iter(accs)

    def evaluate(self, queue, name):
        top1, top5, loss = real(self, queue, name)
        return (next(seq), top5, loss) if name == tag else (top1, top5, loss)
    monkeypatch.setattr(EvalTrainer, "evaluate", evaluate)


# ---------------------------------------------------------------- config and data


@pytest.mark.parametrize("kw,match", [
    ({"train_ratio": 0.0}, r"--train_ratio must be in \(0, 1\]"),
    ({"train_ratio": 1.5}, r"--train_ratio must be in \(0, 1\]"),
    ({"train_ratio": math.nan}, r"--train_ratio must be in \(0, 1\]"),
    ({"train_ratio": 0.5, "select_on_test": True}, "not both"),
])
def test_bad_selection_settings_are_refused(kw, match) -> None:
    with pytest.raises(UserError, match=match):
        validate_config(_cfg(**kw))
    validate_config(_cfg(select_on_test=True))  # alone, either is fine
    validate_config(_cfg(train_ratio=0.5))


def test_train_ratio_split_sizes_and_disjointness() -> None:
    data = load_datasets(_cfg(train_ratio=0.75))
    n_train = math.floor(0.75 * N_TRAIN)
    assert isinstance(data.train, TransformedSubset) and isinstance(data.holdout, TransformedSubset)
    assert (len(data.train), len(data.holdout), len(data.test)) == (n_train, N_TRAIN - n_train, 360)
    # The LAST images are held out, contiguous, as StacNAS' search split.
    assert data.train.indices == list(range(n_train))
    assert data.holdout.indices == list(range(n_train, N_TRAIN))
    assert data.train.dataset is data.holdout.dataset  # one copy of the images, two views
    # Held-out images get the eval transform (deterministic), training ones the augmentation.
    full = DigitsDataset(train=True)
    img, label = data.holdout[0]
    assert torch.equal(img, eval_transform("digits")(full.data[n_train]))
    assert label == full.targets[n_train]
    assert "RandomCrop" in repr(data.train.transform)


def test_without_train_ratio_the_data_path_is_unchanged() -> None:
    data = load_datasets(_cfg(cutout=True, cutout_length=4))
    assert data.holdout is None and isinstance(data.train, DigitsDataset)
    assert len(data.train) == N_TRAIN
    assert "AutoAugment" not in repr(data.train.transform)


def test_auto_aug_reaches_the_training_transform() -> None:
    for ratio in (1.0, 0.5):
        data = load_datasets(_cfg(auto_aug=True, train_ratio=ratio))
        steps = data.train.transform.transforms
        assert any(isinstance(t, FloatTensorAutoAugment) for t in steps)
        if data.holdout is not None:
            assert "AutoAugment" not in repr(data.holdout.transform)
    assert "AutoAugment" not in repr(data.test.transform)


def test_a_ratio_leaving_no_image_names_the_flag() -> None:
    with pytest.raises(UserError, match="--train_ratio 0.0001 of 1437 images"):
        load_datasets(_cfg(train_ratio=0.0001))


# ---------------------------------------------------------------- selection in a run


def test_best_holdout_epoch_is_kept(tmp_path: Path, monkeypatch) -> None:
    _scripted(monkeypatch, "holdout", [50.0, 70.0, 70.0])  # a tie keeps the earlier epoch
    weights = _run(_cfg(train_ratio=0.8), tmp_path)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["holdout_acc"] for h in history] == [50.0, 70.0, 70.0]
    assert [h["best_epoch"] for h in history] == [0, 1, 1]
    assert _same(_load(tmp_path / BEST_WEIGHTS), weights[1])
    assert _same(_load(tmp_path / WEIGHTS), weights[2])  # weights.pt stays the last epoch's
    log = (tmp_path / "log.txt").read_text()
    assert "holdout_acc 70.000000" in log and "best_weights.pt <- epoch 1" in log
    assert f"final (last epoch 2) valid_acc {history[2]['valid_acc']:f}" in log
    assert (f"best holdout epoch 1: holdout_acc 70.000000, its test valid_acc "
            f"{history[1]['valid_acc']:f}") in log
    best = _load(tmp_path / CHECKPOINT)["best"]
    assert (best["metric"], best["epoch"], best["acc"]) == ("holdout_acc", 1, 70.0)


def test_select_on_test_keeps_the_best_test_epoch_and_says_so(tmp_path: Path,
                                                                monkeypatch) -> None:
    _scripted(monkeypatch, "valid", [30.0, 40.0, 35.0])
    weights = _run(_cfg(select_on_test=True), tmp_path)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["valid_acc"] for h in history] == [30.0, 40.0, 35.0]
    assert [h["best_epoch"] for h in history] == [0, 1, 1]
    assert all("holdout_acc" not in h for h in history)
    assert _same(_load(tmp_path / BEST_WEIGHTS), weights[1])
    log = (tmp_path / "log.txt").read_text()
    assert "selection on the test set, an optimistic estimate" in log
    assert "final (last epoch 2) valid_acc 35.000000" in log
    assert "best test epoch 1: valid_acc 40.000000" in log and "ON THE TEST SET" in log


def test_without_options_nothing_is_selected(tmp_path: Path) -> None:
    _run(_cfg(epochs=1), tmp_path)
    assert not (tmp_path / BEST_WEIGHTS).exists()
    history = json.loads((tmp_path / "history.json").read_text())
    assert set(history[0]) == {"epoch", "lr", "train_acc", "train_loss", "valid_acc",
                               "valid_top5", "valid_loss"}
    assert "best" not in _load(tmp_path / CHECKPOINT)
    log = (tmp_path / "log.txt").read_text()
    assert "holdout" not in log and "best" not in log


def test_resume_with_a_held_out_split_is_bit_identical(tmp_path: Path) -> None:
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _run(_cfg(train_ratio=0.8, ckpt_interval=1), full)
    # Continue epoch 1's checkpoint elsewhere, where a stale best_weights.pt lies (a run killed
    # between writing the file and its checkpoint): the record in the checkpoint wins.
    resumed.mkdir()
    torch.save({"junk": torch.zeros(1)}, resumed / BEST_WEIGHTS)
    _run(_cfg(train_ratio=0.8, ckpt_interval=1), resumed,
         resume_from=str(full / NUMBERED_CHECKPOINT.format(1)))
    for name in (WEIGHTS, BEST_WEIGHTS):
        assert _same(_load(full / name), _load(resumed / name)), name
    assert json.loads((full / "history.json").read_text()) == \
        json.loads((resumed / "history.json").read_text())
    # A finished run resumed again rewrites best_weights.pt from its checkpoint.
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(resumed / BEST_WEIGHTS, again / "expected.pt")
    torch.save({"junk": torch.zeros(1)}, again / BEST_WEIGHTS)
    _run(_cfg(train_ratio=0.8), again, resume_from=str(resumed / CHECKPOINT))
    assert _same(_load(again / BEST_WEIGHTS), _load(again / "expected.pt"))
