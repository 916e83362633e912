"""DARTS-PT on NAS-Bench-201: supernet training and projection (darts-pt
nasbench201/train_search.py).

    cd darts_pt/nasbench201
    python train_search.py --method darts --seed 0 --save darts-201          # supernet, 100 epochs
    python train_search.py --method darts-proj --dev proj --seed 0 --save darts-proj-201 \\
        --resume_epoch 100 --resume_expid search-darts-201-0 --proj_intv 5
    python train_search.py --method blank ...  /  --method blank-proj --dev proj ...

Methods: ``darts`` (first order; ``--unrolled`` second order), ``blank`` (alpha never
updated: DARTS-PT fix-alpha), ``sdarts`` (``--perturb_alpha random|pgd_linf``), and the same
with ``-proj``, which ``--dev proj`` needs: after the supernet epochs, the projection of
``darts_pt.projection`` picks one op per edge (NB201 has no topology selection: 'none' removes
an edge), 6 projections ``--proj_intv`` tuning epochs apart (reference dartspt_lambda.md §2.2,
§3.1-3.3, §3.5). ``--search_space`` is any NB201-shaped space of ``shared.spaces``.

Every supernet epoch, and once after the projection, the cell (an ``NB201Arch``) is logged and,
when the benchmark file ``--api_path`` exists, queried: the released code's lines
``cifar10 train %f test %f``, ``cifar100 train %f valid %f test %f``, ``imagenet16 train %f
valid %f test %f`` plus ``cifar10-valid train %f valid %f``, in TensorBoard
(``nasbench201/...``) and in the epoch's ``history.json`` entry (the final query in
``genotype.json``). Without the file the search runs and says once where to get it; ``--fast``
skips the benchmark, as the original.

Folders (reference §2.6): the supernet in ``../experiments/nasbench201/search-{save}-{seed}
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
  prompt there).
* ``--layers`` and ``--model_path`` are not accepted: the original parsed them but never used
  them for NB201 (N = 5 cells per stage is fixed); ``--method`` has no default (the
  original's ``dirichlet`` crashed).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from darts_pt.doors import (Run, add_pt_flags, gpu_index, resolve,  # noqa: E402
                            supernet_checkpoint, validate_common)
from darts_pt.projection import ProjectionState, projection_schedule  # noqa: E402
from darts_pt.tuning import ProjectionConfig, tuning_loop  # noqa: E402
from shared import data as D  # noqa: E402
from shared.cli import (ArgumentParser, add_runtime_flags,  # noqa: E402
                        explicit_flags)
from shared.errors import UserError, cli_entry  # noqa: E402
from shared.logs import close_logger, setup_logger  # noqa: E402
from shared.models.nb201 import TinyNetwork, count_parameters  # noqa: E402
from shared.nb201_api import BENCHMARK_FILE, BENCHMARK_URL, NB201Benchmark  # noqa: E402
from shared.nb201_arch import NB201Arch  # noqa: E402
from shared.search.cnn_search import (CNNSearchConfig,  # noqa: E402
                                      attach_outputs, build_cnn_search, write_outputs)
from shared.spaces import NB201_EDGES, NB201_SPACES  # noqa: E402

DATASETS = ("cifar10", "cifar100", "imagenet16-120", "digits")
CELLS_PER_STAGE = 5  # darts-pt's N, hard-coded there too
# Flags that may change when a run is resumed: where and how fast it runs, not what it computes.
FREE_ON_RESUME = {"resume", "gpu", "num_workers", "data", "report_freq", "progress",
                  "experiments", "api_path"}
BENCHMARK_KEY = "nasbench201"  # history entry / TensorBoard prefix of the query results


def build_parser() -> ArgumentParser:
    p = ArgumentParser("sota")
    add_pt_flags(p, data="../data", datasets=DATASETS, epochs=100, expid_tag="none",
                 proj_intv=5, fast_help="skip the benchmark API; one batch per loop (a quick "
                                        "debugging run)")
    p.add_argument("--search_space", type=str, default="nas-bench-201",
                   choices=sorted(NB201_SPACES))
    p.add_argument("--ckpt_interval", type=int, default=20,
                   help="keep checkpoint_{N}.pth.tar every N supernet epochs")
    p.add_argument("--proj_crit", type=str, default="acc", choices=("loss", "acc"))
    p.add_argument("--api_path", type=str, default=f"../data/{BENCHMARK_FILE}",
                   help="the NAS-Bench-201 benchmark file (queried unless --fast)")
    add_runtime_flags(p, "flags", num_workers=0)
    p.set_defaults(experiments="../experiments")
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


def validate(args) -> None:
    validate_common(args)
    if args.cutout:
        if args.dataset == "imagenet16-120":
            raise UserError("--cutout: the released NB201 search has no cutout on "
                            "imagenet16-120 (its transform never took one); drop --cutout")
        if args.cutout_length < 0 or not 0.0 <= args.cutout_prob <= 1.0:
            raise UserError("--cutout_length must be >= 0 and --cutout_prob in [0, 1]")
    if args.dev == "proj":
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


def to_config(args) -> CNNSearchConfig:
    return CNNSearchConfig(
        data=args.data, dataset=args.dataset, batch_size=args.batch_size,
        learning_rate=args.learning_rate, learning_rate_min=args.learning_rate_min,
        momentum=args.momentum, weight_decay=args.weight_decay, report_freq=args.report_freq,
        gpu=gpu_index(args.gpu), epochs=args.epochs, init_channels=args.init_channels,
        layers=CELLS_PER_STAGE, cutout=args.cutout, cutout_length=args.cutout_length,
        cutout_prob=args.cutout_prob, seed=args.seed, grad_clip=args.grad_clip,
        train_portion=args.train_portion, unrolled=args.unrolled,
        arch_learning_rate=args.arch_learning_rate, arch_weight_decay=args.arch_weight_decay,
        search_space=args.search_space, num_workers=args.num_workers, amp=args.amp,
        channels_last=args.channels_last, progress=args.progress, supernet="nb201",
        alpha_update="fixed" if args.method.startswith("blank") else "bilevel",
        perturb_alpha=args.perturb_alpha if args.method.startswith("sdarts") else "none",
        epsilon_alpha=args.epsilon_alpha,
        extra={"method": args.method,
               "flags": {k: v for k, v in vars(args).items() if k != "resume"}})


# -- the benchmark --------------------------------------------------------------------------
def open_benchmark(args, logger) -> NB201Benchmark | None:
    """The benchmark, or None (``--fast``, or no file: said once, with where to get it)."""
    if args.fast:
        return None
    if not os.path.isfile(args.api_path):
        logger.info("NAS-Bench-201 file %s not found: benchmark numbers are skipped. Download "
                    "%s from %s and put it there (or pass --api_path).", args.api_path,
                    BENCHMARK_FILE, BENCHMARK_URL)
        return None
    logger.info("loading NAS-Bench-201 from %s", args.api_path)
    return NB201Benchmark.open(args.api_path)


def query(bench: NB201Benchmark, arch: NB201Arch, logger) -> dict[str, float]:
    """The cell's benchmark accuracies, logged in the released code's lines (plus
    cifar10-valid); keys as ``shared.nb201_api.QUERY_KEYS``."""
    r = bench.query(arch)
    logger.info("cifar10-valid train %f valid %f", r["cifar10-valid/train"],
                r["cifar10-valid/valid"])
    logger.info("cifar10 train %f test %f", r["cifar10/train"], r["cifar10/test"])
    logger.info("cifar100 train %f valid %f test %f", r["cifar100/train"], r["cifar100/valid"],
                r["cifar100/test"])
    logger.info("imagenet16 train %f valid %f test %f", r["ImageNet16-120/train"],
                r["ImageNet16-120/valid"], r["ImageNet16-120/test"])
    return r


def benchmark_hook(bench: NB201Benchmark):
    """Epoch-end hook: query the epoch's cell into its history entry (before the outputs
    hooks, which write it to history.json and TensorBoard)."""
    def hook(ctx) -> None:
        ctx.entry[BENCHMARK_KEY] = query(bench, ctx.result.genotype, ctx.loop.logger)
    return hook


# -- the run ----------------------------------------------------------------------------------
@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    typed = explicit_flags(parser, argv if argv is not None else sys.argv[1:])
    run_ = resolve(args, typed, validate, folders, FREE_ON_RESUME, dev_resume=False)
    print(f"experiment folder: {run_.proj_dir or run_.save_dir}")
    logger = setup_logger(run_.save_dir, run_.log_name)
    try:
        arch = run(args, run_, logger)
    finally:
        close_logger(logger)
    print(f"genotype = {arch}")


def run(args, run_: Run, logger) -> NB201Arch:
    save_dir, proj_dir, saved, source = run_.save_dir, run_.proj_dir, run_.saved, run_.source
    cfg = to_config(args)
    if args.cutout:
        logger.info("cutout: length %d, prob %f (constant; the released ramp never took effect)",
                    args.cutout_length, args.cutout_prob)
    search = build_cnn_search(cfg, save_dir, logger, numbered_checkpoints=args.ckpt_interval,
                              max_batches=1 if args.fast else None)
    bench = open_benchmark(args, logger)
    loop, writers = search.loop, []

    def train_supernet() -> NB201Arch:
        if bench is not None:
            loop.epoch_end_hooks.append(benchmark_hook(bench))
        writers.append(attach_outputs(loop, save_dir, search.space))
        arch = loop.run()
        write_outputs(save_dir, search.space, loop.history, arch, cfg)
        return arch

    try:
        if proj_dir is not None:
            if saved is None:  # a fresh projection
                loop.load_state_dict(source)
                logger.info("loaded supernet checkpoint %s (epoch %d)",
                            supernet_checkpoint(save_dir, args.resume_epoch), loop.start_epoch)
                if loop.start_epoch < loop.epochs:  # the released code trains the rest first
                    train_supernet()
            return project(args, search, proj_dir, saved, writers, bench)
        if saved is not None:
            loop.load_state_dict(saved)
            logger.info("resumed from %s at epoch %d", loop.checkpoint_path, loop.start_epoch)
        elif source is not None:
            loop.load_state_dict(source)
            logger.info("loaded supernet checkpoint %s (epoch %d)",
                        supernet_checkpoint(save_dir, args.resume_epoch), loop.start_epoch)
        return train_supernet()
    finally:
        for w in writers:
            w.close()


def project(args, search, proj_dir: str, saved: dict | None, writers: list,
            bench: NB201Benchmark | None) -> NB201Arch:
    cfg, logger = search.cfg, search.logger
    state = ProjectionState(("cell",), search.space.num_edges)
    pcfg = ProjectionConfig(proj_intv=args.proj_intv, crit={"cell": args.proj_crit},
                            learning_rate=args.learning_rate, momentum=args.momentum,
                            weight_decay=args.weight_decay, seed=args.seed, fast=args.fast)
    tune = tuning_loop(search.loop, state, pcfg, proj_dir, batch_size=cfg.batch_size,
                       num_workers=cfg.num_workers)
    if saved is not None:
        tune.load_state_dict(saved)
        logger.info("resumed projection from %s at epoch %d", tune.checkpoint_path,
                    tune.start_epoch)
    else:
        valid_acc, valid_obj = tune.infer()
        logger.info("valid_acc  %f", valid_acc)
        logger.info("valid_loss %f", valid_obj)
    writer = attach_outputs(tune, proj_dir, search.space)
    writers.append(writer)
    arch = tune.run()
    logger.info("projection finished")
    final = TinyNetwork(arch, C=16, N=CELLS_PER_STAGE, num_classes=D.NUM_CLASSES[cfg.dataset],
                        in_channels=D.IN_CHANNELS[cfg.dataset])
    logger.info("param size = %f (the NAS-Bench-201 network, C=16, N=5)",
                count_parameters(final) / 1e6)
    logger.info("genotype = %s", arch)
    extra = {}
    if bench is not None:
        extra[BENCHMARK_KEY] = query(bench, arch, logger)
        for key, value in extra[BENCHMARK_KEY].items():
            writer.add_scalar(f"{BENCHMARK_KEY}/{key}", value, tune.epochs)
        writer.flush()
    write_outputs(proj_dir, search.space, tune.history, arch, cfg, extra=extra)
    return arch


if __name__ == "__main__":
    main()
