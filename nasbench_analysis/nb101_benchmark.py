"""NAS-Bench-101 look-ups from Google's tfrecord, read once through TensorFlow 2 and indexed.

Google's ``nasbench`` API needs TensorFlow 1 and holds every record in nested Python dicts
(several GB, about a minute to load on every start). Here the file is read once with TF 2's
``tf.data.TFRecordDataset`` (which checks every record's CRC), each record is decoded in pure
Python, and the numbers go into flat numpy arrays saved beside the file as
``<file>.index.npz``. Later opens load only that index (no TensorFlow import at all) until the
tfrecord's size or mtime changes.

The file (facts from nasbench's ``api.py`` and ``model_metrics.proto``): each record is the
UTF-8 JSON array ``[module_hash, epochs, raw_adjacency, raw_operations, raw_metrics]``; the
adjacency is a row-major '0'/'1' string of the *pruned* cell, the operations are comma-separated
labels including 'input' and 'output', and the metrics are a base64 ``ModelMetrics`` protobuf
whose ``evaluation_data`` holds the evaluations before training, halfway and at the end. Each
cell was trained three times per epoch budget, so a hash has one record per repeat and budget.

Queries follow nasbench: fixed statistics (adjacency, operations, trainable parameters) come from
a cell's first record in the file, and :meth:`NB101Benchmark.query` returns every repeat, as
NAS-Bench-1Shot1's ``NasbenchWrapper.query`` does, rather than one random repeat.
"""
from __future__ import annotations

import array
import base64
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from nasbench_analysis.nb101_spec import NB101Spec
from shared.errors import UserError
from shared.logs import quiet_tensorflow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NB101File:
    """One of the published NAS-Bench-101 files."""

    name: str
    url: str
    sha256: str
    approx_size: str  # for messages only: the exact byte count is not published
    epochs: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name} (about {self.approx_size}, SHA-256 {self.sha256}) from {self.url}"


ONLY108 = NB101File("nasbench_only108.tfrecord",
                    "https://storage.googleapis.com/nasbench/nasbench_only108.tfrecord",
                    "4c39c3936e36a85269881d659e44e61a245babcb72cb374eacacf75d0e5f4fd1",
                    "499 MB", (108,))
FULL = NB101File("nasbench_full.tfrecord",
                 "https://storage.googleapis.com/nasbench/nasbench_full.tfrecord",
                 "3d64db8180fb1b0207212f9032205064312b6907a3bbc81eabea10db2f5c7e9c",
                 "1.95 GB", (4, 12, 36, 108))
KNOWN_FILES: dict[str, NB101File] = {f.name: f for f in (ONLY108, FULL)}

INDEX_SUFFIX = ".index.npz"
INDEX_VERSION = 1  # bump when the arrays below change; an older index is then rebuilt
# Per-record metric columns: evaluation_data[1] (halfway) and [2] (final) of each record.
METRIC_NAMES = ("training_time", "train_accuracy", "validation_accuracy", "test_accuracy")
COLUMNS = tuple(f"{when}_{name}" for when in ("halfway", "final") for name in METRIC_NAMES)
_HASH_RE = re.compile(r"[0-9a-f]{32}")
_READ_BATCH = 4096  # records per TF batch: one Python<->TF round trip per batch, not per record


# --------------------------------------------------------------------------------------------
# ModelMetrics protobuf, decoded by hand (the generated nasbench module needs its .proto build)
# --------------------------------------------------------------------------------------------

class MetricsDecodeError(ValueError):
    """A raw_metrics blob that is not a ModelMetrics protobuf."""


@dataclass(slots=True)
class Evaluation:
    """``EvaluationData``: one evaluation of a trained model (accuracies are fractions)."""

    current_epoch: float
    training_time: float
    train_accuracy: float
    validation_accuracy: float
    test_accuracy: float
    checkpoint_path: str


@dataclass(slots=True)
class ModelMetrics:
    """``ModelMetrics``: evaluations[0] before training, [1] halfway, [2] final."""

    trainable_parameters: int
    total_time: float
    evaluations: list[Evaluation]


