"""NAS-Bench-201 lookups through the real ``nas_201_api`` package (``pip install nas-bench-201``).

darts-pt calls ``api.query_by_arch(genotype)`` and slices numbers out of the printed string
(``query`` and ``distill`` in its ``nasbench201/train_search.py``). Here the numbers are read
structurally: ``query_index_by_arch`` then ``get_more_info(index, dataset, iepoch=None,
hp='200', is_random=False)`` per data set, i.e. the 200-epoch results averaged over the trained
seeds, final epoch.

What ``get_more_info`` returns (nas-bench-201 2.1, ``api_201.py``): 'train-accuracy' always;
'cifar10-valid' adds 'valid-accuracy' (x-valid) and, when the file has it, 'test-accuracy'
(ori-test); 'cifar10' adds 'test-accuracy' (ori-test, trained on train+valid); 'cifar100' and
'ImageNet16-120' add 'valid-accuracy' (x-valid), 'test-accuracy' (x-test) and 'valtest-*'
(ori-test). Accuracies are in percent.

Two things the installed package needs handled here (``query`` and ``NB201Benchmark.open``):

* ``hp``. The 2.x API maps a file's ``'less'`` results to hp='12' and its ``'full'`` results to
  hp='200'. NAS-Bench-201-v1_0-e61699.pth has both keys, but its 12-epoch ('less') results cover
  cifar10-valid only, so every query here passes hp='200' (the paper's numbers; darts-pt's old
  API call had no ``hp`` and returned the 200-epoch entries). Its ``get_more_info`` defaults,
  hp='12' and is_random=True (one random seed), are therefore never relied on.
* Loading. The file is loaded here, not by the package, and only ever weights-only
  (``torch.load(path, map_location="cpu", weights_only=True)``), never unpickled in full:
  ``--api_path`` is a file the user supplies, and a full unpickle of a crafted one runs whatever
  code it names (e.g. ``os.system``). The nas-bench-201 package (D-X-Y/NAS-Bench-201) publishes
  no SHA-256 of NAS-Bench-201-v1_0-e61699.pth that could prove a file is the authors' before
  trusting it, so full unpickling is not offered at all. The real file holds the ``state_dict``
  of each ``ArchResults`` / ``ResultsCount`` (plain dicts, lists, tuples, floats and strings),
  which weights-only loading accepts. Numpy scalars (a benchmark saved with numpy floats) are
  allowed too, through ``torch.serialization.safe_globals`` around the load only: numpy's scalar
  and dtype reconstructors rebuild a value from bytes and run no code. A file that needs
  anything else is refused, saying which object it holds, without running any of it. The cost is
  speed, paid for safety: the weights-only unpickler is pure Python, and on a nested dict of
  floats shaped like the benchmark's it took ~9x as long as the C unpickler here, which
  extrapolates to many minutes for the 2 GB v1_0 file (not available here to time). The loaded
  dict is handed to ``NASBench201API`` in a wrapper that makes its ``copy.deepcopy`` a no-op, so
  the multi-GB table is not held twice in memory.
"""
from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

from shared.errors import UserError
from shared.nb201_arch import NB201Arch

log = logging.getLogger(__name__)

BENCHMARK_FILE = "NAS-Bench-201-v1_0-e61699.pth"
# D-X-Y/NAS-Bench-201 README, "The benchmark file of NAS-Bench-201 can be downloaded from".
BENCHMARK_URL = "https://drive.google.com/open?id=1SKW0Cu0u8-gb18zDpaAGi0f74UdXeGKs"
HP = "200"
# (API data set, its get_more_info keys we report, under our names)
QUERIES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("cifar10-valid", (("train", "train-accuracy"), ("valid", "valid-accuracy"))),
    ("cifar10", (("train", "train-accuracy"), ("test", "test-accuracy"))),
    ("cifar100", (("train", "train-accuracy"), ("valid", "valid-accuracy"),
                  ("test", "test-accuracy"))),
    ("ImageNet16-120", (("train", "train-accuracy"), ("valid", "valid-accuracy"),
                        ("test", "test-accuracy"))),
)
QUERY_KEYS: tuple[str, ...] = tuple(f"{d}/{k}" for d, pairs in QUERIES for k, _ in pairs)


class _SharedDict(dict):
    """A dict that ``copy.deepcopy`` returns as is: NASBench201API deep-copies its input dict."""

    def __deepcopy__(self, memo: dict) -> _SharedDict:
        return self


def _numpy_safe_globals() -> list:
    """What a pickled numpy scalar needs: the scalar and dtype reconstructors (they rebuild a
    value from its bytes and run no code) and the dtype classes they build. numpy < 2 pickles
    the scalar function as ``numpy.core.multiarray.scalar``, numpy >= 2 as
    ``numpy._core...``; the installed one is allowed under its own name and, where torch
    takes (object, name) pairs (2.6+), under the other name too."""
    import numpy as np
    import torch

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    allowed: list = [scalar, np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)),
                     type(np.dtype(np.int64))]
    own = f"{scalar.__module__}.{scalar.__qualname__}"
    if torch.torch_version.TorchVersion(torch.__version__) >= "2.6":  # (object, name) pairs
        allowed += [(scalar, name) for name in ("numpy.core.multiarray.scalar",
                                                "numpy._core.multiarray.scalar") if name != own]
    return allowed


