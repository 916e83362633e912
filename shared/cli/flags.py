"""Flag groups declared once per concept, each door passing only its own defaults:

* ``add_darts_search_flags``: DARTS ``cnn/train_search.py``'s flags, which SDARTS (``sota/cnn``,
  ``optimizers/darts``) and DARTS-PT (``sota/cnn``, ``nasbench201``) each copied;
* ``add_perturbation_flags``: SDARTS' ``--perturb_alpha`` / ``--epsilon_alpha`` (SDARTS' CNN,
  NB-1Shot1 and RNN searches, DARTS-PT's ``sdarts`` methods);
* ``add_gpu_flag``: ``--gpu N``, ``-1`` for the CPU, ``auto`` (DARTS-PT's default);
* ``add_runtime_flags``: what this repository adds to every long-running door (``--resume``,
  ``--experiments``, workers, AMP, channels-last, progress bars);
* ``add_plots_flag``: ``--no_plots``, for the doors that draw figures of a search;
* ``settings_suffix``: the folder-name suffixes the family's search scripts append;
* ``refuse_lambda_prefix``: the released Λ-DARTS scripts' ``--lambda``, named, not
  prefix-matched.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from shared.errors import UserError

# shared.search.perturbation.PERTURBATIONS' names (tests/test_cli.py holds them equal); the
# names alone, so declaring the flag does not import torch.
PERTURBATION_NAMES = ("none", "random", "pgd_linf")


def gpu_flag(value: str) -> int:
    """``--gpu``: an index, -1 for the CPU, or ``auto``: the first GPU (the CPU without CUDA,
    as every index does; DARTS-PT's gpustat look-up of the least used GPU is not done)."""
    if value == "auto":
        return 0
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a GPU index, -1 (CPU) or auto"
                                         ) from None


def add_gpu_flag(p: argparse.ArgumentParser, default: int | str = 0) -> None:
    p.add_argument("--gpu", type=gpu_flag, default=default,
                   help="gpu device id (-1: CPU; auto: the first GPU, else the CPU)")


def add_darts_search_flags(p: argparse.ArgumentParser, *, datasets: Sequence[str],
                           data: str = "../../data", batch_size: int = 64, epochs: int = 50,
                           layers: int | None = 8, gpu: int | str = 0,
                           save_help: str = "experiment name") -> None:
    """DARTS' search flags with a door's defaults (``layers=None``: the door has no
    ``--layers``, as DARTS-PT's NAS-Bench-201 search)."""
    p.add_argument("--data", type=str, default=data, help="location of the data corpus")
    p.add_argument("--dataset", type=str, default="cifar10", choices=list(datasets))
    p.add_argument("--batch_size", type=int, default=batch_size, help="batch size")
    p.add_argument("--learning_rate", type=float, default=0.025, help="init learning rate")
    p.add_argument("--learning_rate_min", type=float, default=0.001, help="min learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum")
    p.add_argument("--weight_decay", type=float, default=3e-4, help="weight decay")
    p.add_argument("--report_freq", type=int, default=50, help="report frequency (steps)")
    add_gpu_flag(p, gpu)
    p.add_argument("--epochs", type=int, default=epochs, help="num of training epochs")
    p.add_argument("--init_channels", type=int, default=16, help="num of init channels")
    if layers is not None:
        p.add_argument("--layers", type=int, default=layers, help="total number of layers")
    p.add_argument("--cutout", action="store_true", default=False, help="use cutout")
    p.add_argument("--cutout_length", type=int, default=16, help="cutout length")
    p.add_argument("--cutout_prob", type=float, default=1.0, help="cutout probability")
    p.add_argument("--save", type=str, default="exp", help=save_help)
    p.add_argument("--seed", type=int, default=2, help="random seed")
    p.add_argument("--grad_clip", type=float, default=5, help="gradient clipping")
    p.add_argument("--train_portion", type=float, default=0.5, help="portion of training data")
    p.add_argument("--unrolled", action="store_true", default=False,
                   help="second order: one-step unrolled validation loss")
    p.add_argument("--arch_learning_rate", type=float, default=3e-4,
                   help="learning rate for arch encoding")
    p.add_argument("--arch_weight_decay", type=float, default=1e-3,
                   help="weight decay for arch encoding")


def add_perturbation_flags(p: argparse.ArgumentParser) -> None:
    """SDARTS' perturbation of softmax(alpha) in the weight step
    (``shared.search.perturbation``)."""
    p.add_argument("--perturb_alpha", type=str, default="none", choices=PERTURBATION_NAMES,
                   help="none, random (SDARTS-RS) or pgd_linf (SDARTS-ADV)")
    p.add_argument("--epsilon_alpha", type=float, default=0.3, help="max epsilon for alpha")


def add_alignment_flags(p: argparse.ArgumentParser) -> None:
    """Λ-DARTS' regulariser (``shared.search.alignment``), with the released
    ``sota/cnn/train_search.py``'s defaults; any DARTS-space or NAS-Bench-201 search door can
    offer it (the search config's fields of the same names)."""
    p.add_argument("--corr_regularization", type=str, default="none",
                   choices=("none", "corr", "signcorr"),
                   help="Λ-DARTS' regulariser: corr (cosine) or signcorr; none: off")
    p.add_argument("--lambda_", type=float, default=0.125,
                   help="Λ-DARTS: strength λ (ramped as λ·epoch/(epochs-1))")
    p.add_argument("--epsilon_0", type=float, default=1e-4,
                   help="Λ-DARTS: norm of the finite-difference perturbation")
    p.add_argument("--lambda_cells", type=str, default="normal", choices=("normal", "all"),
                   help="Λ-DARTS: cells to align: normal (the released code; reduce cells are "
                        "not regularised; every cell where there is one kind) or all")
    p.add_argument("--fresh_noise", action="store_true", default=False,
                   help="Λ-DARTS: the ± passes draw new noise (the released code); default: "
                        "they replay the base pass's random state (a clean finite difference)")


