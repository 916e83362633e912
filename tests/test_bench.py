"""The epochs-per-hour benches (``bench/epoch_clock.py``, ``search_epoch.py``, ``eval_epoch.py``):
the clock's split of an epoch into its fixed cost and its steady cost per step, on a made-up
clock, and the benches' whole paths on tiny settings, so what a GPU session runs
(``bench/gpu_check.sh``) is known to run. No speed is asserted: the tables are the benches'."""
from __future__ import annotations

import os

import pytest
import torch
import torchvision.datasets as tvd

from bench import epoch_clock
from bench.data_pipeline import UncheckedCIFAR10, write_cifar


class FakeLoop:
    """An epoch whose steps cost 5 s each for the first two and 1 s after (a recording, then
    replays), on a clock that only the steps advance."""

    def __init__(self, clock: list[float], batches: int) -> None:
        self.queue = list(range(batches))
        self.clock = clock
        self.name = "fake"

    def epoch(self) -> None:
        for step, _ in enumerate(self.queue):
            self.clock[0] += 5.0 if step < 2 else 1.0


def test_the_clock_splits_an_epoch_into_fixed_and_steady_cost(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(epoch_clock.time, "perf_counter", lambda: clock[0])
    loop = FakeLoop(clock, 10)
    timed = epoch_clock.time_epoch(loop, "queue", loop.epoch, torch.device("cpu"), steps=6)
    # 6 steps of the 10 (the queue is cut): 5 + 5 + 4 x 1 s
    assert (timed.steps, timed.total_s, timed.steady_ms) == (6, 14.0, 1000.0)
    assert timed.fixed_s == 8.0  # the first two steps' 4 s more each
    assert timed.epoch_s(391) == 8.0 + 391
    assert loop.queue == list(range(10))  # the loop's own queue is back
    with pytest.raises(ValueError, match="time more than 2 steps"):
        epoch_clock.time_epoch(loop, "queue", loop.epoch, torch.device("cpu"), steps=2)


def test_the_marked_queue_is_the_queue_cut() -> None:
    loop = FakeLoop([0.0], 10)
    assert epoch_clock.MarkedQueue(loop, 4, 2, torch.device("cpu")).name == "fake"
    marked = epoch_clock.MarkedQueue(list(range(10)), 4, 2, torch.device("cpu"))
    assert len(marked) == 4 and list(marked) == [0, 1, 2, 3] and marked.marked is not None
    assert len(epoch_clock.MarkedQueue([1, 2], 4, 2, torch.device("cpu"))) == 2


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory) -> str:
    """CIFAR-10's files with 600 random training images, read without the md5 checks."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(str(root), 600)
    return str(root)


@pytest.mark.slow
def test_the_epoch_benches_run_every_path(small_cifar: str, monkeypatch, capsys) -> None:
    from bench import eval_epoch, search_epoch

    for name in ("train_list", "test_list", "meta"):  # as made_up_cifar10, undone after
        monkeypatch.setattr(tvd.CIFAR10, name, getattr(UncheckedCIFAR10, name))
    tiny = ["--data", small_cifar, "--layers", "3", "--init_channels", "4", "--batch_size",
            "16", "--steps", "3"]
    eval_epoch.main([*tiny, "--workers", "0", "--epochs", "4",
                     "--paths", ",".join(eval_epoch.PATHS)])
    # grouped runs on the device's data too: the two data paths, the wide kernels
    search_epoch.main([*tiny, "--paths", "dataloader,grouped"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in eval_epoch.PATHS}
    assert set(rows) == set(eval_epoch.PATHS)
    assert "38 steps/epoch" in out  # eval: 600 images / 16, with the last partial batch
    assert "19 steps/epoch" in out  # search: the training half, 300 / 16, as eval
    for cells in rows.values():
        assert float(cells[1]) > 0 and float(cells[4]) > 0  # ms/step, s/epoch
    assert "eager:" not in out  # the recorded paths recorded (emulated on the CPU)
    assert "\ngrouped " in out  # the search's wide kernels (--grouped_edges)


def test_the_launch_count_sees_what_each_path_saves() -> None:
    """``bench/kernel_count.py``: views are not counted, the grouped path launches fewer than
    the fast path, which launches fewer than the plain one, and the CUDA layout it emulates is
    undone after (the fast path's CPU format, the clipping)."""
    from argparse import Namespace

    from bench import kernel_count
    from shared.models import fast_mixed, node_sum

    clip = torch.nn.utils.clip_grad_norm_
    args = Namespace(space="s5", layers=3, init_channels=4)
    counts = {path: kernel_count.count_step(path, 1, "cuda", args)
              for path in ("plain", "fast", "grouped")}
    total = {path: sum(c.values()) for path, c in counts.items()}
    assert total["grouped"] < total["fast"] < total["plain"]
    assert not {"view", "permute", "expand", "t", "empty"} & set(counts["fast"])
    assert counts["fast"]["_foreach_add_"] > 0  # the optimisers ran as on CUDA
    assert fast_mixed.DEVICE_FORMAT == {"cpu": torch.channels_last}
    assert fast_mixed.UNDILATE == {"cpu"}
    assert fast_mixed.EMBED == {"cuda"}
    assert torch.nn.utils.clip_grad_norm_ is clip
    assert node_sum.BATCHED == {"cuda"}
    assert counts["fast"]["stack"] > 0  # the node sums ran batched, as on CUDA
    # and so did the gradients of a state's many readers (fan_out): few additions are left
    # (without: 559 and 317 against 1,088 and 224 convolutions; with: 119 on the grouped path)
    assert counts["fast"]["add"] < counts["fast"]["convolution"] / 5
    assert counts["grouped"]["add"] < counts["grouped"]["convolution"] * 2 / 3
    # dilated convs ran as they are, as on CUDA: no dense kernels padded from dilated ones
    assert counts["fast"]["constant_pad_nd"] == 0
    assert kernel_count.count_step("fast", 1, "cpu", args)["constant_pad_nd"] > 0
    # the grouped kernels' gradients come as blocks of one buffer (the backward of their
    # concatenation), which the accumulation into .grad takes without a copy each
    assert counts["grouped"]["copy_"] == 0
    # SDARTS-ADV's step: the first-order step and a 7-step attack (9 forwards, 7 backwards)
    adv = sum(kernel_count.count_step("fast", "pgd_linf", "cuda", args).values())
    rs = sum(kernel_count.count_step("fast", "random", "cuda", args).values())
    assert total["fast"] < rs < total["fast"] + 100 and 4 * total["fast"] < adv


def test_the_launch_count_says_where_launches_come_from() -> None:
    """``--top``: the same launches, each under the line of the project (forward) or the
    autograd node (backward) that ran it."""
    from argparse import Namespace

    from bench import kernel_count

    args = Namespace(space="s3", layers=2, init_channels=4)
    counts = kernel_count.count_step("fast", 1, "cuda", args, where=True)
    assert sum(counts.values()) == sum(kernel_count.count_step("fast", 1, "cuda", args).values())
    origins = {where for _, where in counts}
    assert "backward of ConvolutionBackward0" in origins
    assert any(w.startswith(os.path.join("shared", "models", "fast_mixed.py:")) for w in origins)
    assert not any("site-packages" in w or w.startswith("bench") for w in origins)


def test_the_launch_count_of_evaluation_training() -> None:
    """``--eval``: the trainer's own step, with drop-path drawn once for every op and the BN
    counters advanced together (not a draw per op, an addition per BN)."""
    from argparse import Namespace

    from bench import kernel_count

    args = Namespace(eval_arch="DARTS_V2", init_channels=4)
    counts = kernel_count.count_eval_step("cuda", args)
    assert counts["bernoulli_"] == 1 and counts["add_"] == 0 and counts["_foreach_add_"] > 0
    assert counts["convolution_backward"] > 0 and counts["_foreach_mul_"] > 0  # SGD, clipping
    # bf16 autocast: the same step; recorded, the weights cast at once, not each by autocast
    bf16 = kernel_count.count_eval_step("cuda", args, bf16=True)
    once = kernel_count.count_eval_step("cuda", args, bf16=True, cast_once=True)
    assert bf16["convolution"] == once["convolution"] == counts["convolution"]
    assert 0 < once["_to_copy"] < 10 < bf16["_to_copy"]


def _capture_rows(capsys, space: str, size: int, paths: str, kind: str = "first_order",
                  layers: int = 3) -> dict[str, list[str]]:
    """``bench/capture_check.py`` on the CPU, a small supernet: its rows by path."""
    from bench import capture_check

    capture_check.main(["--device", "cpu", "--kinds", kind, "--layers", str(layers),
                        "--init_channels", "4", "--batch_size", "8", "--size", str(size),
                        "--steps", "4", "--space", space, "--paths", paths])
    return {line.split()[1]: line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith(kind)}


@pytest.mark.slow  # bench/capture_check.py's main, end to end
def test_the_capture_check_records_lambda_darts_step(capsys) -> None:
    """``--kinds lambda``: Λ-DARTS' regulariser (over the 3 normal cells of 5) in the recorded
    step, emulated on the CPU: the eager run's alpha and weights exactly, recorded (no note of
    an eager fallback)."""
    from bench import capture_check

    rows = _capture_rows(capsys, "s3", 8, "graph", kind="lambda", layers=5)
    assert rows["graph"][6:8] == ["0.00e+00", "0.00e+00"] and len(rows["graph"]) == 8
    with pytest.raises(SystemExit, match="--kinds: unknown lambada"):
        capture_check.main(["--device", "cpu", "--kinds", "lambada"])


@pytest.mark.slow  # bench/capture_check.py's main, end to end
def test_the_capture_check_records_darts_pt_tuning_step(capsys) -> None:
    """``--kinds darts_pt``: DARTS-PT's supernet mid-projection (candidates of weight 0 not run)
    recorded, emulated on the CPU: the eager run's alpha and weights exactly, no eager note."""
    rows = _capture_rows(capsys, "s3", 8, "graph", kind="darts_pt")
    assert rows["graph"][6:8] == ["0.00e+00", "0.00e+00"] and len(rows["graph"]) == 8


@pytest.mark.slow  # bench/capture_check.py's main, end to end
def test_the_capture_check_compares_the_ways_of_summing_a_node(capsys) -> None:
    """``bench/capture_check.py --paths term-sums,batched-sums``: on the CPU eager sums term by
    term, the same numbers as ``term-sums`` bit for bit; batched, equal to rounding; and
    the device's own way is back after."""
    from shared.models import node_sum

    rows = _capture_rows(capsys, "s3", 8, "term-sums,batched-sums")
    assert float(rows["term-sums"][6]) == float(rows["term-sums"][7]) == 0.0
    # rounding only, but alpha's Adam normalises its gradient: where that is near 0, rounding
    # can move alpha by up to twice the learning rate (3e-4) in each of the 8 steps, and the
    # weights' steps follow alpha (here 3e-9 and 1e-7)
    assert float(rows["batched-sums"][6]) < 8 * 2 * 3e-4 and float(rows["batched-sums"][7]) < 0.05
    assert node_sum.BATCHED == {"cuda"}


@pytest.mark.slow  # 24 SDARTS-ADV steps (~14 s); the sums themselves: tests/test_node_sum.py
def test_the_capture_check_compares_the_ways_of_a_per_channel_sum(capsys, monkeypatch) -> None:
    """``--paths matmul-sums,product-sums`` on an SDARTS-ADV step with CUDA's sums (batched,
    NCHW) on the CPU: its attack's folded nodes (s3: the separable convs' last BNs; the
    poolings' folds: tests/test_fast_path.py) as products and reductions, the default, the
    eager step bit for bit; as batched matrix products, equal to rounding (the alpha step's
    scale gradients too); and the default is back after."""
    from shared.models import fast_mixed, node_sum

    monkeypatch.setattr(node_sum, "BATCHED", {"cpu"})
    monkeypatch.delitem(fast_mixed.DEVICE_FORMAT, "cpu")
    rows = _capture_rows(capsys, "s3", 8, "matmul-sums,product-sums", kind="pgd_linf")
    assert float(rows["product-sums"][6]) == float(rows["product-sums"][7]) == 0.0
    # as above: rounding, through alpha's normalised Adam steps
    assert 0 < float(rows["matmul-sums"][6]) < 8 * 2 * 3e-4
    assert float(rows["matmul-sums"][7]) < 0.05
    assert node_sum.MATMUL == set()


@pytest.mark.slow  # bench/capture_check.py's main, end to end
def test_the_capture_check_compares_the_ways_of_running_a_dilated_conv(capsys) -> None:
    """``--paths undilated,dilated``: on the CPU eager rewrites dilated convs undilated, the
    same numbers as ``undilated`` bit for bit; run as they are (CUDA's way), equal to
    rounding; and the device's own way is back after."""
    from shared.models import fast_mixed

    rows = _capture_rows(capsys, "s5", 16, "undilated,dilated")
    assert float(rows["undilated"][6]) == float(rows["undilated"][7]) == 0.0
    # as above: rounding, through alpha's normalised Adam steps
    assert float(rows["dilated"][6]) < 8 * 2 * 3e-4 and float(rows["dilated"][7]) < 0.05
    assert fast_mixed.UNDILATE == {"cpu"}


@pytest.mark.slow  # bench/capture_check.py's main, end to end
def test_the_capture_check_compares_cudas_groups_with_a_group_per_size(capsys,
                                                                        monkeypatch) -> None:
    """``--paths grouped,graph+grouped,grouped-by-size`` with CUDA's grouping on the CPU (both
    kernel sizes of a kind in one group, ``fast_mixed.EMBED``; dilation as it is): the
    recorded grouped step (the CPU's emulation) is the eager grouped step bit for bit, a
    group per size equal to rounding, and the grouping is CUDA's again after."""
    from shared.models import fast_mixed

    monkeypatch.setattr(fast_mixed, "EMBED", {"cpu"})
    monkeypatch.setattr(fast_mixed, "UNDILATE", set())
    rows = _capture_rows(capsys, "s5", 8, "grouped,graph+grouped,grouped-by-size")
    assert rows["graph+grouped"][6:8] == rows["grouped"][6:8]
    for path in ("grouped", "grouped-by-size"):  # as above: rounding, through Adam
        assert float(rows[path][6]) < 8 * 2 * 3e-4 and float(rows[path][7]) < 0.05
    assert fast_mixed.EMBED == {"cpu"}


def test_the_supernet_benches_refuse_too_few_cells_as_the_doors_do() -> None:
    """Below 3 cells every cell reduces (at L//3 and 2L//3) and a second-order step cannot
    take alpha_normal's gradient: each bench of the DARTS-space supernet says so in one line
    (``shared.errors.UserError``, printed by ``cli_entry``), as ``train_search.py`` does."""
    from bench import (
        capture_check,
        kernel_count,
        lambda_step,
        search_epoch,
        step_floor,
        supernet_step,
    )
    from shared.errors import UserError

    for bench in (capture_check, kernel_count, lambda_step, search_epoch, step_floor,
                  supernet_step):
        with pytest.raises(UserError, match=r"--layers must be >= 3 \(down-sampling"):
            bench.main(["--layers", "2"])
