"""DARTS-PT's projection, data-parallel (``darts_pt.tuning``, ``shared.data.on_device
.PassBatches``): two gloo processes, each scoring its shard of every batch of a pass over the
validation half, give one process's accuracy and loss (to float32 rounding) and so the same
decisions, including on the pass's short last batches, whose shards differ by a row or are
empty (``shared.models.global_batch_norm`` weighs the ranks' statistics by their rows)."""
from __future__ import annotations

import logging

import pytest
import torch

from darts_pt.projection import ProjectionState, darts_nid2eids, evaluate, project_op
from shared.data import get_dataset
from shared.data.on_device import (
    DeviceImages,
    PassBatches,
    Shard,
    batch_augment,
    device_generator,
    to_device_images,
)
from shared.data.split import search_split
from shared.models.global_batch_norm import use_global_batch_norm
from shared.models.search_cnn import Network
from shared.runtime import Precision
from shared.search.data_parallel import ONE_PROCESS, DataParallel
from shared.spaces import get_space
from tests.conftest import run_ranks

CPU = torch.device("cpu")
# passes over the first images of the validation half: 143 end with a batch of 15 (shards
# of 7 and 8), 129 with a batch of 1 (shards of 0 and 1)
BATCH, PASSES = 64, {"uneven": 143, "empty": 129}


def score(dp: DataParallel) -> dict:
    """The supernet's scores of every op masked on one edge, over both passes, and the op a
    projection keeps there."""
    torch.manual_seed(0)
    # s3's none, skip and sep_conv_3x3: each mask scored, 'none' masked too
    model = Network(4, 10, 3, get_space("s3"), in_channels=1, steps=2, multiplier=2).double()
    use_global_batch_norm(model, dp)
    host = to_device_images(get_dataset("digits", "", True, None), "digits", CPU)
    data = DeviceImages(host.images.double(), host.labels, "digits")
    _, valid = search_split(data, 0.5)
    augment = batch_augment("digits", cutout=True, cutout_length=4)
    shard = Shard(dp.rank, dp.world_size)
    base = tuple(w.detach() for w in model.mixing_weights())
    out: dict = {}
    for name, size in PASSES.items():
        queue = PassBatches(data, valid[:size], BATCH, augment, device_generator(1, CPU), shard)
        out[name] = project_one_edge(model, queue, base, dp)
    return out


def project_one_edge(model: Network, queue: PassBatches, base: tuple, dp: DataParallel
                     ) -> dict:
    scores: list[tuple[float, float]] = []

    def measure(weights) -> tuple[float, float]:
        scores.append(evaluate(model, queue, weights, CPU, Precision(), data_parallel=dp))
        return scores[-1]

    state = ProjectionState(("normal", "reduce"), 5, darts_nid2eids(2))
    edge, op = project_op(state, "normal", "acc", base, measure,
                          torch.Generator().manual_seed(3), logging.getLogger("dp-proj"))
    return {"scores": scores, "decision": (edge, op),
            "running": {k: v.clone() for k, v in model.state_dict().items() if "running" in k}}


def work(dp: DataParallel, folder: str) -> dict:
    return score(dp)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    return run_ranks(work, tmp_path_factory.mktemp("dp-proj"))


def test_short_batches_split_as_unequal_shards() -> None:
    assert [Shard(r, 2).rows(3) for r in range(2)] == [(0, 1), (1, 3)]
    assert [Shard(r, 2).rows(1) for r in range(2)] == [(0, 0), (0, 1)]
    assert [Shard(r, 4).rows(64) for r in range(4)] == [(0, 16), (16, 32), (32, 48), (48, 64)]
    host = to_device_images(get_dataset("digits", "", True, None), "digits", CPU)
    _, valid = search_split(host, 0.5)
    sizes = [len(y) for _, y in PassBatches(host, valid, BATCH, batch_augment("digits"),
                                            device_generator(1, CPU))]
    assert sizes == [BATCH] * 11 + [15] and sum(sizes) == len(valid) == 719


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PASSES))
def test_two_ranks_score_as_one_process(two_ranks: list[dict], name: str) -> None:
    one = score(ONE_PROCESS)[name]
    rank0, rank1 = (r[name] for r in two_ranks)
    assert len(one["scores"]) == 3  # every candidate of s3 masked in turn
    for (acc, loss), (acc2, loss2) in zip(one["scores"], rank0["scores"]):
        assert acc == pytest.approx(acc2, abs=1e-9)  # counts: the same images right
        # evaluate takes the cross-entropy of float32 logits (autocast's halves widened), so
        # the shards' means round apart by float32's epsilon
        assert loss == pytest.approx(loss2, rel=1e-6)
    assert len({a for a, _ in one["scores"]}) > 1  # the masks matter: the test can fail
    assert one["decision"] == rank0["decision"] == rank1["decision"]
    assert rank0["scores"] == rank1["scores"]  # every rank sees the same numbers
    for key, value in one["running"].items():
        assert torch.allclose(value, rank0["running"][key], rtol=1e-10, atol=1e-12), key
