"""``bench/step_floor.py``: the bytes and FLOPs it records per operation, the extension of a
step from two small batches to the real one, and the floors it sums. No speed is asserted."""
from __future__ import annotations

import os
import types

import pytest
import torch
import torch.nn.functional as F

from bench import step_floor
from bench.step_floor import Ceilings, Op, Traffic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _recorded(fn) -> list[Op]:
    with Traffic() as traffic:
        fn()
    return traffic.ops


def test_a_convolution_is_counted_with_its_groups_forward_and_backward() -> None:
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    dense = torch.randn(4, 8, 3, 3, requires_grad=True)
    depthwise = torch.randn(8, 1, 5, 5, requires_grad=True)
    y_dense = 2 * (2 * 4 * 6 * 6) * 8 * 9  # 2 x output elements x input channels x kernel
    y_dw = 2 * (2 * 8 * 6 * 6) * 1 * 25  # one input channel per group
    ops = _recorded(lambda: F.conv2d(x, dense, padding=1).sum().backward())
    conv = [o for o in ops if o.name.startswith("convolution")]
    assert [(o.name, o.flops, o.unit) for o in conv] == [
        ("convolution", y_dense, "tf32"), ("convolution_backward", 2 * y_dense, "tf32")]
    ops = _recorded(lambda: F.conv2d(x, depthwise, padding=2, groups=8).sum().backward())
    conv = [o for o in ops if o.name.startswith("convolution")]
    # torch.utils.flop_counter would count this backward's weight gradient 8 times over
    assert [(o.flops, o.unit) for o in conv] == [(y_dw, "fp32"), (2 * y_dw, "fp32")]
    # the input's gradient alone: one forward's worth
    x.grad = None
    w = torch.randn(4, 8, 3, 3)
    ops = _recorded(lambda: F.conv2d(x, w, padding=1).sum().backward())
    assert [o.flops for o in ops if o.name == "convolution_backward"] == [y_dense]
    # bytes: input, weight and output, each once
    ops = _recorded(lambda: F.conv2d(x.detach(), w, padding=1))
    assert ops[0].bytes == 4 * (x.numel() + w.numel() + 2 * 4 * 6 * 6)


def test_bytes_count_reads_and_writes_each_distinct_tensor_once() -> None:
    x, y = torch.randn(16, 32), torch.randn(16, 32)
    b = torch.randn(32)
    n = 16 * 32 * 4
    ops = _recorded(lambda: x.add_(y))
    assert [(o.name, o.bytes) for o in ops] == [("add_", 3 * n)]  # x and y read, x written
    assert _recorded(lambda: torch.mul(x, x))[0].bytes == 2 * n  # x read once
    assert _recorded(lambda: x + b.expand(16, 32))[0].bytes == 2 * n + 32 * 4  # b once
    assert _recorded(lambda: x.copy_(y))[0].bytes == 2 * n  # x written, not read
    assert _recorded(lambda: x.view(32, 16).t()) == []  # views run no kernel
    xs, ys = [torch.randn(10), torch.randn(20)], [torch.randn(10), torch.randn(20)]
    ops = _recorded(lambda: torch._foreach_add_(xs, ys))  # returns nothing: the schema says
    assert [(o.name, o.bytes) for o in ops] == [("_foreach_add_", 3 * 30 * 4)]
    bf = torch.randn(8, 8, dtype=torch.bfloat16)
    ops = _recorded(lambda: (x @ y.t(), bf @ bf))
    assert [(o.name, o.flops, o.unit) for o in ops] == [
        ("mm", 2 * 16 * 16 * 32, "fp32"), ("mm", 2 * 8 * 8 * 8, "bf16")]
    assert ops[1].bytes == 2 * 64 * 2  # bf read once (both factors), the product written


