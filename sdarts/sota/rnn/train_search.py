"""SDARTS / DARTS search of the recurrent cell on Penn Treebank (SmoothDARTS
sota/rnn/train_search.py = DARTS rnn/train_search.py + ``--perturb_alpha``/``--epsilon_alpha``).

    cd sdarts/sota/rnn && python train_search.py --perturb_alpha pgd_linf

Flags and defaults are the original's: emsize = nhid = nhidlast 300,
SGD lr 20 (constant), clip 0.25, 50 epochs, batch 256, bptt 35, dropouts 0.75/0.25/0.75/0.2/0,
TAR 1e-3, Adam 3e-3 for alpha, seed 3. ``--data embedded`` searches on the corpus built from
Python's own documentation (no download). Additions: ``--resume [RUN_DIR]``,
``--experiments``, ``--no_progress``, ``--no_plots``.

Refused instead of silently ignored: ``--small_batch_size`` other than the batch size (the
original corrupted alpha then: its ``train()`` softmaxes alpha once per small batch but restores
it once per batch), ``--continue_train`` (use ``--resume``).
Kept so the original commands parse, unused by the original search as well: ``--nonmono``,
``--max_seq_len_delta``, ``--single_gpu``. ``--cuda`` keeps the original's inverted meaning
(``store_false``): passing it runs on the CPU, as does ``--gpu -1``.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli.lm_flags import (  # noqa: E402
    SEARCH_HELPS,
    add_rnn_search_flags,
    build_lm_parser,
    check_rnn_search_flags,
)
from shared.cli.parser import ArgumentParser, parse  # noqa: E402
from shared.cli.rnn_search_door import run_rnn_search_door  # noqa: E402
from shared.errors import cli_entry  # noqa: E402


def build_parser() -> ArgumentParser:
    p = build_lm_parser(
        "train_search.py", emsize=300, epochs=50, batch_size=256, dropoute=0, seed=3,
        log_interval=50, wdecay=5e-7, resume_default_run="--save/--seed", helps=SEARCH_HELPS)
    add_rnn_search_flags(p)
    return p


def run_dir(args) -> str:
    name = f"search-{args.save}-{time.strftime('%Y%m%d-%H%M%S')}-{args.seed}"
    if args.unrolled:
        name += "-unrolled"
    if args.perturb_alpha != "none":
        name += f"-alpha-{args.perturb_alpha}-{args.epsilon_alpha}"
    name += "-" + str(int.from_bytes(os.urandom(2), "little") % 10000)
    return os.path.join(args.experiments, "sota", "penn", name)


validate = check_rnn_search_flags


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, typed = parse(build_parser(), argv)
    validate(args)
    run_rnn_search_door(args, typed, new_dir=run_dir)


if __name__ == "__main__":
    main()
