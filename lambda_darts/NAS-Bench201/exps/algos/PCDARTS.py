"""Λ-DARTS with PC-DARTS on NAS-Bench-201 (Lambda-DARTS ``NAS-Bench201/exps/algos/PCDARTS.py``):
refused. It needs PC-DARTS' partial-channel supernet (a channel-sampled mixed op and edge
normalisation), which this repository does not implement; first-order DARTS with the same
regulariser is ``exps/algos/DARTS-V1.py``.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), *[".."] * 4))

from shared.errors import UserError, cli_entry  # noqa: E402


def main(argv=None) -> None:
    raise UserError("PC-DARTS with Λ-DARTS' regulariser is not implemented here: it needs "
                    "PC-DARTS' partial-channel supernet, which this repository does not have. "
                    "Use exps/algos/DARTS-V1.py (first-order DARTS with the same regulariser, "
                    "scripts-search/algos/DARTS-V1.sh)")


if __name__ == "__main__":
    cli_entry(main)()