# The decoder runs 21 fields per record on 1.3 to 5 million records, so one-byte keys and
# doubles take an inlined path; everything else goes through _field_value.
_unpack_double = struct.Struct("<d").unpack_from


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise MetricsDecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MetricsDecodeError("varint longer than 10 bytes")


def _key(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(field number, wire type, position after the key)."""
    key = buf[pos]
    if key < 0x80:
        pos += 1
    else:
        key, pos = _varint(buf, pos)
    if key >> 3 == 0:
        raise MetricsDecodeError("field number 0")
    return key >> 3, key & 7, pos


def _field_value(buf: bytes, pos: int, field: int, wire: int) -> tuple[int | bytes, int]:
    """A field's value (an int for a varint, else its bytes) and the position after it."""
    if wire == 0:
        return _varint(buf, pos)
    if wire == 2:
        size, pos = _varint(buf, pos)
    elif wire in (1, 5):
        size = 8 if wire == 1 else 4
    else:  # 3/4 are proto1 groups, 6/7 do not exist: nasbench's messages use neither
        raise MetricsDecodeError(f"unsupported wire type {wire} (field {field})")
    if pos + size > len(buf):
        raise MetricsDecodeError(f"truncated field {field}")
    return buf[pos:pos + size], pos + size


def _decode_evaluation(buf: bytes) -> Evaluation:
    doubles = [0.0] * 5  # proto2 default of an absent double
    path = ""
    pos, end = 0, len(buf)
    while pos < end:
        field, wire, pos = _key(buf, pos)
        if wire == 1 and 1 <= field <= 5:
            if pos + 8 > end:
                raise MetricsDecodeError(f"truncated field {field}")
            doubles[field - 1] = _unpack_double(buf, pos)[0]
            pos += 8
            continue
        value, pos = _field_value(buf, pos, field, wire)
        if field == 6 and wire == 2:
            try:
                path = value.decode("utf-8")  # type: ignore[union-attr]
            except UnicodeDecodeError as exc:
                raise MetricsDecodeError(f"checkpoint_path is not UTF-8: {exc}") from None
        # anything else is an unknown field (or a known one with another wire type, which
        # protobuf also keeps as unknown): skipped
    return Evaluation(*doubles, path)


def decode_metrics(raw: bytes) -> ModelMetrics:
    """Decode a serialized ``ModelMetrics`` protobuf (the base64-decoded raw_metrics).

    Unknown fields are skipped; absent ones take proto2's defaults (0). Raises
    :class:`MetricsDecodeError` (a ValueError) on bytes that are not such a message."""
    evaluations: list[Evaluation] = []
    params, total_time = 0, 0.0
    pos = 0
    while pos < len(raw):
        field, wire, pos = _key(raw, pos)
        value, pos = _field_value(raw, pos, field, wire)
        if field == 1 and wire == 2:
            evaluations.append(_decode_evaluation(value))  # type: ignore[arg-type]
        elif field == 2 and wire == 0:
            params = value & 0xFFFFFFFF  # type: ignore[operator]  # int32: low 32 bits, signed
            params = params - (1 << 32) if params >= 1 << 31 else params
        elif field == 3 and wire == 1:
            total_time = _unpack_double(value)[0]  # type: ignore[arg-type]
    return ModelMetrics(params, total_time, evaluations)


def _parse_record(data: bytes) -> tuple[str, int, str, str, ModelMetrics]:
    """One record's JSON payload, checked: (hash, epochs, adjacency, operations, metrics)."""
    row = json.loads(data)
    if not (isinstance(row, list) and len(row) == 5):
        raise ValueError("not a JSON array [module_hash, epochs, adjacency, operations, metrics]")
    module_hash, epochs, adjacency, operations, raw = row
    if not (isinstance(module_hash, str) and _HASH_RE.fullmatch(module_hash)):
        raise ValueError(f"module_hash {module_hash!r} is not 32 lowercase hex digits")
    if not (isinstance(epochs, int) and 0 < epochs < 2 ** 15):
        raise ValueError(f"epochs {epochs!r} is not a positive integer")
    if not (isinstance(adjacency, str) and isinstance(operations, str) and isinstance(raw, str)):
        raise ValueError("adjacency, operations and metrics must be strings")
    v = int(round(len(adjacency) ** 0.5))
    if v * v != len(adjacency) or not 2 <= v <= 7 or adjacency.strip("01"):
        raise ValueError(f"adjacency {adjacency!r} is not a V*V string of 0/1 with 2 <= V <= 7")
    if len(operations.split(",")) != v:
        raise ValueError(f"operations {operations!r} do not name {v} vertices")
    metrics = decode_metrics(base64.b64decode(raw, validate=True))
    if len(metrics.evaluations) < 3:
        raise ValueError(f"{len(metrics.evaluations)} evaluations, expected 3 "
                         "(before training, halfway, final)")
    return module_hash, epochs, adjacency, operations, metrics


# --------------------------------------------------------------------------------------------
# The index: flat arrays, cells sorted by hash, each cell's records contiguous
# --------------------------------------------------------------------------------------------

@dataclass
class _Index:
    """Cells sorted by hash (np.searchsorted finds one); cell i's records are
    ``start[i]:start[i+1]``, sorted by epochs, repeats in file order."""

    cell_hash: np.ndarray       # (C,) S32, sorted
    cell_adjacency: np.ndarray  # (C,) S49 raw '0'/'1' string of the cell's first record
    cell_ops: np.ndarray        # (C,) uint16 into ops_vocab (few hundred distinct op lists)
    ops_vocab: np.ndarray       # (K,) str, raw comma-separated operations
    cell_params: np.ndarray     # (C,) int64 trainable_parameters of the cell's first record
    start: np.ndarray           # (C+1,) int64
    epochs: np.ndarray          # (R,) int16
    repeat: np.ndarray          # (R,) int16: 0, 1, 2 per (cell, epochs) in file order
    metrics: dict[str, np.ndarray]  # COLUMNS -> (R,) float64
    source: dict[str, object]   # name, size, mtime_ns, sha256 of the tfrecord

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f: getattr(self, f) for f in ("cell_hash", "cell_adjacency", "cell_ops",
                                              "ops_vocab", "cell_params", "start", "epochs",
                                              "repeat")}
        out.update({f"metric_{k}": v for k, v in self.metrics.items()})
        out["version"] = np.array(INDEX_VERSION)
        out["source"] = np.array(json.dumps(self.source))
        return out

    @staticmethod
    def from_arrays(a: dict[str, np.ndarray]) -> _Index:
        if int(a["version"]) != INDEX_VERSION:
            raise ValueError(f"index version {int(a['version'])}, expected {INDEX_VERSION}")
        index = _Index(a["cell_hash"], a["cell_adjacency"], a["cell_ops"], a["ops_vocab"],
                       a["cell_params"], a["start"], a["epochs"], a["repeat"],
                       {k: a[f"metric_{k}"] for k in COLUMNS}, json.loads(str(a["source"])))
        c, r = len(index.cell_hash), len(index.epochs)
        # a cheap consistency check, so a damaged index is rebuilt instead of answering wrongly
        if (len(index.start) != c + 1 or index.start[0] != 0 or index.start[-1] != r
                or any(len(x) != c for x in (index.cell_adjacency, index.cell_ops,
                                             index.cell_params))
                or any(len(x) != r for x in (index.repeat, *index.metrics.values()))
                or (c and int(index.cell_ops.max()) >= len(index.ops_vocab))):
            raise ValueError("inconsistent array lengths")
        return index


