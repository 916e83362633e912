"""Compose a recurrent-cell search from a config (the RNN counterpart of ``cnn_search``):
corpus, search model, optimisers, ``RNNSearchLoop`` and its outputs (log, TensorBoard,
``history.json``, ``genotype.json``, plots), run or resumed.

As DARTS' ``rnn/train_search.py``: the training split is batchified at ``batch_size``, the
validation split twice, at ``batch_size`` (the alpha batches) and at 10 (the epoch's
perplexity); weights take plain SGD (``lr`` 20, ``wdecay``), the lr stays constant.

``nlayers`` stacks search cells that share alpha (Λ-DARTS' RNN search: 2); with
``corr_regularization`` (``corr``/``signcorr``) or ``record_corr`` the config attaches Λ-DARTS'
layer alignment (``shared.search.alignment``) over every layer, λ constant or, with
``lambda_scheduling``, ramped as λ·e/(E-1) (Lambda-DARTS ``sota/rnn/train_search.py``). The
fields' defaults are SDARTS' search (1 layer, no regulariser), so its configs and checkpoints
run and resume as before.

Under ``torchrun --nproc_per_node N`` the search is data-parallel (``RNNSearchLoop``): each
process carries ``batch_size / N`` of the sequences, and alpha and the weights move as in one
process with all of them.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from shared.data.text import batchify, load_corpus
from shared.errors import UserError
from shared.models.search_rnn import RNNModelSearch
from shared.rnn_genotype import RNNGenotype
from shared.runtime import choose_device, cpu_threads, seed_everything, seeded_generator
from shared.search.alignment import LayerAlignment
from shared.search.alignment_config import make_layer_alignment
from shared.search.data_parallel import ONE_PROCESS, DataParallel
from shared.search.perturbation import make_perturbation
from shared.search.phase import run_phase
from shared.search.process import CHECKPOINT, check_data_parallel, search_process
from shared.search.rnn_architect import RNNArchitect
from shared.search.rnn_loop import RNNSearchLoop
from shared.spaces import RNNSpace


@dataclass
class RNNSearchConfig:
    data: str = "../../data/penn/"
    emsize: int = 300
    nhid: int = 300
    nhidlast: int = 300
    lr: float = 20.0
    clip: float = 0.25
    epochs: int = 50
    batch_size: int = 256
    bptt: int = 35
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.0
    seed: int = 3
    log_interval: int = 50
    alpha: float = 0.0
    beta: float = 1e-3
    wdecay: float = 5e-7
    gpu: int = 0
    unrolled: bool = False
    arch_wdecay: float = 1e-3
    arch_lr: float = 3e-3
    progress: bool = True
    plots: bool = True  # the figures of shared.search.outputs (--no_plots: none)
    max_batches: int | None = None  # per epoch ('debug' runs: 1)
    perturb_alpha: str = "none"  # SDARTS: none | random | pgd_linf (shared.search.perturbation)
    epsilon_alpha: float = 0.3
    nlayers: int = 1  # stacked search cells sharing alpha (Λ-DARTS: 2)
    # Λ-DARTS (shared.search.alignment): none | corr | signcorr over all layers; record_corr:
    # train_corr/valid_corr without the regulariser; lambda_scheduling: λ·e/(E-1), else constant
    corr_regularization: str = "none"
    lambda_: float = 0.1
    epsilon_0: float = 0.05
    lambda_scheduling: bool = False
    fresh_noise: bool = False
    record_corr: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # method flags, logged and saved


def rnn_alignment(cfg: RNNSearchConfig) -> LayerAlignment | None:
    """Λ-DARTS' layer alignment as the config asks (None: off); refuses, as one UserError,
    settings it cannot run (fewer than 2 layers to align, a ramp over one epoch, λ < 0,
    ε₀ <= 0), so a door can check them before it makes a folder."""
    if cfg.corr_regularization != "none" and cfg.nlayers < 2:
        raise UserError(f"Λ-DARTS aligns the gradients of at least 2 stacked cells; "
                        f"--nlayers is {cfg.nlayers}: pass --nlayers 2 (the released search)")
    return make_layer_alignment(cfg.corr_regularization, lambda_=cfg.lambda_,
                                epsilon_0=cfg.epsilon_0, epochs=cfg.epochs, cells="all",
                                fresh_noise=cfg.fresh_noise, record_corr=cfg.record_corr,
                                schedule=cfg.lambda_scheduling, plot=cfg.plots)


def build_rnn_search(cfg: RNNSearchConfig, save_dir: str, logger, *,
                     weight_grad_hooks: list[Callable] | None = None,
                     data_parallel: DataParallel = ONE_PROCESS,
                     device: torch.device | None = None) -> RNNSearchLoop:
    """Corpus, search model, optimisers and the loop of a search in ``save_dir`` (nothing run
    yet). ``data_parallel``: this process's rank in a data-parallel search (``run_rnn_search``
    under torchrun; ``device`` is then the rank's); a caller that did not set one up is refused
    under torchrun."""
    check_data_parallel(data_parallel, cfg.batch_size)
    device = device or choose_device(cfg.gpu)
    seed_everything(cfg.seed)
    logger.info("device = %s", device)
    logger.info("cpu threads = %d", cpu_threads())
    logger.info("args = %s", asdict(cfg))
    corpus = load_corpus(cfg.data, os.path.dirname(os.path.normpath(cfg.data)))
    train = batchify(corpus.train, cfg.batch_size, device)
    search = batchify(corpus.valid, cfg.batch_size, device)
    valid = batchify(corpus.valid, 10, device)
    ntokens = len(corpus.dictionary)
    logger.info("corpus %s: %d words, train %d / valid %d tokens", cfg.data, ntokens,
                corpus.train.numel(), corpus.valid.numel())
    model = RNNModelSearch(ntokens, cfg.emsize, cfg.nhid, cfg.nhidlast, cfg.dropout,
                           cfg.dropouth, cfg.dropoutx, cfg.dropouti, cfg.dropoute,
                           nlayers=cfg.nlayers).to(device)
    logger.info("param size: %d", sum(p.numel() for p in model.weight_parameters()))
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=cfg.lr, weight_decay=cfg.wdecay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)  # constant lr
    architect = RNNArchitect(model, cfg.arch_lr, cfg.arch_wdecay, cfg.wdecay, cfg.clip,
                             cfg.unrolled)
    g = seeded_generator(cfg.seed)
    loop = RNNSearchLoop(
        model=model, optimizer=optimizer, scheduler=scheduler, alpha_update=architect,
        train_queue=train, valid_queue=search, valid_eval_queue=valid, epochs=cfg.epochs,
        device=device, logger=logger, checkpoint_path=os.path.join(save_dir, CHECKPOINT),
        grad_clip=cfg.clip, report_freq=cfg.log_interval,
        perturbation=make_perturbation(cfg.perturb_alpha, cfg.epsilon_alpha, cfg.epochs),
        weight_grad_hooks=list(weight_grad_hooks or []), generators=(g,), config=asdict(cfg),
        progress=cfg.progress and data_parallel.is_main, max_batches=cfg.max_batches,
        bptt=cfg.bptt, ar_alpha=cfg.alpha, tar_beta=cfg.beta, batch_size=cfg.batch_size,
        data_parallel=data_parallel)
    alignment = rnn_alignment(cfg)
    if alignment is not None:
        alignment.attach(loop)
    return loop


def run_rnn_search(cfg: RNNSearchConfig, save_dir: str, *, resume: bool = False,
                   weight_grad_hooks: list[Callable] | None = None) -> RNNGenotype:
    """Run (or continue) a recurrent-cell search in ``save_dir``; returns the genotype. Under
    torchrun the search is data-parallel (``shared.search.process``)."""
    with search_process(cfg.gpu, cfg.batch_size, save_dir, resume) as run:
        logger = run.logger
        loop = build_rnn_search(cfg, run.save_dir, logger, weight_grad_hooks=weight_grad_hooks,
                                data_parallel=run.data_parallel, device=run.device)
        if run.state is not None:
            loop.load_state_dict(run.state)
            logger.info("resumed from %s at epoch %d", loop.checkpoint_path, loop.start_epoch)
        genotype = run_phase(loop, run.save_dir, RNNSpace(), cfg,
                             finish=lambda genotype, writer: {"data": cfg.data})
        logger.info("outputs in %s", os.path.abspath(run.save_dir))
        return genotype
