"""Train a genotype from scratch on CIFAR-10/100 or SVHN (DARTS-PT sota/cnn/train.py).

    cd darts_pt/sota/cnn && python train.py --arch darts_pt_s5_0 --auxiliary --cutout
    python train.py --arch ../../experiments/sota/cifar10/search-.../genotype.json
    bash exp_scripts/eval.sh --arch darts_pt_s5_0            # the paper's wrapper (--save eval)

Flags and defaults are the original's; the engine (``shared/evaluation``) does the work.
Output: ``../../experiments/sota/{dataset}/eval/{save}-{arch}-{seed}[-cutout-{len}-{prob}]
[-auxiliary-{weight}]`` (no timestamp, as the original; a genotype .json is named by its file
stem) with ``log.txt``, TensorBoard ``runs/``, ``history.json``, ``weights.pt``, the rolling
``checkpoint.pth.tar`` (every epoch) and ``checkpoint_{N}.pth.tar`` every ``--ckpt_interval``
epochs (N = epochs done; 0 keeps none).

Differences from the original, each on purpose:

* Resume: ``--resume_epoch N --resume_expid X`` continues from ``checkpoint_N.pth.tar`` of run
  ``X`` and logs to ``log_resume_{N}.txt`` there; ``--resume_epoch -1`` takes the run's newest
  (rolling) checkpoint and names the log after its epoch. The original looked in
  ``experiments/sota/{dataset}/{X}``, dropping the ``eval/`` of the folders it itself creates
  (a bug): we look in ``experiments/sota/{dataset}/eval/{X}`` first, then in
  ``experiments/sota/{dataset}/{X}``. The engine-wide ``--resume [RUN_DIR]`` works too (bare:
  the folder these flags name). On resume the run's saved flags apply; a typed flag that would
  change the computation is refused.
* An existing run folder without a resume flag is refused with the command that continues it
  (the original asked interactively whether to delete it).
* The result is the LAST epoch's test accuracy (``final (last epoch E) valid_acc``). The
  original's closing ``best valid_acc`` was the maximum TEST accuracy over epochs; it is logged
  each epoch as ``max test acc over epochs``, labelled as information only.
* ``--gpu auto`` is the first GPU (the CPU without CUDA), not gpustat's least-used one;
  ``--gpu -1`` forces the CPU. ``--queue`` called a helper the original never shipped and is
  refused. ``--fast`` (one batch per train/test loop, a debug run) is the engine's
  ``steps_per_epoch = 1``. ``--model_path`` is unused, as in the original.
* Additions: ``--dataset digits`` (embedded data), ``--experiments``, ``--num_workers``,
  ``--amp``, ``--channels_last``, ``--no_progress``; ``torchrun`` for data parallelism.
"""
from __future__ import annotations

import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli.checks import check_flags as check_numbers  # noqa: E402
from shared.cli.config import config_from_args  # noqa: E402
from shared.cli.flags import (  # noqa: E402
    add_compile_flag,
    add_data_on_device_flag,
    add_grouped_ops_flag,
    add_runtime_flags,
    add_step_capture_flag,
)
from shared.cli.parser import ArgumentParser, parse  # noqa: E402
from shared.cli.resume import FREE_ON_RESUME, load_resumed, resolve_run  # noqa: E402
from shared.cli.run_folder import claim_run, inside  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402
from shared.evaluation.cli import arch_label, build_cifar_train_parser, resolve_genotype  # noqa: E402
from shared.evaluation.config import CHECKPOINT, KIND, KIND_WHAT, NUMBERED_CHECKPOINT, EvalConfig  # noqa: E402

DATASETS = ("cifar10", "cifar100", "svhn", "digits")
# Flags a resumed run may change, besides the engine's: where it runs, how it is named and
# checkpointed, and the resume flags themselves.
FREE = FREE_ON_RESUME | {"save", "model_path", "resume_epoch", "resume_expid", "ckpt_interval"}
UNSET_EXPID = ("", "none")  # exp_scripts pass 'none' for "no resume"


def build_parser() -> ArgumentParser:
    p = build_cifar_train_parser(DATASETS, gpu="auto")
    p.add_argument("--resume_epoch", type=int, default=0,
                   help="continue run --resume_expid from its checkpoint_N.pth.tar "
                        "(-1: its newest checkpoint)")
    p.add_argument("--ckpt_interval", type=int, default=50,
                   help="keep checkpoint_N.pth.tar every N epochs (0: none)")
    p.add_argument("--resume_expid", type=str, default="",
                   help="folder name of the run to resume (under experiments/sota/DATASET/eval)")
    p.add_argument("--fast", action="store_true", default=False,
                   help="debug: one batch per train/test loop")
    p.add_argument("--queue", action="store_true", default=False,
                   help="refused: the original's GPU queue helper never existed")
    add_runtime_flags(p, "--save/--arch/--seed/--dataset/--cutout/--auxiliary", num_workers=2)
    add_data_on_device_flag(p)
    add_step_capture_flag(p)
    add_compile_flag(p)
    add_grouped_ops_flag(p)
    return p


