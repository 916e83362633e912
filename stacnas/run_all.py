"""StacNAS from start to end: stage 1 -> stage 2 -> augment (-> test), as the released
``run_all.py`` (Li et al., "StacNAS", arXiv 1909.11926).

    cd stacnas
    python run_all.py                      # the release's settings, CIFAR-10
    python run_all.py --resume             # continue where it stopped

Every setting the release hard-coded is a flag with the released value as its default: cells
14 / 20 / 20, batch 64 / 96, epochs 80 / 600, channels 16 / 36, auxiliary weight 0 / 0.4,
gradient clip 3 / 5, ``--alpha_share`` (``--no_alpha_share`` to turn it off),
``--train_ratio 1``, and seed 1 for the searches but 3 for augment and test (a typed ``--seed``
is used for every stage). The release wrote to
``/home/user/results_{dataset}_g4_cell_..._seed_1`` and pinned ``CUDA_VISIBLE_DEVICES=0``;
here the folder is the same name under ``../experiments/stacnas`` (or ``--save_dir``) and
``--gpu`` picks the device. ``--feature`` adds the feature analysis of stage 1 and ``--test``
the test of the trained network (both commented out in the release).

``--resume``: each stage that finished is skipped, one that stopped is continued from its
checkpoint (bit-identically), and one that never reached a checkpoint starts again.
The stages run in this process, each through its own door (``search.py``, ``augment.py``,
...), so each stage folder can also be continued with that door's ``--resume``.
``torchrun --nproc_per_node N run_all.py ...`` runs the searches and augment data-parallel
(``shared.search.data_parallel``, DDP), rank 0 writing; ``--feature`` and ``--test`` are then
refused (run them afterwards as one process).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.cli.checks import check_flags  # noqa: E402
from shared.cli.flags import (  # noqa: E402
    add_compile_flag,
    add_data_on_device_flag,
    add_grouped_edges_flag,
    add_grouped_ops_flag,
    add_step_capture_flag,
)
from shared.cli.parser import ArgumentParser, parse  # noqa: E402
from shared.cli.run_folder import holder  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402
from stacnas.config import DATASETS, STACNAS_RULES, dataset_name, gpu_index  # noqa: E402

SEED_SEARCH, SEED_AUGMENT = 1, 3  # the release's run_all.py


def build_parser() -> ArgumentParser:
    p = ArgumentParser("run_all.py", allow_abbrev=False)
    add = p.add_argument
    add("--name", default="stacnas")
    add("--dataset", type=dataset_name, default="cifar10", help=", ".join(DATASETS))
    add("--data_dir", default="../data")
    add("--save_dir", default=None,
        help="root of the three stages (default: the release's name for these settings under "
             "../experiments/stacnas)")
    add("--gpu", type=gpu_index, default=0)
    add("--seed", type=int, default=None,
        help=f"every stage's seed (default: {SEED_SEARCH} for the searches, {SEED_AUGMENT} for "
             "augment and test, as released)")
    add("--num_workers", type=int, default=4)
    add("--train_ratio", type=float, default=1.0, help="the searches' --train_ratio")
    add("--num_cells_search1", type=int, default=14)
    add("--num_cells_search2", type=int, default=20)
    add("--num_cells_augment", type=int, default=20)
    add("--init_channels_search", type=int, default=16)
    add("--init_channels_augment", type=int, default=36)
    add("--batch_size_search", type=int, default=64)
    add("--batch_size_augment", type=int, default=96)
    add("--epochs_search", type=int, default=80)
    add("--epochs_augment", type=int, default=600)
    add("--grad_clip_search", type=float, default=3)
    add("--grad_clip_augment", type=float, default=5)
    add("--aux_weight", type=float, default=0.4, help="augment's auxiliary weight")
    add("--cutout_length", type=int, default=16, help="augment's cutout (0: off)")
    add("--drop_path_prob", type=float, default=0.2)
    add("--label_smooth", type=float, default=0.0)
    add("--power_lr", action="store_true", default=False)
    add("--auto_aug", action="store_true", default=False, help="augment's AutoAugment")
    add("--no_alpha_share", dest="alpha_share", action="store_false",
        help="one α per cell (the release's run_all always shared α)")
    add("--feature", action="store_true", help="run feature.py on stage 1")
    add("--total_samples", type=int, default=10000, help="feature.py's training images")
    add("--test", action="store_true", help="run test.py on the trained network")
    add("--resume", action="store_true", help="continue where the last run_all stopped")
    add_data_on_device_flag(p)
    add_step_capture_flag(p)
    add_compile_flag(p)
    add_grouped_edges_flag(p)
    add_grouped_ops_flag(p)
    add("--no_progress", dest="progress", action="store_false")
    add("--no_plots", dest="plots", action="store_false", help="the searches draw no figures")
    return p


def default_save_dir(a: argparse.Namespace) -> str:
    """The release's folder name for these settings (its ``run_all.py``)."""
    name = (f"results_{a.dataset}_g4_cell_{a.num_cells_search1}_{a.num_cells_search2}_"
            f"{a.num_cells_augment}_bs_{a.batch_size_search}_{a.batch_size_augment}_epoch_"
            f"{a.epochs_search}_{a.epochs_augment}_alpha_share_{a.alpha_share}_aux_0.0_"
            f"{float(a.aux_weight)}_seed_{a.seed if a.seed is not None else SEED_SEARCH}")
    return os.path.join("..", "experiments", "stacnas", name)


