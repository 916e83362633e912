"""DARTS-PT on the DARTS space and S1-S4: supernet training and projection (darts-pt
sota/cnn/train_search.py).

    cd darts_pt/sota/cnn
    python train_search.py --method darts --search_space s5                 # supernet, 50 epochs
    python train_search.py --method darts-proj --search_space s5 --dev proj \\
        --resume_epoch 50 --resume_expid search-darts-sota-s5-2 --edge_decision random
    bash exp_scripts/darts-sota.sh && bash exp_scripts/darts-proj-sota.sh  # the paper's wrappers
    torchrun --nproc_per_node 2 train_search.py ...     # either phase, data-parallel (the
                                                        # data on the device, rank 0 writes)

Methods: ``darts`` (first order; ``--unrolled`` second order), ``blank`` (alpha never
updated: DARTS-PT fix-alpha), ``sdarts`` (``--perturb_alpha random|pgd_linf``), and the same
with ``-proj``, which ``--dev proj`` needs: after the supernet epochs, the projection of
``darts_pt.projection`` selects the architecture (darts-pt ``sota/cnn/projection.py``).

Folders (as in the released code): the supernet in
``../../experiments/sota/{dataset}/search-{save[-expid_tag]}-{space}-{seed}[-unrolled]
[-weight_l2-{wd}][-alpha_l2-{awd}][-cutout-{len}-{prob}]`` with ``log.txt``, the rolling
``checkpoint.pth.tar`` and ``checkpoint_{N}.pth.tar`` every ``--ckpt_interval`` epochs; a
projection logs to ``log_resume-{N}[_dev-resume-{k}]_dev-proj_intv-{i}_ED-{ed}_PCN-{c}_PCR-{c}
_seed-{seed}[_tag-{log_tag}].txt`` in the supernet's folder and keeps its checkpoints,
TensorBoard events, ``history.json`` and ``genotype.json`` in the folder of that name.

Differences from the released code, each on purpose:

* A run that continues a checkpoint (``--resume_epoch``) takes the supernet's settings
  (space, size, epochs, learning rates, ...) from it unless they are typed, so a projection of
  a 2-epoch supernet does not first train it on to the default epoch count (the released code
  did); a typed space or size that contradicts the checkpoint is refused
  (``darts_pt/doors.py``).
* ``--resume [DIR]`` continues this command's own run (supernet or projection) from its last
  epoch; ``--resume_epoch -1`` loads the supernet's newest checkpoint (the original's -1 was
  broken); a missing ``--resume_expid`` folder or checkpoint is one clear error.
* ``--unrolled`` is real second-order DARTS (the original only renamed the folder).
* ``--edge_decision`` defaults to ``random``, the only rule implemented (the original's
  default ``sgas`` crashed unless ``random`` was passed).
* ``--proj_crit_edge`` is the topology criterion (parsed but unused by the original, which
  used the cell's criterion; every script passes the same value to all three).
* ``--gpu auto`` = the first GPU, or the CPU without CUDA (not gpustat's least-used GPU).
* An existing folder is never deleted and never prompted for: a run is refused with the
  command that continues it (``debug`` in ``--expid_tag`` restarts it, as the original skipped
  its prompt there, in a new folder ``...-2``: the original deleted the old one).
* Dropped: ``--tune_epochs`` (unused by projection), ``--proj_mode_edge`` and ``--arch_opt``
  accept only their one implemented value; ``--deter`` is accepted because runs here are
  always deterministic (cuDNN deterministic, seeded generators).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from darts_pt.doors import add_pt_flags, resolve, search_config, validate_common  # noqa: E402
from shared.cli.flags import (  # noqa: E402
    add_compile_flag,
    add_data_on_device_flag,
    add_grouped_edges_flag,
    add_plots_flag,
    add_runtime_flags,
    add_step_capture_flag,
    settings_suffix,
)
from shared.cli.parser import ArgumentParser, parse  # noqa: E402
from shared.cli.run_folder import main_process  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402
from shared.spaces import SPACES  # noqa: E402

DATASETS = ("cifar10", "cifar100", "svhn", "digits")


def build_parser() -> ArgumentParser:
    p = ArgumentParser("train_search.py")
    add_pt_flags(p, data="../../data", datasets=DATASETS, epochs=50, layers=8, expid_tag="",
                 proj_intv=10, fast_help="one batch per loop (a quick debugging run)")
    p.add_argument("--search_space", type=str, default="s5", choices=sorted(SPACES))
    p.add_argument("--ckpt_interval", type=int, default=10,
                   help="keep checkpoint_{N}.pth.tar every N supernet epochs")
    p.add_argument("--arch_opt", type=str, default="adam", choices=("adam",))
    p.add_argument("--deter", action="store_true", default=False,
                   help="deterministic run (always on here)")
    p.add_argument("--dev_resume_epoch", type=int, default=-1,
                   help="restart the projection from its checkpoint_{k}.pth.tar")
    p.add_argument("--dev_resume_log", type=str, default="",
                   help="the projection folder (log name) holding that checkpoint")
    for cell in ("normal", "reduce", "edge"):
        p.add_argument(f"--proj_crit_{cell}", type=str, default="acc", choices=("loss", "acc"))
    p.add_argument("--proj_mode_edge", type=str, default="reg", choices=("reg",))
    add_runtime_flags(p, "flags", num_workers=0)
    add_plots_flag(p)
    add_data_on_device_flag(p)
    add_step_capture_flag(p)
    add_compile_flag(p)
    add_grouped_edges_flag(p)
    return p


def supernet_name(args) -> str:
    tag = f"-{args.expid_tag}" if args.expid_tag else ""
    return f"search-{args.save}{tag}-{args.search_space}-{args.seed}" + settings_suffix(args)


def projection_name(args) -> str:
    """The released code's log name, without .txt (also the projection's folder)."""
    name = f"log_resume-{args.resume_epoch}"
    if args.dev_resume_epoch >= 0:
        name += f"_dev-resume-{args.dev_resume_epoch}"
    name += (f"_dev-proj_intv-{args.proj_intv}_ED-{args.edge_decision}"
             f"_PCN-{args.proj_crit_normal}_PCR-{args.proj_crit_reduce}_seed-{args.seed}")
    if args.log_tag:
        name += f"_tag-{args.log_tag}"
    return name


def validate(args) -> None:
    validate_common(args)
    if args.layers < 3:
        raise UserError("--layers must be >= 3 (two reduction cells at L//3 and 2L//3)")
    if args.dev_resume_epoch >= 0 and not (args.dev == "proj" and args.dev_resume_log):
        raise UserError("--dev_resume_epoch needs --dev proj and --dev_resume_log")
    if args.compile != "off":
        # every forward reads the mixing weights on the host to skip those exactly 0, and each
        # new mask would be another compilation (shared.compile)
        raise UserError("--compile: DARTS-PT's supernet skips the candidates of weight exactly "
                        "0, which it reads on the host every forward, so it is not compiled; "
                        "run it with --compile off")


def folders(args) -> tuple[str, str | None, str]:
    """(supernet folder, projection folder or None, log file name)."""
    root = os.path.join(args.experiments, "sota", args.dataset)
    if args.resume_epoch != 0:
        save_dir = os.path.join(root, args.resume_expid)
        if not os.path.isdir(save_dir):
            raise UserError(f"--resume_expid {args.resume_expid!r}: no folder {save_dir}; run "
                            f"the supernet first (e.g. bash exp_scripts/darts-sota.sh)")
    else:
        save_dir = os.path.join(root, supernet_name(args))
    if args.dev == "proj":
        name = projection_name(args)
        return save_dir, os.path.join(save_dir, name), name + ".txt"
    if args.resume_epoch != 0:
        return save_dir, None, f"log_resume-{args.resume_epoch}_seed-{args.seed}.txt"
    return save_dir, None, "log.txt"


def to_config(args):
    """darts-pt's DARTS-space supernet skips candidates of weight exactly 0 (``MixedOp``)."""
    return search_config(args, skip_zero_weights=True)


