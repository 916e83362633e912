"""Evaluation configs, the files a run writes, and the checks a config must pass (no torch:
the doors build and check a config before they import the engine)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.errors import UserError

CHECKPOINT = "checkpoint.pth.tar"
NUMBERED_CHECKPOINT = "checkpoint_{}.pth.tar"  # every ``ckpt_interval`` epochs; {} = epochs done
WEIGHTS = "weights.pt"
BEST_WEIGHTS = "best_weights.pt"  # the selected epoch's weights (train_ratio < 1 or select_on_test)
KIND = "evaluation"  # marks our checkpoints, so --resume refuses a search run's checkpoint
KIND_WHAT = "an evaluation run (train.py / train_imagenet.py)"
LR_SCHEDULERS = ("step", "cosine", "linear", "cosine_power")


@dataclass
class EvalConfig:
    data: str = "../../data"
    dataset: str = "cifar10"
    batch_size: int = 96  # global: split across processes under torchrun
    learning_rate: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    report_freq: int = 50
    gpu: int = 0
    epochs: int = 600
    init_channels: int = 36
    layers: int = 20
    auxiliary: bool = False
    auxiliary_weight: float = 0.4
    cutout: bool = False
    cutout_length: int = 16
    cutout_prob: float = 1.0
    drop_path_prob: float = 0.2
    seed: int = 0
    arch: str = "c100_s4_pgd"
    grad_clip: float = 5.0
    label_smooth: float = 0.0
    lr_scheduler: str = "cosine"
    gamma: float = 0.97       # step scheduler
    decay_period: int = 1     # step scheduler
    warmup_epochs: int = 0    # linear warm-up factor (e+1)/warmup_epochs on the first epochs
    top5: bool = False        # ImageNet logs valid_acc_top1 / valid_acc_top5 as DARTS does
    num_workers: int = 2
    # the data set held on the device, augmented there in batches (shared.data.on_device);
    # None: on for a CUDA device when the data set allows it (settled once, saved)
    data_on_device: bool | None = None
    # the training step recorded as a CUDA graph per epoch (shared.capture): off | cuda_graph
    step_capture: str = "off"
    # the network compiled with torch.compile (shared.compile): off | one of its modes
    compile: str = "off"
    # each cell's same-shaped separable convs reading the same states run together
    # (shared.models.grouped_cell); saved, kept on resume
    grouped_ops: bool = False
    amp: bool = False
    channels_last: bool = False
    progress: bool = True
    steps_per_epoch: int = 0  # 0: whole loaders; N: each train/test loop stops after N batches
    ckpt_interval: int = 0    # 0: rolling checkpoint only; N: also keep checkpoint_{N*k}.pth.tar
    auto_aug: bool = False    # StacNAS' --auto_aug: AutoAugment's CIFAR-10 policy in training
    # Train on the first train_ratio of the training set; the rest (the last images, contiguous
    # as StacNAS' search split) is a held-out split scored each epoch (holdout_acc) that picks
    # best_weights.pt. 1: no held-out split, nothing picked (DARTS).
    train_ratio: float = 1.0
    # StacNAS' augment.py keeps the epoch of best TEST accuracy: explicit only, as it selects
    # on the test set (an optimistic estimate); exclusive with train_ratio < 1.
    select_on_test: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # the door's flags, saved for --resume


@dataclass
class TestConfig:
    __test__ = False  # not a pytest test class, despite the name
    data: str = "../../data"
    dataset: str = "cifar10"
    batch_size: int = 96
    report_freq: int = 50
    gpu: int = 0
    init_channels: int = 36
    layers: int = 20
    auxiliary: bool = False
    drop_path_prob: float = 0.2
    seed: int = 0
    arch: str = "DARTS"
    model_path: str = "EXP/model.pt"
    num_workers: int = 2


def validate_config(cfg: EvalConfig) -> None:
    """Refuse settings that would fail late (after data loading) or silently misbehave."""
    for key in ("batch_size", "epochs", "init_channels", "layers", "report_freq",
                "decay_period", "cutout_length"):
        if getattr(cfg, key) < 1:
            raise UserError(f"--{key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("learning_rate", "grad_clip"):
        if not getattr(cfg, key) > 0:
            raise UserError(f"--{key} must be > 0, got {getattr(cfg, key)}")
    checks = [("cutout_prob", 0.0 <= cfg.cutout_prob <= 1.0, "in [0, 1]"),
              ("drop_path_prob", 0.0 <= cfg.drop_path_prob < 1.0, "in [0, 1)"),
              ("label_smooth", 0.0 <= cfg.label_smooth < 1.0, "in [0, 1)"),
              ("auxiliary_weight", cfg.auxiliary_weight >= 0, ">= 0"),
              ("num_workers", cfg.num_workers >= 0, ">= 0"),
              ("warmup_epochs", cfg.warmup_epochs >= 0, ">= 0"),
              ("steps_per_epoch", cfg.steps_per_epoch >= 0, ">= 0"),
              ("ckpt_interval", cfg.ckpt_interval >= 0, ">= 0"),
              ("train_ratio", 0.0 < cfg.train_ratio <= 1.0, "in (0, 1]")]
    for key, ok, rule in checks:
        if not ok:
            raise UserError(f"--{key} must be {rule}, got {getattr(cfg, key)}")
    if cfg.lr_scheduler not in LR_SCHEDULERS:
        raise UserError(f"--lr_scheduler {cfg.lr_scheduler!r}: choose one of "
                        f"{', '.join(LR_SCHEDULERS)}")
    if cfg.select_on_test and cfg.train_ratio < 1.0:
        raise UserError(f"--select_on_test with --train_ratio {cfg.train_ratio}: pick the kept "
                        "epoch on the held-out split (--train_ratio < 1) or on the test set "
                        "(--select_on_test), not both")
