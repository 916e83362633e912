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
weight step; ``--amp`` counts them under bf16 autocast (the search's ``--amp``, the casts
apart); ``--eval`` adds the step of evaluation training (``EvalTrainer.train_step``,
``train.py --auxiliary``). ``--top N`` then lists, per order and path in the CUDA layout, the N most
launched operations by where they come from: the line of the project that ran it in the
forward, the autograd node whose backward ran it in the backward (the additions that
accumulate a tensor's gradients fall under the node that produced the gradient).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import logging
import os
import sys
import tempfile
import traceback
import types
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from bench.supernet_step import Runner  # noqa: E402
from shared import ops  # noqa: E402
from shared.cli.checks import check_supernet_layers  # noqa: E402
from shared.evaluation.config import EvalConfig  # noqa: E402
from shared.evaluation.trainer import EvalTrainer  # noqa: E402
from shared.genotypes import load_genotype  # noqa: E402
from shared.models import fast_mixed, node_sum  # noqa: E402
from shared.models.cnn import build_final_network  # noqa: E402
from shared.models.device_policy import switched  # noqa: E402
from shared.models.search_cnn import Network  # noqa: E402
from shared.runtime import Precision  # noqa: E402
from shared.search.architect import Architect  # noqa: E402
from shared.search.loop import SearchLoop  # noqa: E402
from shared.search.perturbation import make_perturbation  # noqa: E402
from shared.spaces import get_space  # noqa: E402

PERTURBED = ("random", "pgd_linf")  # SDARTS-RS, SDARTS-ADV
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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LaunchCount(TorchDispatchMode):
    """Counts the dispatched ATen operations that compute, by name; with ``where``, by
    (name, where it comes from: :func:`origin`)."""

    def __init__(self, where: bool = False) -> None:
        super().__init__()
        self.where = where
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in NO_KERNEL:
            self.counts[(name, origin()) if self.where else name] += 1
        return func(*args, **(kwargs or {}))


def origin() -> str:
    """The backward of which autograd node runs now, else the innermost line of the project
    (outside ``bench/`` and installed packages) on the stack."""
    node = torch._C._current_autograd_node()
    if node is not None:
        return f"backward of {type(node).__name__}"
    for frame in reversed(traceback.extract_stack()):
        path = os.path.abspath(frame.filename)
        if (path.startswith(ROOT + os.sep) and "site-packages" not in path
                and not path.startswith(os.path.join(ROOT, "bench"))):
            return f"{os.path.relpath(path, ROOT)}:{frame.lineno} {frame.name}"
    return "elsewhere"


@contextlib.contextmanager
def as_on(layout: str) -> Iterator[None]:
    """Run the fast path as ``layout`` runs it: ``cpu`` as here (channels-last, node sums term
    by term, dilated convs rewritten undilated, bf16 dilated convs on NCHW copies, a group per
    kernel size), ``cuda`` as on CUDA (NCHW, node sums batched, dilated convs as they are, the
    kernel sizes of a kind in one group, the clipping as foreach ops, their default on CUDA;
    on the CPU one op per tensor); undone after."""
    saved = dict(fast_mixed.DEVICE_FORMAT), torch.nn.utils.clip_grad_norm_
    if layout == "cuda":
        fast_mixed.DEVICE_FORMAT.pop("cpu", None)
        torch.nn.utils.clip_grad_norm_ = functools.partial(saved[1], foreach=True)
    try:
        with node_sum.batched("cpu", layout == "cuda"), \
                fast_mixed.undilated("cpu", layout != "cuda"), \
                fast_mixed.embedded("cpu", layout == "cuda"), \
                switched(ops.NCHW_DILATED_BF16, "cpu", layout != "cuda"):
            yield
    finally:
        fast_mixed.DEVICE_FORMAT.clear()
        fast_mixed.DEVICE_FORMAT.update(saved[0])
        torch.nn.utils.clip_grad_norm_ = saved[1]


def _model(path: str, args) -> Network:
    torch.manual_seed(0)
    return Network(args.init_channels, 10, args.layers, get_space(args.space),
                   fast=path != "plain", grouped_edges=path == "grouped")


def _batch(seed: int, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _foreach(optimizers, layout: str) -> None:
    for optimizer in optimizers:  # foreach: the optimisers' default on CUDA
        for group in optimizer.param_groups:
            group["foreach"] = layout == "cuda"


def count_step(path: str, order: int | str, layout: str, args,
               where: bool = False, amp: bool = False) -> collections.Counter:
    """The launches of one step of ``path`` (plain, fast, grouped) as ``layout`` runs it
    (:func:`as_on`), after one uncounted step (lazy optimiser state). ``order``: 1 or 2, the
    step of ``bench/supernet_step.py``; ``random`` or ``pgd_linf``, SDARTS' step as the search
    loop runs it (first-order alpha step, the perturbation of the mixing weights, the weight
    step). ``where``: counted by (name, :func:`origin`); ``amp``: under bf16 autocast (the
    search's ``--amp``)."""
    counter = LaunchCount(where)
    step_under(counter, path, order, layout, args, amp)
    return counter.counts


def step_under(mode: TorchDispatchMode, path: str, order: int | str, layout: str, args,
               amp: bool = False, batch_size: int = 2) -> None:
    """Run one search step of ``path`` as ``layout`` runs it under ``mode``, after one step
    outside it (:func:`count_step`), on batches of ``batch_size`` 32x32 images."""
    with as_on(layout):
        if order in PERTURBED:
            return _sdarts_step_under(mode, path, str(order), layout, args, amp, batch_size)
        runner = Runner(_model(path, args), order == 2, Precision(amp), torch.device("cpu"))
        _foreach((runner.optimizer, runner.architect.optimizer), layout)
        batch = (*_batch(1, batch_size), *_batch(2, batch_size))
        runner.step(*batch)
        with mode:
            runner.step(*batch)


def _sdarts_step_under(mode: TorchDispatchMode, path: str, kind: str, layout: str, args,
                       amp: bool, batch_size: int) -> None:
    model = _model(path, args)
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9,
                                weight_decay=3e-4)
    architect = Architect(model, 3e-4, 1e-3, 0.9, 3e-4, unrolled=False)
    _foreach((optimizer, architect.optimizer), layout)
    with tempfile.TemporaryDirectory() as folder:
        loop = SearchLoop(
            model=model, optimizer=optimizer, scheduler=None, alpha_update=architect,
            train_queue=[_batch(1, batch_size)] * 2, valid_queue=[_batch(2, batch_size)] * 2,
            valid_eval_queue=None,
            epochs=50, device=torch.device("cpu"), logger=logging.getLogger("bench"),
            checkpoint_path=os.path.join(folder, "unused.pth.tar"),
            perturbation=make_perturbation(kind, 0.3, 50), progress=False, report_freq=10 ** 6,
            precision=Precision(amp))
        steps = loop.batches(10, 0.025, True)
        loop.step(next(steps))
        ctx = next(steps)
        with mode:
            loop.step(ctx)


def count_eval_step(layout: str, args, where: bool = False, bf16: bool = False,
                    cast_once: bool = False, grouped: bool = False) -> collections.Counter:
    """The launches of one step of evaluation training as ``layout`` runs it:
    ``EvalTrainer.train_step`` (forward with the auxiliary head and drop-path, backward,
    clipping, SGD) of ``args.eval_arch`` at ``train.py --auxiliary``'s 20 cells, drop-path
    halfway up its ramp, after one uncounted step; ``bf16``: with ``--amp --channels_last``
    (bf16 autocast, channels-last); ``cast_once``: the weights cast all at once, as a
    recorded step (``--step_capture``) casts them; ``grouped``: each cell's same-shaped
    separable convs together (the network's ``grouped_ops``)."""
    counter = LaunchCount(where)
    eval_step_under(counter, layout, args, bf16, cast_once, grouped)
    return counter.counts


def eval_step_under(mode: TorchDispatchMode, layout: str, args, bf16: bool = False,
                    cast_once: bool = False, grouped: bool = False,
                    batch_size: int = 2) -> None:
    """Run one step of evaluation training (:func:`count_eval_step`) under ``mode``, after
    one step outside it, on a batch of ``batch_size`` 32x32 images."""
    cfg = EvalConfig(auxiliary=True, layers=20, init_channels=args.init_channels)
    precision = Precision(bf16, bf16)
    torch.manual_seed(0)
    net = precision.prepare_model(build_final_network(
        load_genotype(args.eval_arch), "cifar10", cfg.init_channels, cfg.layers, cfg.auxiliary))
    net.drop_path_prob = cfg.drop_path_prob / 2
    net.grouped_ops = grouped
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), cfg.learning_rate, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    _foreach((optimizer,), layout)
    # the trainer's own step, on just what it reads
    trainer = types.SimpleNamespace(
        cfg=cfg, model=net, net=net, cast_once=cast_once, optimizer=optimizer,
        precision=precision,
        device=torch.device("cpu"), criterion=torch.nn.CrossEntropyLoss(),
        scaler=torch.amp.GradScaler("cpu", enabled=False))
    trainer._loss = functools.partial(EvalTrainer._loss, trainer)
    x, y = _batch(1, batch_size)
    x = precision.prepare(x)
    with as_on(layout):
        EvalTrainer.train_step(trainer, x, y)
        with mode:
            EvalTrainer.train_step(trainer, x, y)


