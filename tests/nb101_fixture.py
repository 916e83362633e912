"""Write NAS-Bench-101 tfrecords in the real format, independently of the reader.

Used by tests/test_nb101_benchmark.py (and by a toy-demo generator): the reader
(nasbench_analysis.nb101_benchmark) reads through TensorFlow and decodes the protobuf by hand,
so this writer uses neither: its own CRC-32C and framing, its own protobuf encoder, plain dicts.
A bug shared by writer and reader would then have to be made twice, the same way.

The numbers from :func:`toy_metrics` are SYNTHETIC: deterministic functions of the cell hash,
plausible in range (accuracies 0.80-0.95, NAS-Bench-101-like parameter counts and training
times), and meaningless otherwise.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
import struct
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

if __name__ == "__main__":  # run as a script (the README's toy file): the repo root importable
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nasbench_analysis.nb101_spec import AVAILABLE_OPS, INPUT, OUTPUT, NB101Spec

# ---- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) and TFRecord framing -------------


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: uint64 length, masked CRC of those 8 bytes, data, masked CRC of data."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


def write_tfrecord(path: str | Path, records: Iterable[bytes]) -> None:
    with open(path, "wb") as f:
        for data in records:
            f.write(frame(data))


# ---- protobuf (proto2) encoding of nasbench's ModelMetrics ----------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64: two's complement, 10 bytes
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def _double(field: int, x: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", x)


def _bytes(field: int, b: bytes) -> bytes:
    return _key(field, 2) + varint(len(b)) + b


EVAL_FIELDS = ("current_epoch", "training_time", "train_accuracy", "validation_accuracy",
               "test_accuracy")  # EvaluationData fields 1-5 (doubles); 6 is checkpoint_path


def encode_evaluation(ev: dict) -> bytes:
    return (b"".join(_double(i + 1, float(ev[k])) for i, k in enumerate(EVAL_FIELDS))
            + _bytes(6, ev["checkpoint_path"].encode("utf-8")))


def encode_model_metrics(m: dict) -> bytes:
    """``ModelMetrics`` as protobuf serializes it: fields in number order."""
    return (b"".join(_bytes(1, encode_evaluation(ev)) for ev in m["evaluation_data"])
            + _key(2, 0) + varint(int(m["trainable_parameters"]))
            + _double(3, float(m["total_time"])))


# ---- records -------------------------------------------------------------------------------


def toy_metrics(module_hash: str, repeat: int, epochs: int = 108, salt: str = "") -> dict:
    """SYNTHETIC ModelMetrics (as a dict) for one training run of a cell: deterministic in
    (hash, repeat, epochs, salt). The cell's quality and size come from its hash digits; each
    repeat adds a little noise; shorter budgets score lower. ``salt`` gives other numbers of
    the same byte length (for a "file changed" test)."""
    digits = hashlib.md5(f"{module_hash}|{salt}".encode()).hexdigest()
    noise = hashlib.md5(f"{module_hash}|{repeat}|{epochs}|{salt}".encode()).hexdigest()
    u = [int(digits[i:i + 8], 16) / 2 ** 32 for i in range(0, 32, 8)]  # cell: 4 x [0, 1)
    e = [int(noise[i:i + 8], 16) / 2 ** 32 - 0.5 for i in range(0, 32, 8)]  # run: 4 x [-.5, .5)
    short = 0.08 * (1 - epochs / 108)  # a 4-epoch run is ~8 points worse than a 108-epoch one
    valid = 0.80 + 0.15 * u[0] - short + 0.01 * e[0]
    test = valid - 0.004 + 0.01 * e[1]
    train = min(1.0, valid + 0.05 + 0.01 * e[2])
    time_final = (400.0 + 4000.0 * u[1]) * epochs / 108 * (1 + 0.02 * e[3])
    ckpt = f"toy://{module_hash}/repeat_{repeat}/model.ckpt"
    evals = [
        dict(current_epoch=0.0, training_time=0.0, train_accuracy=0.1, validation_accuracy=0.1,
             test_accuracy=0.1, checkpoint_path=f"{ckpt}-0"),
        dict(current_epoch=epochs / 2, training_time=time_final / 2, train_accuracy=train - 0.06,
             validation_accuracy=valid - 0.05, test_accuracy=test - 0.05,
             checkpoint_path=f"{ckpt}-half"),
        dict(current_epoch=float(epochs), training_time=time_final, train_accuracy=train,
             validation_accuracy=valid, test_accuracy=test, checkpoint_path=f"{ckpt}-final"),
    ]
    return {"evaluation_data": evals,
            # from the hash alone: a salt must not change the record's length (varint)
            "trainable_parameters": 227_274 + int(module_hash[:8], 16) % 49_000_000,
            "total_time": time_final * 1.05}


def pruned_fields(spec: NB101Spec) -> tuple[str, str, str]:
    """(module_hash, raw_adjacency, raw_operations) as the file stores a cell: pruned."""
    p = spec.pruned()
    if p is None:
        raise ValueError("the input does not reach the output: not a NAS-Bench-101 cell")
    adjacency = "".join(str(x) for row in p.matrix for x in row)
    return spec.hash(), adjacency, ",".join(p.ops)


def record_for(spec: NB101Spec, epochs: int, metrics: dict) -> bytes:
    """One record's payload: the JSON array nasbench writes, built from the PRUNED spec."""
    module_hash, adjacency, operations = pruned_fields(spec)
    raw = base64.b64encode(encode_model_metrics(metrics)).decode("ascii")
    return json.dumps([module_hash, epochs, adjacency, operations, raw]).encode("utf-8")


