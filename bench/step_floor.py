"""The least time one step can take on a GPU, from the bytes it moves and the arithmetic it
does: a roofline floor per path, measured on any machine.

    python bench/step_floor.py [--rows search,eval] [--paths fast,grouped,grouped+matmul]
                               [--orders 1,2,pgd_linf] [--precisions fp32,bf16]
                               [--bandwidth 4.8] [--tf32 494.7] [--bf16 989.4] [--fp32 66.9]
                               [--top N]

Every ATen operation that computes (as ``bench/kernel_count.py`` counts them, in the CUDA
layout) reads its inputs from memory and writes its outputs at least once, and a convolution
or matrix product does its multiply-adds (``torch.utils.flop_counter``'s formulas) on
tensor cores (TF32 for float32 convolutions, PyTorch's default on Ampere and later; bf16
under autocast) or, for depthwise convolutions and float32 matrix products, on the plain
float32 units. So no GPU runs the operation faster than the larger of its bytes over the
memory bandwidth and its FLOPs over that unit's peak (the roofline; Williams et al., CACM
2009), and no GPU runs the step faster than the sum of these floors: ``floor ms``. The
defaults are an H200 SXM's datasheet peaks (HBM3e 4.8 TB/s; dense TF32 494.7, bf16 989.4,
float32 66.9 TFLOP/s); pass measured ones to tighten them. Caches only lower the bytes of an
operation whose inputs were just written (a fused kernel's gain), so the floor is not a
bound on fused kernels; it is the floor of the eager and the recorded step, which launch
these operations one by one.

Each row's budget is the time per step that meets the project's speed goals: 50 epochs of
the DARTS search (CIFAR-10's training half, 25,000 images at batch 64: 390 steps an epoch,
the last partial batch dropped) in 20 minutes for first order, in an hour for second order
and SDARTS-ADV; 600 epochs of DARTS_V2's evaluation training (50,000 images at batch 96: 521
steps) in 2 hours. ``left per launch`` is what the budget leaves each launched operation
beyond its floor, (budget - floor) / launches: a GPU that spends more than that on a
kernel's start and tail misses the goal however fast its memory is (what it spends follows
from a measured step: ``bench/capture_check.py``'s ms/step less the floor, over the
launches).

The step runs on the CPU at two small batches and every operation's bytes and FLOPs are
extended to the row's batch: each is affine in the batch (weights and alpha are fixed in
size, activations grow with it), and the two runs must dispatch the same operations in the
same order, or the bench refuses. Search rows: the DARTS space (s5, C=16, 8 cells, 32x32, as
``train_search.py``), one alpha step + weight step (``bench/kernel_count.py``'s); eval rows:
``EvalTrainer.train_step`` of DARTS_V2 at ``train.py --auxiliary``'s C=36, 20 cells.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

from bench.kernel_count import (  # noqa: E402
    NO_KERNEL,
    eval_step_under,
    origin,
    parse_orders,
    step_under,
)
from shared.cli.checks import check_supernet_layers  # noqa: E402
from shared.genotypes import load_genotype  # noqa: E402
from shared.models import node_sum  # noqa: E402
from shared.spaces import get_space  # noqa: E402

# operations that write their first argument without reading it
WRITE_ONLY = {"copy_", "fill_", "zero_", "normal_", "uniform_", "bernoulli_", "random_",
              "_foreach_copy_", "_foreach_zero_"}
CONVS = {"convolution", "convolution_backward"}
MATMULS = {"mm", "addmm", "bmm", "baddbmm"}
# one step's time budget, seconds: (hours for the epochs, epochs, steps an epoch)
BUDGETS = {1: (20 / 60, 50, 390), 2: (1.0, 50, 390), "random": (20 / 60, 50, 390),
           "pgd_linf": (1.0, 50, 390), "eval": (2.0, 600, 521)}
SEARCH_BATCH, EVAL_BATCH = 64, 96
SEARCH_PATHS = ("plain", "fast", "grouped", "fast+matmul", "grouped+matmul")
TERA = 1e12


@dataclasses.dataclass(frozen=True)
class Op:
    """One launched operation: its name, where it comes from (``kernel_count.origin``, with
    ``--top``), the bytes it reads and writes, its FLOPs and the unit that does them."""

    name: str
    where: str
    bytes: float
    flops: float
    unit: str  # "tf32", "bf16" (tensor cores), "fp32" (the plain units), "" (no FLOPs counted)


@dataclasses.dataclass(frozen=True)
class Ceilings:
    """A GPU's peaks: memory bandwidth in bytes/s, and FLOP/s per unit."""

    bandwidth: float
    rates: dict[str, float]

    def floor_s(self, op: Op) -> float:
        """The roofline floor of ``op``: the larger of its memory time and its arithmetic
        time."""
        arithmetic = op.flops / self.rates[op.unit] if op.flops else 0.0
        return max(op.bytes / self.bandwidth, arithmetic)


