"""One training step captured as a CUDA graph and replayed (``torch.cuda.graph``).

A DARTS supernet step launches ~20,000 small kernels; on a GPU the host time spent launching
them is several times the kernel time. A CUDA graph records the kernels of one step once and
replays them with one launch (PyTorch, "CUDA Graphs", whole-network capture). What a graph
freezes is everything the host decided while it was recorded: tensor addresses, Python
numbers baked into kernel arguments (the learning rate, SDARTS' epsilon, the drop-path
probability), which branches ran. So

* the inputs are copied into static buffers before every replay, and the outputs the caller
  reads (loss, logits) are the tensors the recording produced, overwritten by each replay;
* a step may read on the host only what is constant while it is replayed: the caller makes
  one ``CapturedStep`` per epoch (``EpochCaptures``), so per-epoch numbers are re-recorded;
* a step must never read the device on the host (``.item()``, ``bool(tensor)``): recording
  refuses it, and the step then runs eagerly from there on, with the reason logged;
* optimisers must be capturable: SGD with a Python lr is (its update is one foreach kernel
  chain); Adam keeps its step count on the host unless ``fused``/``capturable``
  (``make_capturable``);
* a batch of another shape (a last partial batch) runs eagerly, outside the graph.

The first ``warmup`` calls of a run (1 of every later epoch) run eagerly on a side stream, as
PyTorch requires before a capture (lazy optimiser state, cuDNN's algorithm choice, autograd's
accumulation buffers). Every call is a real step: warm-up steps are steps of the epoch.

``backend="emulate"`` runs the same bookkeeping on any device, and records and replays the
step's ATen operations in place of a graph (``shared.op_replay``): a replay runs no Python, so
a step that depends on anything the graph would freeze (a Python number, a branch, a list or
tensor its Python changes from step to step) gives other numbers than the eager path, and a
read of a tensor's value on the host is refused while recording, as a graph refuses it (a
graph's refusal leaves the batch to an eager step; the emulation has already run what came
before the read, so its ``HostReadError`` stops the run instead). The tests check the search
and evaluation steps' graph-safe structure with it on the CPU.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch

from shared.errors import UserError
from shared.op_replay import OpRecording

BACKENDS = ("cuda_graph", "emulate")
FIRST_WARMUP = 3  # eager steps before a run's first recording (PyTorch's example: 3)

Inputs = Sequence[Any]  # tensors (copied into static buffers) or None


def _shapes(inputs: Inputs) -> tuple[Any, ...]:
    return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device,
                                         t.is_contiguous()) for t in inputs)


def check_capture_device(device: torch.device) -> None:
    """``--step_capture cuda_graph`` needs a CUDA device: refused on any other."""
    if device.type != "cuda":
        raise UserError(f"--step_capture cuda_graph records CUDA graphs: this run is on "
                        f"{device.type}; run it with --step_capture off, or on a GPU")


def make_capturable(optimizer: torch.optim.Optimizer) -> bool:
    """Adam with its step count on the device (``fused``, ``capturable``): a recorded step
    then advances the bias correction on every replay. True if anything changed (an Adam that
    already stepped continues fused: equal to rounding, not bit for bit)."""
    if not isinstance(optimizer, torch.optim.Adam):
        return False
    changed = False
    for group in optimizer.param_groups:
        if not (group["fused"] and group["capturable"]):
            group.update(fused=True, capturable=True, foreach=None)
            changed = True
            for p in group["params"]:
                state = optimizer.state.get(p)
                if state and "step" in state:
                    state["step"] = torch.as_tensor(state["step"], dtype=torch.float32,
                                                    device=p.device).clone()
    return changed


class CapturedStep:
    """``fn(*inputs) -> outputs`` run eagerly ``warmup`` times, then recorded once and
    replayed. ``reason``: why it runs eagerly for good (None while it may capture)."""

    def __init__(self, fn: Callable[..., Any], device: torch.device, backend: str = "cuda_graph",
                 warmup: int = 3, logger: logging.Logger | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
        if backend == "cuda_graph" and device.type != "cuda":
            raise ValueError("a CUDA graph needs a CUDA device")
        self.fn, self.device, self.backend = fn, device, backend
        self.warmup_left = warmup
        self.logger = logger or logging.getLogger(__name__)
        self.reason: str | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.recording: OpRecording | None = None  # the emulated graph
        self.static_inputs: tuple[Any, ...] | None = None
        self.static_outputs: Any = None
        self.recorded_shapes: tuple[Any, ...] | None = None
        self.replays = 0
        self.eager_calls = 0
        self._side_stream: torch.cuda.Stream | None = None  # the warm-up's, one for all calls

    def __call__(self, *inputs: Any) -> Any:
        if self.reason is not None:
            return self._eager(inputs)
        if self.warmup_left > 0:
            self.warmup_left -= 1
            return self._eager(inputs, side_stream=True)
        if self.static_inputs is None:
            return self._record(inputs)
        if _shapes(inputs) != self.recorded_shapes:
            return self._eager(inputs)
        for static, t in zip(self.static_inputs, inputs):
            if static is not None:
                static.copy_(t)
        return self._replay()

    def fall_back(self, reason: str) -> None:
        """Run eagerly from now on (logged once)."""
        self.reason = reason
        self.graph = self.recording = self.static_inputs = self.static_outputs = None
        self.logger.info("step capture: eager from here (%s)", reason)

    # -- the three ways a call runs ---------------------------------------------------------
    def _eager(self, inputs: Inputs, side_stream: bool = False) -> Any:
        self.eager_calls += 1
        if not (side_stream and self.backend == "cuda_graph"):
            return self.fn(*inputs)
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        stream = self._side_stream
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            out = self.fn(*inputs)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return out

    def _record(self, inputs: Inputs) -> Any:
        self.static_inputs = tuple(None if t is None else t.clone() for t in inputs)
        self.recorded_shapes = _shapes(inputs)
        if self.backend == "emulate":  # recording runs the step once: this call's step
            self.recording, self.static_outputs = OpRecording.record(self.fn,
                                                                     *self.static_inputs)
            return self.static_outputs
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.static_outputs = self.fn(*self.static_inputs)
        except Exception as exc:  # noqa: BLE001 - any refusal of the recording: run eagerly
            # nothing ran on the device while recording: this batch's step is still to do
            self.fall_back(f"the step could not be recorded as a CUDA graph: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return self._eager(inputs)
        self.graph = graph
        return self._replay()

    def _replay(self) -> Any:
        self.replays += 1
        if self.backend == "emulate":
            self.recording.replay()
        else:
            self.graph.replay()
        return self.static_outputs


class EpochCaptures:
    """A trainer's steps through one ``CapturedStep`` per epoch (per-epoch numbers are
    re-recorded); eager for good once a blocker or a failed recording says so. ``owner`` (the
    search loop, the evaluation trainer) has ``device``, ``logger`` and ``precision``; a
    subclass says what blocks its step (``blockers``) and what to ready first (``prepare``)."""

    def __init__(self, owner: Any, backend: str) -> None:
        if backend == "cuda_graph":
            check_capture_device(owner.device)
        self.owner, self.backend = owner, backend
        self.reason: str | None = None
        self.recorded_epochs = 0
        self.checked = False
        self.current: CapturedStep | None = None

    def blockers(self) -> list[str]:
        """Why the owner's step cannot be recorded (empty: it can)."""
        return []

    def prepare(self) -> None:
        """Ready the owner for recording (once, after any resume loaded its state)."""

    def check(self) -> None:
        """Once, at the first epoch this process trains: log the decision."""
        if self.checked:
            return
        self.checked = True
        logger = self.owner.logger
        blockers = self.blockers()
        if blockers:
            self.reason = "; ".join(blockers)
            logger.info("step capture: eager (%s)", self.reason)
            return
        # autocast's weight cast cache must be off while recording (torch.cuda.graph's notes)
        self.owner.precision = replace(self.owner.precision, autocast_cache=False)
        self.prepare()
        logger.info("step capture = %s", self.backend)

    def captured(self, fn: Callable[..., Any]) -> CapturedStep | None:
        """This epoch's recorded ``fn``; None where the step runs eagerly."""
        self.check()
        if self.current is not None and self.current.reason is not None:
            self.reason = self.current.reason  # a recording failed: eager for the whole run
        if self.reason is not None:
            return None
        warmup = FIRST_WARMUP if self.recorded_epochs == 0 else 1
        self.recorded_epochs += 1
        self.current = CapturedStep(fn, self.owner.device, self.backend, warmup,
                                    self.owner.logger)
        return self.current