def _refused_object(message: str) -> str | None:
    """The name of the object weights-only loading refused, from torch's message; None when
    the message names none (a damaged pickle rather than a foreign object)."""
    for pattern in (r"GLOBAL ([\w.]+)", r"but got <class '([\w.]+)'>",
                    r"unrecognized function ([\w.<>]+)"):
        found = re.search(pattern, message)
        if found:
            return found.group(1)
    return None


def _short_reason(exc: BaseException) -> str:
    """A short first-line reason for an unreadable file, without torch's load advice."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.split(". ", 1)[0].rstrip(".")
    if "weights" in line.lower() or "safe_globals" in line:
        line = ""
    reason = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return reason if len(reason) <= 120 else reason[:117] + "..."


def _load(path: Path) -> dict:
    """The file's contents, loaded weights-only (never a full unpickle: see the module doc)."""
    import torch

    try:
        safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        if safe_globals is None:
            data = torch.load(path, map_location="cpu", weights_only=True)
        else:
            with safe_globals(_numpy_safe_globals()):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - foreign object, truncated zip, bad pickle, EOF
        found = _refused_object(str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if found is not None:
            raise UserError(f"{path} is not a NAS-Bench-201 benchmark file: expected "
                            f"{BENCHMARK_FILE}, a PyTorch file of plain dicts, lists, numbers "
                            f"and strings, but it holds the Python object {found}, which is "
                            "never unpickled (nothing in the file was run); download the "
                            f"official file from {BENCHMARK_URL}") from None
        raise UserError(f"cannot read the NAS-Bench-201 file {path} (not a complete PyTorch "
                        f"file: {_short_reason(exc)}); it is corrupt or truncated, download "
                        f"{BENCHMARK_FILE} again from {BENCHMARK_URL}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a NAS-Bench-201 benchmark file (it holds a "
                        f"{type(data).__name__}, not the dict of meta_archs / arch2infos / "
                        "evaluated_indexes)")
    return data


class NB201Benchmark:
    """Accuracies of NB201 cells from the benchmark table, through ``nas_201_api``."""

    def __init__(self, api: Any, path: Path) -> None:
        self.api = api
        self.path = path

    @classmethod
    def open(cls, path: str | Path, required: bool = False) -> NB201Benchmark | None:
        """Load the benchmark. A missing file is a UserError when ``required`` (the user named
        it), else None and one logged warning: a search runs fine without the benchmark
        (darts-pt's ``--fast`` skips it). A directory, a corrupt file, a file holding anything
        but plain data (see the module doc) or a missing ``nas_201_api`` is a UserError.
        """
        path = Path(path).expanduser()
        if path.is_dir():
            raise UserError(f"--api_path {path} is a directory; pass the benchmark file "
                            f"{BENCHMARK_FILE} itself")
        if not path.is_file():
            if required:
                raise UserError(f"NAS-Bench-201 file {path} not found; download "
                                f"{BENCHMARK_FILE} from {BENCHMARK_URL} and pass its path")
            log.warning("NAS-Bench-201 file %s not found; benchmark queries are skipped. Download "
                        "%s from %s and put it there to get them.", path, BENCHMARK_FILE,
                        BENCHMARK_URL)
            return None
        try:
            from nas_201_api import NASBench201API
        except ImportError as exc:
            raise UserError("querying NAS-Bench-201 needs the nas_201_api package: "
                            "pip install nas-bench-201 (a dependency of this project: "
                            "pip install -e .)") from exc
        data = _load(path)
        try:
            api = NASBench201API(_SharedDict(data), verbose=False)
        except (AssertionError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{path} is not a NAS-Bench-201 benchmark file nas_201_api can read "
                            f"({type(exc).__name__}: {exc}); download {BENCHMARK_FILE} from "
                            f"{BENCHMARK_URL}") from exc
        api.filename = path.name
        return cls(api, path)

    def index(self, arch: NB201Arch) -> int:
        """The benchmark's arch-index of ``arch`` (its own numbering, not ``space_index``)."""
        index = self.api.query_index_by_arch(arch.tostr())
        if index < 0:
            raise UserError(f"{arch} is not in {self.path}; the file looks incomplete, download "
                            f"{BENCHMARK_FILE} again from {BENCHMARK_URL}")
        return int(index)

    def query(self, arch: NB201Arch, hp: str = HP) -> dict[str, float]:
        """Final-epoch top-1 accuracies (%), averaged over seeds, keyed as in ``QUERY_KEYS``.

        E.g. {"cifar10-valid/train", "cifar10-valid/valid", "cifar10/train", "cifar10/test",
        "cifar100/train", "cifar100/valid", "cifar100/test", "ImageNet16-120/train", ...}.
        """
        index = self.index(arch)
        result: dict[str, float] = {}
        for dataset, pairs in QUERIES:
            try:
                info = self.api.get_more_info(index, dataset, iepoch=None, hp=hp, is_random=False)
            except (KeyError, ValueError, AssertionError) as exc:
                raise UserError(f"{self.path} has no {hp}-epoch results for {arch} on {dataset} "
                                f"({type(exc).__name__}: {exc})") from exc
            for name, key in pairs:
                if info.get(key) is None:
                    raise UserError(f"{self.path} lacks {key} for {arch} on {dataset}")
                result[f"{dataset}/{name}"] = float(info[key])
        return result
