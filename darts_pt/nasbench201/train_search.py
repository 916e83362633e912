"""DARTS-PT on NAS-Bench-201: supernet training and projection (darts-pt
nasbench201/train_search.py).

    cd darts_pt/nasbench201
    python train_search.py --method darts --seed 0 --save darts-201          # supernet, 100 epochs
    python train_search.py --method darts-proj --dev proj --seed 0 --save darts-proj-201 \\
        --resume_epoch 100 --resume_expid search-darts-201-0 --proj_intv 5
    python train_search.py --method blank ...  /  --method blank-proj --dev proj ...
    torchrun --nproc_per_node 2 train_search.py ...     # either phase, data-parallel (the
                                                        # data on the device, rank 0 writes)

Methods: ``darts`` (first order; ``--unrolled`` second order), ``blank`` (alpha never
updated: DARTS-PT fix-alpha), ``sdarts`` (``--perturb_alpha random|pgd_linf``), and the same
with ``-proj``, which ``--dev proj`` needs: after the supernet epochs, the projection of
``darts_pt.projection`` picks one op per edge (NB201 has no topology selection: 'none' removes
an edge), 6 projections ``--proj_intv`` tuning epochs apart (darts-pt
``nasbench201/projection.py``). ``--search_space`` is any NB201-shaped space of
``shared.spaces``.

Every supernet epoch, and once after the projection, the cell (an ``NB201Arch``) is logged and,
when the benchmark file ``--api_path`` exists, queried: the released code's lines
``cifar10 train %f test %f``, ``cifar100 train %f valid %f test %f``, ``imagenet16 train %f
valid %f test %f`` plus ``cifar10-valid train %f valid %f``, in TensorBoard
(``nasbench201/...``) and in the epoch's ``history.json`` entry (the final query in
``genotype.json``). Without the file at the default path the search runs and says once where
to get it; a typed ``--api_path`` that names no file, or a folder, is refused before any
folder or log is made; ``--fast`` skips the benchmark, as the original. The file is loaded
weights-only, never unpickled in full (``shared.nb201_api``).

Folders (as in the released code): the supernet in ``../experiments/nasbench201/search-{save}-{seed}
[-{dataset}][-{expid_tag}]`` with ``log.txt``, the rolling ``checkpoint.pth.tar`` and
``checkpoint_{N}.pth.tar`` every ``--ckpt_interval`` epochs; ``--resume_epoch N --resume_expid
X`` works in ``../experiments/nasbench201/X`` and logs to ``log_resume-{N}_dev-{dev}_seed-{seed}
_intv-{proj_intv}{log_tag}.txt`` (``log_debug.txt`` for ``--log_tag debug``); a projection keeps
its checkpoints, TensorBoard events, ``history.json`` and ``genotype.json`` (the arch string)
in the folder of that log's name.

Differences from the released code, each on purpose:

* A run that continues a checkpoint (``--resume_epoch``) takes the supernet's settings
  (space, size, epochs, learning rates, ...) from it unless they are typed, so a projection of
  a 2-epoch supernet does not first train it on to the default epoch count (the released code
  did); a typed space or size that contradicts the checkpoint is refused
  (``darts_pt/doors.py``).
* ``--resume [DIR]`` continues this command's own run (supernet or projection) from its last
  epoch: the projection writes checkpoints (the original wrote none, so a killed projection
  started over); ``--resume_epoch -1`` loads the supernet's newest checkpoint (the original's
  -1 was broken); a missing ``--resume_expid`` folder or checkpoint is one clear error.
* ``--dev proj`` projects a trained supernet (``--resume_epoch``), as the sota door; the
  original also accepted it with ``--resume_epoch 0`` and projected after training from
  scratch in the same folder and log.
* Cutout during search keeps ``--cutout_prob`` constant: the released linear ramp never took
  effect (it set ``cutout_prob`` on a Cutout that reads ``prob``; on ImageNet16-120 it set it on
  ``Normalize``, the search transform there has no cutout, so ``--cutout`` is refused for it).
* ``--unrolled`` is real second-order DARTS (an addition); so are ``sdarts``/``sdarts-proj``.
* ``--api_path`` names the benchmark file (the original hard-coded it); queries are read
  structurally (``hp='200'``) instead of parsing the API's printout.
* ``--gpu auto`` = the first GPU, or the CPU without CUDA (not gpustat's least-used GPU).
* An existing folder is never deleted or prompted for: a run is refused with the command that
  continues it (a projection with ``--log_tag debug`` restarts, as the original skipped its
  prompt there, in a new folder ``...-2``: the original deleted the old one).
* ``--layers`` and ``--model_path`` are not accepted: the original parsed them but never used
  them for NB201 (N = 5 cells per stage is fixed); ``--method`` has no default (the
  original's ``dirichlet`` crashed).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from darts_pt.doors import add_pt_flags, resolve, search_config, validate_common  # noqa: E402
from shared.cli.flags import (  # noqa: E402
    add_compile_flag,
    add_data_on_device_flag,
    add_plots_flag,
    add_runtime_flags,
    add_step_capture_flag,
)
from shared.cli.parser import ArgumentParser, parse  # noqa: E402
from shared.cli.resume import FREE_ON_RESUME  # noqa: E402
from shared.cli.run_folder import main_process  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402
from shared.nb201_api import BENCHMARK_FILE  # noqa: E402
from shared.search import nb201_benchmark as bench_lib  # noqa: E402
from shared.search.nb201_benchmark import check_benchmark_path  # noqa: E402
from shared.spaces import NB201_EDGES, NB201_SPACES  # noqa: E402

DATASETS = ("cifar10", "cifar100", "imagenet16-120", "digits")
CELLS_PER_STAGE = 5  # darts-pt's N, hard-coded there too
DEFAULT_API_PATH = f"../data/{BENCHMARK_FILE}"


def build_parser() -> ArgumentParser:
    p = ArgumentParser("train_search.py")
    add_pt_flags(p, data="../data", datasets=DATASETS, epochs=100, layers=None,
                 expid_tag="none", proj_intv=5,
                 fast_help="skip the benchmark API; one batch per loop (a quick debugging run)")
    p.add_argument("--search_space", type=str, default="nas-bench-201",
                   choices=sorted(NB201_SPACES))
    p.add_argument("--ckpt_interval", type=int, default=20,
                   help="keep checkpoint_{N}.pth.tar every N supernet epochs")
    p.add_argument("--proj_crit", type=str, default="acc", choices=("loss", "acc"))
    p.add_argument("--api_path", type=str, default=DEFAULT_API_PATH,
                   help="the NAS-Bench-201 benchmark file (queried unless --fast)")
    add_runtime_flags(p, "flags", num_workers=0, experiments="../experiments")
    add_plots_flag(p)
    add_data_on_device_flag(p)
    add_step_capture_flag(p)
    add_compile_flag(p)
    return p


def supernet_name(args) -> str:
    name = f"search-{args.save}-{args.seed}"
    if args.dataset != "cifar10":
        name += f"-{args.dataset}"
    if args.expid_tag != "none":
        name += f"-{args.expid_tag}"
    return name


def resume_log_name(args) -> str:
    """The released code's log name of a resumed run, without .txt (also the projection's
    folder). Its --dev defaulted to None, which the name spelled out."""
    if args.log_tag == "debug":
        return "log_debug"
    return (f"log_resume-{args.resume_epoch}_dev-{args.dev or None}_seed-{args.seed}"
            f"_intv-{args.proj_intv}{args.log_tag}")


def api_required(args, typed: set[str]) -> bool:
    """Whether the benchmark file must exist: ``--api_path`` was typed, or (a run resumed with
    its saved flags, which do not say what was typed) it differs from the default."""
    return "api_path" in typed or args.api_path != DEFAULT_API_PATH


def check_api_path(args, typed: set[str]) -> None:
    """Refuse a benchmark path that cannot be the file before any folder or log is made;
    ``--fast`` skips the benchmark."""
    if not args.fast:
        check_benchmark_path(args.api_path, api_required(args, typed))


def validate(args, typed: set[str] = frozenset()) -> None:
    validate_common(args)
    check_api_path(args, typed)
    if args.cutout:
        if args.dataset == "imagenet16-120":
            raise UserError("--cutout: the released NB201 search has no cutout on "
                            "imagenet16-120 (its transform never took one); drop --cutout")
    if args.dev == "proj":
        from darts_pt.projection import projection_schedule

        projection_schedule(len(NB201_EDGES), 0, args.proj_intv)  # refuses a short schedule


def folders(args) -> tuple[str, str | None, str]:
    """(supernet folder, projection folder or None, log file name)."""
    root = os.path.join(args.experiments, "nasbench201")
    if args.resume_epoch != 0:
        save_dir = os.path.join(root, args.resume_expid)
        if not os.path.isdir(save_dir):
            raise UserError(f"--resume_expid {args.resume_expid!r}: no folder {save_dir}; run "
                            f"the supernet first (e.g. python train_search.py --method darts)")
        name = resume_log_name(args)
        if args.dev == "proj":
            return save_dir, os.path.join(save_dir, name), name + ".txt"
        return save_dir, None, name + ".txt"
    log = "log_debug.txt" if args.log_tag == "debug" else "log.txt"
    return os.path.join(root, supernet_name(args)), None, log


def open_benchmark(args, logger, required: bool = False):
    """The benchmark, or None (``--fast``, or no file at a path the user did not name)."""
    return None if args.fast else bench_lib.open_benchmark(args.api_path, logger, required)


def to_config(args):
    return search_config(args, layers=CELLS_PER_STAGE, supernet="nb201")


def projection_spec(args, search, api_required: bool = False):
    """One op per edge of the shared cell (no topology step: 'none' removes an edge); the
    benchmark, when there is one, queried every supernet epoch and after the projection."""
    from darts_pt.pipeline import ProjectionSpec
    from darts_pt.projection import ProjectionState
    from darts_pt.tuning import ProjectionConfig
    from shared import data as D
    from shared.models.nb201 import TinyNetwork, count_parameters

    # rank 0 alone queries it (its numbers only reach the files rank 0 writes): one copy of
    # the multi-GiB file in memory, not one per process
    bench = (open_benchmark(args, search.logger, required=api_required)
             if search.loop.data_parallel.is_main else None)
    state = ProjectionState(("cell",), search.space.num_edges)
    config = ProjectionConfig(proj_intv=args.proj_intv, crit={"cell": args.proj_crit},
                              learning_rate=args.learning_rate, momentum=args.momentum,
                              weight_decay=args.weight_decay, seed=args.seed, fast=args.fast)

    def describe(arch, logger) -> None:
        final = TinyNetwork(arch, C=16, N=CELLS_PER_STAGE,
                            num_classes=D.NUM_CLASSES[args.dataset],
                            in_channels=D.IN_CHANNELS[args.dataset])
        logger.info("param size = %f (the NAS-Bench-201 network, C=16, N=5)",
                    count_parameters(final) / 1e6)

    def finish(arch, writer) -> dict:
        return bench_lib.final_query(bench, arch, search.logger, writer, search.loop.epochs)

    hooks = [bench_lib.benchmark_hook(bench)] if bench is not None else []
    return ProjectionSpec(state, config, describe, finish=finish, supernet_hooks=hooks)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, typed = parse(build_parser(), argv)
    run = resolve(args, typed, lambda a: validate(a, typed), folders,
                  FREE_ON_RESUME | {"api_path"}, dev_resume=False)
    from darts_pt.pipeline import run_pipeline

    notes = [("cutout: length %d, prob %f (constant; the released ramp never took effect)",
              args.cutout_length, args.cutout_prob)] if args.cutout else []
    required = api_required(args, typed)
    arch = run_pipeline(args, run, to_config(args),
                        lambda search: projection_spec(args, search, required), notes)
    if main_process():  # under torchrun, rank 0 speaks for every rank
        print(f"genotype = {arch}")


if __name__ == "__main__":
    main()
