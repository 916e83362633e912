"""Λ-DARTS search on RobustDARTS' S1-S4 and the DARTS space (Lambda-DARTS
``sota/cnn/train_search.py``; Movahedi et al., ICLR'23).

    cd lambda_darts/sota/cnn && python train_search.py --corr_regularization corr \\
        --lambda_ 0.125 --epsilon_0 0.0001 --search_space s5 --dataset cifar10

Flags and defaults are the released script's: DARTS' search flags (batch 64, 50 epochs, C=16,
8 cells, SGD 0.025 -> 0.001 cosine, Adam 3e-4 for alpha, ``--unrolled``), ``--search_space s1``
(its default; s1-s5 of DARTS-PT's spaces and the 8-op ``darts`` space), ``--corr_regularization
none|corr|signcorr``, ``--lambda_ 0.125``, ``--epsilon_0 0.0001``; datasets cifar10, cifar100,
svhn and ``digits`` (embedded, no download). The regulariser is the engine's
``shared.search.alignment`` (``corr_regularization`` in the search config), so other doors can
turn it on too.

Additions, each said in ``--help``:

* ``--lambda_cells normal|all``: the released code aligns the normal cells only (the reduce
  cells' perturbation is hard-coded to 0); ``all`` aligns every cell. Default: ``normal``.
* ``--fresh_noise``: the ± passes draw new noise (S4's noise op), as the released code did; by
  default they replay the base pass's random state, so the finite difference is clean.
* ``--perturb_alpha random|pgd_linf`` (SDARTS-RS/ADV): the regulariser then aligns the
  gradients at the perturbed mixing weights, the ones the weight step trains on.
* ``--resume [RUN_DIR]`` (the original had none) and the runtime switches of every door.
* ``torchrun --nproc_per_node N train_search.py ...``: one search in N processes (the original
  ran on one GPU): ``--batch_size`` is the global batch, each rank computes its ``1/N`` of it,
  and α, the weights and BatchNorm's statistics move as one process with the whole batch
  (``shared.search.alignment``'s docstring says what is averaged); rank 0 writes the folder.

Differences from the released script: ``--lambda`` (argparse prefix matching made it mean
``--lambda_``) is refused with the flag's full name; a ramp over ``--epochs 1`` (a division by
zero there) and fewer than 2 aligned cells are refused; ``weights.pt`` every epoch is replaced
by the engine's checkpoint. Log lines as the original (``epoch %d lambda_ %e``, ``train_corr %f
valid_corr %f``), plus TensorBoard ``Corr/train``, ``Corr/valid`` (the released tags) and
``correlation.png``.
"""
from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from shared.cli.flags import add_alignment_flags, refuse_lambda_prefix  # noqa: E402
from shared.cli.run_folder import claim_run, main_process  # noqa: E402
from shared.cli.search_door import (  # noqa: E402
    build_search_parser,
    parse_search,
    search_config,
    sota_resume_pattern,
    sota_run_dir,
)
from shared.errors import cli_entry  # noqa: E402
from shared.spaces import SPACES  # noqa: E402


def build_parser():
    p = build_search_parser("train_search.py", batch_size=64, epochs=50, layers=8,
                            spaces=sorted(SPACES), default_space="s1")
    p.allow_abbrev = False  # the released --lambda only worked by prefix matching --lambda_
    add_alignment_flags(p)  # with --corr_regularization none, train_/valid_corr are recorded
    return p


run_dir = sota_run_dir  # the original's folder: search-{save}-{time}-{space}-{seed}...


@cli_entry
def main(argv: list[str] | None = None) -> None:
    refuse_lambda_prefix(sys.argv[1:] if argv is None else argv)
    args, save_dir, resumed = parse_search(build_parser(), argv, min_layers=3,
                                           pattern=sota_resume_pattern, new_dir=run_dir)
    from shared.models.search_cnn import kinds_of_cells
    from shared.search.alignment import regularised_cells
    from shared.search.cnn_search import make_alignment, run_cnn_search

    # train_corr and valid_corr are recorded with --corr_regularization none too, as released
    cfg = dataclasses.replace(search_config(args, "darts"), record_corr=True)
    make_alignment(cfg)  # before any folder is made: a ramp over one epoch, ...
    if args.corr_regularization != "none":  # ... fewer than 2 cells to align
        regularised_cells(kinds_of_cells(args.layers), args.lambda_cells)
    # under torchrun: a data-parallel search, rank 0 owns the folder (shared.search.data_parallel;
    # the regulariser averages its per-cell and ± gradients over the ranks)
    with claim_run(save_dir, root=args.experiments, new=not resumed,
                   data_parallel=True) as save_dir:
        if main_process():
            print(f"experiment folder: {save_dir}")
        genotype = run_cnn_search(cfg, save_dir, resume=resumed)
    if main_process():
        print(f"genotype = {genotype}")


if __name__ == "__main__":
    main()