def home_cache_dir() -> Path:
    """Where an index goes when the tfrecord's own folder is not writable."""
    return Path.home() / ".cache" / "darts-family" / "nb101"


def _home_cache_path(path: Path) -> Path:
    # the absolute path in the name keeps two different files with one name apart
    tag = hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:12]
    return home_cache_dir() / f"{path.name}-{tag}{INDEX_SUFFIX}"


def _dir_writable(folder: Path) -> bool:
    """Try it: os.access says yes to root on a chmod-ed folder and knows no read-only mounts."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _cache_candidates(path: Path) -> list[Path]:
    return [path.with_name(path.name + INDEX_SUFFIX), _home_cache_path(path)]


def _fingerprint_matches(source: dict[str, object], st: os.stat_result) -> bool:
    return source.get("size") == st.st_size and source.get("mtime_ns") == st.st_mtime_ns


def _load_cache(cache: Path, st: os.stat_result) -> _Index | None:
    """The index in ``cache`` if it is readable and was built from this very file, else None
    (a damaged cache is logged and rebuilt, never a traceback)."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            index = _Index.from_arrays({k: z[k] for k in z.files})
    except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, KeyError, ValueError, ...
        log.warning("the NAS-Bench-101 index %s is unreadable (%s: %s); rebuilding it", cache,
                    type(exc).__name__, exc)
        return None
    if not _fingerprint_matches(index.source, st):
        log.info("the NAS-Bench-101 index %s was built from another version of the file "
                 "(size or mtime changed); rebuilding it", cache)
        return None
    return index


