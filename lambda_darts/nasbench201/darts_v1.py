"""Λ-DARTS on NAS-Bench-201: AutoDL's first-order DARTS (``DARTS-V1``) with the layer-alignment
regulariser on all 15 search cells (Lambda-DARTS ``NAS-Bench201/exps/algos/DARTS-V1.py``, the
door ``lambda_darts/NAS-Bench201/exps/algos/DARTS-V1.py``).

    cd lambda_darts/NAS-Bench201
    python exps/algos/DARTS-V1.py --dataset cifar10 --data_path ../../data \\
        --corr_regularization --lambda_ 0.25 --epsilon_0 0.0001 --arch_learning_rate 0.0001 \\
        --arch_nas_dataset ../../data/NAS-Bench-201-v1_0-e61699.pth --rand_seed 0
    bash scripts-search/algos/DARTS-V1.sh cifar10 0        # the same, the released defaults

As the released code: the NB201 supernet (C = ``--channel``, N = ``--num_cells`` cells per
stage, one α shared by the 15 cells), hyper-parameters from ``configs/nas-benchmark/algos/
DARTS.config`` (SGD 0.025, cosine to 0.001 over 100 epochs, momentum 0.9, weight decay 3e-4,
batch 64), Adam for α (``--arch_learning_rate``, betas (0.5, 0.999), ``--arch_weight_decay``);
each step **updates the weights first** (training loss, its backward, ``train_corr``, the
regulariser, clipping to 5, SGD), **then α** on the paired validation batch, then
``valid_corr``; AutoDL's data (``shared.data.autodl``): the 25k/25k split of
``configs/nas-benchmark/cifar-split.txt`` (CIFAR-10 and CIFAR-100), every training image paired
with a random validation image, the epoch's accuracy on the valid split with the test
transform; λ_t = λ·e/(E-1). ``--arch_nas_dataset`` (or ``--api_path``): the NAS-Bench-201 file,
queried every epoch and at the end. The log has the original's ``[EEE-TTT] grad correlation:
train=%.2f, valid=%.2f`` line per epoch besides the engine's lines (``train_corr %f
valid_corr %f``, ``epoch %d lambda_ %e``); TensorBoard ``Corr/train``, ``Corr/valid``.

Differences from the released code, each on purpose:

* The run folder is ``{--save_dir}/seed-{S}`` (the engine's ``log.txt``, ``checkpoint.pth.tar``
  every epoch, TensorBoard, ``history.json``, ``genotype.json`` with the last epoch's cell and
  the cell of the best validation accuracy, the plots, ``correlation.png``); the released code
  wrote ``seed-{S}-T-{time}.log`` and ``checkpoint/seed-{S}-basic.pth`` into one folder shared
  by all seeds, overwrote a run of the same seed and had no resume; ``--resume`` continues a
  run here bit-identically, a second run of a seed is refused.
* Gradient clipping covers the weights only: the released ``clip_grad_norm_(network
  .parameters(), 5)`` also counted α's gradient of the training loss in the norm.
* AutoDL updates its scheduler every iteration, but its cosine reads only the epoch (the
  iteration enters during warm-up, 0 here): the lr is the closed-form per-epoch cosine, as
  here.
* The validation images are drawn with replacement from a seeded generator, saved in the
  checkpoint (AutoDL's ``random.choice`` cannot be replayed by a resumed run).
* ``--print_freq`` defaults to 200 and ``--save_dir`` to the script's
  ``./output/search-cell-{space}/DARTS-V1-{dataset}`` (the released ``None`` crashed);
  ``--max_nodes`` other than 4 is refused (the NB201 cell has 4 nodes); ``--workers`` sets the
  DataLoader workers only (the released code also set torch's threads to it).
* ``--corr_regularization`` alone is ``corr`` as released; ``signcorr`` may be named too.
* Added: ``--dataset digits`` (embedded, DARTS' halves: AutoDL has no split for it),
  ``--split_path`` (another AutoDL split file), ``--epochs`` / ``--batch_size`` over the
  config's, ``--resume``, ``--no_progress``, ``--no_plots``, ``--data_on_device`` (the pairing
  drawn on the device, ``shared.data.autodl.device_paired_queues``; the default on CUDA),
  ``--step_capture cuda_graph`` (the whole step, the regulariser's passes included, recorded
  as a CUDA graph once per epoch and replayed: ``shared.search.step_capture``).
* ``torchrun --nproc_per_node N exps/algos/DARTS-V1.py ... --rand_seed S`` runs one
  data-parallel search (``shared.search.data_parallel``: each rank its rows of every global
  batch, held on the device; rank 0 writes and queries the benchmark); a drawn seed is refused
  there, as each process would draw its own. ImageNet16-120 needs AutoDL's
  ``ImageNet16-120-split.txt`` (not shipped): a missing file is named with where to get it.
* ``--lambda`` (the released script's spelling, accepted by prefix matching) is refused with
  the flag's full name.

PC-DARTS with the regulariser (the released ``PCDARTS.py``) needs a partial-channel supernet
that this repository does not have: ``exps/algos/PCDARTS.py`` refuses with a message.
"""
from __future__ import annotations

