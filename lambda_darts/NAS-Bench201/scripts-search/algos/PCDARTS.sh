#!/usr/bin/env bash
# Λ-DARTS with PC-DARTS on NAS-Bench-201 (Lambda-DARTS NAS-Bench201/scripts-search/algos/
# PCDARTS.sh): refused with a message by exps/algos/PCDARTS.py (no partial-channel supernet
# here); use DARTS-V1.sh.
set -euo pipefail
SCRIPT_PATH=lambda_darts/NAS-Bench201/scripts-search/algos/PCDARTS.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../../exp_scripts/_args.sh"
run_door lambda_darts/NAS-Bench201 exps/algos/PCDARTS.py "$@"
