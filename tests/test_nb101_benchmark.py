"""NAS-Bench-101 tfrecord reading, indexing and queries (nasbench_analysis.nb101_benchmark and
the query CLI), on files written by tests/nb101_fixture.py: an independent pure-Python writer
(own CRC-32C, framing and protobuf encoder), itself checked here against TensorFlow's
TFRecordWriter and the protobuf library. The numbers in these files are synthetic."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  - before tensorflow, always (this environment crashes otherwise)

import nasbench_analysis.nb101_benchmark as nbb
from nasbench_analysis.nb101_benchmark import (
    FULL,
    ONLY108,
    NB101Benchmark,
    NotInBenchmark,
    decode_metrics,
)
from nasbench_analysis.nb101_spec import CONV3X3, INPUT, MAXPOOL3X3, OUTPUT, NB101Spec
from shared.errors import UserError
from tests.conftest import ROOT, door_env, run_module_here
from tests.nb101_fixture import (
    crc32c,
    encode_model_metrics,
    random_valid_specs,
    record_for,
    toy_metrics,
    varint,
    write_tfrecord,
    write_toy_benchmark,
)

EPOCHS = (4, 108)
CHAIN = NB101Spec.create([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [INPUT, CONV3X3, OUTPUT])


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    return tf


def _no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any read of a tfrecord fail: what opens after this must come from the index."""
    def fail(path):
        raise AssertionError(f"{path} was read again instead of using its index")
        yield  # pragma: no cover

    monkeypatch.setattr(nbb, "_tf_record_batches", fail)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[NB101Spec]]:
    """A toy benchmark (20 cells + CHAIN, 3 repeats at 4 and 108 epochs), indexed once."""
    path = tmp_path_factory.mktemp("nb101") / "toy.tfrecord"
    specs = write_toy_benchmark(path, random_valid_specs(20, seed=1) + [CHAIN], epochs=EPOCHS)
    NB101Benchmark.open(path, progress=False)
    return path, specs


# ---- the fixture's writer against TensorFlow and protobuf ---------------------------------

def test_fixture_framing_is_byte_identical_to_tensorflows_writer(tmp_path: Path) -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    payloads = [record_for(s, 108, toy_metrics(s.hash(), r))
                for s in random_valid_specs(4, seed=2) for r in range(2)] + [b"", b"x" * 300]
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "tf.tfrecord"
    write_tfrecord(ours, payloads)
    tf = _tf()
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for p in payloads:
            w.write(p)
    assert ours.read_bytes() == theirs.read_bytes()