def write_toy_benchmark(path: str | Path, specs: Sequence[NB101Spec],
                        epochs: Sequence[int] = (108,), repeats: int = 3,
                        salt: str = "") -> list[NB101Spec]:
    """A tfrecord with ``repeats`` runs per cell and budget of :func:`toy_metrics` numbers.
    Specs with the same hash are written once. Records are interleaved (budget, repeat, cell)
    so a reader cannot rely on a cell's records being adjacent. Returns the pruned specs."""
    unique: dict[str, NB101Spec] = {}
    for spec in specs:
        unique.setdefault(spec.hash(), spec.pruned())  # type: ignore[arg-type]
    records = [record_for(spec, e, toy_metrics(h, r, e, salt))
               for e in epochs for r in range(repeats) for h, spec in unique.items()]
    write_tfrecord(path, records)
    return list(unique.values())


def random_valid_specs(n: int, seed: int = 0) -> list[NB101Spec]:
    """``n`` distinct (by hash) valid NAS-Bench-101 cells, drawn at random."""
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < n:
        v = rng.randint(3, 7)
        a = np.zeros((v, v), dtype=np.int64)
        for i, j in itertools.combinations(range(v), 2):
            a[i, j] = rng.random() < 0.35
        ops = [INPUT] + [rng.choice(AVAILABLE_OPS) for _ in range(v - 2)] + [OUTPUT]
        spec = NB101Spec.create(a, ops)
        if spec.is_valid() and spec.hash() not in seen:
            seen.add(spec.hash())
            out.append(spec)
    return out


# ---- a toy benchmark for trying nasbench_analysis without the 499 MB file ------------------
def nb1shot1_specs(space_name: str) -> list[NB101Spec]:
    """Every distinct NB-101 cell of an NB-1Shot1 space (space 1: 2,685; space 2: 7,773)."""
    from nasbench_analysis.one_shot import arch_to_spec
    from shared.nb1shot1_arch import NB1Shot1Arch
    from shared.spaces import get_nb1shot1_space

    space, specs = get_nb1shot1_space(space_name), {}
    for parents, ops in space.architectures():
        spec = arch_to_spec(NB1Shot1Arch(space.name, ops, parents))
        specs.setdefault(spec.hash(), spec)
    return list(specs.values())


def run_specs(run_dirs: Sequence[str]) -> list[NB101Spec]:
    """The cells a search run saved (``one_shot_architecture_{e}.json``)."""
    import glob
    import os

    specs = {}
    for run in run_dirs:
        for path in glob.glob(os.path.join(run, "**", "one_shot_architecture_*.json"),
                              recursive=True):
            nb = json.load(open(path))["nb101"]
            spec = NB101Spec.create(nb["matrix"], nb["ops"])
            specs.setdefault(spec.hash(), spec)
    return list(specs.values())


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        description="Write a TOY NAS-Bench-101 tfrecord in the real format, with SYNTHETIC "
                    "numbers, holding every cell of the given NB-1Shot1 spaces and/or the "
                    "cells saved by the given search runs.")
    p.add_argument("--out", required=True, help="the tfrecord to write")
    p.add_argument("--space", nargs="*", default=[], choices=["1", "2", "3"],
                   help="every cell of these spaces (space 3 takes minutes: prefer --run_dir)")
    p.add_argument("--run_dir", nargs="*", default=[], help="the cells these runs visited")
    args = p.parse_args(argv)
    specs = {s.hash(): s for name in args.space for s in nb1shot1_specs(name)}
    specs.update({s.hash(): s for s in run_specs(args.run_dir)})
    if not specs:
        p.error("nothing to write: give --space and/or --run_dir with saved architectures")
    write_toy_benchmark(args.out, list(specs.values()))
    print(f"wrote {args.out}: {len(specs)} cells x 3 repeats, SYNTHETIC numbers (a toy "
          f"fixture in the real format, not NAS-Bench-101's results)")


if __name__ == "__main__":
    main()
