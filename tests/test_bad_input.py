"""Bad input to the doors, as a new user types it: one clear line on stderr, exit status 2,
no traceback and no run folder. The numbers are checked once in the door layer
(``shared.cli.checks``) and genotypes when they are loaded (``Genotype.check``), so every door
that has a flag refuses it the same way."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, door_env

pytestmark = pytest.mark.slow

SEARCH = ("sdarts/sota/cnn", "train_search.py", ["--dataset", "digits", "--gpu", "-1"])
NB1SHOT1 = ("sdarts/optimizers/darts", "train_search.py", ["--dataset", "digits", "--gpu", "-1"])
PT = ("darts_pt/sota/cnn", "train_search.py", ["--dataset", "digits", "--method", "darts"])
PT201 = ("darts_pt/nasbench201", "train_search.py", ["--dataset", "digits", "--method", "darts"])
TRAIN = ("sdarts/sota/cnn", "train.py", ["--dataset", "digits", "--gpu", "-1"])
PT_TRAIN = ("darts_pt/sota/cnn", "train.py", ["--dataset", "digits", "--arch", "DARTS_V2"])
RNN = ("sdarts/sota/rnn", "train_search.py", ["--data", "embedded", "--gpu", "-1"])
RNN_TRAIN = ("sdarts/sota/rnn", "train.py", ["--data", "embedded", "--gpu", "-1"])


def door(where, extra, tmp_path):
    folder, script, base = where
    exp = tmp_path / "exp"
    out = subprocess.run([sys.executable, script, *base, *extra, "--experiments", str(exp)],
                         cwd=os.path.join(ROOT, folder), env=door_env(), capture_output=True,
                         text=True, timeout=120)
    return out, exp


def assert_refused(out, exp, message: str) -> None:
    assert out.returncode == 2, out.stdout[-500:] + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in out.stderr
    assert not exp.exists() or not any(exp.rglob("*")), "a refused run left files behind"


NUMBERS = [
    (["--learning_rate", "nan"], "--learning_rate must be > 0, got nan"),
    (["--learning_rate", "-0.1"], "--learning_rate must be > 0, got -0.1"),
    (["--report_freq", "0"], "--report_freq must be >= 1, got 0"),
    (["--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
    (["--momentum", "1.5"], "--momentum must be in [0, 1)"),
    (["--epsilon_alpha", "inf"], "--epsilon_alpha must be >= 0, got inf"),
    (["--cutout_prob", "2"], "--cutout_prob must be in [0, 1]"),
]


@pytest.mark.parametrize("where", [SEARCH, NB1SHOT1, PT, PT201], ids=lambda w: w[0])
@pytest.mark.parametrize("extra,message", NUMBERS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_search_doors_refuse_bad_numbers(where, extra, message, tmp_path) -> None:
    if "epsilon" in extra[0] and where in (PT, PT201):
        extra = [*extra, "--method", "sdarts"]
    assert_refused(*door(where, extra, tmp_path), message)


@pytest.mark.parametrize("where", [TRAIN, PT_TRAIN], ids=lambda w: w[0])
@pytest.mark.parametrize("extra,message", NUMBERS[:4], ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_train_doors_refuse_the_same_numbers(where, extra, message, tmp_path) -> None:
    assert_refused(*door(where, extra, tmp_path), message)


@pytest.mark.parametrize("where", [RNN, RNN_TRAIN], ids=lambda w: w[1])
@pytest.mark.parametrize("extra,message", [(["--lr", "nan"], "--lr must be > 0, got nan"),
                                           (["--log-interval", "0"], "--log_interval must be"),
                                           (["--seed", "-3"], "--seed must be in [0, 2**32)"),
                                           (["--dropout", "1"], "--dropout must be in [0, 1)")])
def test_rnn_doors_refuse_bad_numbers(where, extra, message, tmp_path) -> None:
    assert_refused(*door(where, extra, tmp_path), message)


DARTS_V2 = {"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0],
                       ["sep_conv_3x3", 1], ["sep_conv_3x3", 1], ["skip_connect", 0],
                       ["skip_connect", 0], ["dil_conv_3x3", 2]], "normal_concat": [2, 3, 4, 5],
            "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2],
                       ["max_pool_3x3", 1], ["max_pool_3x3", 0], ["skip_connect", 2],
                       ["skip_connect", 2], ["max_pool_3x3", 1]], "reduce_concat": [2, 3, 4, 5]}


def _with(cell: str, index: int, pair) -> dict:
    g = json.loads(json.dumps(DARTS_V2))
    g[cell][index] = pair
    return g


GENOTYPES = [
    (_with("normal", 7, ["dil_conv_3x3", 5]), "node 3 reads input 5; it can read 0..4"),
    (_with("reduce", 0, ["max_pool_3x3", -1]), "node 0 reads input -1; it can read 0..1"),
    (_with("normal", 2, ["conv_9x9", 0]), "unknown operation 'conv_9x9'"),
    ({**DARTS_V2, "normal": []}, "normal cell: 0 (op, input) pairs"),
    ({**DARTS_V2, "reduce": DARTS_V2["reduce"][:3]}, "reduce cell: 3 (op, input) pairs"),
    ({**DARTS_V2, "normal_concat": [2, 3, 9]}, "normal_concat [2, 3, 9]: needs distinct states"),
    ({**DARTS_V2, "reduce_concat": []}, "reduce_concat []"),
]


@pytest.mark.parametrize("genotype,message", GENOTYPES, ids=[m for _, m in GENOTYPES])
def test_train_refuses_a_broken_genotype_file(genotype, message, tmp_path) -> None:
    path = tmp_path / "cell.json"
    path.write_text(json.dumps({"genotype": genotype}))
    out, exp = door(TRAIN, ["--arch", str(path)], tmp_path)
    assert_refused(out, exp, message)
    assert str(path) in out.stderr


def test_the_released_genotypes_all_pass_the_check() -> None:
    from shared.genotypes import published

    assert len(published()) == 128  # every one built by from_dict, so checked