def distinct_bytes(t: torch.Tensor) -> int:
    """The bytes of memory ``t`` covers: its elements, a broadcast (stride-0) axis once."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


def _total_bytes(tensors) -> int:
    """The bytes of ``tensors``, each distinct view once (``mul(x, x)`` reads ``x`` once)."""
    seen, total = set(), 0
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(),
               t.dtype)
        if key not in seen:
            seen.add(key)
            total += distinct_bytes(t)
    return total


def flop_count(func, args: tuple, kwargs: dict, out) -> int:
    """The FLOPs of a convolution (:func:`conv_flops`) or a matrix product
    (``torch.utils.flop_counter``'s formulas); 0 for the rest, which memory bounds."""
    name = func.overloadpacket.__name__
    if name in CONVS:
        return conv_flops(name, args, out)
    formula = flop_registry.get(func.overloadpacket)
    return formula(*args, **kwargs, out_val=out) if formula else 0


def conv_flops(name: str, args: tuple, out) -> int:
    """A convolution's multiply-adds, twice: ``2 * (output elements) * (input channels per
    group) * (kernel elements)`` for the forward, and as much for each of the input's and the
    weight's gradients its backward computes (``output_mask``). A transposed convolution's
    count runs over its input's elements instead. (``torch.utils.flop_counter``'s backward
    formula leaves the groups out: it counts a depthwise conv's weight gradient as a dense
    one's.)"""
    if name == "convolution":
        x, weight, transposed = args[0], args[1], args[6]
        spread = x if transposed else out
        return 2 * spread.numel() * weight[0].numel()
    grad_out, x, weight, transposed, mask = args[0], args[1], args[2], args[7], args[10]
    spread = x if transposed else grad_out
    return 2 * spread.numel() * weight[0].numel() * (int(mask[0]) + int(mask[1]))


def mutated(func, args: tuple, kwargs: dict) -> list:
    """The arguments ``func`` writes in place, by its schema (``add_``'s self, ``out=``, an
    optimiser's state lists, BN's running statistics): in-place operations return nothing or
    only some of them."""
    values = []
    for i, a in enumerate(func._schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            values.append(kwargs[a.name] if a.name in kwargs
                          else args[i] if i < len(args) else None)
    return values


def unit(name: str, args: tuple) -> str:
    """The unit that does ``name``'s FLOPs: tensor cores for convolutions (TF32 in float32)
    and bf16 matrix products, the plain float32 units for depthwise convolutions (one input
    channel per group) and float32 matrix products (PyTorch leaves TF32 off for them). Called
    for operations with FLOPs only."""
    if name in CONVS:
        weight = args[2] if name == "convolution_backward" else args[1]
        if weight.shape[1] == 1:
            return "fp32"
        return "tf32" if weight.dtype == torch.float32 else "bf16"
    if name in MATMULS:
        return "fp32" if args[-1].dtype == torch.float32 else "bf16"
    # any other operation torch.utils.flop_counter counts (attention): the tensor cores, the
    # fastest unit, so that the floor stays a floor
    first = next(t for t in tree_leaves(args) if isinstance(t, torch.Tensor))
    return "tf32" if first.dtype == torch.float32 else "bf16"


class Traffic(TorchDispatchMode):
    """Records every dispatched ATen operation that computes (not views, not bare
    allocations) as an :class:`Op`; ``where``: with :func:`kernel_count.origin`."""

    def __init__(self, where: bool = False) -> None:
        super().__init__()
        self.where = where
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if func.is_view or name in NO_KERNEL:
            return out
        inputs = list(args[1:] if name in WRITE_ONLY else args)
        inputs += [v for k, v in kwargs.items() if k != "out"]
        read = _total_bytes(tree_leaves(inputs))
        written = _total_bytes(tree_leaves([out, *mutated(func, args, kwargs)]))
        flops = flop_count(func, args, kwargs, out)
        self.ops.append(Op(name, origin() if self.where else "", float(read + written),
                           float(flops), unit(name, args) if flops else ""))
        return out


def extended(small: list[Op], n_small: int, large: list[Op], n_large: int,
             batch: int) -> list[Op]:
    """Each operation's bytes and FLOPs at ``batch``, from the same step at two batches: both
    are affine in the batch. The two runs must be the same operations in the same order."""
    if [(o.name, o.where, o.unit) for o in small] != [(o.name, o.where, o.unit) for o in large]:
        raise RuntimeError("the step ran other operations at another batch size; its floor "
                           "cannot be extended from small batches")
    t = (batch - n_small) / (n_large - n_small)
    return [dataclasses.replace(a, bytes=a.bytes + t * (b.bytes - a.bytes),
                                flops=a.flops + t * (b.flops - a.flops))
            for a, b in zip(small, large)]


def _at_batch(run: Callable[[Traffic, int], None], where: bool, batch: int) -> list[Op]:
    """The operations ``run(mode, batch_size)`` dispatches, extended from batches 2 and 4 to
    ``batch``."""
    runs = []
    for n in (2, 4):
        traffic = Traffic(where)
        run(traffic, n)
        runs.append(traffic.ops)
    return extended(runs[0], 2, runs[1], 4, batch)


def search_ops(path: str, order: int | str, bf16: bool, args, where: bool = False,
               batch: int = SEARCH_BATCH) -> list[Op]:
    """The operations of one search step of ``path`` at ``batch``, from batches 2 and 4
    (``+matmul``: the per-channel node sums as batched matrix products, ``node_sum.MATMUL``)."""
    base, _, matmul = path.partition("+")
    with node_sum.matmul("cpu", matmul == "matmul"):
        return _at_batch(lambda mode, n: step_under(mode, base, order, "cuda", args, amp=bf16,
                                                    batch_size=n), where, batch)


def eval_ops(bf16: bool, grouped: bool, args, where: bool = False,
             batch: int = EVAL_BATCH) -> list[Op]:
    """The operations of one step of evaluation training at ``batch``, from batches 2 and 4;
    bf16 with channels-last and the weights cast at once, as the recorded step runs it."""
    eval_args = types.SimpleNamespace(init_channels=args.eval_channels,
                                      eval_arch=args.eval_arch)
    return _at_batch(lambda mode, n: eval_step_under(mode, "cuda", eval_args, bf16=bf16,
                                                     cast_once=bf16, grouped=grouped,
                                                     batch_size=n), where, batch)


@dataclasses.dataclass(frozen=True)
class Floor:
    """A step's totals: launches, GB, GFLOP, and its floors in ms."""

    launches: int
    gigabytes: float
    gigaflops: float
    memory_ms: float
    arithmetic_ms: float
    floor_ms: float


def floor_of(ops: list[Op], ceilings: Ceilings) -> Floor:
    arithmetic = sum(o.flops / ceilings.rates[o.unit] for o in ops if o.flops)
    return Floor(len(ops), sum(o.bytes for o in ops) / 1e9, sum(o.flops for o in ops) / 1e9,
                 1e3 * sum(o.bytes for o in ops) / ceilings.bandwidth, 1e3 * arithmetic,
                 1e3 * sum(ceilings.floor_s(o) for o in ops))


def budget_ms(kind: int | str) -> float:
    """The goal's time per step, ms (:data:`BUDGETS`)."""
    hours, epochs, steps = BUDGETS[kind]
    return hours * 3600e3 / (epochs * steps)


def row(step: str, path: str, precision: str, kind: int | str, ops: list[Op],
        ceilings: Ceilings) -> str:
    f = floor_of(ops, ceilings)
    budget = budget_ms(kind)
    left_us = 1e3 * (budget - f.floor_ms) / f.launches
    return (f"| {step} | {path} | {precision} | {f.launches} | {f.gigabytes:.2f} | "
            f"{f.gigaflops:.0f} | {f.memory_ms:.1f} | {f.arithmetic_ms:.1f} | "
            f"{f.floor_ms:.1f} | {budget:.1f} | {left_us:.1f} |")


def top(ops: list[Op], ceilings: Ceilings, n: int) -> list[tuple[str, str, int, float, float]]:
    """The ``n`` (operation, origin) pairs of most floor time: (name, where, launches, GB,
    floor ms)."""
    sums: dict[tuple[str, str], list[float]] = {}
    for o in ops:
        s = sums.setdefault((o.name, o.where), [0, 0.0, 0.0])
        s[0] += 1
        s[1] += o.bytes / 1e9
        s[2] += 1e3 * ceilings.floor_s(o)
    ranked = sorted(sums.items(), key=lambda kv: -kv[1][2])[:n]
    return [(name, where, int(s[0]), s[1], s[2]) for (name, where), s in ranked]


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="search,eval", help="search, eval or both")
    p.add_argument("--paths", default="fast,grouped",
                   help="search paths: plain, fast, grouped, fast+matmul, grouped+matmul "
                        "(the per-channel node sums as batched matrix products)")
    p.add_argument("--orders", default="1,2,pgd_linf",
                   help="search steps: 1, 2 (first, second order), random, pgd_linf (SDARTS)")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="fp32, bf16 (search: --amp; eval: --amp --channels_last)")
    p.add_argument("--space", default="s5")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--eval_arch", default="DARTS_V2")
    p.add_argument("--eval_channels", type=int, default=36)
    p.add_argument("--bandwidth", type=float, default=4.8, help="memory bandwidth, TB/s")
    p.add_argument("--tf32", type=float, default=494.7, help="dense TF32 tensor TFLOP/s")
    p.add_argument("--bf16", type=float, default=989.4, help="dense bf16 tensor TFLOP/s")
    p.add_argument("--fp32", type=float, default=66.9, help="plain float32 TFLOP/s")
    p.add_argument("--top", type=int, default=0, metavar="N",
                   help="then, per row, the N (operation, origin) pairs of most floor time")
    args = p.parse_args(argv)
    rows, paths, precisions = _csv(args.rows), _csv(args.paths), _csv(args.precisions)
    for name, known in (("rows", {"search", "eval"}), ("paths", set(SEARCH_PATHS)),
                        ("precisions", {"fp32", "bf16"})):
        if not set(_csv(getattr(args, name))) <= known:
            p.error(f"--{name} takes {', '.join(sorted(known))}")
    orders = parse_orders(p, args.orders)
    for name in ("bandwidth", "tf32", "bf16", "fp32"):
        if not getattr(args, name) > 0:
            p.error(f"--{name} must be positive")
    if "search" in rows:
        get_space(args.space)  # an unknown space or genotype: one line before the table
        check_supernet_layers(args.layers)
    if "eval" in rows:
        load_genotype(args.eval_arch)
    ceilings = Ceilings(args.bandwidth * TERA, {"tf32": args.tf32 * TERA,
                                                "bf16": args.bf16 * TERA,
                                                "fp32": args.fp32 * TERA})
    print(f"floor of one step on a GPU of {args.bandwidth} TB/s, {args.tf32} TF32 / "
          f"{args.bf16} bf16 / {args.fp32} float32 TFLOP/s (roofline per operation, CUDA "
          "layout)\n| step | path | precision | launches | GB moved | GFLOP | memory floor ms "
          "| arithmetic floor ms | floor ms | budget ms | left per launch us |\n"
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    tops = []
    if "search" in rows:
        for order in orders:
            for precision in precisions:
                for path in paths:
                    ops = search_ops(path, order, precision == "bf16", args, bool(args.top))
                    step = f"search {order}, batch {SEARCH_BATCH}, C={args.init_channels}"
                    print(row(step, path, precision, order, ops, ceilings), flush=True)
                    tops.append((f"{step}, {path}, {precision}", ops))
    if "eval" in rows:
        for precision in precisions:
            for grouped in (False, True):
                ops = eval_ops(precision == "bf16", grouped, args, bool(args.top))
                step = f"eval {args.eval_arch}, batch {EVAL_BATCH}, C={args.eval_channels}"
                path = "grouped ops" if grouped else "eval"
                print(row(step, path, precision, "eval", ops, ceilings), flush=True)
                tops.append((f"{step}, {path}, {precision}", ops))
    for title, ops in tops if args.top else ():
        print(f"\n{title}: the {args.top} of most floor time\n"
              "| operation | from | launches | GB | floor ms |\n|---|---|---:|---:|---:|")
        for name, where, n, gb, ms in top(ops, ceilings, args.top):
            print(f"| {name} | {where} | {n} | {gb:.3f} | {ms:.2f} |", flush=True)


if __name__ == "__main__":  # bad input: one line, no traceback
    from shared.errors import cli_entry

    cli_entry(main)()
