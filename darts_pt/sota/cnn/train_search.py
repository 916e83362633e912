"""DARTS-PT on the DARTS space and S1-S4: supernet training and projection (darts-pt
sota/cnn/train_search.py).

    cd darts_pt/sota/cnn
    python train_search.py --method darts --search_space s5                 # supernet, 50 epochs
    python train_search.py --method darts-proj --search_space s5 --dev proj \\
        --resume_epoch 50 --resume_expid search-darts-sota-s5-2 --edge_decision random
    bash exp_scripts/darts-sota.sh && bash exp_scripts/darts-proj-sota.sh  # the paper's wrappers

Methods: ``darts`` (first order; ``--unrolled`` second order), ``blank`` (alpha never
updated: DARTS-PT fix-alpha), ``sdarts`` (``--perturb_alpha random|pgd_linf``), and the same
with ``-proj``, which ``--dev proj`` needs: after the supernet epochs, the projection of
``darts_pt.projection`` selects the architecture (reference dartspt_lambda.md §2.3, §3).

Folders (reference §2.6): the supernet in
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
* An existing folder is never deleted silently and never prompted for: a run is refused with
  the command that continues it (``debug`` in ``--expid_tag`` restarts it, as the original
  skipped its prompt there).
* Dropped: ``--tune_epochs`` (unused by projection), ``--proj_mode_edge`` and ``--arch_opt``
  accept only their one implemented value; ``--deter`` is accepted because runs here are
  always deterministic (cuDNN deterministic, seeded generators).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from darts_pt.doors import (Run, add_pt_flags, gpu_index, resolve,  # noqa: E402
                            supernet_checkpoint, validate_common)
from darts_pt.projection import ProjectionState, darts_nid2eids, projected_genotype  # noqa: E402
from darts_pt.tuning import ProjectionConfig, tuning_loop  # noqa: E402
from shared.cli import (ArgumentParser, add_runtime_flags,  # noqa: E402
                        explicit_flags, settings_suffix)
from shared.errors import UserError, cli_entry  # noqa: E402
from shared.models.cnn import build_final_network, count_parameters  # noqa: E402
from shared.logs import close_logger, setup_logger  # noqa: E402
from shared.search.cnn_search import (CNNSearchConfig,  # noqa: E402
                                      attach_outputs, build_cnn_search, write_outputs)
from shared.spaces import NUM_EDGES, SPACES  # noqa: E402

DATASETS = ("cifar10", "cifar100", "svhn", "digits")
# Flags that may change when a run is resumed: where and how fast it runs, not what it computes.
FREE_ON_RESUME = {"resume", "gpu", "num_workers", "data", "report_freq", "progress",
                  "experiments"}


def build_parser() -> ArgumentParser:
    p = ArgumentParser("sota")
    add_pt_flags(p, data="../../data", datasets=DATASETS, epochs=50, expid_tag="",
                 proj_intv=10, fast_help="one batch per loop (a quick debugging run)")
    p.add_argument("--layers", type=int, default=8, help="total number of layers")
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


def to_config(args) -> CNNSearchConfig:
    return CNNSearchConfig(
        data=args.data, dataset=args.dataset, batch_size=args.batch_size,
        learning_rate=args.learning_rate, learning_rate_min=args.learning_rate_min,
        momentum=args.momentum, weight_decay=args.weight_decay, report_freq=args.report_freq,
        gpu=gpu_index(args.gpu), epochs=args.epochs, init_channels=args.init_channels,
        layers=args.layers, cutout=args.cutout, cutout_length=args.cutout_length,
        cutout_prob=args.cutout_prob, seed=args.seed, grad_clip=args.grad_clip,
        train_portion=args.train_portion, unrolled=args.unrolled,
        arch_learning_rate=args.arch_learning_rate, arch_weight_decay=args.arch_weight_decay,
        search_space=args.search_space, num_workers=args.num_workers, amp=args.amp,
        channels_last=args.channels_last, progress=args.progress,
        alpha_update="fixed" if args.method.startswith("blank") else "bilevel",
        perturb_alpha=args.perturb_alpha if args.method.startswith("sdarts") else "none",
        epsilon_alpha=args.epsilon_alpha,
        extra={"method": args.method,
               "flags": {k: v for k, v in vars(args).items() if k != "resume"}})


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    typed = explicit_flags(parser, argv if argv is not None else sys.argv[1:])
    run_ = resolve(args, typed, validate, folders, FREE_ON_RESUME)
    print(f"experiment folder: {run_.proj_dir or run_.save_dir}")
    logger = setup_logger(run_.save_dir, run_.log_name)
    try:
        genotype = run(args, run_, logger)
    finally:
        close_logger(logger)
    print(f"genotype = {genotype}")


def run(args, run_: Run, logger):
    save_dir, proj_dir, saved, source = run_.save_dir, run_.proj_dir, run_.saved, run_.source
    cfg = to_config(args)
    search = build_cnn_search(cfg, save_dir, logger, numbered_checkpoints=args.ckpt_interval,
                              max_batches=1 if args.fast else None)
    loop, writers = search.loop, []
    try:
        if proj_dir is not None:
            if saved is None and args.dev_resume_epoch < 0:  # a fresh projection
                loop.load_state_dict(source)
                logger.info("loaded supernet checkpoint %s (epoch %d)",
                            supernet_checkpoint(save_dir, args.resume_epoch), loop.start_epoch)
                if loop.start_epoch < loop.epochs:  # the released code trains the rest first
                    writers.append(attach_outputs(loop, save_dir, search.space))
                    write_outputs(save_dir, search.space, loop.history, loop.run(), cfg)
            return project(args, search, proj_dir, saved or source, writers,
                           resumed=saved is not None)
        if saved is not None:
            loop.load_state_dict(saved)
            logger.info("resumed from %s at epoch %d", loop.checkpoint_path, loop.start_epoch)
        elif source is not None:
            loop.load_state_dict(source)
            logger.info("loaded supernet checkpoint %s (epoch %d)",
                        supernet_checkpoint(save_dir, args.resume_epoch), loop.start_epoch)
        writers.append(attach_outputs(loop, save_dir, search.space))
        genotype = loop.run()
        write_outputs(save_dir, search.space, loop.history, genotype, cfg)
        return genotype
    finally:
        for w in writers:
            w.close()


def project(args, search, proj_dir: str, start: dict | None, writers: list, resumed: bool):
    """The projection phase; ``start``: the tuning checkpoint it continues (``--resume``, or
    ``--dev_resume_epoch``'s), else None (the supernet is loaded already)."""
    cfg, logger = search.cfg, search.logger
    state = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
    pcfg = ProjectionConfig(proj_intv=args.proj_intv,
                            crit={"normal": args.proj_crit_normal,
                                  "reduce": args.proj_crit_reduce},
                            crit_edge=args.proj_crit_edge, learning_rate=args.learning_rate,
                            momentum=args.momentum, weight_decay=args.weight_decay,
                            seed=args.seed, fast=args.fast)
    tune = tuning_loop(search.loop, state, pcfg, proj_dir, batch_size=cfg.batch_size,
                       num_workers=cfg.num_workers,
                       select=lambda m: (projected_genotype(state, search.space)
                                         if state.complete() else m.genotype()))
    if resumed:
        tune.load_state_dict(start)
        logger.info("resumed projection from %s at epoch %d", tune.checkpoint_path,
                    tune.start_epoch)
    elif args.dev_resume_epoch >= 0:
        tune.load_state_dict(start)
        logger.info("=> loaded projection checkpoint %s/checkpoint_%d.pth.tar",
                    args.dev_resume_log, args.dev_resume_epoch)
    else:
        valid_acc, valid_obj = tune.infer()
        logger.info("valid_acc  %f", valid_acc)
        logger.info("valid_loss %f", valid_obj)
    writers.append(attach_outputs(tune, proj_dir, search.space))
    genotype = tune.run()
    logger.info("projection finished")
    n_params = count_parameters(build_final_network(genotype, cfg.dataset, 36, 20))
    logger.info("param size = %f", n_params / 1e6)
    logger.info("genotype = %s", genotype)
    write_outputs(proj_dir, search.space, tune.history, genotype, cfg)
    return genotype


if __name__ == "__main__":
    main()
