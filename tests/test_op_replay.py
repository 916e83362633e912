"""The CPU's model of a CUDA graph (``shared.op_replay``): a replay runs the recorded operations
on the recorded tensors and none of the Python that launched them, so it freezes what a graph
freezes; ``CapturedStep``'s ``emulate`` backend replays through it."""
from __future__ import annotations

import pytest
import torch

from shared.capture import CapturedStep
from shared.op_replay import HostReadError, OpRecording

CPU = torch.device("cpu")


def test_replay_computes_the_new_inputs() -> None:
    x = torch.randn(4, 3)
    w = torch.randn(3, 2)
    recording, out = OpRecording.record(lambda: torch.relu(x @ w).sum(0))
    assert len(recording) >= 3  # mm, relu, sum
    x.copy_(torch.randn(4, 3))  # a static input, refilled
    recording.replay()
    assert torch.equal(out, torch.relu(x @ w).sum(0))


def test_replay_freezes_what_python_decided() -> None:
    """A Python number, a list and a branch: kept as recorded; the old emulation (calling the
    function again) would have followed them, the graph does not."""
    state = {"k": 1.0, "seen": []}
    x = torch.ones(3)

    def step():
        state["seen"].append(1)
        state["k"] += 1.0
        y = x * state["k"]
        return y + 1 if len(state["seen"]) == 1 else y - 1

    recording, out = OpRecording.record(step)
    assert torch.equal(out, torch.full((3,), 3.0))
    x.fill_(2.0)
    recording.replay()
    recording.replay()
    assert state == {"k": 2.0, "seen": [1]}
    assert torch.equal(out, torch.full((3,), 5.0))  # 2 * 2 + 1: k and the branch recorded


def test_a_training_step_replays_into_the_parameters_and_their_gradients() -> None:
    """Forward, backward (the autograd engine's operations are recorded too), the gradient's
    tensor that ``p.grad`` holds, momentum SGD: replays equal eager steps bit for bit once the
    optimiser's state exists (a graph's warm-up)."""
    def make():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4),
                                  torch.nn.ReLU(), torch.nn.Linear(4, 3))
        return net, torch.optim.SGD(net.parameters(), 0.1, momentum=0.9)

    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(6, 5, generator=g), torch.randint(0, 3, (6,), generator=g))
            for _ in range(5)]

    def stepper(net, opt):
        def step(x, y):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return loss.detach()
        return step

    eager_net, eager_opt = make()
    eager = [stepper(eager_net, eager_opt)(x, y) for x, y in data]
    net, opt = make()
    step = CapturedStep(stepper(net, opt), CPU, "emulate", warmup=1)
    losses = [step(x, y).clone() for x, y in data]
    assert step.replays == 3
    assert all(torch.equal(a, b) for a, b in zip(eager, losses))
    for (name, a), b in zip(eager_net.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_recording_without_warm_up_replays_the_first_step_s_lazy_state() -> None:
    """Why a graph needs its warm-up, shown: recorded on the optimiser's first step, momentum's
    buffer is created from the gradient in the recording, and every replay creates it again
    (momentum never accumulates); the eager steps differ."""
    def run(capture: bool):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(3))
        opt = torch.optim.SGD([w], 0.1, momentum=0.9)

        def step(x):
            opt.zero_grad(set_to_none=True)
            (w * x).sum().backward()
            opt.step()
            return w

        call = CapturedStep(step, CPU, "emulate", warmup=0) if capture else step
        for _ in range(3):
            call(torch.ones(3))
        return w.detach().clone()

    assert not torch.equal(run(True), run(False))


def test_a_host_read_is_refused_while_recording() -> None:
    x = torch.ones(2)
    for read in (lambda: x.sum().item(), lambda: bool(x.sum() > 0), lambda: float(x[0])):
        with pytest.raises(HostReadError, match="on the host"):
            OpRecording.record(read)


def test_random_operations_draw_again() -> None:
    """As a graph's philox offsets advance per replay: the replays' draws are the eager
    draws that would follow."""
    torch.manual_seed(3)
    recording, out = OpRecording.record(lambda: torch.rand(4) + 0)
    draws = [out.clone()]
    for _ in range(2):
        recording.replay()
        draws.append(out.clone())
    torch.manual_seed(3)
    assert all(torch.equal(d, torch.rand(4)) for d in draws)


def test_replay_inside_autocast_adds_no_casts() -> None:
    """The recording holds autocast's casts already; a replay called inside an autocast region
    runs the recorded operations as they are."""
    a, b = torch.randn(3, 3), torch.randn(3, 3)
    recording, out = OpRecording.record(lambda: a @ b)
    assert out.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recording.replay()
    assert torch.equal(out, a @ b)
