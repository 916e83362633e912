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
* Loading. The package calls ``torch.load(path)``; since PyTorch 2.6 that means
  ``weights_only=True``, which refuses any pickled object that is not a tensor or plain
  container, and whose pure-Python unpickler is slow: on a nested dict of floats shaped like
  the benchmark's it took ~9x as long as the C unpickler here, which extrapolates to many
  minutes for the 2 GB v1_0 file (not available here to time). So the file is loaded here.
  With ``allow_pickle`` (default) it is unpickled in full (``weights_only=False``), as the
  original API and darts-pt did: it is the authors' benchmark, and only a file you trust
  should be given. ``allow_pickle=False`` loads weights-only and refuses files that need
  more. The loaded dict is handed to ``NASBench201API`` in a wrapper that makes its
  ``copy.deepcopy`` a no-op, so the multi-GB table is not held twice in memory.
"""
from __future__ import annotations

import logging
import pickle
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


def _load(path: Path, allow_pickle: bool) -> dict:
    import torch

    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
        except pickle.UnpicklingError as exc:
            if allow_pickle or "weights only load failed" not in str(exc).lower():
                raise
            raise UserError(f"{path} holds Python objects beyond tensors and plain containers, "
                            "and allow_pickle is off; allow it only for a file you trust (the "
                            f"official {BENCHMARK_FILE})") from None
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, EOF: all "corrupt"
        raise UserError(f"cannot read the NAS-Bench-201 file {path} ({type(exc).__name__}: "
                        f"{exc}); it looks corrupt or truncated, download {BENCHMARK_FILE} "
                        f"again from {BENCHMARK_URL}") from exc
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
    def open(cls, path: str | Path, allow_pickle: bool = True) -> NB201Benchmark | None:
        """Load the benchmark; None (and one logged warning) when the file is absent.

        Absence is not an error because a search runs fine without the benchmark (darts-pt's
        ``--fast`` skips it); a corrupt file or a missing ``nas_201_api`` is a UserError.
        ``allow_pickle``: full unpickling (fast; trusted files only) or weights-only (see above).
        """
        path = Path(path).expanduser()
        if not path.is_file():
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
        data = _load(path, allow_pickle)
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
