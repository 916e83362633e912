"""Bad input to the doors, as a new user types it: one clear line on stderr, exit status 2,
no traceback and no run folder. The numbers are checked once in the door layer
(``shared.cli.checks``) and genotypes when they are loaded (``Genotype.check``), so every door
that has a flag refuses it the same way."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, door_env, run_door_here

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
    out = run_door_here(os.path.join(ROOT, folder), script, [*base, *extra, "--experiments", exp])
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


def test_a_supernet_of_fewer_than_three_cells_is_refused(tmp_path) -> None:
    # every cell would reduce (at L//3 and 2L//3): no normal cell for alpha_normal
    assert_refused(*door(SEARCH, ["--layers", "2", "--unrolled"], tmp_path),
                   "--layers must be >= 3 (down-sampling at L//3 and 2L//3)")


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


# -- files a run reads or writes -------------------------------------------------------------------
class Payload:
    """Unpickled, it would run a shell command: a checkpoint from an untrusted source."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _refused_checkpoint(path) -> str:
    from shared.checkpoint import load_checkpoint
    from shared.errors import UserError

    with pytest.raises(UserError) as info:
        load_checkpoint(str(path))
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert "weights_only" not in message and "a checkpoint written by this project" in message
    assert message.endswith("delete it or pass another run"), message
    return message


def test_a_truncated_checkpoint_is_one_line(tmp_path) -> None:
    import torch

    whole = tmp_path / "whole.pth.tar"
    torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(1000)}}, whole)
    for cut, data in (("half", whole.read_bytes()[: whole.stat().st_size // 2]),
                      ("empty", b""), ("text", b"this is not a checkpoint")):
        path = tmp_path / f"{cut}.pth.tar"
        path.write_bytes(data)
        message = _refused_checkpoint(path)
        assert "is not a complete PyTorch file (truncated or corrupt)" in message, message


def test_a_checkpoint_holding_code_is_refused_unrun(tmp_path) -> None:
    import torch

    marker = tmp_path / "MARKER"
    path = tmp_path / "foreign.pth.tar"
    torch.save({"epoch": 1, "payload": Payload(str(marker))}, path)
    message = _refused_checkpoint(path)
    assert f"holds the Python object {os.system.__module__}.system, which is never unpickled " \
           "(nothing in it was run); it was not written by this project" in message, message
    assert not marker.exists(), "the payload ran"


def test_json_outputs_write_non_finite_numbers_as_null(tmp_path) -> None:
    import numpy as np

    from shared.checkpoint import write_json

    path = tmp_path / "history.json"
    write_json(str(path), {"loss": float("nan"), "rows": [{"acc": float("inf")}, (1.5, -math.inf)],
                           "np": np.float32("nan"), "n": np.int64(3), "ok": True})
    assert json.loads(path.read_text()) == {"loss": None, "rows": [{"acc": None}, [1.5, None]],
                                            "np": None, "n": 3, "ok": True}
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()


def test_a_failed_json_write_leaves_the_old_file_and_no_temp_file(tmp_path) -> None:
    from shared.checkpoint import write_json

    path = tmp_path / "result.json"
    write_json(str(path), {"epoch": 1})
    with pytest.raises(TypeError):
        write_json(str(path), {"epoch": 2, "what": object()})
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_saved_genotype_with_a_nan_is_valid_json(tmp_path) -> None:
    from shared.genotypes import load_genotype, save_genotype

    path = tmp_path / "genotype.json"
    save_genotype(load_genotype("DARTS_V2"), str(path), valid_acc=float("nan"))
    saved = json.loads(path.read_text())
    assert saved["valid_acc"] is None and saved["genotype"]["normal"]


def test_the_epochs_jsonl_lines_are_valid_json(tmp_path) -> None:
    from types import SimpleNamespace

    from nasbench_analysis.search_hooks import jsonl_hook

    history = [{"epoch": 0, "train_loss": float("nan"), "hessian_eigenvalue": float("inf")}]
    jsonl_hook(str(tmp_path))(SimpleNamespace(loop=SimpleNamespace(history=history)))
    lines = (tmp_path / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"epoch": 0, "train_loss": None,
                                                     "hessian_eigenvalue": None}]


TENSORBOARD_DRAW = """
import random, sys
from shared.logs import tensorboard_writer
random.seed(11)
if sys.argv[1] == "writer":
    tensorboard_writer(sys.argv[2]).close()
print(repr(random.random()))
"""


@pytest.mark.slow
def test_creating_the_tensorboard_writer_leaves_python_random_alone(tmp_path) -> None:
    """Importing TensorBoard (and TensorFlow through it) draws from ``random``; a fresh process,
    so the import really happens under the writer."""
    env = {**door_env(), "OMP_NUM_THREADS": "1"}
    draws = [subprocess.run([sys.executable, "-c", TENSORBOARD_DRAW, how, str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
             for how in ("writer", "none")]
    for out in draws:
        assert out.returncode == 0, out.stderr[-2000:]
    assert draws[0].stdout.strip() == draws[1].stdout.strip()
    assert (tmp_path / "runs").is_dir()
