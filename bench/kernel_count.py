"""Count the operations that launch work in one search step of the DARTS supernet, per path:
the plain per-candidate path, the fast path, and the fast path with grouped edges, in the
memory layout each device runs (channels-last on the CPU, NCHW on CUDA).

    python bench/kernel_count.py [--space s5] [--layers 8] [--orders 1,2]

On a GPU the step is bound by launching ~20,000 small kernels (README, Speed), so the number
of launches is what "fewer, larger kernels" must cut, and it can be counted on any machine: a
``TorchDispatchMode`` sees every ATen operation the step dispatches (forward, backward, the
architect's alpha step, clipping, both optimisers), and the count keeps those that compute
(not views, which only relabel memory, nor bare allocations). It is a lower bound of CUDA
launches, not their number: cuDNN runs a convolution's backward as two kernels (data and
weight gradients), and a foreach op one kernel per chunk of its tensor list. The count does
not depend on the batch or the channels, so the step runs at batch 2 and C=4 on 32x32 input.
One step = ``bench/supernet_step.py``'s: the alpha step (first or second order) and the
weight step.
"""
from __future__ import annotations

import argparse
import collections
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from bench.supernet_step import Runner  # noqa: E402
from shared.models import fast_mixed, node_sum  # noqa: E402
from shared.models.search_cnn import Network  # noqa: E402
from shared.runtime import Precision  # noqa: E402
from shared.spaces import get_space  # noqa: E402

# ATen operations that allocate or relabel memory without running a kernel; views (``view``,
# ``permute``, ``expand``, ``select``, ...) are recognised by their schema (``is_view``)
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
             "_unsafe_view", "lift_fresh", "set_", "resize_", "_reshape_alias"}
# the families a row breaks its count into (the rest is "other")
FAMILIES = {"conv": ("convolution", "convolution_backward", "mm", "addmm", "bmm"),
            "batch norm": ("native_batch_norm", "native_batch_norm_backward",
                           "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
                           "batch_norm_backward", "_batch_norm_with_update",
                           "_batch_norm_no_update")}


class LaunchCount(TorchDispatchMode):
    """Counts the dispatched ATen operations that compute, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in NO_KERNEL:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def count_step(path: str, order: int, layout: str, args) -> collections.Counter:
    """The launches of one step of ``path`` (plain, fast, grouped) as ``layout`` runs it (cpu:
    the fast path channels-last; cuda: NCHW, foreach optimisers and clipping), after one
    uncounted step (lazy optimiser state)."""
    saved = dict(fast_mixed.DEVICE_FORMAT), torch.nn.utils.clip_grad_norm_, set(node_sum.BATCHED)
    if layout == "cuda":  # run the fast path as it runs on CUDA: NCHW, node sums batched, and
        # the optimisers and the clipping as foreach ops (their default on CUDA; on the CPU
        # one op per tensor)
        fast_mixed.DEVICE_FORMAT.pop("cpu", None)
        node_sum.BATCHED.add("cpu")
        torch.nn.utils.clip_grad_norm_ = functools.partial(saved[1], foreach=True)
    try:
        torch.manual_seed(0)
        model = Network(args.init_channels, 10, args.layers, get_space(args.space),
                        fast=path != "plain", grouped_edges=path == "grouped")
        runner = Runner(model, order == 2, Precision(), torch.device("cpu"))
        for optimizer in (runner.optimizer, runner.architect.optimizer):
            for group in optimizer.param_groups:
                group["foreach"] = layout == "cuda"
        g = torch.Generator().manual_seed(1)
        batch = (torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 10, (2,), generator=g),
                 torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 10, (2,), generator=g))
        runner.step(*batch)
        with LaunchCount() as counter:
            runner.step(*batch)
    finally:
        fast_mixed.DEVICE_FORMAT.clear()
        fast_mixed.DEVICE_FORMAT.update(saved[0])
        torch.nn.utils.clip_grad_norm_ = saved[1]
        node_sum.BATCHED.clear()
        node_sum.BATCHED.update(saved[2])
    return counter.counts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="s5")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--init_channels", type=int, default=4)
    p.add_argument("--orders", default="1,2", help="comma-separated: 1 (first), 2 (second)")
    args = p.parse_args(argv)
    print(f"launches per search step, {args.space}, {args.layers} cells (alpha step + weight "
          f"step; ATen operations that compute)")
    print("| order | layout | path | launches | conv | batch norm | other | vs plain |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for order in (int(o) for o in args.orders.split(",")):
        for layout in ("cuda", "cpu"):
            rows = [(path, count_step(path, order, layout, args))
                    for path in ("plain", "fast", "grouped")]
            base = sum(rows[0][1].values())
            for path, counts in rows:
                total = sum(counts.values())
                family = {f: sum(counts[n] for n in names) for f, names in FAMILIES.items()}
                print(f"| {order} | {layout} | {path} | {total} | {family['conv']} | "
                      f"{family['batch norm']} | {total - sum(family.values())} | "
                      f"{total / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
