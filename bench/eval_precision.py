"""Is bf16 autocast exact enough for evaluation training? Train one genotype on the embedded
digits in fp32 and with ``--amp`` (bf16 autocast; with ``--channels_last`` too) from the same
seed and data order, and print the loss curve and the final test accuracy of each, with the
time per epoch.

    python bench/eval_precision.py [--arch DARTS_V2] [--epochs 20] [--layers 6]
                                   [--init_channels 16] [--device cpu|cuda] [--threads N]

Every run uses the engine's evaluation (``shared.evaluation.run.run_evaluation``): auxiliary
head, Cutout 4, drop-path 0.2, DARTS' SGD and cosine schedule, batch 128. The columns are the
training loss per epoch (mean over the epoch's batches) and, last, the test accuracy of the
final epoch. The runs start from the same weights and draw the same batches; they differ only
in the arithmetic of the forward and backward passes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from shared.evaluation.config import EvalConfig  # noqa: E402
from shared.evaluation.run import run_evaluation  # noqa: E402
from shared.genotypes import load_genotype  # noqa: E402

PATHS = {"fp32": {}, "bf16": {"amp": True}, "bf16 + channels-last": {"amp": True,
                                                                     "channels_last": True}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="DARTS_V2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated: " + ", ".join(PATHS))
    args = p.parse_args(argv)
    if args.threads:  # kept by run_evaluation, which otherwise takes half the cores
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    genotype = load_genotype(args.arch)
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for name in args.paths.split(","):
            cfg = EvalConfig(dataset="digits", epochs=args.epochs, layers=args.layers,
                             init_channels=args.init_channels, batch_size=128, auxiliary=True,
                             cutout=True, cutout_length=4, seed=0, num_workers=0,
                             progress=False, gpu=0 if args.device == "cuda" else -1,
                             report_freq=1000, arch=args.arch, **PATHS[name])
            folder = os.path.join(root, name.replace(" ", ""))
            start = time.perf_counter()
            run_evaluation(cfg, genotype, folder)
            seconds = (time.perf_counter() - start) / args.epochs
            with open(os.path.join(folder, "history.json")) as f:
                history = json.load(f)
            results[name] = ([h["train_loss"] for h in history], history[-1]["valid_acc"],
                             seconds)
    print(f"{args.arch}, {args.layers} cells, C={args.init_channels}, digits, batch 128, "
          f"{args.epochs} epochs, device {args.device}, {torch.get_num_threads()} threads")
    shown = sorted({0, args.epochs // 4, args.epochs // 2, 3 * args.epochs // 4,
                    args.epochs - 1})
    print(f"{'path':<22}" + "".join(f" {'loss@' + str(e):>9}" for e in shown)
          + f" {'test acc':>9} {'s/epoch':>8}")
    for name, (losses, acc, seconds) in results.items():
        print(f"{name:<22}" + "".join(f" {losses[e]:>9.4f}" for e in shown)
              + f" {acc:>9.2f} {seconds:>8.1f}")


if __name__ == "__main__":  # bad input: one line, no traceback
    from shared.errors import cli_entry

    cli_entry(main)()
