"""DARTS / SDARTS-RS / SDARTS-ADV on the NAS-Bench-1Shot1 spaces (SmoothDARTS
optimizers/darts/train_search.py).

    cd sdarts/optimizers/darts && python train_search.py --search_space 1 --perturb_alpha pgd_linf

Flags and defaults are the original's (100 epochs, batch 96, C = 16,
9 cells), plus ``--dataset digits`` (embedded data), ``--nasbench_file`` (the original's path
was hard-coded), ``--resume [RUN_DIR]`` and the runtime switches. After every epoch the run
folder gets the discretised architecture (``one_shot_architecture_{e}.json``), the dominant
eigenvalue of the validation-loss Hessian w.r.t. all alphas (log line ``eigenvalue``,
TensorBoard ``analysis/hessian_eigenvalue``) and, with the benchmark file, the cell's NB-101
errors, training time and parameters (``TEST ERROR: ...``, ``nasbench101/*``), all also in
``history.json`` and one line of ``epochs.jsonl``. Under ``torchrun --nproc_per_node N`` the
search is data-parallel (``shared.search.data_parallel``; the eigenvalue is every rank's on the
gathered global batch, ``shared.search.hessian``), rank 0 writing and querying the benchmark.

Deviations from the original, each deliberate:
* the NB-101 numbers of epoch e are those of the alphas after epoch e (the original queried the
  alphas saved at the start of epoch e, one epoch behind);
* without ``--nasbench_file`` the search runs and says once that the benchmark columns are
  skipped; a given file that is missing or corrupt stops the run before training starts;
* ``--output_weights`` must stay True, as in the original, where False crashed: False is refused.
"""
from __future__ import annotations

import glob
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli.resume import FREE_ON_RESUME  # noqa: E402
from shared.cli.run_folder import claim_run, main_process  # noqa: E402
from shared.cli.search_door import build_search_parser, parse_search, run_name_suffix, search_config  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402
from shared.spaces import NB1SHOT1_SPACES  # noqa: E402


def _true_only(text: str) -> bool:
    """The original's ``type=bool`` made any string True; 'False' would have crashed it."""
    if text.lower() in ("true", "1", "yes"):
        return True
    raise UserError("--output_weights False is not supported: the one-shot model always "
                    "weights the cell output (the original crashed without it)")


def build_parser():
    p = build_search_parser("train_search.py", batch_size=96, epochs=100, layers=9,
                            spaces=list(NB1SHOT1_SPACES), default_space="1",
                            grouped_edges=False)
    p.add_argument("--output_weights", type=_true_only, default=True,
                   help="weights on the output node's inputs (must stay True)")
    p.add_argument("--warm_start_epochs", type=int, default=0,
                   help="train the weights only (no alpha step) for this many epochs")
    p.add_argument("--nasbench_file", type=str, default=None,
                   help="nasbench_only108.tfrecord: query NAS-Bench-101 after every epoch")
    return p


def run_dir(args) -> str:
    """The original's folder: darts/search_space_{s}/search-{save}-{time}-{seed}-{s}[...]."""
    name = "search-{}-{}-{}-{}".format(args.save, time.strftime("%Y%m%d-%H%M%S"), args.seed,
                                       args.search_space)
    if args.dataset != "cifar10":
        name += f"-{args.dataset}"
    return os.path.join(args.experiments, "darts", f"search_space_{args.search_space}",
                        name + run_name_suffix(args))


def _resume_pattern(args) -> str:
    return os.path.join(args.experiments, "darts", f"search_space_{args.search_space}",
                        f"search-{glob.escape(args.save)}-*")


def _open_benchmark(args):
    if args.nasbench_file is None or "debug" in args.save:
        print("NAS-Bench-101 columns skipped: no --nasbench_file given"
              if args.nasbench_file is None else
              "NAS-Bench-101 columns skipped: 'debug' run (as the original)")
        return None
    from nasbench_analysis.nb101_benchmark import NB101Benchmark

    return NB101Benchmark.open(args.nasbench_file)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, save_dir, resumed = parse_search(build_parser(), argv, min_layers=3,
                                           pattern=_resume_pattern, new_dir=run_dir,
                                           free=FREE_ON_RESUME | {"nasbench_file"})
    # before any training: a bad file costs nothing; under torchrun only rank 0 holds it (its
    # numbers reach only the files rank 0 writes)
    benchmark = _open_benchmark(args) if main_process() else None
    from nasbench_analysis.search_hooks import (
        architecture_hook,
        benchmark_hook,
        hash_hook,
        jsonl_hook,
    )
    from shared.checkpoint import write_json
    from shared.cli.config import command_flags
    from shared.search.cnn_search import run_cnn_search
    from shared.search.hessian import eigenvalue_hook

    cfg = search_config(args, "nb1shot1")
    # under torchrun: a data-parallel search, rank 0 owns the folder (shared.search.data_parallel)
    with claim_run(save_dir, root=args.experiments, new=not resumed,
                   data_parallel=True) as save_dir:
        if main_process():
            write_json(os.path.join(save_dir, "config.json"), command_flags(args))
        # numbers first (they go into the checkpoint), files once the checkpoint is written
        hooks = [hash_hook, eigenvalue_hook(args.arch_weight_decay)]
        if benchmark is not None:
            hooks.append(benchmark_hook(benchmark))
        if main_process():
            print(f"experiment folder: {save_dir}")
        arch = run_cnn_search(cfg, save_dir, resume=resumed, epoch_end_hooks=hooks,
                              publish_hooks=[architecture_hook(save_dir), jsonl_hook(save_dir)])
    if main_process():
        print(f"architecture = {arch}")


if __name__ == "__main__":
    main()
