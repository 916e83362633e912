"""DARTS' ``test.py``: the top-1 / top-5 test accuracy of saved weights, and loading them
(a ``weights.pt`` or a ``checkpoint.pth.tar``, with ``weights_only=True``)."""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from shared import data as D
from shared.checkpoint import load_checkpoint
from shared.errors import UserError
from shared.evaluation.config import KIND, TestConfig
from shared.genotypes import Genotype
from shared.logs import DATE_FORMAT, LOG_FORMAT, AverageMeter, accuracy
from shared.models.cnn import build_final_network, count_parameters
from shared.runtime import choose_device, cpu_threads, seed_everything, to_device


def _stdout_logger() -> logging.Logger:
    """test.py logs to stdout only, as DARTS' test.py."""
    logger = logging.getLogger("darts.test")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt=DATE_FORMAT))
    logger.addHandler(handler)
    return logger


def load_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, saved config or {}) from a ``weights.pt`` or a ``checkpoint.pth.tar``.

    The ``module.`` prefix of weights saved from (Distributed)DataParallel is dropped, so
    DARTS-style released weights load as well. A search (supernet) checkpoint or a recurrent
    model is named as such, never reported as weights that merely do not fit.
    """
    if not os.path.isfile(path):
        raise UserError(f"--model_path {path!r} does not exist; pass the weights.pt or "
                        f"checkpoint.pth.tar of a train.py run")
    try:
        state = load_checkpoint(path)
    except UserError as exc:  # corrupt, foreign, or pickled code (never run): one line
        raise UserError(f"--model_path: {exc}") from None
    config: dict[str, Any] = {}
    kind = state.get("kind")
    if kind is None and isinstance(state.get("state_dict"), dict) and \
            _is_search_checkpoint(state):
        raise UserError(f"--model_path {path!r} is a search (supernet) checkpoint, not a "
                        f"trained network's weights: evaluate a genotype with train.py first "
                        f"(--arch RUN/genotype.json of that search), then test its weights.pt")
    if kind is not None and kind != KIND:
        other = " (a recurrent cell's: test it with sdarts/sota/rnn/test.py)" \
            if str(kind).startswith("rnn") else ""
        raise UserError(f"--model_path {path!r} is a {kind!r} checkpoint{other}, not the "
                        f"weights.pt or checkpoint.pth.tar of a CNN train.py run")
    if isinstance(state.get("state_dict"), dict):
        config = state.get("config") or {}
        state = state["state_dict"]
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--model_path {path!r} holds no model weights (expected a state_dict "
                        f"or a checkpoint with one)")
    weights = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if _is_search_checkpoint({"state_dict": weights}):
        raise UserError(f"--model_path {path!r} holds a supernet's weights (architecture "
                        f"parameters alpha among them), not a trained network's: evaluate a "
                        f"genotype with train.py first, then test its weights.pt")
    return weights, config


def _is_search_checkpoint(state: dict[str, Any]) -> bool:
    """Whether ``state`` is what a search of this project checkpoints: it has an
    ``arch_optimizer`` entry (None for a fixed alpha), and alpha among the supernet's
    parameters (DARTS' ``alphas_normal``/``alphas_reduce``, NAS-Bench-201's ``alpha``,
    NAS-Bench-1Shot1's ``alphas_mixed_op``..., or an ``_arch_parameters`` list)."""
    if "arch_optimizer" in state:
        return True
    keys = state.get("state_dict") or {}
    return any(k.split(".")[0].startswith("alpha") or "_arch_parameters" in k for k in keys)


def fit_weights(net: nn.Module, weights: dict[str, torch.Tensor], what: str,
                config: dict[str, Any]) -> None:
    """Load ``weights`` into ``net``, or say plainly why they do not fit (wrong flags)."""
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if not (missing or unexpected or shapes):
        net.load_state_dict(weights)
        return
    parts = [f"{len(keys)} {label}" for keys, label in ((missing, "missing"),
             (unexpected, "unexpected"), (shapes, "with other shapes")) if keys]
    if shapes:
        k = shapes[0]
        parts.append(f"e.g. {k}: {tuple(weights[k].shape)} in the file vs "
                     f"{tuple(own[k].shape)} here")
    elif missing or unexpected:
        parts.append(f"e.g. {(missing or unexpected)[0]}")
    hint = ""
    if config:
        hint = (f" The checkpoint was trained with --arch {config.get('arch')} --dataset "
                f"{config.get('dataset')} --init_channels {config.get('init_channels')} "
                f"--layers {config.get('layers')}.")
    raise UserError(f"the weights in {what} do not match this network ({'; '.join(parts)}); "
                    f"pass the --arch/--init_channels/--layers/--dataset it was trained "
                    f"with.{hint}")


def run_test(cfg: TestConfig, genotype: Genotype) -> tuple[float, float]:
    """DARTS' test.py: top-1 / top-5 of saved weights on the test split."""
    logger = _stdout_logger()
    device = choose_device(cfg.gpu)
    seed_everything(cfg.seed)
    logger.info("gpu device = %s", device)
    logger.info("cpu threads = %d", cpu_threads())
    logger.info("args = %s", asdict(cfg))
    weights, config = load_weights(cfg.model_path)
    # The auxiliary head is unused at test time; build it when the file has one so that
    # weights trained with --auxiliary load whether or not the flag is repeated here.
    has_aux = any(k.startswith("auxiliary_head.") for k in weights)
    if cfg.auxiliary and not has_aux:
        raise UserError(f"--auxiliary: {cfg.model_path} has no auxiliary head (it was trained "
                        f"without --auxiliary); drop the flag")
    net = build_final_network(genotype, cfg.dataset, cfg.init_channels, cfg.layers, has_aux)
    fit_weights(net, weights, cfg.model_path, config)
    logger.info("param size = %fMB", count_parameters(net) / 1e6)
    net = net.to(device)
    net.drop_path_prob = cfg.drop_path_prob  # inactive in eval mode, kept as the original
    test_data = D.get_dataset(cfg.dataset, cfg.data, train=False,
                              transform=D.eval_transform(cfg.dataset))
    queue = DataLoader(test_data, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                       pin_memory=device.type == "cuda")
    top1, top5 = _test_loop(net, queue, device, cfg.report_freq, logger)
    logger.info("test_acc %f", top1)
    return top1, top5


@torch.no_grad()
def _test_loop(net: nn.Module, queue: DataLoader, device: torch.device, report_freq: int,
               logger: logging.Logger) -> tuple[float, float]:
    net.eval()
    criterion = nn.CrossEntropyLoss()
    objs, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
    for step, batch in enumerate(queue):
        x, y = to_device(batch, device)
        logits, _ = net(x)
        prec1, prec5 = accuracy(logits, y, topk=(1, 5))
        n = x.size(0)
        objs.update(criterion(logits, y).item(), n)
        top1.update(prec1, n)
        top5.update(prec5, n)
        if step % report_freq == 0:
            logger.info("test %03d %e %f %f", step, objs.avg, top1.avg, top5.avg)
    return top1.avg, top5.avg
