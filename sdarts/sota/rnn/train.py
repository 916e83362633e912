"""Train a recurrent cell from scratch on Penn Treebank / WikiText-2 (DARTS rnn/train.py;
SmoothDARTS sota/rnn/train.py is the same).

    cd sdarts/sota/rnn && python train.py --arch DARTS_V2
    python train.py --arch penn_pgd
    python train.py --arch ../../../experiments/sota/penn/search-EXP-.../genotype.json
    python train.py --data ../../data/wikitext-2 --dropouth 0.15 --emsize 700 --nhidlast 700 \
        --nhid 700 --wdecay 5e-7                                   # WikiText-2 (DARTS README)

Flags and defaults are the original's: emsize = nhid = nhidlast 850,
SGD lr 20, clip 0.25, up to 8000 epochs, batch 64, bptt 35 (variable), dropouts
0.75/0.25/0.75/0.2/0.1, seed 1267, NT-ASGD with nonmono 5, TAR 1e-3, wdecay 8e-7. The
protocol is in ``shared/rnn_evaluation.py``. ``--arch`` is a registered RNN genotype
(DARTS_V1, DARTS_V2 = DARTS, ENAS, penn_random, penn_pgd) or a genotype JSON a search wrote.
``--data embedded`` trains on the corpus built from Python's own documentation (no download).

Outputs in ``../../experiments/sota/penn/eval-{save}-{arch}-{seed}-{time}/``: ``model.pt``
(best validation; test.py's input), ``checkpoint.pth.tar`` (every epoch; ``--resume``),
``log.txt``, TensorBoard ``runs/``, ``history.json``, ``perplexity.png``,
``genotype_recurrent.png`` and ``result.json`` (test perplexity of the best model, batch 1).

Refused instead of silently ignored: ``--continue_train`` (use ``--resume``) and
``--single_gpu`` (which in the original switches DataParallel on; one GPU holds the 23M
model; ``torchrun --nproc_per_node N train.py ...`` trains data-parallel instead, each process
``--batch_size / N`` of the sequences: ``shared/rnn_evaluation.py``).
``--cuda`` keeps the original's inverted meaning (``store_false``): passing it runs on
the CPU, as does ``--gpu -1``.
"""
from __future__ import annotations

import glob
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli.checks import check_flags  # noqa: E402
from shared.cli.config import config_from_args  # noqa: E402
from shared.cli.lm_flags import build_lm_parser  # noqa: E402
from shared.cli.parser import ArgumentParser, parse  # noqa: E402
from shared.cli.resume import FREE_ON_RESUME, resolve_run  # noqa: E402
from shared.cli.run_folder import claim_run, main_process  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402
from shared.evaluation.cli import arch_label  # noqa: E402

# A resumed run keeps its corpus (--data is what it computes); it may change how it reports.
FREE = (FREE_ON_RESUME - {"data"}) | {"cuda", "log_interval", "save"}


def build_parser() -> ArgumentParser:
    p = build_lm_parser(
        "train.py", emsize=850, epochs=8000, batch_size=64, dropoute=0.1, seed=1267,
        log_interval=200, wdecay=8e-7, resume_default_run="--save/--arch/--seed", helps={
            "nonmono": "non-monotone interval (NT-ASGD)",
            "small_batch_size": "the batch is processed in slices of this size whose "
                                "gradients add up (less memory; -1: the whole batch)",
            "max_seq_len_delta": "max sequence length above --bptt",
            "single_gpu": "refused: the original's multi-GPU DataParallel switch"})
    p.add_argument("--arch", type=str, default="DARTS",
                   help="registered RNN genotype name or a genotype .json written by a search")
    return p


def run_dir(args) -> str:
    name = f"eval-{args.save}-{arch_label(args.arch)}-{args.seed}-" \
           f"{time.strftime('%Y%m%d-%H%M%S')}"
    return os.path.join(args.experiments, "sota", "penn", name)


def run_pattern(args) -> str:
    return os.path.join(args.experiments, "sota", "penn", f"eval-{glob.escape(args.save)}-*")


def to_config(args):
    from shared.rnn_evaluation import RNNTrainConfig

    return config_from_args(RNNTrainConfig, args, gpu=args.gpu if args.cuda else -1)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, typed = parse(build_parser(), argv)
    if args.continue_train:
        raise UserError("--continue_train: use --resume [RUN_DIR] to continue a run")
    if not args.single_gpu:
        raise UserError("--single_gpu (the original's multi-GPU DataParallel switch) is not "
                        "supported: the model trains on one device (--gpu N); for several, "
                        "start it with torchrun --nproc_per_node N (data-parallel)")
    check_flags(args)
    from shared.rnn_evaluation import KIND, run_rnn_training, validate_config
    from shared.rnn_genotype import RNNGenotype, load_rnn_genotype

    validate_config(to_config(args))  # before any folder is made
    save_dir, saved = resolve_run(args, typed, pattern=run_pattern(args),
                                  new_dir=lambda: run_dir(args), free=FREE, kind=KIND,
                                  match=("save", "arch", "seed"),
                                  what="an RNN training run (sdarts/sota/rnn/train.py)")
    # a resumed run keeps its own cell, even if the genotype file has moved since
    genotype = RNNGenotype.from_dict(saved["genotype"]) if saved else load_rnn_genotype(args.arch)
    cfg = to_config(args)
    # under torchrun: data-parallel training, rank 0 owns the folder (shared.rnn_evaluation)
    with claim_run(save_dir, root=args.experiments, new=saved is None,
                   data_parallel=True) as save_dir:
        if main_process():
            print(f"experiment folder: {save_dir}")
        result = run_rnn_training(cfg, genotype, save_dir, resume_state=saved)
    if not main_process():
        return
    print(f"test ppl {result['test_ppl']:.2f} (best epoch {result['best_epoch']}, valid ppl "
          f"{result['valid_ppl']:.2f})")


if __name__ == "__main__":
    main()