def refuse_lambda_prefix(argv: Sequence[str]) -> None:
    """The released Λ-DARTS scripts pass ``--lambda``, which argparse's prefix matching took
    for ``--lambda_``; the doors turn prefix matching off and name the flag instead."""
    if any(a == "--lambda" or a.startswith("--lambda=") for a in argv):
        raise UserError("--lambda: the flag is --lambda_ (the released scripts passed --lambda, "
                        "which worked only through argparse's prefix matching)")


def add_runtime_flags(parser: argparse.ArgumentParser, resume_default_run: str,
                      num_workers: int, experiments: str = "../../experiments") -> None:
    """The flags every long-running door adds to its paper's: resume, outputs, speed switches."""
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                        help="continue a run from its last checkpoint (default: the one run "
                             f"with the same {resume_default_run}; several are listed, not "
                             "guessed)")
    parser.add_argument("--experiments", type=str, default=experiments,
                        help="root of the output folders")
    parser.add_argument("--num_workers", type=int, default=num_workers, help="DataLoader workers")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU)")
    parser.add_argument("--channels_last", action="store_true",
                        help="channels-last memory format")
    parser.add_argument("--no_progress", dest="progress", action="store_false",
                        help="no tqdm progress bars")


def add_plots_flag(parser: argparse.ArgumentParser) -> None:
    """``--no_plots``: a search draws no figures (``shared.search.outputs``); what they show
    stays in ``history.json`` and ``genotype.json``, which ``shared.plots`` draws from."""
    parser.add_argument("--no_plots", dest="plots", action="store_false",
                        help="draw no figures (alpha trajectories, accuracy or perplexity "
                             "curves, cell diagrams); history.json and genotype.json hold "
                             "what they show")


def add_data_on_device_flag(parser: argparse.ArgumentParser) -> None:
    """``--data_on_device`` / ``--no-data_on_device`` (shared.data.on_device); neither: on
    for a CUDA device where the data set allows it."""
    parser.add_argument("--data_on_device", action=argparse.BooleanOptionalAction, default=None,
                        help="hold the data set on the device and augment whole batches there "
                             "(default: on CUDA for CIFAR-10/100, SVHN and digits)")


def add_step_capture_flag(parser: argparse.ArgumentParser) -> None:
    """``--step_capture`` (shared.capture): the training step (search or evaluation) recorded
    as a CUDA graph and replayed; off by default."""
    parser.add_argument("--step_capture", choices=("off", "cuda_graph"), default="off",
                        help="cuda_graph: record the training step once per epoch as a CUDA "
                             "graph and replay it (CUDA only); a step that cannot be recorded "
                             "runs eagerly and the log says why")


def add_grouped_edges_flag(parser: argparse.ArgumentParser) -> None:
    """``--grouped_edges`` (``shared.models.grouped_edges``): a DARTS-space supernet runs the
    same-shaped convs of the edges leaving a cell state as one kernel per stage; off by
    default."""
    parser.add_argument("--grouped_edges", action="store_true",
                        help="run the separable and dilated convs of the edges that leave a "
                             "cell state together, one wide kernel per stage: fewer kernel "
                             "launches for a GPU (equal to the default path up to rounding; "
                             "on the CPU slower at batch 64)")


def add_grouped_ops_flag(parser: argparse.ArgumentParser) -> None:
    """``--grouped_ops`` (``shared.models.grouped_cell``): the final network runs each cell's
    same-shaped separable (or dilated) convs that read the same states as one kernel per
    stage; off by default."""
    parser.add_argument("--grouped_ops", action="store_true",
                        help="run each cell's same-shaped separable (or dilated) convs that "
                             "read the same states together, one wide kernel per stage "
                             "(DARTS_V2: the five of each normal cell): fewer kernel launches "
                             "for a GPU (equal to the default path up to rounding)")


def add_compile_flag(parser: argparse.ArgumentParser) -> None:
    """``--compile`` (shared.compile): the network compiled with torch.compile; off by
    default."""
    from shared.compile import COMPILE_MODES

    parser.add_argument("--compile", choices=COMPILE_MODES, default="off",
                        help="compile the network with torch.compile in this mode (fused "
                             "kernels; reduce-overhead adds its own CUDA graphs); the first "
                             "steps of each batch shape compile, which takes minutes")


def settings_suffix(args: argparse.Namespace) -> str:
    """The folder-name suffixes the DARTS family's search scripts append for non-default
    settings, in their order: -unrolled, -weight_l2-X, -alpha_l2-X, -cutout-L-P."""
    name = ""
    if args.unrolled:
        name += "-unrolled"
    if args.weight_decay != 3e-4:
        name += f"-weight_l2-{args.weight_decay}"
    if args.arch_weight_decay != 1e-3:
        name += f"-alpha_l2-{args.arch_weight_decay}"
    if args.cutout:
        name += f"-cutout-{args.cutout_length}-{args.cutout_prob}"
    return name