def test_fixture_encoder_matches_protobuf_and_decoder_reads_it() -> None:
    pb = pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    del pb
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="nb101_test_metrics.proto",
                                             package="nb101test", syntax="proto2")
    ev = fdp.message_type.add(name="EvaluationData")
    for i, name in enumerate(("current_epoch", "training_time", "train_accuracy",
                              "validation_accuracy", "test_accuracy"), 1):
        ev.field.add(name=name, number=i, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    ev.field.add(name="checkpoint_path", number=6, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    mm = fdp.message_type.add(name="ModelMetrics")
    mm.field.add(name="evaluation_data", number=1, type=F.TYPE_MESSAGE,
                 label=F.LABEL_REPEATED, type_name=".nb101test.EvaluationData")
    mm.field.add(name="trainable_parameters", number=2, type=F.TYPE_INT32,
                 label=F.LABEL_OPTIONAL)
    mm.field.add(name="total_time", number=3, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("nb101test.ModelMetrics"))

    m = toy_metrics("0123456789abcdef0123456789abcdef", 1, 36)
    msg = cls(trainable_parameters=m["trainable_parameters"], total_time=m["total_time"])
    for e in m["evaluation_data"]:
        msg.evaluation_data.add(**e)
    assert encode_model_metrics(m) == msg.SerializeToString()

    d = decode_metrics(msg.SerializeToString())
    assert d.trainable_parameters == m["trainable_parameters"]
    assert d.total_time == m["total_time"]
    assert [vars_of(e) for e in d.evaluations] == m["evaluation_data"]

    # unknown fields of every wire type are skipped; absent fields take proto2's defaults;
    # a negative int32 (10-byte varint) comes back negative
    extra = (varint(9 << 3 | 0) + varint(300) + varint(10 << 3 | 5) + b"\0\0\0\0"
             + varint(11 << 3 | 1) + b"\0" * 8 + varint(12 << 3 | 2) + varint(2) + b"hi")
    d = decode_metrics(extra + msg.SerializeToString() + varint(2 << 3 | 0) + varint(-5))
    assert d.trainable_parameters == -5 and len(d.evaluations) == 3
    empty = decode_metrics(b"")
    assert (empty.trainable_parameters, empty.total_time, empty.evaluations) == (0, 0.0, [])
    for bad in (b"\x0a\x05ab", b"\x0b", b"\x11\x00\x00", b"\x08\xff"):
        with pytest.raises(ValueError):
            decode_metrics(bad)


def plain(runs: list[dict]) -> list[dict]:
    """Query results with the adjacency as nested lists, so they compare with ==."""
    return [{**r, "module_adjacency": r["module_adjacency"].tolist()} for r in runs]


def vars_of(e: object) -> dict:
    return {k: getattr(e, k) for k in ("current_epoch", "training_time", "train_accuracy",
                                       "validation_accuracy", "test_accuracy",
                                       "checkpoint_path")}


# ---- reading and querying ------------------------------------------------------------------

def test_query_returns_every_repeat_with_the_written_numbers(toy) -> None:
    path, specs = toy
    bench = NB101Benchmark.open(path, progress=False)
    assert len(bench) == len(specs) and bench.num_records == len(specs) * 3 * len(EPOCHS)
    assert bench.epochs_available == EPOCHS
    assert bench.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    for spec in specs:
        h = spec.hash()
        assert spec in bench and h in bench
        for epochs in EPOCHS:
            runs = bench.query(spec, epochs)
            written = [toy_metrics(h, r, epochs) for r in range(3)]
            assert len(runs) == 3
            for run, m in zip(runs, written):
                final, half = m["evaluation_data"][2], m["evaluation_data"][1]
                assert run["trainable_parameters"] == m["trainable_parameters"]
                assert run["module_operations"] == list(spec.ops)
                assert run["module_adjacency"].tolist() == spec.array().tolist()
                for k in ("training_time", "train_accuracy", "validation_accuracy",
                          "test_accuracy"):
                    assert run[k] == final[k] and run[f"halfway_{k}"] == half[k]
            mean = bench.query_mean(spec, epochs)
            finals = [m["evaluation_data"][2] for m in written]
            assert mean["repeats"] == 3 and mean["module_hash"] == h
            assert mean["trainable_parameters"] == written[0]["trainable_parameters"]
            assert mean["valid_error"] == pytest.approx(
                sum(1 - f["validation_accuracy"] for f in finals) / 3, abs=1e-12)
            assert mean["test_error"] == pytest.approx(
                sum(1 - f["test_accuracy"] for f in finals) / 3, abs=1e-12)
            assert mean["training_time"] == pytest.approx(
                sum(f["training_time"] for f in finals) / 3, abs=1e-9)
    assert plain(bench.query(specs[0].hash().upper())) == plain(bench.query(specs[0]))
    assert bench.verify_hashes(len(bench)) == []


def test_lookup_ignores_matrix_dtype_and_unpruned_vertices(toy) -> None:
    path, _ = toy
    bench = NB101Benchmark.open(path, progress=False)
    as_float = NB101Spec.create(np.array(CHAIN.matrix, dtype=np.float64), list(CHAIN.ops))
    # the same cell with a dead-end vertex 2 that pruning removes
    dangling = NB101Spec.create([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
                                [INPUT, CONV3X3, MAXPOOL3X3, OUTPUT])
    for spec in (as_float, dangling):
        assert spec.hash() == CHAIN.hash()
        assert plain(bench.query(spec)) == plain(bench.query(CHAIN))


def test_cells_not_in_the_file_and_bad_epochs_are_clear_errors(toy) -> None:
    path, specs = toy
    bench = NB101Benchmark.open(path, progress=False)
    written = {s.hash() for s in specs}
    absent = next(s for s in random_valid_specs(30, seed=99) if s.hash() not in written)
    assert absent not in bench
    with pytest.raises(NotInBenchmark, match=absent.hash()) as err:
        bench.query(absent)
    assert isinstance(err.value, KeyError)
    with pytest.raises(KeyError, match=absent.hash()):
        bench.query_mean(absent)
    disconnected = NB101Spec.create([[0, 1, 0], [0, 0, 0], [0, 0, 0]], [INPUT, CONV3X3, OUTPUT])
    with pytest.raises(NotInBenchmark, match="does not reach"):
        bench.query(disconnected)
    too_many_edges = NB101Spec.create(np.triu(np.ones((7, 7), dtype=int), 1),
                                      [INPUT] + [CONV3X3] * 5 + [OUTPUT])
    with pytest.raises(NotInBenchmark, match=too_many_edges.hash()):
        bench.query(too_many_edges)
    assert disconnected not in bench and "nonsense" not in bench
    with pytest.raises(ValueError, match="available: 4, 108"):
        bench.query(CHAIN, epochs=12)


# ---- the index: built once, reused, rebuilt when the file changes ---------------------------

def test_index_is_built_once_then_reused(tmp_path: Path, monkeypatch, caplog) -> None:
    path = tmp_path / "toy.tfrecord"
    specs = write_toy_benchmark(path, random_valid_specs(5, seed=3))
    with caplog.at_level(logging.INFO, logger=nbb.__name__):
        first = NB101Benchmark.open(path, progress=False)
    cache = tmp_path / "toy.tfrecord.index.npz"
    assert first.cache_path == cache and cache.is_file()
    assert any("indexing" in r.getMessage() and str(cache) in r.getMessage()
               for r in caplog.records)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind
    _no_reading(monkeypatch)
    second = NB101Benchmark.open(path, progress=False)
    assert second.cache_path == cache
    assert second.query_mean(specs[0]) == first.query_mean(specs[0])


def test_index_is_rebuilt_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "toy.tfrecord"
    specs = random_valid_specs(5, seed=4)
    write_toy_benchmark(path, specs)
    old = NB101Benchmark.open(path, progress=False).query(specs[0])
    size, mtime = path.stat().st_size, path.stat().st_mtime_ns
    write_toy_benchmark(path, specs, salt="v2")  # other numbers, same length
    assert path.stat().st_size == size
    os.utime(path, ns=(mtime + 5 * 10 ** 9, mtime + 5 * 10 ** 9))  # mtime alone tells
    new = NB101Benchmark.open(path, progress=False).query(specs[0])
    assert new[0]["validation_accuracy"] != old[0]["validation_accuracy"]
    h = specs[0].hash()
    assert [r["validation_accuracy"] for r in new] == [
        toy_metrics(h, r, 108, salt="v2")["evaluation_data"][2]["validation_accuracy"]
        for r in range(3)]


def test_a_damaged_index_is_rebuilt(tmp_path: Path, caplog) -> None:
    path = tmp_path / "toy.tfrecord"
    specs = write_toy_benchmark(path, random_valid_specs(3, seed=5))
    cache = Path(str(path) + ".index.npz")
    expected = NB101Benchmark.open(path, progress=False).query_mean(specs[1])
    for damage in (b"not a zip file", cache.read_bytes()[:200]):
        cache.write_bytes(damage)
        with caplog.at_level(logging.WARNING, logger=nbb.__name__):
            assert NB101Benchmark.open(path, progress=False).query_mean(specs[1]) == expected
        assert "unreadable" in caplog.text
        with np.load(cache) as z:  # rewritten, readable again
            assert "cell_hash" in z.files


def test_unwritable_folder_puts_the_index_under_home(tmp_path: Path, monkeypatch,
                                                     caplog) -> None:
    data = tmp_path / "readonly"
    data.mkdir()
    path = data / "toy.tfrecord"
    specs = write_toy_benchmark(path, random_valid_specs(3, seed=6))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # root ignores chmod, so the folder check itself is patched to say "not writable"
    monkeypatch.setattr(nbb, "_dir_writable", lambda folder: Path(folder) != data)
    with caplog.at_level(logging.INFO, logger=nbb.__name__):
        bench = NB101Benchmark.open(path, progress=False)
    home_cache = tmp_path / "home" / ".cache" / "darts-family" / "nb101"
    assert bench.cache_path is not None and bench.cache_path.parent == home_cache
    assert bench.cache_path.is_file() and not list(data.glob("*.npz"))
    assert "not writable" in caplog.text and str(home_cache) in caplog.text
    _no_reading(monkeypatch)
    again = NB101Benchmark.open(path, progress=False)
    assert again.cache_path == bench.cache_path
    assert again.query_mean(specs[0]) == bench.query_mean(specs[0])


# ---- bad files -----------------------------------------------------------------------------

def test_missing_file_names_the_downloads(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        NB101Benchmark.open(tmp_path / "nasbench_only108.tfrecord")
    msg = str(err.value)
    for f in (ONLY108, FULL):
        assert f.name in msg and f.url in msg and f.sha256 in msg and f.approx_size in msg
    assert str(tmp_path / "nasbench_only108.tfrecord") in msg


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "bad payload"])
def test_corrupt_file_is_one_user_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / ONLY108.name  # a known name: the message gives its published SHA-256
    write_toy_benchmark(path, random_valid_specs(4, seed=7))
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-7])
    elif damage == "flipped byte":
        path.write_bytes(data[:200] + bytes([data[200] ^ 0x10]) + data[201:])
    else:  # framing and CRCs fine, the JSON inside is not a nasbench record
        write_tfrecord(path, [data[16:40]])
    with pytest.raises(UserError) as err:
        NB101Benchmark.open(path, progress=False)
    msg = str(err.value)
    actual = path.read_bytes()
    for part in (str(path), f"{len(actual):,} bytes", hashlib.sha256(actual).hexdigest(),
                 ONLY108.sha256, ONLY108.url):
        assert part in msg, (part, msg)
    assert not Path(str(path) + ".index.npz").exists()


