"""The network compiled with ``torch.compile`` (``--compile``), the alternative to recording
the step as a CUDA graph (``shared.capture``) that the GPU-speed work measures against it.

``torch.compile`` traces the network's forward (TorchDynamo), derives its backward
(AOTAutograd) and generates fused kernels for both (Inductor: a BN's normalisation and the ReLU
after it become one kernel, as do the fast path's weighted sums); the modes are PyTorch's own:

* ``default``: fused kernels, launched one by one;
* ``reduce-overhead``: the same, each compiled forward and backward replayed as a CUDA graph
  (PyTorch's "CUDA graph trees"), the rest of the step (optimisers, alpha's update logic)
  launched eagerly;
* ``max-autotune-no-cudagraphs``: kernels chosen by benchmarking them, no CUDA graphs.

The network is compiled in place (``nn.Module.compile``): its ``state_dict`` keys, its
checkpoints and ``torch.func.functional_call`` are those of the eager network (the
second-order step moves the parameters themselves to its unrolled weights and back, in
place: a compiled graph sees the same parameter tensors, their values changed). Each input
shape compiles once (``dynamic=False``: a search's last partial batch and an evaluation's last
test batch are one more compilation each, not a slower dynamic-shape kernel for every
batch).

Exactness: Inductor reorders floating-point sums (equal to rounding, not bit for bit) and
draws random numbers with its own generator (Philox: the drop-path masks and noise ops are
other draws of the same distribution). The library's own mode ``aot_eager`` (not a flag's
choice) runs the traced forward and backward without generating kernels: it gives the eager
numbers bit for bit, which is how the tests check on the CPU that a network traces whole and
that its buffers (BN running statistics) and gradients come out as in the eager run.

The cost is the compilation: one graph per way the step calls the network (a first-order step
has two: the alpha step's forward from alpha, the weight step's from detached mixing weights;
SDARTS-ADV four: its attack adds a no-grad and a grad-of-weights call; evaluation mode one
more), each traced through every edge and candidate. What each candidate is and where its
layers are (``shared.models.candidate``) is asked before tracing (``candidate.learn``) and read
by the trace as attributes of the modules: working it out again inside the trace made
TorchDynamo interpret 6 times the bytecodes (616,000 against 97,000 for one DARTS cell:
indexing an ``nn.Sequential`` walks its children). Tracing the DARTS search
supernet (s5, 8 cells, C=16, 32x32) took 299 s for its first forward and backward on the
2-core CPU (515 s when the trace worked out the candidates), before any kernel was generated
(``aot_eager``); what is left is TorchDynamo's and AOTAutograd's work on the ~1,240
operations each DARTS-space cell's forward traces to.

What is not compiled, the reason logged: a supernet that skips zero-weight candidates (DARTS-PT:
one host read per forward decides which ops run, and every new mask would be a recompilation),
a data-parallel run (its BatchNorm statistics are all-reduced inside the forward).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.errors import UserError

if TYPE_CHECKING:  # torch is imported where a network is compiled: a door's --help needs none
    import torch.nn as nn

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")
TRACE_ONLY = "aot_eager"  # traced and run without generated kernels (the tests, on the CPU)


def check_compile_flags(compile_mode: str, step_capture: str) -> None:
    """Refuse a combination that cannot work: two CUDA-graph recorders of one step."""
    if compile_mode not in (*COMPILE_MODES, TRACE_ONLY):
        raise UserError(f"--compile {compile_mode!r}: one of {', '.join(COMPILE_MODES)}")
    if compile_mode == "reduce-overhead" and step_capture not in ("off", None):
        raise UserError("--compile reduce-overhead records CUDA graphs of its own: it cannot "
                        "be recorded inside --step_capture's graph; use --compile default "
                        "with --step_capture cuda_graph (fused kernels in one recorded step), "
                        "or --step_capture off")


def compile_blockers(model: nn.Module, data_parallel: bool) -> list[str]:
    """Why ``model`` runs uncompiled (empty: it compiles)."""
    reasons = []
    if getattr(model, "skip_zero_weights", False):
        reasons.append("the skip of zero-weight candidates reads the device on the host and "
                       "would recompile for every new mask")
    if data_parallel:
        reasons.append("a data-parallel run all-reduces BatchNorm statistics inside the forward")
    return reasons


def compile_network(model: nn.Module, mode: str, logger: logging.Logger, *,
                    data_parallel: bool = False) -> bool:
    """Compile ``model`` in place with ``torch.compile`` (``mode``: one of COMPILE_MODES, or
    TRACE_ONLY); True if it was. A blocker leaves it eager and logs why; ``off`` does
    nothing."""
    if mode not in (*COMPILE_MODES, TRACE_ONLY):
        raise ValueError(f"compile mode {mode!r}: one of {', '.join(COMPILE_MODES)}")
    if mode == "off":
        return False
    blockers = compile_blockers(model, data_parallel)
    if blockers:
        logger.info("compile: eager (%s)", "; ".join(blockers))
        return False
    from shared.models.candidate import learn

    learn(model)  # the structure's answers, read by the trace instead of traced
    if mode == TRACE_ONLY:
        model.compile(backend=TRACE_ONLY, dynamic=False)
    else:  # Inductor, the default backend; its "default" mode is mode=None
        model.compile(mode=None if mode == "default" else mode, dynamic=False)
    logger.info("compile = %s (torch.compile; the first steps of each input shape compile)",
                mode)
    return True


def compiled(model: nn.Module) -> bool:
    """Whether ``model`` runs through ``torch.compile`` (``nn.Module.compile``)."""
    return getattr(model, "_compiled_call_impl", None) is not None


def reset_compiled() -> None:
    """Forget every compiled graph (between independent runs in one process: tests, benches)."""
    import torch

    torch._dynamo.reset()
