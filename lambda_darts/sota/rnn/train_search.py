"""Λ-DARTS search of the recurrent cell on Penn Treebank (Lambda-DARTS
``sota/rnn/train_search.py``, ``sota/rnn/model_search.py``; Movahedi et al., ICLR'23).

    cd lambda_darts/sota/rnn && python train_search.py --lambda_scheduling --gpu=0 \\
        --nhid=200 --nhidlast=200 --emsize=200 --lambda_=0.25 --epsilon_0=0.001
    bash run.sh [more flags]      # the released run.sh: the command above, "$@" appended

DARTS' recurrent search (``sdarts/sota/rnn/train_search.py``'s flags and defaults: emsize =
nhid = nhidlast 300, SGD lr 20, clip 0.25, 50 epochs, batch 256, bptt 35, dropouts
0.75/0.25/0.75/0.2/0, TAR 1e-3, Adam 3e-3 for alpha, seed 3) with 2 stacked search cells that
share alpha and Λ-DARTS' layer alignment over them: with g_l = dL/dA_l the gradient layer l
sends to its copy of softmax(alpha), Λ = cos(g_1, g_2); the weight step adds λ (g₋ - g₊) / 2ε
from two more passes at A_l ∓ εp_l, p_l = dΛ/dg_l, ε = ε₀/‖p‖, before the clip (the engine's
``shared.search.alignment``, turned on by the search config). ``--data embedded`` searches on
the corpus built from Python's own documentation (no download).

Flags (the released ones first):

* ``--lambda_`` (0.1), ``--epsilon_0`` (0.05): the released argparse defaults;
* ``--lambda_scheduling``: λ_e = λ·e/(E-1), e = 0..E-1; without it λ is constant (released);
* ``--corr_regularization none|corr|signcorr`` (default ``corr``: the released search always
  regularises with the cosine; ``none`` only records train_corr/valid_corr, ``signcorr`` the
  CNN code's sign-correlation);
* ``--nlayers`` (2; the released model hard-codes 2 cells; 1 is DARTS' model, allowed with
  ``--corr_regularization none`` only);
* ``--fresh_noise``: the ± passes draw new dropout masks; by default they replay the base
  pass's random state, so they see exactly its masks (a clean finite difference);
* ``--perturb_alpha random|pgd_linf``, ``--epsilon_alpha`` (SDARTS-RS/ADV): the gradients
  aligned are those at the perturbed mixing weights the weight step trains on;
* ``--unrolled`` (second order): ``valid_corr`` then comes from the unrolled validation loss;
* ``--resume [RUN_DIR]``, ``--experiments``, ``--no_progress``, ``--no_plots`` as on every
  search door.

Outputs in ``{experiments}/sota/penn/search-{save}-{time}[-unrolled][-lmdaSch]`` (the released
name; then ``-alpha-{perturb}-{eps}``, ``-{corr_regularization}`` when not ``corr``)
``-{random}-lmda{λ}-epszero{ε₀}``: ``log.txt`` (``epoch %d lambda_ %e``, ``train_corr %f
valid_corr %f``, ``train_ppl``/``valid_ppl``, the genotype per epoch), ``history.json``
(``train_corr``, ``valid_corr``, ``lambda``), ``genotype.json``, TensorBoard (``Corr/train``,
``Corr/valid``), ``correlation.png``, ``alpha_trajectories.png``, ``perplexity.png``.

Faults of the released code, fixed here (what it intends):

1. it crashes on its first step: ``grads_norm``, an AverageMeter, is rebound to a list of norms
   and its ``.update`` raises AttributeError;
2. the layer gradients g_l were read from the last time step only (each cell re-stores its
   softmax(alpha) at every step) while the perturbation acts at every step; here g_l is the
   gradient over all the window's steps (one leaf per layer, used at every step);
3. dropout: the embedding's dropped output was stored detached (the embedding learnt through
   the tied decoder only) and fed the forward, and in the ± passes the one shared
   LockedDropout replayed its last mask, the output-dropout mask, on the embedding too; here
   the embedding is not detached and the ± passes replay the base pass's random state, so
   each sees exactly the base pass's masks;
4. both layers started from the first layer's hidden state (the second from the first layer's
   state after the window); here each layer carries its own;
5. epochs counted from 1 in the ramp, so λ_t ran from λ/(E-1) to λ·E/(E-1) > λ; here
   λ·e/(E-1), e = 0..E-1 (the CNN code's ramp).

Other differences: the ± passes and the clip as released (NLL only, from the step's starting
hidden state, on its training window; nothing added when ‖p‖ = 0; clip 0.25 after the
regulariser), but no output-dropout mask is drawn between the layers (the released code drew
one and discarded it; layer 2 reads layer 1's undropped output, as there); ``valid_corr`` (the
layers' validation gradients from the alpha step) is recorded, which the released RNN code did
not; ``--lambda`` (argparse prefix matching) is refused naming ``--lambda_``;
``--lambda_scheduling`` with ``--epochs 1`` (a division by zero) and fewer than 2 layers with a
regulariser are refused; ``--small_batch_size`` other than the batch size and
``--continue_train`` are refused as on SDARTS' door; the engine's checkpoint every epoch
replaces the released best-validation ``model.pt``/``optimizer.pt``; a window's length is drawn
from the run's own generator, so a resumed run is bit-identical.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli.flags import refuse_lambda_prefix  # noqa: E402
from shared.cli.lm_flags import (  # noqa: E402
    SEARCH_HELPS,
    add_rnn_search_flags,
    build_lm_parser,
    check_rnn_search_flags,
)
from shared.cli.parser import ArgumentParser, parse  # noqa: E402
from shared.cli.rnn_search_door import run_rnn_search_door  # noqa: E402
from shared.errors import UserError, cli_entry  # noqa: E402

# the names only (no torch at parse time): shared.search.alignment_config.CHOICES
REGULARIZERS = ("none", "corr", "signcorr")


def build_parser() -> ArgumentParser:
    p = build_lm_parser("train_search.py", emsize=300, epochs=50, batch_size=256, dropoute=0,
                        seed=3, log_interval=50, wdecay=5e-7, helps=SEARCH_HELPS,
                        resume_default_run="--save/--seed")
    p.allow_abbrev = False  # the released --lambda only worked by prefix matching --lambda_
    add_rnn_search_flags(p)
    p.add_argument("--nlayers", type=int, default=2,
                   help="stacked search cells sharing alpha (the released model: 2)")
    p.add_argument("--corr_regularization", type=str, default="corr", choices=REGULARIZERS,
                   help="Λ-DARTS' regulariser: corr (cosine, the released search), signcorr; "
                        "none: only train_corr/valid_corr are recorded")
    p.add_argument("--lambda_", type=float, default=0.1, help="Λ-DARTS: strength λ")
    p.add_argument("--epsilon_0", type=float, default=0.05,
                   help="Λ-DARTS: norm of the finite-difference perturbation")
    p.add_argument("--lambda_scheduling", action="store_true", default=False,
                   help="ramp λ as λ·epoch/(epochs-1), epoch from 0 (default: constant λ)")
    p.add_argument("--fresh_noise", action="store_true", default=False,
                   help="the ± passes draw new dropout masks; default: they replay the base "
                        "pass's random state (its masks)")
    return p


def run_dir(args: argparse.Namespace) -> str:
    """The released folder name, with this repository's additions before its random part."""
    name = f"search-{args.save}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.unrolled:
        name += "-unrolled"
    if args.lambda_scheduling:
        name += "-lmdaSch"
    if args.perturb_alpha != "none":
        name += f"-alpha-{args.perturb_alpha}-{args.epsilon_alpha}"
    if args.corr_regularization != "corr":
        name += f"-{args.corr_regularization}"
    name += f"-{int.from_bytes(os.urandom(2), 'little') % 10000}"
    name += f"-lmda{args.lambda_}-epszero{args.epsilon_0}"
    return os.path.join(args.experiments, "sota", "penn", name)


def validate(args: argparse.Namespace) -> None:
    check_rnn_search_flags(args)  # λ >= 0 and ε₀ > 0 are checked there by name
    if args.nlayers < 1:
        raise UserError(f"--nlayers must be >= 1, got {args.nlayers}")
    if args.corr_regularization != "none" and args.nlayers < 2:
        raise UserError(f"Λ-DARTS aligns the gradients of at least 2 stacked cells; --nlayers "
                        f"is {args.nlayers}: pass --nlayers 2 (the released search) or "
                        "--corr_regularization none")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    refuse_lambda_prefix(sys.argv[1:] if argv is None else argv)
    args, typed = parse(build_parser(), argv)
    validate(args)
    from shared.search.rnn_search import rnn_alignment

    # train_corr and valid_corr are recorded with --corr_regularization none too; a ramp over
    # one epoch, ... is refused before any folder is made
    run_rnn_search_door(args, typed, new_dir=run_dir, record_corr=True, check=rnn_alignment)


if __name__ == "__main__":
    main()
