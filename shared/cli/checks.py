"""The numbers a door's flags must respect, checked once for every door, by flag name.

A flag a door does not have is not checked; a value outside its range is refused with one
line naming the flag and the range, before any data is loaded or folder made. NaN is outside
every range (``--learning_rate nan`` would train a NaN network and save its genotype).
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Callable

Rule = tuple[Callable[[Any], bool], str]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def at_least(low: float) -> Rule:
    return (lambda x: _finite(x) and x >= low), f">= {low:g}"


def above(low: float) -> Rule:
    return (lambda x: _finite(x) and x > low), f"> {low:g}"


def between(low: float, high: float, closed_high: bool = True) -> Rule:
    if closed_high:
        return (lambda x: _finite(x) and low <= x <= high), f"in [{low:g}, {high:g}]"
    return (lambda x: _finite(x) and low <= x < high), f"in [{low:g}, {high:g})"


COUNT, NON_NEGATIVE, POSITIVE = at_least(1), at_least(0), above(0)
PROBABILITY, DROP_RATE = between(0, 1), between(0, 1, closed_high=False)
# numpy.random.seed takes 0 <= seed < 2**32; torch takes more, so the stricter rule holds.
SEED: Rule = ((lambda x: isinstance(x, int) and 0 <= x < 2 ** 32), "in [0, 2**32)")

RULES: dict[str, Rule] = {
    # sizes and counts
    **{k: COUNT for k in ("batch_size", "epochs", "init_channels", "layers", "report_freq",
                          "log_interval", "proj_intv", "bptt", "emsize", "nhid", "nhidlast",
                          "cutout_length", "decay_period")},
    **{k: NON_NEGATIVE for k in ("num_workers", "warm_start_epochs", "ckpt_interval",
                                 "nonmono", "max_seq_len_delta", "warmup_epochs")},
    # optimisation
    **{k: POSITIVE for k in ("learning_rate", "arch_learning_rate", "lr", "arch_lr",
                             "grad_clip", "clip", "epsilon_0")},
    **{k: NON_NEGATIVE for k in ("learning_rate_min", "weight_decay", "arch_weight_decay",
                                 "wdecay", "arch_wdecay", "alpha", "beta", "epsilon_alpha",
                                 "auxiliary_weight", "lambda_")},
    "momentum": between(0, 1, closed_high=False),
    # data and regularisation
    "train_portion": (lambda x: _finite(x) and 0 < x < 1, "in (0, 1)"),
    "cutout_prob": PROBABILITY,
    **{k: DROP_RATE for k in ("drop_path_prob", "label_smooth", "dropout", "dropouth",
                              "dropoutx", "dropouti", "dropoute")},
    "seed": SEED,
}


def check_flags(args: argparse.Namespace, rules: dict[str, Rule] | None = None) -> None:
    """Refuse the first flag of ``args`` outside its range (``rules`` adds or overrides)."""
    from shared.errors import UserError

    table = {**RULES, **(rules or {})}
    for name, value in vars(args).items():
        rule = table.get(name)
        if rule is None or value is None or isinstance(value, bool):
            continue
        ok, text = rule
        if not ok(value):
            raise UserError(f"--{name} must be {text}, got {value}")
    if getattr(args, "step_capture", "off") == "cuda_graph":
        from shared.capture import check_capture_device
        from shared.runtime import choose_device

        check_capture_device(choose_device(getattr(args, "gpu", 0)))
    if hasattr(args, "compile"):
        from shared.compile import check_compile_flags

        check_compile_flags(args.compile, getattr(args, "step_capture", "off"))


def check_supernet_layers(layers: int, min_layers: int = 3) -> None:
    """Refuse a DARTS-space supernet of fewer than ``min_layers`` cells: its reduction cells
    sit at L//3 and 2L//3, so below 3 every cell reduces and no normal cell uses alpha_normal
    (whose gradient a second-order step then cannot take)."""
    from shared.errors import UserError

    if layers < min_layers:
        raise UserError(f"--layers must be >= {min_layers} (down-sampling at L//3 and 2L//3)")