def projection_spec(args, search):
    """The DARTS cell's projection: an op per edge of each cell type, then two inputs per node."""
    from darts_pt.pipeline import ProjectionSpec
    from darts_pt.projection import ProjectionState, darts_nid2eids, projected_genotype
    from darts_pt.tuning import ProjectionConfig
    from shared.models.cnn import build_final_network, count_parameters
    from shared.spaces import NUM_EDGES

    state = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
    config = ProjectionConfig(proj_intv=args.proj_intv,
                              crit={"normal": args.proj_crit_normal,
                                    "reduce": args.proj_crit_reduce},
                              crit_edge=args.proj_crit_edge, learning_rate=args.learning_rate,
                              momentum=args.momentum, weight_decay=args.weight_decay,
                              seed=args.seed, fast=args.fast)

    def describe(genotype, logger) -> None:
        n_params = count_parameters(build_final_network(genotype, args.dataset, 36, 20))
        logger.info("param size = %f", n_params / 1e6)

    return ProjectionSpec(state, config, describe, select=lambda m: (
        projected_genotype(state, search.space) if state.complete() else m.genotype()))


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, typed = parse(build_parser(), argv)
    run = resolve(args, typed, validate, folders)
    from darts_pt.pipeline import run_pipeline

    genotype = run_pipeline(args, run, to_config(args),
                            lambda search: projection_spec(args, search))
    if main_process():  # under torchrun, rank 0 speaks for every rank
        print(f"genotype = {genotype}")


if __name__ == "__main__":
    main()