def _save_cache(index: _Index, cache: Path) -> None:
    """Atomically: a reader never sees a half-written index, even if this process dies."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **index.arrays())  # uncompressed: loading is then a plain read
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, cache)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# Building the index from the tfrecord
# --------------------------------------------------------------------------------------------

class _Sha256(threading.Thread):
    """SHA-256 of the file, computed beside the TF reader (hashlib releases the GIL)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.hexdigest, self.error = path, "", ""

    def run(self) -> None:
        h = hashlib.sha256()
        try:
            with open(self.path, "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
            self.hexdigest = h.hexdigest()
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def result(self) -> str:
        self.join()
        return self.hexdigest or f"unknown ({self.error})"


class _CorruptFile(Exception):
    """Raised while reading; turned into one UserError with the file's size and SHA-256."""


def _tf_record_batches(path: Path) -> Iterator[Sequence[bytes]]:
    """The records' payloads in file order, in batches, read by TensorFlow 2 (CRC-checked)."""
    try:  # torch and torchvision first: imported after TensorFlow they crash the process
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        pass
    quiet_tensorflow()
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise UserError(f"indexing {path} needs TensorFlow 2 (only once: later opens use the "
                        "index): pip install tensorflow-cpu, or pip install -e .[nb101]"
                        ) from exc

    dataset = tf.data.TFRecordDataset(str(path)).batch(_READ_BATCH)
    try:
        yield from dataset.as_numpy_iterator()
    except tf.errors.OpError as exc:  # DataLossError: bad CRC, truncated record
        msg = exc.message or str(exc)  # "{{function_node ...}} corrupted record at 960 [Op:...]"
        found = re.search(r"(corrupted|truncated) record at (\d+)", msg)
        detail = (f"{found.group(1)} record at byte {found.group(2)}" if found
                  else msg.strip().splitlines()[0])
        if found and found.group(2) == "0":
            detail += ", the very first one: is it a TFRecord file at all?"
        raise _CorruptFile(detail) from None


def _build_index(path: Path, st: os.stat_result, progress: bool) -> _Index:
    from tqdm import tqdm

    sha = _Sha256(path)
    sha.start()
    cell_of: dict[str, int] = {}  # hash -> cell id in order of first appearance
    cell_adjacency: list[str] = []
    cell_ops: list[int] = []
    cell_params: list[int] = []
    ops_vocab: dict[str, int] = {}
    # array.array: 8 bytes per number (a list would hold a 24-byte float object each)
    rec_cell, rec_epochs = array.array("q"), array.array("h")
    columns = {k: array.array("d") for k in COLUMNS}
    halfway_cols = [columns[f"halfway_{m}"] for m in METRIC_NAMES]
    final_cols = [columns[f"final_{m}"] for m in METRIC_NAMES]
    n = 0
    bar = tqdm(total=st.st_size, unit="B", unit_scale=True, unit_divisor=1024,
               desc=f"indexing {path.name}", disable=not progress)
    try:
        for batch in _tf_record_batches(path):
            for data in batch:
                try:
                    module_hash, epochs, adjacency, operations, metrics = _parse_record(data)
                except (ValueError, TypeError) as exc:  # JSON, base64, protobuf, shape
                    raise _CorruptFile(f"record {n} cannot be decoded: {exc}") from None
                cell = cell_of.get(module_hash)
                if cell is None:  # first record of a cell: its fixed statistics, as nasbench
                    cell = cell_of[module_hash] = len(cell_adjacency)
                    cell_adjacency.append(adjacency)
                    cell_ops.append(ops_vocab.setdefault(operations, len(ops_vocab)))
                    cell_params.append(metrics.trainable_parameters)
                rec_cell.append(cell)
                rec_epochs.append(epochs)
                half, final = metrics.evaluations[1], metrics.evaluations[2]
                for col, ev in ((halfway_cols, half), (final_cols, final)):
                    col[0].append(ev.training_time)
                    col[1].append(ev.train_accuracy)
                    col[2].append(ev.validation_accuracy)
                    col[3].append(ev.test_accuracy)
                n += 1
            bar.update(sum(len(d) for d in batch) + 16 * len(batch))  # 16 framing bytes each
        if n == 0:
            raise _CorruptFile("it holds no records")
    except _CorruptFile as exc:
        raise _corrupt_error(path, st, str(exc), sha.result()) from None
    finally:
        bar.close()

    hashes = np.array(list(cell_of), dtype="S32")
    order = np.argsort(hashes, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    key = rank[np.frombuffer(rec_cell, dtype=np.int64)]
    epochs_arr = np.frombuffer(rec_epochs, dtype=np.int16)
    # stable: within a (cell, epochs) group the records keep file order, i.e. repeat order
    perm = np.lexsort((epochs_arr, key))
    key, epochs_arr = key[perm], epochs_arr[perm]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (key[1:] != key[:-1]) | (epochs_arr[1:] != epochs_arr[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    metrics = {}
    for k in COLUMNS:  # one column at a time keeps the peak memory at one extra column
        metrics[k] = np.frombuffer(columns.pop(k), dtype=np.float64)[perm]
    vocab = [""] * len(ops_vocab)
    for text, i in ops_vocab.items():
        vocab[i] = text
    source = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
              "sha256": sha.result(), "records": n}
    known = KNOWN_FILES.get(path.name)
    if known and source["sha256"] != known.sha256:
        log.warning("%s reads fine but its SHA-256 %s is not the published %s; its numbers "
                    "may not be the official benchmark's", path, source["sha256"], known.sha256)
    return _Index(
        cell_hash=hashes[order],
        cell_adjacency=np.array(cell_adjacency, dtype="S49")[order],
        cell_ops=np.array(cell_ops, dtype=np.uint16)[order],
        ops_vocab=np.array(vocab, dtype=str),
        cell_params=np.array(cell_params, dtype=np.int64)[order],
        start=np.searchsorted(key, np.arange(len(hashes) + 1)).astype(np.int64),
        epochs=epochs_arr,
        repeat=(np.arange(n) - group_start).astype(np.int16),
        metrics=metrics, source=source)


def _corrupt_error(path: Path, st: os.stat_result, detail: str, sha256: str) -> UserError:
    known = KNOWN_FILES.get(path.name)
    if known:
        expected = (f"the published {known.name} is about {known.approx_size} with SHA-256 "
                    f"{known.sha256}; download it again from {known.url}")
    else:
        expected = ("a NAS-Bench-101 file is one of "
                    + "; ".join(f.describe() for f in KNOWN_FILES.values()))
    return UserError(f"the NAS-Bench-101 file {path} is corrupt or truncated ({detail}): it is "
                     f"{st.st_size:,} bytes with SHA-256 {sha256}, but {expected}")


def _missing_error(path: Path) -> UserError:
    what = "is a folder, not a file" if path.is_dir() else "not found"
    return UserError(f"NAS-Bench-101 file {path} {what}; download "
                     + " or ".join(f.describe() for f in KNOWN_FILES.values())
                     + " and give its path")


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

class NotInBenchmark(KeyError):
    """A cell (or cell and epoch budget) the benchmark has no record of."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class NB101Benchmark:
    """NAS-Bench-101 results of cells, looked up by their graph hash (see module docstring)."""

    def __init__(self, path: Path, index: _Index, cache_path: Path | None) -> None:
        self.path = path
        self.cache_path = cache_path
        self._ix = index
        self._epochs_available = tuple(int(e) for e in np.unique(index.epochs))

    @classmethod
    def open(cls, path: str | os.PathLike, *, progress: bool = True) -> NB101Benchmark:
        """Open a NAS-Bench-101 tfrecord, indexing it on first use (minutes for the real file).

        The index is ``<file>.index.npz`` beside it, or under :func:`home_cache_dir` when that
        folder is not writable; it is rebuilt when the file's size or mtime changes.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise _missing_error(path)
        st = path.stat()
        beside, home = _cache_candidates(path)
        for cache in (beside, home):
            index = _load_cache(cache, st)
            if index is not None:
                return cls(path, index, cache)
        target = beside if _dir_writable(path.parent) else home
        log.info("indexing %s once (%.0f MB) -> %s%s", path, st.st_size / 1e6, target,
                 "" if target == beside else f" ({path.parent} is not writable)")
        index = _build_index(path, st, progress)
        saved: Path | None = None
        for cache in dict.fromkeys((target, home)):  # the home folder if the first write fails
            try:
                _save_cache(index, cache)
                saved = cache
                break
            except OSError as exc:
                log.warning("cannot write the NAS-Bench-101 index %s (%s)", cache, exc)
        if saved is None:
            log.warning("the index of %s is kept in memory only: the next open reads the file "
                        "again", path)
        elif saved != target:
            log.info("NAS-Bench-101 index written to %s instead", saved)
        return cls(path, index, saved)

    # -- size and membership --------------------------------------------------------------

    def __len__(self) -> int:
        """Number of unique cells."""
        return len(self._ix.cell_hash)

    @property
    def num_records(self) -> int:
        return len(self._ix.epochs)

    @property
    def epochs_available(self) -> tuple[int, ...]:
        return self._epochs_available

    @property
    def sha256(self) -> str:
        """The tfrecord's SHA-256, computed when it was indexed."""
        return str(self._ix.source.get("sha256", ""))

    def __contains__(self, spec: object) -> bool:
        if not isinstance(spec, (NB101Spec, str)):
            return False
        try:
            self._cell(spec)
        except NotInBenchmark:
            return False
        return True

    def __repr__(self) -> str:
        return (f"NB101Benchmark({str(self.path)!r}: {len(self)} cells, {self.num_records} "
                f"records, epochs {self.epochs_available})")

    # -- queries --------------------------------------------------------------------------

    def _cell(self, spec: NB101Spec | str) -> tuple[str, int]:
        """(hash, cell row) of a spec or a module hash; NotInBenchmark when there is none."""
        if isinstance(spec, str):
            module_hash = spec.strip().lower()
        else:
            try:
                module_hash = spec.hash()
            except ValueError as exc:  # disconnected cell, unknown op
                raise NotInBenchmark(f"not a NAS-Bench-101 cell ({exc}): {spec}") from None
            if not spec.is_valid():
                raise NotInBenchmark(
                    f"cell {module_hash} is outside NAS-Bench-101's space (after pruning it "
                    "needs <= 7 vertices, <= 9 edges, 'input' first and 'output' last)")
        key = module_hash.encode("ascii", "replace")
        i = int(np.searchsorted(self._ix.cell_hash, key))
        if i == len(self._ix.cell_hash) or self._ix.cell_hash[i] != key:
            raise NotInBenchmark(f"cell {module_hash} is not in {self.path}")
        return module_hash, i

    def _rows(self, spec: NB101Spec | str, epochs: int) -> tuple[str, int, np.ndarray]:
        if epochs not in self._epochs_available:
            raise ValueError(f"epochs {epochs!r} is not in {self.path.name}; available: "
                             + ", ".join(map(str, self._epochs_available)))
        module_hash, i = self._cell(spec)
        lo, hi = int(self._ix.start[i]), int(self._ix.start[i + 1])
        rows = lo + np.flatnonzero(self._ix.epochs[lo:hi] == epochs)
        if len(rows) == 0:
            raise NotInBenchmark(f"cell {module_hash} has no {epochs}-epoch records in "
                                 f"{self.path}")
        return module_hash, i, rows[np.argsort(self._ix.repeat[rows], kind="stable")]

    def _fixed(self, i: int) -> dict:
        raw = np.frombuffer(self._ix.cell_adjacency[i], dtype=np.uint8)
        v = int(round(len(raw) ** 0.5))
        return {"module_adjacency": (raw - ord("0")).astype(np.int8).reshape(v, v),
                "module_operations": str(self._ix.ops_vocab[self._ix.cell_ops[i]]).split(","),
                "trainable_parameters": int(self._ix.cell_params[i])}

    def fixed(self, spec: NB101Spec | str) -> dict:
        """nasbench's fixed statistics of a cell: module_adjacency (int8 array, pruned),
        module_operations, trainable_parameters, and its module_hash."""
        module_hash, i = self._cell(spec)
        return {"module_hash": module_hash, **self._fixed(i)}

    def query(self, spec: NB101Spec | str, epochs: int = 108) -> list[dict]:
        """Every repeat's results for a cell (a spec, pruned and hashed, or a module hash):
        module_adjacency, module_operations, trainable_parameters, then training_time,
        train_accuracy, validation_accuracy, test_accuracy at the end of training and the same
        four with a ``halfway_`` prefix (accuracies are fractions, times in seconds)."""
        _, i, rows = self._rows(spec, epochs)
        out = []
        for r in rows:
            point = self._fixed(i)  # a fresh copy per repeat: callers may modify theirs
            for name in METRIC_NAMES:
                point[name] = float(self._ix.metrics[f"final_{name}"][r])
            for name in METRIC_NAMES:
                point[f"halfway_{name}"] = float(self._ix.metrics[f"halfway_{name}"][r])
            out.append(point)
        return out

    def query_mean(self, spec: NB101Spec | str, epochs: int = 108) -> dict:
        """Final results averaged over the repeats: valid_error = mean(1 - validation_accuracy),
        test_error, the mean accuracies and training_time, trainable_parameters, repeats."""
        module_hash, i, rows = self._rows(spec, epochs)
        m = {name: self._ix.metrics[f"final_{name}"][rows] for name in METRIC_NAMES}
        return {"module_hash": module_hash, "epochs": int(epochs), "repeats": len(rows),
                "trainable_parameters": int(self._ix.cell_params[i]),
                "valid_error": float(np.mean(1.0 - m["validation_accuracy"])),
                "test_error": float(np.mean(1.0 - m["test_accuracy"])),
                "train_accuracy": float(np.mean(m["train_accuracy"])),
                "validation_accuracy": float(np.mean(m["validation_accuracy"])),
                "test_accuracy": float(np.mean(m["test_accuracy"])),
                "training_time": float(np.mean(m["training_time"]))}

    def verify_hashes(self, n: int = 1000) -> list[str]:
        """Recompute the hash of the first ``n`` cells (in hash order) from their stored
        adjacency and operations with :class:`NB101Spec`; returns the hashes that disagree
        (empty: the file and our hashing agree). The file's own hash column is a free test of
        ``nb101_spec`` on real cells."""
        bad = []
        for i in range(min(n, len(self))):
            stored = self._ix.cell_hash[i].decode("ascii")
            fixed = self._fixed(i)
            try:
                ok = NB101Spec.create(fixed["module_adjacency"],
                                      fixed["module_operations"]).hash() == stored
            except ValueError:
                ok = False
            if not ok:
                bad.append(stored)
        return bad
