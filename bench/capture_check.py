"""The search step recorded as a CUDA graph, or its network compiled with torch.compile,
against the eager step: the same numbers, and how much faster, per alpha update and
perturbation, in one run.

    python bench/capture_check.py [--device cuda] [--kinds first_order,second_order,...]
                                  [--paths graph,compile,compile+graph,reduce-overhead,
                                           grouped,graph+grouped,grouped-by-size,
                                           term-sums,batched-sums,matmul-sums,
                                           product-sums,undilated,dilated]
                                  [--steps N] [--batch_size 64] [--layers 8] [--space s5]

Paths (each against the eager step): ``graph`` (``--step_capture cuda_graph``), ``compile``
(``--compile default``: Inductor's fused kernels), ``compile+graph`` (both: the fused kernels
launched by the recorded step), ``reduce-overhead`` (``--compile reduce-overhead``:
torch.compile's own CUDA graphs of the forward and backward, the rest eager), ``grouped`` and
``graph+grouped`` (``Network(grouped_edges=True)``: the wide kernels of the edges leaving one
state, eager or in the recorded step), ``grouped-by-size`` (eager, grouped, each kernel size its
own group, the CPU's way; on CUDA the sizes of a kind share one, the smaller kernels embedded in
the widest: ``fast_mixed.EMBED``), ``term-sums`` and ``batched-sums`` (eager, a node's sums
added term by term, the CPU's way, or over a stack of its terms, CUDA's: ``node_sum.BATCHED``,
which also decides whether the gradients of a state's many readers are summed at once,
``fan_out``; eager runs the device's own), ``matmul-sums`` and ``product-sums`` (eager, the
batched sums with a scale per channel, evaluation mode's folded nodes as SDARTS-ADV's attack
runs them, and every scale's gradient, as batched matrix products over the stack of NCHW
terms, or as a product and a reduction, the default: ``node_sum.MATMUL``; pgd_linf is the
kind they change most), ``undilated`` and ``dilated`` (eager, dilated convs
rewritten undilated, the CPU's way, or run as they are, CUDA's: ``fast_mixed.UNDILATE``).
``first s`` is epoch 0's wall time: the warm-up, the recordings and every compilation are in it.
Kinds: first and second order DARTS, SDARTS-RS (``random``) and SDARTS-ADV (``pgd_linf``),
one-level, Λ-DARTS' regulariser on the first-order step (``lambda``; ``lambda+adv``: with
SDARTS-ADV's attack), and DARTS-PT's first-order tuning step (``darts_pt``: its supernet skips
the candidates of weight 0, here with a third of the edges projected and node 0's topology
decided, ``mid_projection``; a recorded epoch holds those zeros, ``shared.models.live``).

Both runs start from the same parameters and see the same random CIFAR-sized batches (held on
the device, as with ``--data_on_device``); alpha's Adam is the capturable (fused) one in both,
so the only difference is eager launches vs a replayed graph. An epoch is ``--steps`` steps:
epoch 0 warms up (3 eager steps, then the recording), and epoch 1 (1 eager step, a new
recording, replays) is timed and split (``bench/epoch_clock.py``): ``ms/step`` is the steady
cost from its third step on (the replays), ``fixed s`` what the epoch cost beyond that (the
eager step and the recording), which a real epoch of 391 steps pays once.
``max |d alpha|`` / ``max |d w|`` compare the runs after both epochs. ``--device cpu`` runs
the ``emulate`` backend (the bookkeeping, and the step's operations replayed without its
Python, ``shared.op_replay``: the numbers must be equal; its times say nothing) and
compiles with ``aot_eager`` (traced, no kernels generated: equal too; Inductor's CPU kernels
take many minutes to compile); ``reduce-overhead`` is CUDA only.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.epoch_clock import time_epoch  # noqa: E402
from darts_pt.projection import ProjectionState, darts_nid2eids  # noqa: E402
from shared.capture import make_capturable  # noqa: E402
from shared.cli.checks import check_supernet_layers  # noqa: E402
from shared.compile import TRACE_ONLY, reset_compiled  # noqa: E402
from shared.models import fast_mixed, node_sum  # noqa: E402
from shared.models.search_cnn import Network  # noqa: E402
from shared.search.alignment import LayerAlignment  # noqa: E402
from shared.search.alpha_update import OneLevel  # noqa: E402
from shared.search.architect import Architect  # noqa: E402
from shared.search.loop import SearchLoop  # noqa: E402
from shared.search.perturbation import make_perturbation  # noqa: E402
from shared.spaces import NUM_EDGES, get_space  # noqa: E402

# lambda: first order with Λ-DARTS' regulariser (corr, the doors' λ 0.125 and ε₀ 1e-4);
# lambda+adv: with SDARTS-ADV's attack too; darts_pt: DARTS-PT's tuning, first order
KINDS = ("first_order", "second_order", "random", "pgd_linf", "one_level", "lambda",
         "lambda+adv", "darts_pt")
PATHS = ("graph", "compile", "compile+graph", "reduce-overhead", "grouped", "graph+grouped",
         "grouped-by-size", "term-sums", "batched-sums", "matmul-sums", "product-sums",
         "undilated", "dilated")


def settings(path: str, device: torch.device) -> tuple[str, str, bool]:
    """(step_capture, compile mode, grouped edges) of a path on ``device``."""
    graph = "cuda_graph" if device.type == "cuda" else "emulate"
    compiled = "default" if device.type == "cuda" else TRACE_ONLY
    return {"eager": ("off", "off", False), "graph": (graph, "off", False),
            "compile": ("off", compiled, False), "compile+graph": (graph, compiled, False),
            "reduce-overhead": ("off", "reduce-overhead", False),
            "grouped": ("off", "off", True), "graph+grouped": (graph, "off", True),
            "grouped-by-size": ("off", "off", True),
            "term-sums": ("off", "off", False), "batched-sums": ("off", "off", False),
            "matmul-sums": ("off", "off", False), "product-sums": ("off", "off", False),
            "undilated": ("off", "off", False), "dilated": ("off", "off", False)}[path]


def device_ways(path: str, device: torch.device) -> contextlib.AbstractContextManager:
    """A node's sums (``node_sum.BATCHED``, ``node_sum.MATMUL``), the dilated convs
    (``fast_mixed.UNDILATE``) and the groups' kernel sizes (``fast_mixed.EMBED``) as ``path``
    runs them, the device's own else."""
    if path in ("term-sums", "batched-sums"):
        return node_sum.batched(device.type, path == "batched-sums")
    if path in ("matmul-sums", "product-sums"):
        return node_sum.matmul(device.type, path == "matmul-sums")
    if path in ("undilated", "dilated"):
        return fast_mixed.undilated(device.type, path == "undilated")
    if path == "grouped-by-size":
        return fast_mixed.embedded(device.type, False)
    return contextlib.nullcontext()