def test_the_floor_is_the_larger_of_memory_and_arithmetic_per_operation() -> None:
    ceilings = Ceilings(1e12, {"tf32": 100e12, "bf16": 200e12, "fp32": 10e12})
    memory = Op("add", "", 1e9, 0.0, "")  # 1 ms of memory
    arithmetic = Op("convolution", "", 1e9, 1e12, "tf32")  # 10 ms of tensor cores
    assert ceilings.floor_s(memory) == pytest.approx(1e-3)
    assert ceilings.floor_s(arithmetic) == pytest.approx(1e-2)
    f = step_floor.floor_of([memory, arithmetic], ceilings)
    assert (f.launches, f.memory_ms, f.arithmetic_ms, f.floor_ms) == pytest.approx(
        (2, 2.0, 10.0, 11.0))
    # an operation with FLOPs that is neither a convolution nor a matrix product (attention)
    # counts at the tensor cores' rate, the fastest, so that the floor stays one
    q = torch.zeros(2, 3)
    assert step_floor.unit("_scaled_dot_product_flash_attention", (q, q, q)) == "tf32"
    assert step_floor.unit("_scaled_dot_product_flash_attention", (q.bfloat16(),)) == "bf16"
    # the goals: 50 epochs of 390 steps in 20 minutes; 600 of 521 in 2 hours
    assert step_floor.budget_ms(1) == pytest.approx(20 * 60e3 / (50 * 390))
    assert step_floor.budget_ms("eval") == pytest.approx(2 * 3600e3 / (600 * 521))


def _args(**kw) -> types.SimpleNamespace:
    return types.SimpleNamespace(space="s5", layers=3, init_channels=4, eval_arch="DARTS_V2",
                                 eval_channels=4, **kw)


@pytest.mark.parametrize("path,order", [("grouped", 1), ("fast", "random")])
def test_a_step_extended_from_two_batches_is_the_step_run_at_that_batch(path, order) -> None:
    args = _args()
    extended = step_floor.search_ops(path, order, False, args, batch=6)
    traffic = Traffic()
    step_floor.step_under(traffic, path, order, "cuda", args, batch_size=6)
    assert extended == traffic.ops


def test_the_matmul_paths_count_the_per_channel_sums_as_batched_matrix_products() -> None:
    # ``--paths grouped+matmul``: SDARTS-ADV's attack's folded node sums (``node_sum.MATMUL``)
    # in as many launches and fewer bytes; the default is back after
    from shared.models import node_sum

    args = _args()
    products = step_floor.search_ops("grouped", "pgd_linf", False, args)
    matmuls = step_floor.search_ops("grouped+matmul", "pgd_linf", False, args)
    assert len(matmuls) == len(products)
    assert sum(o.bytes for o in matmuls) < 0.95 * sum(o.bytes for o in products)
    assert not any(o.name == "bmm" for o in products) and any(o.name == "bmm" for o in matmuls)
    assert node_sum.MATMUL == set()


def test_a_step_that_changes_with_the_batch_is_refused() -> None:
    a = [Op("add", "", 8.0, 0.0, "")]
    with pytest.raises(RuntimeError, match="other operations"):
        step_floor.extended(a, 2, a + a, 4, 64)
    assert step_floor.extended(a, 2, [Op("add", "", 12.0, 0.0, "")], 4, 64)[0].bytes == 132.0


@pytest.mark.slow
def test_the_table_has_a_row_per_step_path_and_precision(capsys) -> None:
    step_floor.main(["--layers", "3", "--init_channels", "4", "--eval_channels", "4",
                     "--orders", "1", "--paths", "fast,grouped", "--precisions", "fp32",
                     "--top", "3"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| search", "| eval"))]
    assert len(rows) == 2 + 2  # search: 2 paths; eval: plain and grouped ops
    assert out.count("of most floor time") == len(rows)
    for bad in (["--paths", "fast,wide"], ["--orders", "first"], ["--bandwidth", "0"]):
        with pytest.raises(SystemExit):
            step_floor.main(bad)
    assert "--orders takes 1, 2, pgd_linf, random" in capsys.readouterr().err


@pytest.mark.slow
def test_a_bench_answers_bad_input_with_one_line() -> None:
    """As ``python bench/SCRIPT ARGS`` exits (the first as a process; the others in this one,
    conftest.run_door_here: the interpreter's start would be their whole cost)."""
    import subprocess
    import sys

    from tests.conftest import run_door_here

    cases = (("step_floor.py", ["--space", "foo"], "unknown search space"),
             ("step_floor.py", ["--rows", "eval", "--eval_arch", "FOO"], "unknown architecture"),
             ("kernel_count.py", ["--space", "foo", "--orders", "1"], "unknown search space"))
    for n, (script, bad, want) in enumerate(cases):
        done = (subprocess.run([sys.executable, f"bench/{script}", *bad], capture_output=True,
                               text=True, timeout=300, cwd=ROOT) if n == 0 else
                run_door_here(ROOT, f"bench/{script}", bad))
        assert done.returncode == 2 and want in done.stderr, (script, done.stderr)
        assert "Traceback" not in done.stderr