def common(a: argparse.Namespace, stage: str, seed: int) -> list[str]:
    argv = ["--name", a.name, "--dataset", a.dataset, "--data_dir", a.data_dir,
            "--save_dir", a.save_dir, "--gpu", str(a.gpu), "--seed", str(seed),
            "--num_workers", str(a.num_workers), "--stage", stage]
    if a.alpha_share:
        argv.append("--alpha_share")
    if not a.progress:
        argv.append("--no_progress")
    return argv


def data_on_device(a: argparse.Namespace) -> list[str]:
    """The searches' and augment's ``--data_on_device`` as typed (neither: their default)."""
    if a.data_on_device is None:
        return []
    return ["--data_on_device" if a.data_on_device else "--no-data_on_device"]


def stage_commands(a: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(stage, door module, its flags) in order."""
    s_seed = a.seed if a.seed is not None else SEED_SEARCH
    e_seed = a.seed if a.seed is not None else SEED_AUGMENT
    power = ["--power_lr"] if a.power_lr else []
    search = ["--batch_size", str(a.batch_size_search), "--init_channels",
              str(a.init_channels_search), "--epochs", str(a.epochs_search), "--grad_clip",
              str(a.grad_clip_search), "--train_ratio", str(a.train_ratio), *power,
              *data_on_device(a), "--step_capture", a.step_capture,
              "--compile", a.compile, *(["--grouped_edges"] if a.grouped_edges else []),
              *([] if a.plots else ["--no_plots"])]
    net = ["--batch_size", str(a.batch_size_augment), "--init_channels",
           str(a.init_channels_augment), "--num_cells", str(a.num_cells_augment)]
    out = [("search1", "search", [*common(a, "search1", s_seed), *search, "--num_cells",
                                  str(a.num_cells_search1)])]
    if a.feature:
        out.append(("feature", "feature", [*common(a, "search1", s_seed), "--batch_size",
                                           str(a.batch_size_search), "--total_samples",
                                           str(a.total_samples)]))
    out.append(("search2", "search", [*common(a, "search2", s_seed), *search, "--num_cells",
                                      str(a.num_cells_search2)]))
    augment = [*common(a, "augment", e_seed), *net, "--epochs", str(a.epochs_augment),
               "--grad_clip", str(a.grad_clip_augment), "--aux_weight", str(a.aux_weight),
               "--cutout_length", str(a.cutout_length), "--drop_path_prob",
               str(a.drop_path_prob), "--label_smooth", str(a.label_smooth), *power,
               *data_on_device(a), "--step_capture", a.step_capture,
               "--compile", a.compile, *(["--grouped_ops"] if a.grouped_ops else [])]
    if a.auto_aug:
        augment.append("--auto_aug")
    out.append(("augment", "augment", augment))
    if a.test:
        out.append(("test", "test", [*common(a, "test", e_seed), *net]))
    return out


def stage_state(folder: str, epochs: int) -> str:
    """``new`` (no folder), ``done``, ``stopped`` (a checkpoint before the last epoch) or
    ``empty`` (a folder without a checkpoint: killed before its first epoch ended)."""
    if not os.path.isdir(folder):
        return "new"
    path = os.path.join(folder, "checkpoint.pth.tar")
    if not os.path.isfile(path):
        return "empty"
    import torch

    try:
        epoch = int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception as exc:  # noqa: BLE001 - one line, whatever is wrong with the file
        raise UserError(f"cannot read {path}: {exc}") from None
    return "done" if epoch >= epochs else "stopped"


def run_stage(module: str, argv: list[str]) -> None:
    """A door's ``main`` in this process (it records its own door in its checkpoints)."""
    import importlib

    door = importlib.import_module(f"stacnas.{module}")
    door.main(argv)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, _ = parse(build_parser(), argv)
    check_flags(args, STACNAS_RULES)
    from shared.distributed import env_world_size

    if env_world_size() > 1 and (args.feature or args.test):
        raise UserError("--feature and --test run as one process: under torchrun, run_all "
                        "runs the searches and augment data-parallel; analyse or test "
                        "afterwards with python feature.py / test.py")
    for key in ("num_cells_search1", "num_cells_search2", "num_cells_augment",
                "init_channels_search", "init_channels_augment", "batch_size_search",
                "batch_size_augment", "epochs_search", "epochs_augment"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key} must be >= 1, got {getattr(args, key)}")
    cells = (args.num_cells_search1, args.num_cells_search2, args.num_cells_augment)
    if not args.alpha_share and len(set(cells)) > 1:
        counts = "/".join(map(str, cells))
        raise UserError(f"--no_alpha_share: every cell has its own α and its own genotype, so "
                        f"the three stages need one number of cells, not {counts} "
                        "(--num_cells_search1/_search2/_augment)")
    if args.save_dir is None:
        args.save_dir = default_save_dir(args)
    epochs = {"search1": args.epochs_search, "search2": args.epochs_search,
              "augment": args.epochs_augment}
    from shared import distributed as dist_utils

    # Under torchrun every rank runs every stage (each data-parallel, rank 0 writing); the
    # process group is held across them, and each stage ends at a barrier, so the next one
    # reads what rank 0 wrote (stage 2 reads stage 1's α, augment stage 2's cell). Rank 0
    # alone looks at the stage folders and tells the others what to do: a rank that looked
    # itself could find the folder rank 0 has just made for the stage.
    with dist_utils.process_group(args.gpu) as (ctx, _):
        for stage, module, stage_argv in stage_commands(args):
            if ctx.is_main:
                stage_argv = prepare_stage(args, stage, stage_argv, epochs)
            stage_argv = dist_utils.broadcast_object(stage_argv, ctx)
            if stage_argv is None:
                continue
            if ctx.is_main:
                print(f"== {stage}: {module}.py {' '.join(stage_argv)}", flush=True)
            run_stage(module, stage_argv)
            dist_utils.barrier(ctx)


def prepare_stage(args: argparse.Namespace, stage: str, argv: list[str],
                  epochs: dict[str, int]) -> list[str] | None:
    """The stage's flags as ``--resume`` finds it (None: done, skipped); a stage folder
    without a checkpoint is removed to start it again."""
    folder = os.path.join(args.save_dir, stage)
    if stage not in epochs:
        return argv
    state = stage_state(folder, epochs[stage])
    if state != "new" and not args.resume:
        raise UserError(f"{folder} exists: continue with --resume, or pass another "
                        "--save_dir")
    if state == "done":
        print(f"== {stage}: done, skipped")
        return None
    if state == "stopped":
        return [*argv, "--resume"]
    if state == "empty":
        if holder(folder) is not None:
            raise UserError(f"{folder} is in use by process {holder(folder)}")
        print(f"== {stage}: {folder} holds no checkpoint; starting the stage again")
        shutil.rmtree(folder)
    return argv


if __name__ == "__main__":
    main()