def batches(n: int, batch: int, size: int, device: torch.device, seed: int
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [(torch.randn(batch, 3, size, size, generator=g).to(device),
             torch.randint(0, 10, (batch,), generator=g).to(device)) for _ in range(n)]


def mid_projection(model: Network) -> ProjectionState:
    """DARTS-PT's decisions a third of the way into its projection (DARTS cell, 14 edges): each
    cell type's edges 0-4 projected to one op each, node 0's inputs 2 and 4 kept (3 dropped)."""
    state = ProjectionState(("normal", "reduce"), NUM_EDGES, darts_nid2eids())
    for cell, alpha in zip(state.cell_types, model.arch_parameters()):
        for edge in range(5):
            state.project_op(cell, edge, (edge + 3) % alpha.shape[1])
    state.project_edge("normal", 0, [2, 4])
    return state


def run(kind: str, path: str, args, device: torch.device, folder: str) -> dict:
    capture, compile_mode, grouped = settings(path, device)
    reset_compiled()  # every compiled path compiles from cold: its cost is in "first s"
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(args.seed)
    model = Network(args.init_channels, 10, args.layers, get_space(args.space),
                    grouped_edges=grouped, skip_zero_weights=kind == "darts_pt").to(device)
    if kind == "darts_pt":
        model.mixing_transform = mid_projection(model).apply
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9,
                                weight_decay=3e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 50, eta_min=0.001)
    alpha = (OneLevel(model, 3e-4, 1e-3) if kind == "one_level" else
             Architect(model, 3e-4, 1e-3, 0.9, 3e-4, unrolled=kind == "second_order"))
    make_capturable(alpha.optimizer)
    loop = SearchLoop(
        model=model, optimizer=optimizer, scheduler=scheduler, alpha_update=alpha,
        train_queue=batches(args.steps, args.batch_size, args.size, device, 1),
        valid_queue=None if kind == "one_level" else batches(args.steps, args.batch_size,
                                                             args.size, device, 2),
        valid_eval_queue=None, epochs=50, device=device, logger=logging.getLogger("bench"),
        checkpoint_path=os.path.join(folder, f"{kind}-{path}.pth.tar"),
        perturbation=make_perturbation({"random": "random", "pgd_linf": "pgd_linf",
                                        "lambda+adv": "pgd_linf"}.get(kind, "none"), 0.3, 50),
        progress=False, step_capture=capture, compile_mode=compile_mode, report_freq=10 ** 6)
    if kind.startswith("lambda"):
        LayerAlignment("corr", 0.125, 1e-4, 50, schedule=False).attach(loop)
    start = time.perf_counter()
    loop.train_epoch(0, scheduler.get_last_lr()[0])
    scheduler.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    first = time.perf_counter() - start
    lr = scheduler.get_last_lr()[0]
    timed = time_epoch(loop, "train_queue", lambda: loop.train_epoch(1, lr), device, args.steps)
    reason = loop.capture.reason if loop.capture is not None else None
    return {"ms": timed.steady_ms, "fixed": timed.fixed_s, "first": first,
            "alphas": [a.detach().clone() for a in model.arch_parameters()],
            "weights": [p.detach().clone() for p in model.weight_parameters()],
            "reason": reason}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    p.add_argument("--kinds", default=",".join(KINDS[:4]),
                   help=f"comma-separated: {', '.join(KINDS)}")
    p.add_argument("--paths", default="graph",
                   help=f"comma-separated, each against eager: {', '.join(PATHS)}")
    p.add_argument("--steps", type=int, default=20, help="steps per epoch (2 epochs)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--space", default="s5")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    check_supernet_layers(args.layers)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    if args.steps < 4:
        sys.exit("--steps: at least 4 (epoch 0's recording follows 3 eager steps)")
    paths = args.paths.split(",")
    unknown = [q for q in paths if q not in PATHS]
    if unknown:
        sys.exit(f"--paths: unknown {', '.join(unknown)}; one of {', '.join(PATHS)}")
    unknown = [k for k in args.kinds.split(",") if k not in KINDS]
    if unknown:
        sys.exit(f"--kinds: unknown {', '.join(unknown)}; one of {', '.join(KINDS)}")
    if device.type != "cuda" and "reduce-overhead" in paths:
        sys.exit("--paths reduce-overhead: torch.compile's CUDA graphs need --device cuda")
    print(f"search step, {args.space}, {args.layers} cells, C={args.init_channels}, batch "
          f"{args.batch_size}, {args.size}x{args.size}, {args.device}; epoch 1 of 2 timed, "
          f"{args.steps} steps")
    print(f"{'kind':<13} {'path':<16} {'first s':>8} {'fixed s':>8} {'ms/step':>9} "
          f"{'speed-up':>9} {'max|d alpha|':>13} {'max|d w|':>10}  note")
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.kinds.split(","):
            eager = run(kind, "eager", args, device, folder)
            print(f"{kind:<13} {'eager':<16} {eager['first']:>8.1f} {eager['fixed']:>8.2f} "
                  f"{eager['ms']:>9.1f}")
            for path in paths:
                with device_ways(path, device):
                    r = run(kind, path, args, device, folder)
                da = max((a - b).abs().max().item() for a, b in zip(eager["alphas"],
                                                                    r["alphas"]))
                dw = max((a - b).abs().max().item() for a, b in zip(eager["weights"],
                                                                    r["weights"]))
                note = f"eager: {r['reason']}" if r["reason"] else ""
                print(f"{kind:<13} {path:<16} {r['first']:>8.1f} {r['fixed']:>8.2f} "
                      f"{r['ms']:>9.1f} "
                      f"{eager['ms'] / r['ms']:>8.2f}x {da:>13.2e} {dw:>10.2e}  {note}",
                      flush=True)


if __name__ == "__main__":  # bad input: one line, no traceback
    from shared.errors import cli_entry

    cli_entry(main)()
