"""A search under torchrun is refused (data-parallel search is not implemented yet): before,
``torchrun --nproc_per_node 2 train_search.py`` ran two independent searches into two
folders."""
import os
import subprocess
import sys

import pytest

from shared.errors import UserError
from shared.search.cnn_search import CNNSearchConfig, build_cnn_search
from tests.conftest import ROOT, door_env, search_runs


def test_build_refuses_more_than_one_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="data-parallel search is not implemented yet"):
        build_cnn_search(CNNSearchConfig(dataset="digits", gpu=-1), str(tmp_path), None)


@pytest.mark.slow
def test_torchrun_search_door_stops_every_rank_and_leaves_no_folder(tmp_path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "train_search.py", "--dataset", "digits", "--gpu", "-1", "--layers", "5",
           "--init_channels", "4", "--batch_size", "256", "--epochs", "1", "--experiments",
           str(tmp_path)]
    out = subprocess.run(cmd, cwd=os.path.join(ROOT, "sdarts", "sota", "cnn"), env=door_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert out.stderr.count("data-parallel search is not implemented yet") == 2  # each rank
    assert search_runs(tmp_path) == []
