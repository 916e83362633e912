"""The flags of DARTS' recurrent doors (``rnn/train_search.py`` and ``rnn/train.py``; the
originals declare them twice, AWD-LSTM style, with different defaults), declared once here for
every method's RNN doors (SDARTS' ``sdarts/sota/rnn``, Λ-DARTS' ``lambda_darts/sota/rnn``):
each door passes its defaults and what a flag means to it.

* ``build_lm_parser``: the language-model flags every recurrent door has;
* ``add_rnn_search_flags``: what the recurrent search adds (``--unrolled``, alpha's Adam,
  SDARTS' perturbation), with ``SEARCH_HELPS`` (the search's meaning of the flags it keeps
  only so the original commands parse);
* ``check_rnn_search_flags``: the search's refusals, before any folder is made.
"""
from __future__ import annotations

import argparse
from typing import Any

from shared.cli.checks import check_flags
from shared.cli.flags import add_perturbation_flags, add_plots_flag
from shared.cli.parser import ArgumentParser
from shared.errors import UserError

PROG = "PyTorch PennTreeBank/WikiText2 Language Model"

SEARCH_HELPS = {
    "nonmono": "unused in search (as the original)",
    "save": "experiment name ('debug' in it: one step per epoch)",
    "small_batch_size": "must equal the batch size (or -1)",
    "max_seq_len_delta": "unused in search",
    "single_gpu": "single GPU"}


def build_lm_parser(prog: str, *, emsize: int, epochs: int, batch_size: int, dropoute: float,
                    seed: int, log_interval: int, wdecay: float, helps: dict[str, str],
                    resume_default_run: str) -> ArgumentParser:
    """The original flags with a door's defaults; ``helps`` gives the door's meaning of
    ``--nonmono``, ``--small_batch_size``, ``--max_seq_len_delta`` and ``--single_gpu``."""
    p = ArgumentParser(prog, description=PROG)
    add: Any = p.add_argument
    add("--data", type=str, default="../../data/penn/",
        help="corpus folder (train/valid/test.txt), or 'embedded'")
    add("--emsize", type=int, default=emsize, help="size of word embeddings")
    add("--nhid", type=int, default=emsize, help="number of hidden units per layer")
    add("--nhidlast", type=int, default=emsize, help="number of hidden units, last layer")
    add("--lr", type=float, default=20, help="initial learning rate")
    add("--clip", type=float, default=0.25, help="gradient clipping")
    add("--epochs", type=int, default=epochs, help="upper epoch limit")
    add("--batch_size", type=int, default=batch_size, metavar="N", help="batch size")
    add("--bptt", type=int, default=35, help="sequence length")
    add("--dropout", type=float, default=0.75, help="dropout on the RNN output")
    add("--dropouth", type=float, default=0.25, help="dropout on hidden nodes")
    add("--dropoutx", type=float, default=0.75, help="dropout on the RNN input")
    add("--dropouti", type=float, default=0.2, help="dropout on the embeddings")
    add("--dropoute", type=float, default=dropoute, help="dropout of whole words")
    add("--seed", type=int, default=seed, help="random seed")
    add("--nonmono", type=int, default=5, help=helps["nonmono"])
    add("--cuda", action="store_false", default=True,
        help="as the original (store_false): passing --cuda runs on the CPU")
    add("--log-interval", type=int, default=log_interval, metavar="N", help="report interval")
    add("--save", type=str, default="EXP", help=helps.get("save", "experiment name"))
    add("--alpha", type=float, default=0, help="AR: alpha * mean(output^2)")
    add("--beta", type=float, default=1e-3, help="TAR: beta * mean((h_t+1 - h_t)^2)")
    add("--wdecay", type=float, default=wdecay, help="weight decay on all weights")
    add("--continue_train", action="store_true", help="refused: use --resume")
    add("--small_batch_size", type=int, default=-1, help=helps["small_batch_size"])
    add("--max_seq_len_delta", type=int, default=20, help=helps["max_seq_len_delta"])
    add("--single_gpu", default=True, action="store_false", help=helps["single_gpu"])
    add("--gpu", type=int, default=0, help="GPU device to use (-1: CPU)")
    # Additions of this repository.
    add("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
        help="continue a run from its last checkpoint (default: the one run with the same "
             f"{resume_default_run}; several are listed, not guessed)")
    add("--experiments", type=str, default="../../experiments", help="root of the output folders")
    add("--no_progress", dest="progress", action="store_false", help="no tqdm progress bars")
    return p


def add_rnn_search_flags(p: argparse.ArgumentParser) -> None:
    """DARTS ``rnn/train_search.py``'s alpha flags, SDARTS' ``--perturb_alpha`` and the
    searches' ``--no_plots``."""
    p.add_argument("--unrolled", action="store_true", default=False,
                   help="second order: one-step unrolled validation loss")
    p.add_argument("--arch_wdecay", type=float, default=1e-3, help="weight decay for alpha")
    p.add_argument("--arch_lr", type=float, default=3e-3, help="learning rate for alpha")
    add_perturbation_flags(p)
    add_plots_flag(p)


def check_rnn_search_flags(args: argparse.Namespace) -> None:
    """Refuse, as one UserError, what the recurrent search cannot run as asked."""
    if args.continue_train:
        raise UserError("--continue_train: use --resume [RUN_DIR] to continue a search")
    check_flags(args)
    if args.small_batch_size not in (-1, args.batch_size):
        raise UserError("--small_batch_size must equal --batch_size (or -1): the original "
                        "re-softmaxed alpha per small batch, which corrupts it")
    if not args.emsize == args.nhid == args.nhidlast:
        raise UserError("the DARTS cell needs --emsize = --nhid = --nhidlast")