def _print_eval(args) -> None:
    print(f"\nlaunches per evaluation training step, {args.eval_arch}, 20 cells, auxiliary "
          "head, drop-path\n| layout | precision | launches | conv | batch norm | casts | "
          "other |\n|---|---|---:|---:|---:|---:|---:|")
    top = None
    rows = (("cuda", False, False, False), ("cuda", False, False, True),
            ("cuda", True, False, False), ("cuda", True, True, False), ("cpu", False, False, False))
    for layout, bf16, once, grouped in rows:
        where = bool(args.top) and layout == "cuda" and not bf16 and not grouped
        counts = count_eval_step(layout, args, where=where, bf16=bf16, cast_once=once,
                                 grouped=grouped)
        if where:
            top, counts = counts, by_name(counts)
        total = sum(counts.values())
        family = {f: sum(counts[n] for n in names) for f, names in FAMILIES.items()}
        casts = counts["_to_copy"]
        precision = ("bf16 + channels-last" + (", cast at once (recorded step)" if once else "")
                     if bf16 else "fp32") + (", grouped ops" if grouped else "")
        print(f"| {layout} | {precision} | {total} | "
              f"{family['conv']} | {family['batch norm']} | {casts} | "
              f"{total - sum(family.values()) - casts} |", flush=True)
    if top is not None:
        print(f"\nevaluation (cuda, fp32): the {args.top} most launched\n"
              "| launches | operation | from |\n|---:|---|---|")
        for (name, where), n in top.most_common(args.top):
            print(f"| {n} | {name} | {where} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="s5")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--init_channels", type=int, default=4)
    p.add_argument("--orders", default="1,2," + ",".join(PERTURBED),
                   help="comma-separated: 1 (first), 2 (second); random, pgd_linf (SDARTS-RS, "
                        "SDARTS-ADV: a first-order step with the perturbation)")
    p.add_argument("--top", type=int, default=0, metavar="N",
                   help="then, per order and path (CUDA layout), the N most launched "
                        "operations by where they come from")
    p.add_argument("--amp", action="store_true",
                   help="the search steps under bf16 autocast (the search's --amp); the rows "
                        "then count the casts apart")
    p.add_argument("--eval", action="store_true",
                   help="then the step of evaluation training (train.py --auxiliary)")
    p.add_argument("--eval_arch", default="DARTS_V2", help="the genotype it trains")
    args = p.parse_args(argv)
    check_supernet_layers(args.layers)
    orders = parse_orders(p, args.orders)
    if orders:
        print(f"launches per search step, {args.space}, {args.layers} cells (alpha step + "
              f"weight step; ATen operations that compute)"
              + (", bf16 autocast" if args.amp else ""))
        casts = " casts |" if args.amp else ""
        print(f"| order | layout | path | launches | conv | batch norm |{casts} other | "
              "vs plain |")
        print("|---|---|---|---:|---:|---:|" + ("---:|" if args.amp else "") + "---:|---:|")
    origins = {}  # (order, path): the CUDA layout's counts by (name, origin), for --top
    for order in orders:
        for layout in ("cuda", "cpu"):
            rows = []
            for path in ("plain", "fast", "grouped"):
                counts = count_step(path, order, layout, args,
                                    where=bool(args.top) and layout == "cuda", amp=args.amp)
                if args.top and layout == "cuda":
                    origins[order, path] = counts
                    counts = by_name(counts)
                rows.append((path, counts))
            base = sum(rows[0][1].values())
            for path, counts in rows:
                total = sum(counts.values())
                family = {f: sum(counts[n] for n in names) for f, names in FAMILIES.items()}
                cast = counts["_to_copy"] if args.amp else 0
                print(f"| {order} | {layout} | {path} | {total} | {family['conv']} | "
                      f"{family['batch norm']} | " + (f"{cast} | " if args.amp else "")
                      + f"{total - sum(family.values()) - cast} | {total / base:.2f}x |",
                      flush=True)
    for (order, path), counts in origins.items():
        print(f"\n{order}, {path} (cuda): the {args.top} most launched\n"
              "| launches | operation | from |\n|---:|---|---|")
        for (name, where), n in counts.most_common(args.top):
            print(f"| {n} | {name} | {where} |", flush=True)
    if args.eval:
        _print_eval(args)


def parse_orders(parser: argparse.ArgumentParser, text: str) -> list[int | str]:
    """``--orders``' comma-separated steps: 1, 2 (first, second order) or an SDARTS
    perturbation; anything else is the parser's error."""
    names = [o for o in text.split(",") if o]
    known = {"1", "2", *PERTURBED}
    if not set(names) <= known:
        parser.error(f"--orders takes {', '.join(sorted(known))}")
    return [o if o in PERTURBED else int(o) for o in names]


def by_name(counts: collections.Counter) -> collections.Counter:
    """Counts by (name, origin) summed by name."""
    out: collections.Counter = collections.Counter()
    for (name, _), n in counts.items():
        out[name] += n
    return out

if __name__ == "__main__":  # bad input: one line, no traceback
    from shared.errors import cli_entry

    cli_entry(main)()
