"""Time one search step of the DARTS supernet: the plain reference path vs the fast path.

    python bench/supernet_step.py [--space s5] [--device cpu|cuda] [--amp] [--channels_last]
                                  [--repeats N] [--warmup N] [--threads N]

One step = what ``shared.search.loop.SearchLoop.train_epoch`` does per batch: the alpha step
(``Architect.step``, first or second order) on a validation batch, then the weight step
(forward with the detached mixing weights, backward, gradient clipping, SGD step). Both paths
start from the same parameters (the fast model loads the plain one's state_dict) and see the
same random CIFAR-sized batches (3x32x32, 10 classes); C=16, 8 cells as in DARTS' search.

Timing: ``--warmup`` steps per path are excluded, then ``--repeats`` steps per path,
interleaved plain/fast so that load from other processes hits both alike; the median is
reported. Peak memory: the peak of the step's tensor allocations above what was allocated
when it started, on CUDA from ``torch.cuda.max_memory_allocated``, on the CPU from
``torch.profiler``'s allocation events (RSS high-water marks do not reset and include
allocator caching). It is measured on the first warm-up step, which is therefore profiled.
``max |logit diff|`` compares the two paths' first training-mode forward from identical
parameters and inputs (``--check`` adds a per-space table of logit and gradient agreement).
The runs are not compared after the steps: Adam's first alpha steps are ~lr * sign(grad),
and gradients through max pooling jump where a window holds near-ties, so two fp32 runs
that differ only in summation order (the plain path channels-last, say) drift apart too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from shared.cli.checks import check_supernet_layers  # noqa: E402
from shared.models import kernel_reuse  # noqa: E402
from shared.models.mode import set_mode  # noqa: E402
from shared.models.search_cnn import Network  # noqa: E402
from shared.runtime import Precision  # noqa: E402
from shared.search.architect import Architect  # noqa: E402
from shared.spaces import get_space  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="s5")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU) for both paths")
    p.add_argument("--channels_last", action="store_true",
                   help="give the PLAIN path channels-last model and input too "
                        "(the fast path is channels-last inside either way)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed steps per path, for every row (default: each row's own)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per path and row")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for this run (default: torch's default)")
    p.add_argument("--rows", default="16:1:3,64:1:1,16:2:1",
                   help="comma-separated batch:order[:repeats] rows (order 1 = first, "
                        "2 = second; repeats default 3). The default keeps a CPU run "
                        "near 5 minutes: a plain batch-64 step takes ~40 s on 2 cores")
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="input height and width")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true",
                   help="cudnn.deterministic=True, benchmark=False: what the search and "
                        "evaluation doors set (for reproducible runs); default: torch's")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the table, profile one fast-path step of the first row and "
                        "print the N most expensive ops (CUDA time on CUDA)")
    p.add_argument("--grouped", action="store_true",
                   help="a third path: the fast path with grouped_edges (the separable and "
                        "the dilated convs of the edges leaving a state as one kernel per "
                        "stage), and its time against the fast path's")
    p.add_argument("--check", action="store_true",
                   help="first compare plain vs fast logits and gradients on every space "
                        "(C=8, 5 cells, batch 8, 16x16) on --device and print that table; "
                        "--rows '' then skips the timing")
    return p.parse_args(argv)


class Runner:
    """One model with its optimisers, stepping like the search loop."""

    def __init__(self, model: torch.nn.Module, unrolled: bool, precision: Precision,
                 device: torch.device) -> None:
        self.model, self.precision, self.device = model, precision, device
        self.lr = 0.025
        self.optimizer = torch.optim.SGD(model.weight_parameters(), self.lr, momentum=0.9,
                                         weight_decay=3e-4)
        self.architect = Architect(model, 3e-4, 1e-3, 0.9, 3e-4, unrolled)

    def step(self, x, y, x_s, y_s) -> None:
        with kernel_reuse.within_step():  # as the loop's step
            self._step(x, y, x_s, y_s)

    def _step(self, x, y, x_s, y_s) -> None:
        model, amp = self.model, self.precision.autocast(self.device)
        set_mode(model)  # as the loop: a walk of every module only where the mode changes
        with amp:
            self.architect.step(x, y, x_s, y_s, self.lr, self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        weights = tuple(w.detach() for w in model.mixing_weights())
        with amp:
            loss = F.cross_entropy(model(x, weights), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
        self.optimizer.step()
        kernel_reuse.forget()
        for a in model.arch_parameters():
            a.grad = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_step_mb(runner: Runner, batch, device: torch.device) -> float:
    """Run one step; the peak of its allocations above the starting level, in MiB."""
    if device.type == "cuda":
        sync(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        runner.step(*batch)
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2 ** 20
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        runner.step(*batch)
    cpu = torch.autograd.DeviceType.CPU
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == cpu),
                    key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak / 2 ** 20


def timed_step(runner: Runner, batch, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    runner.step(*batch)
    sync(device)
    return time.perf_counter() - t


def run_row(args, space, batch_size: int, order: int, repeats: int, device: torch.device,
            precision: Precision) -> dict:
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    shape = (batch_size, 3, args.size, args.size)
    data = [t.to(device) for t in (torch.randn(shape, generator=g),
                                   torch.randint(0, 10, (batch_size,), generator=g),
                                   torch.randn(shape, generator=g),
                                   torch.randint(0, 10, (batch_size,), generator=g))]
    data = [precision.prepare(t) if t.dim() == 4 else t for t in data]

    plain = Network(args.init_channels, 10, args.layers, space, fast=False)
    fast = Network(args.init_channels, 10, args.layers, space, fast=True)
    fast.load_state_dict(plain.state_dict())
    plain = precision.prepare_model(plain.to(device))
    fast = fast.to(device)

    with torch.no_grad(), precision.autocast(device):
        torch.manual_seed(args.seed + 2)
        la = plain(data[0]).float()
        torch.manual_seed(args.seed + 2)
        lb = fast(data[0]).float()
    # that forward updated the BN running statistics of both alike; reset them to be exact
    fast.load_state_dict(plain.state_dict())
    logit_diff = (la - lb).abs().max().item()

    runners = {"plain": Runner(plain, order == 2, precision, device),
               "fast": Runner(fast, order == 2, precision, device)}
    if args.grouped:
        grouped = Network(args.init_channels, 10, args.layers, space, fast=True,
                          grouped_edges=True)
        grouped.load_state_dict(plain.state_dict())
        runners["grouped"] = Runner(grouped.to(device), order == 2, precision, device)
    peaks, times = {}, {k: [] for k in runners}
    for name, r in runners.items():
        torch.manual_seed(args.seed + 3)
        peaks[name] = peak_step_mb(r, data, device)
        for _ in range(args.warmup - 1):
            r.step(*data)
    for _ in range(repeats):
        for name, r in runners.items():
            times[name].append(timed_step(r, data, device))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return dict(batch=batch_size, order=order, plain_ms=med["plain"], fast_ms=med["fast"],
                plain_mb=peaks["plain"], fast_mb=peaks["fast"], logit_diff=logit_diff,
                times=times, grouped_ms=med.get("grouped"), grouped_mb=peaks.get("grouped"))


def check_spaces(device: torch.device) -> None:
    """max |fast - plain| / max |plain| per space: logits in fp32, then logits, weight grads
    and mixing-weight grads in float64 (fp32 gradients through max pooling can legitimately
    differ where a pooling window holds near-ties; see tests/test_fast_path.py)."""
    from shared.spaces import NUM_EDGES, SPACES
    print("| space | fp32 logits | fp64 logits | fp64 weight grads | fp64 mixing-weight grads |")
    print("|---|---:|---:|---:|---:|")

    def rel(a, b):
        return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()
    for name, space in SPACES.items():
        cols = []
        for dtype in (torch.float32, torch.float64):
            torch.manual_seed(0)
            plain = Network(8, 10, 5, space, fast=False)
            fast = Network(8, 10, 5, space, fast=True)
            fast.load_state_dict(plain.state_dict())
            plain, fast = plain.to(device, dtype), fast.to(device, dtype)
            x = torch.randn(8, 3, 16, 16, device=device, dtype=dtype)
            y = torch.randint(0, 10, (8,), device=device)
            w0 = [torch.rand(NUM_EDGES, space.num_ops(r), device=device, dtype=dtype)
                  for r in (False, True)]
            out = []
            for model in (plain, fast):
                w = [t.clone().requires_grad_() for t in w0]
                torch.manual_seed(1)
                logits = model(x, tuple(w))
                F.cross_entropy(logits, y).backward()
                out.append((logits, [p.grad for p in model.weight_parameters()],
                            [t.grad for t in w]))
            (la, ga, wa), (lb, gb, wb) = out
            cols.append(rel(lb, la))
            if dtype == torch.float64:
                cols += [max(rel(b, a) for a, b in zip(ga, gb)),
                         max(rel(b, a) for a, b in zip(wa, wb))]
        print(f"| {name} | " + " | ".join(f"{c:.1e}" for c in cols) + " |")
    print()


def main(argv=None) -> None:
    args = parse_args(argv)
    check_supernet_layers(args.layers)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.warmup < 1:
        sys.exit("--warmup must be >= 1 (the first warm-up step measures peak memory)")
    device = torch.device(args.device)
    if args.deterministic:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    space = get_space(args.space)
    precision = Precision(amp=args.amp, channels_last=args.channels_last)
    rows = []
    for r in filter(None, args.rows.split(",")):
        b, o, *n = (int(v) for v in r.split(":"))
        rows.append((b, o, args.repeats or (n[0] if n else 3)))
    if args.check:
        print(f"plain vs fast on {device} (C=8, 5 cells, batch 8, 16x16, random mixing "
              f"weights): max abs difference / max abs plain value")
        check_spaces(device)
    if not rows:
        return

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    mem = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
           else "torch.profiler allocation events")
    print(f"DARTS supernet step (alpha step + weight step), space {args.space}, "
          f"C={args.init_channels}, {args.layers} cells, {args.size}x{args.size}x3 input, "
          f"{name}, torch {torch.__version__}, amp={args.amp}, "
          f"cudnn deterministic={torch.backends.cudnn.deterministic}, "
          f"plain channels_last={args.channels_last}; median of the row's timed steps "
          f"(n) after {args.warmup} warm-up; peak MB = peak allocation above the step's "
          f"start ({mem})")
    print()
    extra = (" grouped ms/step | grouped vs fast | grouped peak MB |" if args.grouped else "")
    print("| batch | order | n | plain ms/step | fast ms/step | speedup | plain peak MB "
          "| fast peak MB | max abs logit diff |" + extra)
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if extra else ""))
    results = []
    t0 = time.perf_counter()
    for batch_size, order, repeats in rows:
        r = run_row(args, space, batch_size, order, repeats, device, precision)
        results.append(r)
        print(f"| {r['batch']} | {'first' if order == 1 else 'second'} | {repeats} "
              f"| {r['plain_ms']:.0f} "
              f"| {r['fast_ms']:.0f} | {r['plain_ms'] / r['fast_ms']:.2f}x "
              f"| {r['plain_mb']:.0f} | {r['fast_mb']:.0f} | {r['logit_diff']:.1e} |"
              + (f" {r['grouped_ms']:.0f} | {r['fast_ms'] / r['grouped_ms']:.2f}x "
                 f"| {r['grouped_mb']:.0f} |" if args.grouped else ""), flush=True)
    print()
    print(f"wall time {time.perf_counter() - t0:.0f} s; every timed step (ms):")
    for r in results:
        print(f"  batch {r['batch']} order {r['order']}: "
              + "; ".join(f"{k} " + " ".join(f"{t * 1e3:.0f}" for t in v)
                          for k, v in r["times"].items()) + " ms")
    if args.profile:
        profile_step(args, space, rows[0][0], rows[0][1], device, precision)


def profile_step(args, space, batch_size: int, order: int, device: torch.device,
                 precision: Precision) -> None:
    """Where one fast-path step spends its time (after two warm-up steps)."""
    from torch.profiler import ProfilerActivity, profile
    torch.manual_seed(args.seed)
    shape = (batch_size, 3, args.size, args.size)
    data = [precision.prepare(torch.randn(shape, device=device)),
            torch.randint(0, 10, (batch_size,), device=device),
            precision.prepare(torch.randn(shape, device=device)),
            torch.randint(0, 10, (batch_size,), device=device)]
    runner = Runner(Network(args.init_channels, 10, args.layers, space).to(device),
                    order == 2, precision, device)
    for _ in range(2):
        runner.step(*data)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with profile(activities=activities) as prof:
        runner.step(*data)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\nprofile of one fast-path step (batch {batch_size}, order {order}), by {key}:")
    print(prof.key_averages().table(sort_by=key, row_limit=args.profile, max_name_column_width=60))
    if device.type == "cuda":  # what bench/kernel_count.py's launch count is a lower bound of
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.time_range.elapsed_us() for e in kernels) / 1000
        print(f"CUDA kernels in the step: {len(kernels)}, {busy:.1f} ms of kernel time")


if __name__ == "__main__":  # bad input: one line, no traceback
    from shared.errors import cli_entry

    cli_entry(main)()
