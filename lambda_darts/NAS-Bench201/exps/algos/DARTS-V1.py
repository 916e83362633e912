"""Λ-DARTS on NAS-Bench-201: AutoDL's first-order DARTS with the layer-alignment regulariser
(Lambda-DARTS ``NAS-Bench201/exps/algos/DARTS-V1.py``); run from ``lambda_darts/NAS-Bench201``:

    python exps/algos/DARTS-V1.py --dataset digits --corr_regularization --rand_seed 0

Flags, behaviour and the differences from the released code: ``lambda_darts/nasbench201/
darts_v1.py``.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), *[".."] * 4))

from lambda_darts.nasbench201.darts_v1 import main  # noqa: E402
from shared.errors import cli_entry  # noqa: E402

if __name__ == "__main__":
    cli_entry(main)()