def test_corrupt_file_with_another_name_lists_both_downloads(tmp_path: Path) -> None:
    path = tmp_path / "mine.tfrecord"
    write_tfrecord(path, [b'["0123456789abcdef0123456789abcdef", 108, "0100", "input,output",'
                          b' "!!notbase64"]'])
    with pytest.raises(UserError, match="record 0 cannot be decoded") as err:
        NB101Benchmark.open(path, progress=False)
    for f in (ONLY108, FULL):
        assert f.url in str(err.value) and f.sha256 in str(err.value)
    path.write_bytes(b"")
    with pytest.raises(UserError, match="no records"):
        NB101Benchmark.open(path, progress=False)


# ---- the CLI -------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_prints_json_and_reports_bad_input(toy) -> None:
    path, specs = toy
    cmd = [sys.executable, "-m", "nasbench_analysis.query", "--dataset_file", str(path)]
    matrix = json.dumps([[float(x) for x in row] for row in CHAIN.matrix])
    runs = {
        "ok": cmd + ["--matrix", matrix, "--ops", ",".join(CHAIN.ops), "--epochs", "4"],
        "hash": cmd + ["--hash", specs[0].hash()],
        "bad json": cmd + ["--matrix", "[[0,1],[0,0]", "--ops", "input,output"],
        "bad op": cmd + ["--matrix", "[[0,1,0],[0,0,1],[0,0,0]]", "--ops",
                         "input,conv5x5,output"],
        "absent": cmd + ["--hash", "f" * 32],
        "bad epochs": cmd + ["--hash", specs[0].hash(), "--epochs", "36"],
    }
    # "ok" as a process (no TensorFlow needed: the index exists); the others in this one
    # (conftest.run_module_here): the interpreter's start would be their whole cost
    ok = subprocess.run(runs.pop("ok"), cwd=ROOT, env=door_env(), capture_output=True,
                        text=True, timeout=60)
    out = {"ok": (ok.stdout, ok.stderr, ok.returncode)}
    for k, v in runs.items():
        done = run_module_here("nasbench_analysis.query", v[3:])
        out[k] = (done.stdout, done.stderr, done.returncode)

    stdout, stderr, rc = out["ok"]
    assert rc == 0, stderr
    got = json.loads(stdout)
    bench = NB101Benchmark.open(path, progress=False)
    assert got["module_hash"] == CHAIN.hash() and got["epochs"] == 4
    assert got["mean"] == bench.query_mean(CHAIN, 4)
    assert len(got["repeats"]) == 3
    assert got["repeats"][2]["halfway_test_accuracy"] == \
        bench.query(CHAIN, 4)[2]["halfway_test_accuracy"]
    assert got["module_adjacency"] == [list(r) for r in CHAIN.matrix]
    stdout, stderr, rc = out["hash"]
    assert rc == 0 and json.loads(stdout)["mean"] == bench.query_mean(specs[0]), stderr
    for case, needle in (("bad json", "not valid JSON"), ("bad op", "conv5x5"),
                         ("absent", "f" * 32), ("bad epochs", "available: 4, 108")):
        stdout, stderr, rc = out[case]
        lines = stderr.strip().splitlines()
        assert rc == 2 and stdout == "", (case, stderr)
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], case