import os
import random
import sys
from typing import Any, Sequence

from shared.cli.flags import (
    add_data_on_device_flag,
    add_plots_flag,
    add_step_capture_flag,
    refuse_lambda_prefix,
)
from shared.cli.parser import ArgumentParser, parse
from shared.cli.resume import FREE_ON_RESUME, resolve_run
from shared.cli.run_folder import claim_run
from shared.errors import UserError
from shared.spaces import NB201_SPACES

DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet16-120",
            "digits": "digits"}
SPACE_ALIASES = {"nas-bench-102": "nas-bench-201"}  # NAS-Bench-201's name in AutoDL's 2019 code
# The released code read these relative to NAS-Bench201/ (its working directory); here they are
# found from any working directory.
HOME = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "NAS-Bench201")
CONFIG = os.path.join(HOME, "configs", "nas-benchmark", "algos", "DARTS.config")
SPLITS = {"cifar10": "cifar-split.txt", "cifar100": "cifar-split.txt",
          "ImageNet16-120": "ImageNet16-120-split.txt"}
SPLIT_URL = "https://github.com/D-X-Y/AutoDL-Projects/tree/main/configs/nas-benchmark"
# What the config may say: the engine's SGD with a cosine schedule, no warm-up, cross-entropy.
CONFIG_SUPPORTED = {"scheduler": "cos", "optim": "SGD", "warmup": 0, "nesterov": False,
                    "criterion": "Softmax"}


def build_parser() -> ArgumentParser:
    p = ArgumentParser("DARTS-V1.py", description="DARTS first order (+ Λ-DARTS)",
                       allow_abbrev=False)
    add = p.add_argument
    add("--data_path", type=str, default="../../data", help="path to the dataset")
    add("--dataset", type=str, default="cifar10", choices=sorted(DATASETS),
        help="cifar10, cifar100, ImageNet16-120, or the embedded digits")
    add("--search_space_name", type=str, default="nas-bench-102",
        choices=sorted({*SPACE_ALIASES, *NB201_SPACES}), help="the search space name")
    add("--max_nodes", type=int, default=4, help="nodes of the cell (NAS-Bench-201: 4)")
    add("--channel", type=int, default=16, help="the number of channels")
    add("--num_cells", type=int, default=5, help="the number of cells in one stage")
    add("--arch_learning_rate", type=float, default=3e-4, help="learning rate for α")
    add("--arch_weight_decay", type=float, default=1e-3, help="weight decay for α")
    add("--gpu", type=int, default=0, help="gpu id (-1: the CPU)")
    add("--workers", type=int, default=2, help="DataLoader workers")
    add("--save_dir", type=str, default=None,
        help="folder of the runs (default ./output/search-cell-{space}/DARTS-V1-{dataset})")
    add("--arch_nas_dataset", "--api_path", dest="arch_nas_dataset", type=str, default=None,
        help="the NAS-Bench-201 file, queried every epoch (default: none)")
    add("--print_freq", type=int, default=200, help="print frequency")
    add("--rand_seed", type=int, default=None, help="manual seed (none or < 0: drawn)")
    add("--corr_regularization", nargs="?", const="corr", default="none",
        choices=("none", "corr", "signcorr"),
        help="Λ-DARTS' layer gradient correlation regulariser (alone: corr)")
    add("--lambda_", type=float, default=0.125, help="Λ-DARTS: λ (ramped λ·e/(E-1))")
    add("--epsilon_0", type=float, default=1e-4,
        help="Λ-DARTS: finite-difference perturbation norm")
    # Additions of this repository.
    add("--config_path", type=str, default=CONFIG,
        help="AutoDL hyper-parameter file (default: configs/nas-benchmark/algos/DARTS.config)")
    add("--split_path", type=str, default=None,
        help="AutoDL split file (default: the dataset's under configs/nas-benchmark)")
    add("--epochs", type=int, default=None, help="epochs (default: the config's)")
    add("--batch_size", type=int, default=None, help="batch size (default: the config's)")
    add("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
        help="continue a run (default: the one of --rand_seed in --save_dir)")
    add("--no_progress", dest="progress", action="store_false", help="no progress bars")
    add_plots_flag(p)
    add_data_on_device_flag(p)
    add_step_capture_flag(p)
    return p


