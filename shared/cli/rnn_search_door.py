"""What the recurrent search doors (SDARTS' ``sdarts/sota/rnn/train_search.py``, Λ-DARTS'
``lambda_darts/sota/rnn/train_search.py``) do once their flags are checked: settle the run
folder (new, or ``--resume``'s with its saved flags), build the search config and run it in
the claimed folder. Each door passes its folder name and what it adds to the config."""
from __future__ import annotations

import argparse
import glob
import os
from typing import Any, Callable

from shared.cli.config import config_from_args
from shared.cli.resume import FREE_ON_RESUME, resolve_run
from shared.cli.run_folder import claim_run, main_process


def rnn_resume_pattern(args: argparse.Namespace) -> str:
    """The folders a bare ``--resume`` looks among: this ``--save``'s PTB searches."""
    return os.path.join(args.experiments, "sota", "penn", f"search-{glob.escape(args.save)}-*")


def run_rnn_search_door(args: argparse.Namespace, typed: set[str], *,
                        new_dir: Callable[[argparse.Namespace], str],
                        check: Callable[[Any], Any] | None = None,
                        **overrides: Any) -> None:
    """Run (or continue) the search; ``overrides`` are config fields the door sets itself,
    ``check(cfg)`` refuses a config before any folder is made."""
    # --data names the corpus here (what the run computes), so a resumed run keeps its own
    save_dir, saved = resolve_run(args, typed, pattern=rnn_resume_pattern(args),
                                  new_dir=lambda: new_dir(args), match=("save", "seed"),
                                  free=FREE_ON_RESUME - {"data"})
    from shared.search.rnn_search import RNNSearchConfig, run_rnn_search

    cfg = config_from_args(RNNSearchConfig, args, gpu=args.gpu if args.cuda else -1,
                           max_batches=1 if "debug" in args.save else None, **overrides)
    if check is not None:
        check(cfg)
    # under torchrun: a data-parallel search, rank 0 owns the folder (shared.search.rnn_loop)
    with claim_run(save_dir, root=args.experiments, new=saved is None,
                   data_parallel=True) as save_dir:
        if main_process():
            print(f"experiment folder: {save_dir}")
        genotype = run_rnn_search(cfg, save_dir, resume=saved is not None)
    if main_process():
        print(f"genotype = {genotype}")