def run_dir(args) -> str:
    """{save}-{arch}-{seed}[-cutout-{len}-{prob}][-auxiliary-{weight}] under .../eval."""
    name = f"{args.save}-{arch_label(args.arch)}-{args.seed}"
    if args.cutout:
        name += f"-cutout-{args.cutout_length}-{args.cutout_prob}"
    if args.auxiliary:
        name += f"-auxiliary-{args.auxiliary_weight}"
    return os.path.join(args.experiments, "sota", args.dataset, "eval", name)


def taken(path: str) -> str:
    """The refusal of a new run whose (timestamp-free, as the original) folder exists."""
    return (f"run folder {path} already exists; continue it with --resume_epoch -1 "
            f"--resume_expid {os.path.basename(path)} (or --resume), or start another run "
            f"with a different --save or --seed")


def new_run_dir(args) -> str:
    path = run_dir(args)
    if os.path.exists(path):
        raise UserError(taken(path))
    return path


def check_flags(args) -> str:
    """Refuse contradictory or dead flags; returns the resume expid ('' for none)."""
    check_numbers(args)
    if args.queue:
        raise UserError("--queue waited for a free GPU through a helper the original never "
                        "shipped (ig_utils.queue_gpu); drop it and choose the GPU with --gpu N")
    expid = "" if args.resume_expid in UNSET_EXPID else args.resume_expid
    if args.resume_epoch < -1:
        raise UserError(f"--resume_epoch {args.resume_epoch}: pass N >= 1 (checkpoint_N.pth.tar)"
                        f", -1 (the newest checkpoint) or 0 (a new run)")
    if args.resume_epoch and not expid:
        raise UserError(f"--resume_epoch {args.resume_epoch} needs --resume_expid NAME, the "
                        f"folder of the run to continue (under experiments/sota/DATASET/eval)")
    if expid and not args.resume_epoch:
        raise UserError(f"--resume_expid {expid} needs --resume_epoch N (its "
                        f"checkpoint_N.pth.tar) or --resume_epoch -1 (its newest checkpoint)")
    if expid and args.resume is not None:
        raise UserError("pass either --resume [RUN_DIR] or --resume_epoch/--resume_expid")
    return expid


def resume_checkpoint(experiments: str, dataset: str, expid: str, epoch: int) -> str:
    """The checkpoint ``--resume_epoch epoch --resume_expid expid`` names: in ``eval/{expid}``
    (where runs are), else in ``{expid}`` (where the original looked)."""
    name = CHECKPOINT if epoch == -1 else NUMBERED_CHECKPOINT.format(epoch)
    folders = [os.path.join(experiments, "sota", dataset, "eval", expid),
               os.path.join(experiments, "sota", dataset, expid)]
    for folder in folders:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    existing = [f for f in folders if os.path.isdir(f)]
    if not existing:
        raise UserError(f"--resume_expid {expid}: no run folder {folders[0]} (nor {folders[1]}); "
                        f"pass the folder name of a run of --dataset {dataset}")
    have = sorted(os.path.basename(p) for p in glob.glob(os.path.join(existing[0], "checkpoint*"
                                                                      ".pth.tar")))
    raise UserError(f"--resume_epoch {epoch}: {existing[0]} has no {name} (it has: "
                    f"{', '.join(have) or 'no checkpoint'}; --resume_epoch -1 takes the "
                    f"newest, checkpoint.pth.tar)")


def log_max_test_acc(trainer, stats) -> None:
    """What the original logged as 'best valid_acc' (its valid queue is the test split)."""
    best = max(h["valid_acc"] for h in trainer.history)
    trainer.logger.info("max test acc over epochs %f (information only; the result is the "
                        "last epoch's valid_acc)", best)


def to_config(args) -> EvalConfig:
    return config_from_args(EvalConfig, args, lr_scheduler="cosine",
                            steps_per_epoch=1 if args.fast else 0)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, typed = parse(build_parser(), argv)
    expid = check_flags(args)
    resume_from, log_file = None, "log.txt"
    if expid:
        resume_from = resume_checkpoint(args.experiments, args.dataset, expid, args.resume_epoch)
        saved = load_resumed(args, typed, resume_from, free=FREE, kind=KIND, what=KIND_WHAT)
        save_dir = inside(os.path.dirname(resume_from), args.experiments,
                          f"--resume_expid {expid}'s folder")
        epoch = args.resume_epoch if args.resume_epoch > 0 else int(saved.get("epoch", 0))
        log_file = f"log_resume_{epoch}.txt"
    else:
        save_dir, saved = resolve_run(args, typed, pattern=glob.escape(run_dir(args)),
                                      new_dir=lambda: new_run_dir(args), free=FREE, kind=KIND,
                                      what=KIND_WHAT, match=("save", "arch", "seed", "dataset"))
    genotype = resolve_genotype(args.arch, saved)
    from shared.evaluation.run import run_evaluation

    with claim_run(save_dir, root=args.experiments, new=saved is None, unique=False,
                   data_parallel=True,
                   taken=taken(save_dir)) as save_dir:
        run_evaluation(to_config(args), genotype, save_dir, resume=saved is not None,
                       resume_from=resume_from, log_file=log_file, hooks=[log_max_test_acc])


if __name__ == "__main__":
    main()
