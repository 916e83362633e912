"""SDARTS / DARTS search of the recurrent cell on Penn Treebank (SmoothDARTS
sota/rnn/train_search.py = DARTS rnn/train_search.py + ``--perturb_alpha``/``--epsilon_alpha``).

    cd sdarts/sota/rnn && python train_search.py --perturb_alpha pgd_linf

Flags and defaults are the original's: emsize = nhid = nhidlast 300,
SGD lr 20 (constant), clip 0.25, 50 epochs, batch 256, bptt 35, dropouts 0.75/0.25/0.75/0.2/0,
TAR 1e-3, Adam 3e-3 for alpha, seed 3. ``--data embedded`` searches on the corpus built from
Python's own documentation (no download). Additions: ``--resume [RUN_DIR]``,
``--experiments``, ``--no_progress``.

Refused instead of silently ignored: ``--small_batch_size`` other than the batch size (the
original corrupted alpha then: its ``train()`` softmaxes alpha once per small batch but restores
it once per batch), ``--continue_train`` (use ``--resume``).
Kept so the original commands parse, unused by the original search as well: ``--nonmono``,
``--max_seq_len_delta``, ``--single_gpu``. ``--cuda`` keeps the original's inverted meaning
(``store_false``): passing it runs on the CPU, as does ``--gpu -1``.
"""
from __future__ import annotations

import glob
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from sdarts.sota.rnn.lm_flags import build_lm_parser  # noqa: E402
from shared.cli.checks import check_flags  # noqa: E402
from shared.cli.config import config_from_args  # noqa: E402
from shared.cli.flags import add_perturbation_flags  # noqa: E402
from shared.cli.parser import ArgumentParser, parse  # noqa: E402
from shared.cli.resume import FREE_ON_RESUME, resolve_run  # noqa: E402
from shared.cli.run_folder import claim_run  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402


def build_parser() -> ArgumentParser:
    p = build_lm_parser(
        "train_search.py", emsize=300, epochs=50, batch_size=256, dropoute=0, seed=3,
        log_interval=50, wdecay=5e-7, resume_default_run="--save/--seed", helps={
            "nonmono": "unused in search (as the original)",
            "save": "experiment name ('debug' in it: one step per epoch)",
            "small_batch_size": "must equal the batch size (or -1)",
            "max_seq_len_delta": "unused in search",
            "single_gpu": "single GPU"})
    p.add_argument("--unrolled", action="store_true", default=False,
                   help="second order: one-step unrolled validation loss")
    p.add_argument("--arch_wdecay", type=float, default=1e-3, help="weight decay for alpha")
    p.add_argument("--arch_lr", type=float, default=3e-3, help="learning rate for alpha")
    add_perturbation_flags(p)
    return p


def run_dir(args) -> str:
    name = f"search-{args.save}-{time.strftime('%Y%m%d-%H%M%S')}-{args.seed}"
    if args.unrolled:
        name += "-unrolled"
    if args.perturb_alpha != "none":
        name += f"-alpha-{args.perturb_alpha}-{args.epsilon_alpha}"
    name += "-" + str(int.from_bytes(os.urandom(2), "little") % 10000)
    return os.path.join(args.experiments, "sota", "penn", name)


def _resume_pattern(args) -> str:
    return os.path.join(args.experiments, "sota", "penn", f"search-{glob.escape(args.save)}-*")


def validate(args) -> None:
    if args.continue_train:
        raise UserError("--continue_train: use --resume [RUN_DIR] to continue a search")
    check_flags(args)
    if args.small_batch_size not in (-1, args.batch_size):
        raise UserError("--small_batch_size must equal --batch_size (or -1): the original "
                        "re-softmaxed alpha per small batch, which corrupts it")
    if not args.emsize == args.nhid == args.nhidlast:
        raise UserError("the DARTS cell needs --emsize = --nhid = --nhidlast")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, typed = parse(build_parser(), argv)
    validate(args)
    # --data names the corpus here (what the run computes), so a resumed run keeps its own
    save_dir, saved = resolve_run(args, typed, pattern=_resume_pattern(args),
                                  new_dir=lambda: run_dir(args), match=("save", "seed"),
                                  free=FREE_ON_RESUME - {"data"})
    from shared.search.rnn_search import RNNSearchConfig, run_rnn_search

    cfg = config_from_args(RNNSearchConfig, args, gpu=args.gpu if args.cuda else -1,
                           max_batches=1 if "debug" in args.save else None)
    with claim_run(save_dir, root=args.experiments, new=saved is None) as save_dir:
        print(f"experiment folder: {save_dir}")
        genotype = run_rnn_search(cfg, save_dir, resume=saved is not None)
    print(f"genotype = {genotype}")


if __name__ == "__main__":
    main()
