"""What Λ-DARTS' regulariser costs per search step, against plain first-order DARTS on the same
supernet, measured in one run.

    python bench/lambda_step.py [--device cpu|cuda] [--repeats N] [--threads N] [--rows ...]

Each row times ``SearchLoop.step`` (the engine's real step: the alpha step on a validation
batch, the weight step, hooks, clipping, both optimiser steps) for several configurations of
one supernet, interleaved so that load from other processes hits them alike; the median over
``--repeats`` steps (after ``--warmup``) is reported, with each configuration's ratio to the
plain DARTS step of the same row:

* ``darts``: first-order DARTS (2 passes: alpha forward/backward, weight forward/backward);
* ``record``: DARTS recording train_corr/valid_corr (the released ``--corr_regularization
  none``: per-cell leaves of the mixing weights, no extra pass);
* ``lambda``: Λ-DARTS (``corr``): + two forward/backward passes at A_l ∓ εp_l (expected ~2x);
* ``lambda+adv``: Λ-DARTS with SDARTS-ADV (PGD on alpha, 7 more forward/backward passes);
* RNN rows: 2 stacked cells (Λ-DARTS' model) with and without Λ, against the stock 1-cell
  DARTS search model.

Rows (``--rows``): ``darts`` (the DARTS space s5, C, cells and input size below), ``nb201``
(the NAS-Bench-201 supernet, C and N below), ``rnn`` (the PTB search model at --rnn_size).
The CPU defaults are small (a full-size DARTS step takes tens of seconds on 2 cores); pass the
paper's sizes on a GPU: ``--init_channels 16 --layers 8 --size 32 --batch 64``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from shared.cli.checks import check_supernet_layers  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--rows", default="darts,nb201,rnn")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--init_channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5, help="DARTS cells (3 normal at 5)")
    p.add_argument("--size", type=int, default=16, help="input height and width")
    p.add_argument("--nb201_cells", type=int, default=2, help="NB201 cells per stage (N)")
    p.add_argument("--rnn_size", type=int, default=64, help="RNN emsize = nhid")
    p.add_argument("--rnn_batch", type=int, default=16)
    p.add_argument("--bptt", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_loop(model, device, alpha_update, perturbation=None, loop_cls=None, **kw):
    import logging

    from shared.search.loop import SearchLoop

    optimizer = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9,
                                weight_decay=3e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    return (loop_cls or SearchLoop)(
        model=model, optimizer=optimizer, scheduler=scheduler, alpha_update=alpha_update,
        train_queue=[], valid_queue=[], valid_eval_queue=None, epochs=50, device=device,
        logger=logging.getLogger("bench"), checkpoint_path=os.devnull,
        perturbation=perturbation, progress=False, **kw)


def cnn_configs(build: Callable[[], torch.nn.Module], device, batch, step_order="alpha_first"
                ) -> dict[str, Callable[[], None]]:
    """One step closure per configuration of a CNN supernet (each with its own model)."""
    from shared.search.alignment import LayerAlignment
    from shared.search.architect import Architect
    from shared.search.context import StepContext
    from shared.search.perturbation import make_perturbation

    steps = {}
    for name in ("darts", "record", "lambda", "lambda+adv"):
        torch.manual_seed(0)
        model = build().to(device)
        pert = make_perturbation("pgd_linf", 0.3, 50) if name == "lambda+adv" else None
        loop = make_loop(model, device, Architect(model), pert, step_order=step_order)
        if name != "darts":
            hook = LayerAlignment(None if name == "record" else "corr", 0.125, 1e-4, 50,
                                  cells="normal")
            hook.attach(loop)
            hook.lam = 0.125  # the ramp's value does not change the cost

        def step(loop=loop, model=model) -> None:
            loop.step(StepContext(loop, model, 10, 0, 0.025, *batch, True))
        steps[name] = step
    return steps


def rnn_configs(args, device) -> dict[str, Callable[[], None]]:
    from shared.models.rnn import repackage_hidden
    from shared.models.search_rnn import RNNModelSearch
    from shared.search.alignment import LayerAlignment
    from shared.search.context import StepContext
    from shared.search.rnn_architect import RNNArchitect
    from shared.search.rnn_loop import RNNSearchLoop

    ntokens, n = 1000, args.rnn_size
    g = torch.Generator().manual_seed(args.seed)
    words = [torch.randint(0, ntokens, (args.bptt + 1, args.rnn_batch), generator=g)
             .to(device) for _ in range(2)]
    steps = {}
    for name, layers, aligned in (("stock 1 cell", 1, False), ("darts", 2, False),
                                  ("lambda", 2, True)):
        torch.manual_seed(0)
        model = RNNModelSearch(ntokens, n, n, n, 0.75, 0.25, 0.75, 0.2, 0.0,
                               nlayers=layers).to(device)
        loop = make_loop(model, device, RNNArchitect(model), loop_cls=RNNSearchLoop,
                         grad_clip=0.25, batch_size=args.rnn_batch, bptt=args.bptt)
        if aligned:
            hook = LayerAlignment("corr", 0.1, 0.05, 50, cells="all", schedule=False)
            hook.attach(loop)

        def step(loop=loop, model=model) -> None:
            hidden = repackage_hidden(model.init_hidden(args.rnn_batch))
            ctx = StepContext(loop, model, 10, 0, 20.0, (words[0][:-1], hidden), words[0][1:]
                              .reshape(-1), (words[1][:-1], hidden), words[1][1:].reshape(-1),
                              True, extra={"seq_len": args.bptt, "epoch_lr": 20.0})
            loop.step(ctx)
        steps[name] = step
    return steps


def time_row(steps: dict[str, Callable[[], None]], args, device) -> dict[str, float]:
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():  # interleaved
            sync(device)
            t = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def random_batches(args: argparse.Namespace, device: torch.device) -> list[torch.Tensor]:
    """A training and a validation batch of random images (3 x size x size, 10 classes):
    [x, y, x_val, y_val], seeded by ``--seed``."""
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, 3, args.size, args.size)
    return [t.to(device) for t in (torch.randn(shape, generator=g),
                                   torch.randint(0, 10, (args.batch,), generator=g),
                                   torch.randn(shape, generator=g),
                                   torch.randint(0, 10, (args.batch,), generator=g))]


def main(argv=None) -> None:
    args = parse_args(argv)
    check_supernet_layers(args.layers)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from shared.models.search_cnn import Network
    from shared.models.search_nb201 import TinyNetworkDarts
    from shared.spaces import get_nb201_space, get_space

    batch = random_batches(args, device)
    rows = {
        "darts": (f"DARTS space s5, C={args.init_channels}, {args.layers} cells, "
                  f"{args.size}x{args.size}, batch {args.batch}",
                  lambda: cnn_configs(lambda: Network(args.init_channels, 10, args.layers,
                                                      get_space("s5")), device, batch)),
        "nb201": (f"NAS-Bench-201, C={args.init_channels}, N={args.nb201_cells}, weights "
                  f"first, {args.size}x{args.size}, batch {args.batch}",
                  lambda: cnn_configs(lambda: TinyNetworkDarts(
                      args.init_channels, 10, args.nb201_cells, get_nb201_space()), device,
                      batch, step_order="weights_first")),
        "rnn": (f"PTB RNN search model, emsize=nhid={args.rnn_size}, batch {args.rnn_batch}, "
                f"bptt {args.bptt}", lambda: rnn_configs(args, device)),
    }
    print(f"device {device}, torch threads {torch.get_num_threads()}, median of "
          f"{args.repeats} steps\n")
    print(f"{'supernet':<70} {'configuration':<14} {'ms/step':>9} {'vs darts':>9}")
    for key in [r for r in args.rows.split(",") if r]:
        title, make = rows[key]
        result = time_row(make(), args, device)
        base = result["darts"]
        for i, (name, t) in enumerate(result.items()):
            print(f"{title if i == 0 else '':<70} {name:<14} {t * 1e3:>9.1f} "
                  f"{t / base:>8.2f}x")


if __name__ == "__main__":  # bad input: one line, no traceback
    from shared.errors import cli_entry

    cli_entry(main)()