def read_config(path: str) -> dict[str, Any]:
    """The hyper-parameters of an AutoDL algorithm config, refused where this engine would
    compute something else than it says."""
    from shared.data.autodl import read_autodl_config

    config = read_autodl_config(path)
    missing = {"LR", "eta_min", "epochs", "decay", "momentum", "batch_size"} - config.keys()
    if missing:
        raise UserError(f"{path}: no {', '.join(sorted(missing))}")
    for key, value in CONFIG_SUPPORTED.items():
        if key in config and config[key] != value:
            raise UserError(f"{path}: {key} = {config[key]!r} is not supported (only "
                            f"{value!r}: the engine's SGD with a cosine schedule)")
    return config


def split_path(args) -> str:
    """The AutoDL split file the dataset searches on ('' for digits: DARTS' halves)."""
    if args.split_path is not None:
        path = args.split_path
    elif args.dataset == "digits":
        return ""
    else:
        path = os.path.join(HOME, "configs", "nas-benchmark", SPLITS[args.dataset])
    if not os.path.isfile(path):
        raise UserError(f"--split_path {path}: no such file; AutoDL's split files are in "
                        f"{SPLIT_URL}")
    return path


def validate(args) -> None:
    from shared.cli.checks import COUNT, NON_NEGATIVE, check_flags

    check_flags(args, {"channel": COUNT, "num_cells": COUNT, "print_freq": COUNT,
                       "workers": NON_NEGATIVE})
    if args.max_nodes != 4:
        raise UserError(f"--max_nodes {args.max_nodes}: the NAS-Bench-201 cell has 4 nodes")
    if args.arch_nas_dataset is not None:
        from shared.search.nb201_benchmark import check_benchmark_path

        check_benchmark_path(args.arch_nas_dataset, required=True, flag="--arch_nas_dataset")


def default_save_dir(args) -> str:
    return f"./output/search-cell-{args.search_space_name}/DARTS-V1-{args.dataset}"


def to_config(args, config: dict[str, Any], split: str):
    from shared.cli.config import config_from_args
    from shared.search.cnn_search import CNNSearchConfig

    return config_from_args(
        CNNSearchConfig, args, data=args.data_path, dataset=DATASETS[args.dataset],
        batch_size=args.batch_size or config["batch_size"], learning_rate=config["LR"],
        learning_rate_min=config["eta_min"], momentum=config["momentum"],
        weight_decay=config["decay"], report_freq=args.print_freq,
        epochs=args.epochs or config["epochs"], init_channels=args.channel,
        layers=args.num_cells, seed=args.rand_seed, grad_clip=5.0, train_portion=0.5,
        search_space=SPACE_ALIASES.get(args.search_space_name, args.search_space_name),
        num_workers=args.workers, supernet="nb201", step_order="weights_first",
        lambda_cells="all", record_corr=True, search_data="autodl", split_file=split)


def correlation_line(ctx) -> None:
    """The released per-epoch line, next to the engine's ``train_corr %f valid_corr %f``."""
    entry, epochs = ctx.entry, ctx.loop.epochs
    if entry.get("train_corr") is not None and entry.get("valid_corr") is not None:
        ctx.loop.logger.info("[%03d-%03d] grad correlation: train=%.2f, valid=%.2f", ctx.epoch,
                             epochs, entry["train_corr"], entry["valid_corr"])


