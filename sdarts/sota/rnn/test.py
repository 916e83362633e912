"""Test perplexity of a trained recurrent cell (DARTS rnn/test.py; SmoothDARTS sota/rnn/test.py).

    cd sdarts/sota/rnn && python test.py --model_path eval-EXP-DARTS_V2-1267-20261126-101500
    python test.py --model_path ../../../experiments/sota/penn/eval-.../model.pt

As the original: the test split, batch size 1, windows of ``--bptt`` (35), the hidden state
carried through the whole text; it prints the test loss and perplexity. ``--model_path`` is a
``model.pt`` written by train.py, a run folder holding one, or (SmoothDARTS' convention) the
name of a run folder under ``../../experiments/sota/penn/``. The cell and the layer sizes are
read from ``model.pt``; ``--emsize``/``--nhid``/``--nhidlast``, when given, are checked
against it. ``--data`` must be the corpus the model was trained on (its vocabulary is checked).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli.checks import check_flags  # noqa: E402
from shared.cli.flags import add_gpu_flag  # noqa: E402
from shared.cli.lm_flags import PROG  # noqa: E402
from shared.cli.parser import ArgumentParser  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402

BEST = "model.pt"  # shared.rnn_evaluation.BEST: the best-validation model a train.py run keeps

SIZE_FLAGS = ("emsize", "nhid", "nhidlast")


def build_parser() -> ArgumentParser:
    p = ArgumentParser("test.py", description=PROG)
    p.add_argument("--data", type=str, default="../../data/penn/",
                   help="corpus folder (train/valid/test.txt), or 'embedded'")
    p.add_argument("--model_path", type=str, default="DARTS",
                   help="model.pt, its run folder, or a run folder name under "
                        "EXPERIMENTS/sota/penn/")
    p.add_argument("--bptt", type=int, default=35, help="sequence length")
    for flag in SIZE_FLAGS:
        p.add_argument(f"--{flag}", type=int, default=None,
                       help="checked against the model (the sizes are read from model.pt)")
    p.add_argument("--seed", type=int, default=1267, help="random seed")
    p.add_argument("--cuda", action="store_false", default=True,
                   help="as the original (store_false): passing --cuda runs on the CPU")
    add_gpu_flag(p)
    p.add_argument("--experiments", type=str, default="../../experiments",
                   help="root of the output folders (for a bare run name)")
    return p


def resolve_model_path(model_path: str, experiments: str) -> str:
    candidates = [model_path, os.path.join(model_path, BEST),
                  os.path.join(experiments, "sota", "penn", model_path, BEST)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise UserError(f"--model_path {model_path!r}: no model.pt at {', '.join(candidates)}; "
                    f"pass the model.pt (or the run folder) a train.py run wrote")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from shared.distributed import refuse_more_processes

    refuse_more_processes("test")  # one process: N would each do all of it
    check_flags(args)
    path = resolve_model_path(args.model_path, args.experiments)
    import torch

    from shared.rnn_evaluation import run_rnn_test

    torch.manual_seed(args.seed)
    result = run_rnn_test(path, args.data, args.bptt, args.gpu if args.cuda else -1,
                          sizes={flag: getattr(args, flag) for flag in SIZE_FLAGS})
    print(f"model {path}: epoch {result['epoch']}, {result['parameters']} parameters")
    print("=" * 89)
    print(f"| End of training | test loss {result['test_loss']:5.2f} | test ppl "
          f"{result['test_ppl']:8.2f}")  # the original's line
    print("=" * 89)


if __name__ == "__main__":
    main()
