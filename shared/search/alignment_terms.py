"""Λ-DARTS' layer-alignment terms and their gradients (Movahedi et al., "Λ-DARTS: Mitigating
Performance Collapse by Harmonizing Operation Selection among Cells", ICLR'23, sec. 3; the
released ``sota/cnn/model_search.py``: ``get_corr``, ``get_perturbations``).

DARTS' cells share one alpha, yet the gradient each cell l sends to its mixing weights A_l,
g_l = dL/dA_l (flattened, E·|O| numbers), points its own way; Λ measures how much they agree:

* ``corr``: Λ_cos = (1/P) Σ_{i<j} cos(g_i, g_j), P = L(L-1)/2 pairs of the L regularised cells;
  dΛ/dg_l = p_l = (1/P) (I - u_l u_lᵀ) Σ_j u_j / ‖g_l‖ with u_j = g_j / ‖g_j‖ (the j = l term
  vanishes). The released code builds the E|O| x E|O| matrix I - u uᵀ; here it is one dot
  product, p_l = (s - u_l (u_l · s)) / (P ‖g_l‖) with s = Σ_j u_j.
* ``signcorr``: Λ_sign = (1/P) Σ_{i<j} (g_i · g_j) / (|g_i| · |g_j|), where |g_i| · |g_j| is the
  dot product of the absolute values; p_i = (1/P) Σ_{j≠i} [g_j - c_ij sign(g_i) ⊙ |g_j|] / d_ij
  with d_ij = |g_i| · |g_j| and c_ij = (g_i · g_j) / d_ij (the released formula, rewritten:
  (1 - c_ij sign(g_i) ⊙ sign(g_j)) ⊙ g_j = g_j - c_ij sign(g_i) ⊙ |g_j|).

Both p's equal autograd's dΛ/dg_l (``tests/test_lambda_regularizer.py``). A cell whose gradient
is zero has no direction: the released code divides by zero there; here it is refused, at once
(a ``UserError``) where these are called as they are, or, with ``check=False`` (the search
step's calls, which read nothing back from the device), by the caller: the values are then NaN
and ``undefined(grads)`` is the device flag that says so (``shared.search.alignment`` refuses
the epoch at its end).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from shared.errors import UserError

Grads = Sequence[torch.Tensor]


def _pairs(grads: Grads) -> int:
    L = len(grads)
    if L < 2:
        raise UserError(f"Λ-DARTS aligns the gradients of at least 2 cells; {L} is regularised "
                        "(more --layers, or --lambda_cells all)")
    return L * (L - 1) // 2


ZERO_GRADIENT = ("a regularised cell has a zero gradient: Λ-DARTS' directions are undefined "
                 "there (the released code divides by zero)")


def _norms(g: torch.Tensor) -> torch.Tensor:
    return g.norm(dim=1)


def undefined(grads: Grads) -> torch.Tensor:
    """A 0-dim bool tensor, no host read: some gradient's norm is not > 0 (zero, or NaN), the
    case the functions below refuse (``check=True``) or give NaN for (``check=False``)."""
    return ~(_norms(torch.stack([x.reshape(-1) for x in grads])) > 0).all()


def _units(grads: Grads, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(the gradients stacked as rows, their norms); ``check``: refuse a zero gradient (a read
    of the device)."""
    g = torch.stack([x.reshape(-1) for x in grads])
    norms = _norms(g)
    if check and not bool((norms > 0).all()):
        raise UserError(ZERO_GRADIENT)
    return g, norms


def corr(grads: Grads, check: bool = True) -> torch.Tensor:
    """Λ_cos: the mean cosine similarity over pairs of cells (the log's train_/valid_corr)."""
    P = _pairs(grads)
    g, norms = _units(grads, check)
    u = g / norms[:, None]
    s = u.sum(0)
    return ((s @ s) - len(grads)) / (2 * P)  # Σ_{i<j} u_i·u_j = (‖Σu‖² - L) / 2


def corr_directions(grads: Grads, check: bool = True) -> list[torch.Tensor]:
    """p_l = dΛ_cos/dg_l for every cell, shaped like ``grads``."""
    P = _pairs(grads)
    g, norms = _units(grads, check)
    u = g / norms[:, None]
    s = u.sum(0)
    p = (s[None, :] - u * (u @ s)[:, None]) / (P * norms[:, None])
    return [row.reshape(x.shape) for row, x in zip(p, grads)]


def signcorr(grads: Grads, check: bool = True) -> torch.Tensor:
    """Λ_sign: the mean over pairs of (g_i · g_j) / (|g_i| · |g_j|)."""
    P = _pairs(grads)
    g, _ = _units(grads, check)
    dots, absdots = g @ g.T, g.abs() @ g.abs().T
    i, j = torch.triu_indices(len(grads), len(grads), 1)
    return (dots[i, j] / absdots[i, j]).sum() / P


def signcorr_directions(grads: Grads, check: bool = True) -> list[torch.Tensor]:
    """p_i = dΛ_sign/dg_i for every cell, shaped like ``grads``."""
    P = _pairs(grads)
    g, _ = _units(grads, check)
    dots, absdots = g @ g.T, g.abs() @ g.abs().T
    out = []
    for i in range(len(grads)):
        p = torch.zeros_like(g[i])
        for j in range(len(grads)):
            if j != i:
                c = dots[i, j] / absdots[i, j]
                p = p + (g[j] - c * g[i].sign() * g[j].abs()) / absdots[i, j]
        out.append((p / P).reshape(grads[i].shape))
    return out


# name -> (Λ, dΛ/dg): the released --corr_regularization choices
REGULARIZERS: dict[str, tuple[Callable[..., torch.Tensor],
                              Callable[..., list[torch.Tensor]]]] = {
    "corr": (corr, corr_directions),
    "signcorr": (signcorr, signcorr_directions),
}