def best_epoch(history: list[dict]) -> dict[str, Any]:
    """The epoch of the best validation accuracy and its cell (the released ``-best.pth``)."""
    scored = [(h["valid_acc"], -h["epoch"], h) for h in history if h.get("valid_acc") is not None]
    if not scored:
        return {}
    _, _, best = max(scored)
    return {"best_valid_epoch": best["epoch"], "best_valid_acc": best["valid_acc"],
            "best_valid_genotype": best["genotype"]}


def run(args, save_dir: str, resumed: bool, config: dict[str, Any], split: str) -> Any:
    from shared.cli.run_folder import main_process
    from shared.search import nb201_benchmark as bench_lib
    from shared.search.cnn_search import build_cnn_search, make_alignment, search_process
    from shared.search.phase import run_phase

    cfg = to_config(args, config, split)
    make_alignment(cfg)  # a ramp over one epoch is refused before any folder is made
    # under torchrun: a data-parallel search, rank 0 owns the folder (shared.search.data_parallel)
    with claim_run(save_dir, root=args.save_dir, new=not resumed, unique=False,
                   taken=f"{save_dir} holds a run of seed {args.rand_seed}: continue it with "
                         f"--resume, or pick another --rand_seed",
                   data_parallel=True) as save_dir:
        if main_process():
            print(f"experiment folder: {save_dir}")
        with search_process(cfg, save_dir, resumed) as proc:
            logger = proc.logger
            search = build_cnn_search(cfg, proc.save_dir, logger,
                                      data_parallel=proc.data_parallel, device=proc.device)
            loop = search.loop
            bench = None
            # rank 0 alone queries it (its numbers reach only the files rank 0 writes): one
            # copy of the multi-GiB file in memory, not one per process
            if args.arch_nas_dataset is not None and proc.data_parallel.is_main:
                bench = bench_lib.open_benchmark(args.arch_nas_dataset, logger, required=True,
                                                 flag="--arch_nas_dataset")
                loop.epoch_end_hooks.append(bench_lib.benchmark_hook(bench))
            loop.epoch_end_hooks.append(correlation_line)
            if proc.state is not None:
                loop.load_state_dict(proc.state)
                logger.info("resumed from %s at epoch %d", loop.checkpoint_path,
                            loop.start_epoch)

            def finish(arch, writer) -> dict:
                extra = bench_lib.final_query(bench, arch, logger, writer, loop.epochs)
                return {**extra, **best_epoch(loop.history)}

            arch = run_phase(loop, proc.save_dir, search.space, cfg, finish=finish)
            logger.info("DARTS-V1 : run %d epochs, last-geno is %s.", loop.epochs, arch)
            return arch


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    refuse_lambda_prefix(argv)
    args, typed = parse(build_parser(), argv)
    if args.save_dir is None:
        args.save_dir = default_save_dir(args)
    validate(args)
    seed_typed = args.rand_seed is not None and args.rand_seed >= 0
    pattern = os.path.join(args.save_dir, f"seed-{args.rand_seed}" if seed_typed else "seed-*")
    save_dir, saved = resolve_run(
        args, typed, pattern=pattern, new_dir=lambda: "",
        match=("dataset", "rand_seed") if seed_typed else ("dataset",),
        free=FREE_ON_RESUME | {"workers", "print_freq", "save_dir"})
    if args.rand_seed is None or args.rand_seed < 0:
        from shared.distributed import env_world_size

        if env_world_size() > 1:  # every process would draw a seed of its own
            raise UserError("a data-parallel search (torchrun) needs --rand_seed: each process "
                            "would draw another one")
        args.rand_seed = random.randint(1, 100000)  # as released; the folder names it
    if saved is None:
        save_dir = os.path.join(args.save_dir, f"seed-{args.rand_seed}")
    config = read_config(args.config_path)
    split = split_path(args)
    arch = run(args, save_dir, saved is not None, config, split)
    from shared.cli.run_folder import main_process

    if main_process():  # under torchrun, rank 0 speaks for every rank
        print(f"genotype = {arch}")
