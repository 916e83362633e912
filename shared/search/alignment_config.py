"""Λ-DARTS' regulariser from a search config's fields (Movahedi et al., ICLR'23; the released
``--corr_regularization``, ``--lambda_``, ``--epsilon_0`` and, in ``sota/rnn/train_search.py``,
``--lambda_scheduling``): which ``LayerAlignment`` a search gets, if any.

Kept apart from the searches that use it, so the recurrent search (``rnn_search``) turns the
regulariser on without importing the CNN search's supernets and data.
"""
from __future__ import annotations

from shared.errors import UserError
from shared.search.alignment import LayerAlignment
from shared.search.alignment_terms import REGULARIZERS

CHOICES = ("none", *REGULARIZERS)


def make_layer_alignment(corr_regularization: str, *, lambda_: float, epsilon_0: float,
                         epochs: int, cells: str, fresh_noise: bool = False,
                         record_corr: bool = False, schedule: bool = True, plot: bool = True
                         ) -> LayerAlignment | None:
    """The regulariser (``corr``/``signcorr``), only its records (``none`` with
    ``record_corr``: train_corr and valid_corr, the released ``--corr_regularization none``),
    or None. Refuses, as one UserError, a name it does not know, λ < 0, ε₀ <= 0 and a ramp
    over fewer than 2 epochs. ``plot``: draw ``correlation.png`` (``--no_plots``: not)."""
    if corr_regularization not in CHOICES:
        raise UserError(f"corr_regularization {corr_regularization!r}: one of "
                        f"{', '.join(CHOICES)}")
    if corr_regularization == "none" and not record_corr:
        return None
    if corr_regularization != "none":
        if not lambda_ >= 0:  # NaN fails too
            raise UserError(f"--lambda_ must be >= 0, got {lambda_}")
        if not epsilon_0 > 0:
            raise UserError(f"--epsilon_0 must be > 0, got {epsilon_0}")
    regularizer = None if corr_regularization == "none" else corr_regularization
    return LayerAlignment(regularizer, lambda_, epsilon_0, epochs, cells=cells,
                          fresh_noise=fresh_noise, schedule=schedule, plot=plot)
