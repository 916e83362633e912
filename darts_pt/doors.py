"""What DARTS-PT's two search doors (``sota/cnn`` and ``nasbench201``) share: which run a
command continues, which checkpoint it starts from, and the refusal to overwrite a run.

A door's command is one of three runs:

* a supernet (``--method darts|blank|sdarts...``), in its own folder;
* the continuation of a supernet's checkpoint (``--resume_epoch N --resume_expid X``), which
  with ``--dev proj`` goes on to project it, in a projection folder inside ``X``;
* ``--resume [DIR]``: this command's own run, continued from its last epoch.

A run that starts from a checkpoint takes the settings that define the supernet
(``SUPERNET_FLAGS``) from it unless they are typed: ``darts-proj-sota.sh --resume_epoch 2``
after a 2-epoch ``darts-sota.sh --epochs 2`` projects that supernet instead of first training
it to the default 50 epochs (the released code did that). A typed setting that contradicts the
checkpoint's network (its space or size) is refused with one clear message.
"""
from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable

from shared.checkpoint import load_checkpoint
from shared.cli import apply_resumed_config
from shared.errors import UserError

CHECKPOINT = "checkpoint.pth.tar"
# Settings of the supernet being continued, taken from its checkpoint unless typed.
SUPERNET_FLAGS = ("search_space", "init_channels", "layers", "epochs", "batch_size",
                  "learning_rate", "learning_rate_min", "momentum", "weight_decay", "cutout",
                  "cutout_length", "cutout_prob", "train_portion", "arch_learning_rate",
                  "arch_weight_decay", "unrolled", "grad_clip", "perturb_alpha",
                  "epsilon_alpha")
# ... of which these shape the network: typed, they must agree with the checkpoint.
NETWORK_FLAGS = ("search_space", "init_channels", "layers")

Folders = Callable[[argparse.Namespace], tuple[str, "str | None", str]]


@dataclass
class Run:
    save_dir: str            # the supernet's folder
    proj_dir: str | None     # the projection's folder (``--dev proj``)
    log_name: str
    saved: dict[str, Any] | None   # this run's own checkpoint (``--resume``)
    source: dict[str, Any] | None  # the checkpoint a new run starts from (supernet or proj)


def saved_flags(state: dict[str, Any]) -> dict[str, Any]:
    return state.get("config", {}).get("extra", {}).get("flags", {})


def supernet_checkpoint(save_dir: str, resume_epoch: int) -> str:
    name = CHECKPOINT if resume_epoch < 0 else f"checkpoint_{resume_epoch}.pth.tar"
    return os.path.join(save_dir, name)


def inherit_supernet_flags(args: argparse.Namespace, flags: dict[str, Any], typed: set[str],
                           origin: str) -> None:
    for key in SUPERNET_FLAGS:
        if key not in flags or not hasattr(args, key):
            continue
        if key not in typed:
            setattr(args, key, flags[key])
        elif key in NETWORK_FLAGS and getattr(args, key) != flags[key]:
            raise UserError(f"--{key} {getattr(args, key)!r} differs from the supernet in "
                            f"{origin} ({flags[key]!r}); drop the flag or pass {flags[key]!r}")


def resolve(args: argparse.Namespace, typed: set[str], validate: Callable, folders: Folders,
            free: set[str], dev_resume: bool = True) -> Run:
    """Settle the folders and the checkpoints of this command (see the module docstring)."""
    saved = None
    if args.resume is not None:
        if args.resume:  # a folder: its checkpoint says what it was
            saved = load_checkpoint(os.path.join(args.resume, CHECKPOINT))
            apply_resumed_config(args, saved_flags(saved), typed, free)
        else:
            validate(args)
            save_dir, proj_dir, _ = folders(args)
            saved = load_checkpoint(os.path.join(proj_dir or save_dir, CHECKPOINT))
    validate(args)
    source = None
    if saved is None and args.resume_epoch != 0:
        save_dir, proj_dir, _ = folders(args)
        if dev_resume and args.dev_resume_epoch >= 0:
            path = os.path.join(save_dir, args.dev_resume_log,
                                f"checkpoint_{args.dev_resume_epoch}.pth.tar")
        else:
            path = supernet_checkpoint(save_dir, args.resume_epoch)
        source = load_checkpoint(path)
        inherit_supernet_flags(args, saved_flags(source), typed, path)
        validate(args)
    save_dir, proj_dir, log_name = folders(args)
    if args.resume:
        if proj_dir is not None:
            save_dir, proj_dir = os.path.dirname(os.path.abspath(args.resume)), args.resume
        else:
            save_dir = args.resume
    if saved is None:
        refuse_existing(proj_dir or save_dir, args)
    return Run(save_dir, proj_dir, log_name, saved, source)


def refuse_existing(run_dir: str, args: argparse.Namespace) -> None:
    """Never overwrite a run silently, never prompt (the original asked with input()).
    A 'debug' tag restarts it, as the original skipped its prompt there."""
    if not os.path.isfile(os.path.join(run_dir, CHECKPOINT)):
        return
    tag = args.log_tag if args.dev == "proj" else args.expid_tag
    if "debug" in (tag or ""):
        shutil.rmtree(run_dir)
        return
    raise UserError(f"{run_dir} already holds a run: add --resume to continue it, or change "
                    f"--save/--seed/--expid_tag (or --log_tag for a projection)")


def gpu_index(gpu: str) -> int:
    """``--gpu auto`` is the first GPU (the CPU without CUDA); -1 forces the CPU."""
    return 0 if gpu == "auto" else int(gpu)
