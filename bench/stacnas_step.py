"""What a StacNAS search step costs per stage, against plain first-order DARTS, measured in one
run.

    python bench/stacnas_step.py [--device cpu|cuda] [--repeats N] [--warmup N] [--threads N]
                                 [--darts_layers L] [--stage1_layers L] [--stage2_layers L]

Each configuration times ``SearchLoop.step`` (the engine's real step: alpha update, weight
step, clipping, both optimiser steps) on its own supernet, built the engine's way (a
``CNNSearchConfig`` through ``SUPERNETS`` and ``make_alpha_update``), interleaved so that load
from other processes hits them alike; the median over ``--repeats`` steps (after ``--warmup``)
is reported, with each configuration's ratio to the ``darts`` step:

* ``darts``: first-order DARTS (``Architect``) on the DARTS space (``--darts_space``: "darts",
  the 7 operations and ``none``; "s5" drops ``none``), one training and one validation batch;
* ``stage1``: StacNAS stage 1, one-level (``OneLevel``, no validation batch) on the group space
  ``stage1_space("groups")``: max_pool, skip, sep_conv_3x3, dil_conv_3x3 and none per edge;
* ``stage2``: StacNAS stage 2, one-level on ``stage2_space`` of a fixed stage-1 α (3
  candidates per edge). The normal cell chose skip_connect on the 4 edges from c_{k-1}
  (edges 1, 3, 6, 10) and the sep_conv group on the other 10; the reduction cell chose
  pooling on the 8 edges from the cell inputs (edges 0-3, 5, 6, 9, 10), the dil_conv group on
  edges 4, 8, 12 and the sep_conv group on edges 7, 11, 13.

The epoch column: StacNAS trains the weights on all the data (train_portion 1), DARTS on half,
so a StacNAS epoch has twice the steps and costs 2 x the step ratio. The CPU defaults are
small (5/8/11 cells keep the paper's 8:14:20 roughly); pass the paper's sizes on a GPU:
``--init_channels 16 --darts_layers 8 --stage1_layers 14 --stage2_layers 20 --size 32
--batch 64``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.lambda_step import make_loop, random_batches, time_row  # noqa: E402

STAGE2_NORMAL_SKIP = (1, 3, 6, 10)  # the rest of the normal cell: the sep_conv group
STAGE2_REDUCE = {"max_pool_3x3": (0, 1, 2, 3, 5, 6, 9, 10), "dil_conv_3x3": (4, 8, 12),
                 "sep_conv_3x3": (7, 11, 13)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=5, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--init_channels", type=int, default=8)
    p.add_argument("--size", type=int, default=16, help="input height and width")
    p.add_argument("--darts_space", default="darts", choices=("darts", "s5"))
    p.add_argument("--darts_layers", type=int, default=5, help="DARTS cells (paper: 8)")
    p.add_argument("--stage1_layers", type=int, default=8, help="stage-1 cells (paper: 14)")
    p.add_argument("--stage2_layers", type=int, default=11, help="stage-2 cells (paper: 20)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def stage1_alpha() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed stage-1 result the stage-2 space is derived from: one-hot logits over
    ``GROUP_OPS`` per edge (the module docstring lists the mix)."""
    from shared.spaces import NUM_EDGES
    from stacnas.spaces import GROUP_OPS

    def one_hot(choice: list[str]) -> torch.Tensor:
        alpha = torch.zeros(NUM_EDGES, len(GROUP_OPS))
        for e, op in enumerate(choice):
            alpha[e, GROUP_OPS.index(op)] = 1.0
        return alpha

    normal = ["skip_connect" if e in STAGE2_NORMAL_SKIP else "sep_conv_3x3"
              for e in range(NUM_EDGES)]
    reduce = [next(op for op, edges in STAGE2_REDUCE.items() if e in edges)
              for e in range(NUM_EDGES)]
    return one_hot(normal), one_hot(reduce)


def configs(args: argparse.Namespace, device: torch.device, batch: list[torch.Tensor]
            ) -> tuple[dict[str, Callable[[], None]], dict[str, str]]:
    """One step closure per configuration (each with its own model), and a line on each."""
    from shared.search.cnn_search import SUPERNETS, CNNSearchConfig, make_alpha_update, search_space
    from shared.search.context import StepContext
    from stacnas.spaces import stage1_space, stage2_space

    s1 = stage1_space("groups")
    s2 = stage2_space(*stage1_alpha(), s1)
    common = dict(init_channels=args.init_channels, seed=args.seed)
    cfgs = {  # StacNAS' stages read their spaces as data, as its door saves them with the run
        "darts": CNNSearchConfig(search_space=args.darts_space, layers=args.darts_layers,
                                 alpha_update="bilevel", **common),
        "stage1": CNNSearchConfig(space_data=s1.to_dict(), layers=args.stage1_layers,
                                  alpha_update="one_level", train_portion=1.0, **common),
        "stage2": CNNSearchConfig(space_data=s2.to_dict(), layers=args.stage2_layers,
                                  alpha_update="one_level", train_portion=1.0, **common),
    }
    steps, info = {}, {}
    for name, cfg in cfgs.items():
        torch.manual_seed(args.seed)  # the same initial weights wherever the shapes agree
        family = SUPERNETS[cfg.supernet]
        space = search_space(cfg, family)
        model = family.build(cfg, space, 10, 3).to(device)
        alpha_update = make_alpha_update(cfg, model)
        loop = make_loop(model, device, alpha_update)
        # one-level steps get no validation batch: the loop must not need one
        val = batch[2:] if alpha_update.needs_valid_batch else [None, None]

        def step(loop=loop, model=model, val=val) -> None:
            loop.step(StepContext(loop, model, 10, 0, 0.025, batch[0], batch[1], *val, True))
        steps[name] = step
        info[name] = (f"{space.name} ({space.num_ops(False)} ops/edge), {cfg.layers} cells, "
                      f"{type(alpha_update).__name__}")
    return steps, info


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = random_batches(args, device)
    steps, info = configs(args, device, batch)
    result = time_row(steps, args, device)
    base = result["darts"]
    print(f"device {device}, torch threads {torch.get_num_threads()}, median of "
          f"{args.repeats} steps; C={args.init_channels}, {args.size}x{args.size}, "
          f"batch {args.batch}\n")
    print(f"{'configuration':<14} {'supernet':<56} {'ms/step':>9} {'step vs darts':>14} "
          f"{'epoch vs darts':>15}")
    for name, t in result.items():
        # StacNAS (train_portion 1) takes twice DARTS' steps per epoch
        epoch = t / base * (1 if name == "darts" else 2)
        print(f"{name:<14} {info[name]:<56} {t * 1e3:>9.1f} {t / base:>13.2f}x "
              f"{epoch:>14.2f}x")


if __name__ == "__main__":  # bad input: one line, no traceback
    from shared.errors import cli_entry

    cli_entry(main)()
