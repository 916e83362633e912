#!/usr/bin/env bash
# Λ-DARTS' RNN search launcher (Lambda-DARTS sota/rnn/run.sh), a working door:
#   bash lambda_darts/sota/rnn/run.sh [more train_search.py flags]
# The released command, run from this folder in the foreground with $PYTHON if set, else the
# repository's .venv/bin/python, else python3 (as exp_scripts/_args.sh); flags given here are
# appended, so they add to or override the released ones (argparse keeps the last value), e.g.
#   bash lambda_darts/sota/rnn/run.sh --data embedded --epochs 2 --gpu -1
# The script exits with the search's status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
py=${PYTHON:-}
if [[ -z "$py" && -x ../../../.venv/bin/python ]]; then py=../../../.venv/bin/python; fi
exec "${py:-python3}" train_search.py --lambda_scheduling --gpu=0 --nhid=200 --nhidlast=200 \
    --emsize=200 --lambda_=0.25 --epsilon_0=0.001 "$@"
