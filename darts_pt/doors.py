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
from dataclasses import dataclass
from typing import Any, Callable

from shared.cli.checks import check_flags
from shared.cli.config import config_from_args
from shared.cli.flags import add_alignment_flags, add_darts_search_flags, add_perturbation_flags
from shared.cli.resume import CHECKPOINT, FREE_ON_RESUME, check_door, load_resumed, saved_flags
from shared.errors import UserError

METHODS = ("darts", "blank", "sdarts", "darts-proj", "blank-proj", "sdarts-proj")
# Settings of the supernet being continued, taken from its checkpoint unless typed.
SUPERNET_FLAGS = ("search_space", "init_channels", "layers", "epochs", "batch_size",
                  "learning_rate", "learning_rate_min", "momentum", "weight_decay", "cutout",
                  "cutout_length", "cutout_prob", "train_portion", "arch_learning_rate",
                  "arch_weight_decay", "unrolled", "grad_clip", "perturb_alpha",
                  "epsilon_alpha", "corr_regularization", "lambda_", "epsilon_0",
                  "lambda_cells", "fresh_noise")
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
    restart: bool = False          # a 'debug' tag: a taken folder name gets a -2, -3 ... suffix
    source_path: str = ""          # where ``source`` was read


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
            free: frozenset[str] = FREE_ON_RESUME, dev_resume: bool = True) -> Run:
    """Settle the folders and the checkpoints of this command (see the module docstring)."""
    from shared.checkpoint import load_checkpoint

    saved = None
    if args.resume is not None:
        if args.resume:  # a folder: its checkpoint says what it was
            saved = load_resumed(args, typed, os.path.join(args.resume, CHECKPOINT), free=free)
        else:
            validate(args)
            save_dir, proj_dir, _ = folders(args)
            path = os.path.join(proj_dir or save_dir, CHECKPOINT)
            saved = load_checkpoint(path)
            check_door(saved, path)
    validate(args)
    source, source_path = None, ""
    if saved is None and args.resume_epoch != 0:
        save_dir, proj_dir, _ = folders(args)
        if dev_resume and args.dev_resume_epoch >= 0:
            path = os.path.join(save_dir, args.dev_resume_log,
                                f"checkpoint_{args.dev_resume_epoch}.pth.tar")
        else:
            path = supernet_checkpoint(save_dir, args.resume_epoch)
        source, source_path = load_checkpoint(path), path
        check_door(source, path)
        inherit_supernet_flags(args, saved_flags(source), typed, path)
        validate(args)
    save_dir, proj_dir, log_name = folders(args)
    if args.resume:
        if proj_dir is not None:
            save_dir, proj_dir = os.path.dirname(os.path.abspath(args.resume)), args.resume
        else:
            save_dir = args.resume
    restart = False
    if saved is None:
        from shared.cli.run_folder import main_process

        restart = debug_restart(args)
        # under torchrun rank 0 alone checks: another rank could find the folder rank 0 has
        # just claimed for this very run
        if main_process() and os.path.exists(proj_dir or save_dir) and not restart:
            raise UserError(taken(proj_dir or save_dir))
    return Run(save_dir, proj_dir, log_name, saved, source, restart, source_path)


def debug_restart(args: argparse.Namespace) -> bool:
    """A 'debug' tag starts the run again where the original skipped its overwrite prompt; here
    in a new folder (``-2``, ``-3`` ...): an existing folder is never deleted."""
    tag = args.log_tag if args.dev == "proj" else args.expid_tag
    return "debug" in (tag or "")


def taken(run_dir: str) -> str:
    """The refusal of a new run whose folder exists (never overwritten, never prompted for: the
    original asked with input() whether to delete it)."""
    from shared.cli.run_folder import holder

    pid = holder(run_dir)
    if pid is not None:
        what = f"is in use by process {pid} (the same run, started before): let it finish"
    elif os.path.isfile(os.path.join(run_dir, CHECKPOINT)):
        what = "already holds a run: add --resume to continue it"
    else:
        what = ("already exists but holds no checkpoint (a run stopped before its first epoch "
                "ended?): remove it yourself")
    return (f"{run_dir} {what}, or change --save/--seed/--expid_tag (or --log_tag for a "
            "projection)")


def add_pt_flags(p: argparse.ArgumentParser, *, data: str, datasets: tuple[str, ...],
                 epochs: int, layers: int | None, expid_tag: str, proj_intv: int,
                 fast_help: str) -> None:
    """DARTS' search flags (``shared.cli.flags``) with DARTS-PT's defaults, SDARTS'
    perturbation, and the flags both DARTS-PT search doors add, with the defaults that differ
    between them passed in."""
    add_darts_search_flags(p, datasets=datasets, data=data, epochs=epochs, layers=layers,
                           gpu="auto")
    add_perturbation_flags(p)
    add_alignment_flags(p)  # a Λ-DARTS supernet to project (shared.search.alignment)
    p.add_argument("--method", type=str, default=None, choices=METHODS)
    p.add_argument("--resume_epoch", type=int, default=0,
                   help="load checkpoint_{N}.pth.tar of --resume_expid (-1: its newest)")
    p.add_argument("--resume_expid", type=str, default="", help="supernet folder to load")
    p.add_argument("--dev", type=str, default="", choices=("", "proj"),
                   help="proj: run the projection after the supernet epochs")
    p.add_argument("--expid_tag", type=str, default=expid_tag, help="extra tag in the folder name")
    p.add_argument("--log_tag", type=str, default="", help="extra tag in the projection's log")
    p.add_argument("--fast", action="store_true", default=False, help=fast_help)
    p.add_argument("--edge_decision", type=str, default="random", choices=("random",))
    p.add_argument("--proj_intv", type=int, default=proj_intv,
                   help="tuning epochs between projections")


def search_config(args: argparse.Namespace, **overrides: Any):
    """The engine's config of a DARTS-PT search: Blank-PT fixes alpha, the ``sdarts`` methods
    perturb it; every flag is saved for ``--resume``."""
    from shared.search.cnn_search import CNNSearchConfig

    return config_from_args(
        CNNSearchConfig, args, extra={"method": args.method},
        alpha_update="fixed" if args.method.startswith("blank") else "bilevel",
        perturb_alpha=args.perturb_alpha if args.method.startswith("sdarts") else "none",
        **overrides)


def validate_common(args: argparse.Namespace) -> None:
    """The checks both DARTS-PT search doors make."""
    if args.method is None:
        raise UserError(f"--method is required: one of {', '.join(METHODS)}")
    check_flags(args)
    if args.dev == "proj" and not args.method.endswith("-proj"):
        raise UserError(f"--dev proj needs a projection method: --method {args.method}-proj")
    if args.perturb_alpha != "none" and not args.method.startswith("sdarts"):
        raise UserError("--perturb_alpha needs --method sdarts or sdarts-proj")
    if args.resume_epoch < -1:
        raise UserError("--resume_epoch: N >= 1 loads checkpoint_{N}.pth.tar, -1 the newest")
    if args.resume_epoch != 0 and not args.resume_expid:
        raise UserError("--resume_epoch needs --resume_expid (the supernet folder's name)")
    if args.dev == "proj" and args.resume_epoch == 0:
        raise UserError("--dev proj projects a trained supernet: pass --resume_epoch N "
                        "--resume_expid search-... (or -1 for its newest checkpoint)")
