"""The recurrent doors under torchrun (the others: tests/test_torchrun_search.py and
tests/test_torchrun_methods.py): Λ-DARTS' recurrent search and SDARTS' recurrent-cell
training, each data-parallel with rank 0 writing. That N ranks compute what one process does
is tests/test_data_parallel_rnn.py's, in float64; here the doors run it (float32: to
rounding)."""
import json
import os

import pytest

from tests.conftest import ROOT
from tests.test_torchrun_methods import two_ranks_and_one
from tests.test_torchrun_search import _history


@pytest.mark.slow
def test_lambda_rnn_searches_data_parallel(tmp_path) -> None:
    """Λ-DARTS' recurrent search (2 stacked cells, the regulariser attached after the loop is
    built) under torchrun: one run folder, each line printed once, and epoch 0's perplexities
    and train_corr those of one process with the whole batch (float32: to rounding)."""
    common = ["train_search.py", "--data", "embedded", "--emsize", "8", "--nhid", "8",
              "--nhidlast", "8", "--batch_size", "32", "--bptt", "10", "--gpu", "-1",
              "--epochs", "1", "--no_progress", "--no_plots", "--save", "debug",
              "--corr_regularization", "corr"]
    run, single = two_ranks_and_one(os.path.join(ROOT, "lambda_darts", "sota", "rnn"), common,
                                    tmp_path)
    assert "data-parallel search: 2 processes, batch 32 = 16 per process" in open(
        os.path.join(run, "log.txt")).read()
    a, b = _history(single)[0], _history(run)[0]
    for key in ("train_ppl", "valid_ppl"):
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert b["train_corr"] == pytest.approx(a["train_corr"], abs=1e-4)
    assert b["genotype"] == a["genotype"]


@pytest.mark.slow
def test_rnn_training_runs_data_parallel(tmp_path) -> None:
    """SDARTS' recurrent-cell training under torchrun: one run folder, the result printed once,
    and the validation and test perplexities of one process with the whole batch (float32:
    to rounding; tests/test_data_parallel_rnn.py holds 4 epochs to 1e-12 in float64)."""
    common = ["train.py", "--data", "embedded", "--emsize", "8", "--nhid", "8", "--nhidlast",
              "8", "--batch_size", "128", "--bptt", "10", "--gpu", "-1", "--epochs", "1",
              "--no_progress", "--arch", "DARTS_V2"]
    run, single = two_ranks_and_one(os.path.join(ROOT, "sdarts", "sota", "rnn"), common,
                                    tmp_path, prefix="eval-", line="test ppl ")
    assert "data-parallel training: 2 processes, batch 128 = 64 per process" in open(
        os.path.join(run, "log.txt")).read()
    a, b = (json.load(open(os.path.join(r, "result.json"))) for r in (single, run))
    for key in ("valid_ppl", "test_ppl"):
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
