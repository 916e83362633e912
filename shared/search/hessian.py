"""The Hessian of the validation loss with respect to all architecture parameters, and its
dominant eigenvalue (SmoothDARTS ``optimizers/analyze.py``).

SDARTS monitors it after every NAS-Bench-1Shot1 epoch: a large dominant eigenvalue means a
sharp validation loss in alpha, where discretising alpha costs accuracy (Zela et al.); SDARTS'
perturbations are meant to keep it small. It is only logged, never fed back into the search.

As released: the loss is L_val on the epoch's last alpha batch, the arch weight decay is part
of the objective (so H + wd * I), and the Hessian is built row by row by double backprop.
Here the model's buffers (BatchNorm running statistics) are restored afterwards, so measuring
does not change the search, and H is symmetrised before ``eigvalsh``: the exact Hessian is
symmetric, and the original's general ``eigvals`` could return a complex maximum from
round-off asymmetry. A compiled supernet (``--compile``) runs this forward eagerly: double
backprop does not go through the backward ``torch.compile`` derives.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from shared.compile import compiled
from shared.models.global_batch_norm import local_batch_norm
from shared.search.tensor_lists import restored


def alpha_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  arch_weight_decay: float = 0.0) -> torch.Tensor:
    """d^2 (L(x, y) + wd/2 ||alpha||^2) / d alpha^2 over all of ``model.arch_parameters()``
    flattened in order; an (n x n) float64 tensor on the CPU."""
    alphas = list(model.arch_parameters())
    with restored(model.buffer_list()):  # the passes' BN statistics do not stay
        # torch._dynamo's import (~3 s) only where the network is compiled
        eager = torch.compiler.set_stance("force_eager") if compiled(model) else nullcontext()
        with eager:
            loss = model.loss(x, y)
        grads = torch.autograd.grad(loss, alphas, create_graph=True)
        g = torch.cat([gi.reshape(-1) for gi in grads])
        g = g + arch_weight_decay * torch.cat([a.reshape(-1) for a in alphas])
        rows = []
        for i in range(g.numel()):
            row = torch.autograd.grad(g[i], alphas, retain_graph=i + 1 < g.numel(),
                                      allow_unused=True)
            rows.append(torch.cat([(r if r is not None else torch.zeros_like(a)).reshape(-1)
                                   for r, a in zip(row, alphas)]))
        return torch.stack(rows).detach().to("cpu", torch.float64)


def dominant_eigenvalue(hessian: torch.Tensor) -> float:
    """|largest eigenvalue| of the (symmetrised) Hessian, the number SDARTS logs."""
    h = 0.5 * (hessian + hessian.T)
    return abs(float(torch.linalg.eigvalsh(h)[-1]))


def eigenvalue_hook(arch_weight_decay: float):
    """An epoch-end hook for ``SearchLoop``: the dominant eigenvalue on the epoch's last alpha
    batch, in train mode as the original measures it (right after the epoch's last step),
    logged and stored in the epoch's history entry as ``hessian_eigenvalue``.

    In a data-parallel search every rank gathers the global batch from the ranks' shards and
    computes the one-process Hessian on it, BatchNorm on that batch's own statistics
    (``local_batch_norm``): the gathered statistics' backward cannot be differentiated again,
    and the ranks compute at once, so it costs what one process's would."""

    def hook(ctx) -> None:
        loop = ctx.loop
        if loop.last_valid_batch is None:  # no step ran this epoch
            return
        dp = loop.data_parallel
        x, y = (dp.gather_rows(t) for t in loop.last_valid_batch)
        was_training = loop.model.training
        loop.model.train()
        try:
            with local_batch_norm(loop.model):
                ev = dominant_eigenvalue(alpha_hessian(loop.model, x, y, arch_weight_decay))
        finally:
            loop.model.train(was_training)
        loop.logger.info("eigenvalue %f", ev)
        ctx.entry["hessian_eigenvalue"] = ev
    return hook
