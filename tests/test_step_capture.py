"""The search step recorded and replayed (``shared.capture``, ``shared.search.step_capture``).

No GPU here, so the CUDA graph itself is checked by ``bench/capture_check.py`` on a GPU; on the
CPU the ``emulate`` backend runs the same bookkeeping (warm-up, recording, static buffers,
replays, one recording per epoch, eager partial batches), its replays running the recorded
operations without the step's Python as a graph does (``shared.op_replay``), and must give the
eager path's numbers bit for bit, for every alpha update and perturbation the step can hold. A
loop whose recording kept a stale epoch (its lr, SDARTS' epsilon) is told apart from the eager
path, so the test can fail where a graph would silently go wrong.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from darts_pt.projection import ProjectionState, darts_nid2eids
from shared.capture import CapturedStep, make_capturable
from shared.data import get_dataset
from shared.errors import UserError
from shared.models.search_cnn import Network
from shared.search import step_capture
from shared.search.alignment import LayerAlignment
from shared.search.alpha_update import AlphaUpdate, FixedAlpha, OneLevel
from shared.search.architect import Architect
from shared.search.context import EpochContext
from shared.search.data_parallel import ONE_PROCESS, DataParallel
from shared.search.loop import SearchLoop
from shared.search.perturbation import make_perturbation
from shared.search.step_capture import capture_blockers
from shared.spaces import get_space

CPU = torch.device("cpu")
KINDS = ("first_order", "second_order", "one_level", "fixed", "random", "pgd_linf")
EPOCHS, BATCH, STEPS = 2, 8, 4


def batches(n: int, offset: int, last: int = BATCH) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = get_dataset("digits", "", True, None)
    x = torch.as_tensor(data.data, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.as_tensor(data.targets)
    sizes = [BATCH] * (n - 1) + [last]
    out, start = [], offset
    for size in sizes:
        out.append((x[start:start + size], y[start:start + size]))
        start += size
    return out


def run(kind: str, capture: str, tmp_path, steps: int = STEPS, last: int = BATCH,
        compile_mode: str = "off", nodes: int = 2, perturb: str | None = None,
        regularizer: str | None = None, space: str = "s3", grouped: bool = False,
        projected: bool = False, hooks: tuple = ()
        ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor], list, SearchLoop]:
    """Two epochs; the third element: each epoch's loss (with ``regularizer``, Λ-DARTS' layer
    alignment over all 3 cells, also its train_corr and valid_corr). ``projected``: DARTS-PT's
    supernet, which skips candidates of weight 0, with some edges projected (``projection``);
    ``hooks``: step report hooks (run after each step, outside it)."""
    torch.manual_seed(0)
    # s3 (none, skip, sep_conv_3x3): the smallest space with every kind of candidate the
    # fast path treats apart (skipped none, weighted identity, a conv stack); cells of 2
    # nodes (5 edges, one from a node to a node) record what 4 would at less than half the work
    model = Network(4, 10, 3, get_space(space), in_channels=1, steps=nodes, multiplier=nodes,
                    grouped_edges=grouped, skip_zero_weights=projected)
    if projected:
        model.mixing_transform = projection(nodes).apply
    optimizer = torch.optim.SGD(model.weight_parameters(), 0.05, momentum=0.9,
                                weight_decay=3e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS, eta_min=0.001)
    if kind == "one_level":
        alpha = OneLevel(model, 3e-3, 1e-3)
    elif kind == "fixed":
        alpha = FixedAlpha()
    else:
        alpha = Architect(model, 3e-3, 1e-3, 0.9, 3e-4, unrolled=kind == "second_order")
    if alpha.optimizer is not None:  # the recorded path's Adam, on both sides
        make_capturable(alpha.optimizer)
    loop = SearchLoop(
        model=model, optimizer=optimizer, scheduler=scheduler, alpha_update=alpha,
        train_queue=batches(steps, 0, last),
        valid_queue=None if kind == "one_level" else batches(steps, 400),
        valid_eval_queue=None, epochs=EPOCHS, device=CPU, logger=logging.getLogger("capture"),
        checkpoint_path=str(tmp_path / f"{kind}-{perturb}-{capture}-{compile_mode}.pth.tar"),
        perturbation=make_perturbation(
            perturb or (kind if kind in ("random", "pgd_linf") else "none"), 0.3, EPOCHS),
        progress=False, step_capture=capture, compile_mode=compile_mode,
        step_report_hooks=list(hooks))
    alignment = None
    if regularizer is not None:  # λ ramps 0, 0.5: each epoch's recording has its own
        alignment = LayerAlignment(regularizer, 0.5, 1e-3, EPOCHS, cells="all")
        alignment.attach(loop)
    losses = []
    for epoch in range(EPOCHS):
        lr = scheduler.get_last_lr()[0]
        if alignment is not None:
            alignment.epoch_start(EpochContext(loop, epoch, lr))
        losses.append(loop.train_epoch(epoch, lr)[1])
        if alignment is not None:
            losses[-1] = (losses[-1], *(torch.stack(values).mean().item()
                                        for values in (alignment._train, alignment._valid)))
        scheduler.step()
    return ([a.detach().clone() for a in model.arch_parameters()],
            {k: v.clone() for k, v in model.state_dict().items()}, losses, loop)


def projection(nodes: int) -> ProjectionState:
    """DARTS-PT's decisions on a cell of ``nodes`` nodes (s3): the normal cell's edge 0 projected
    to sep_conv_3x3, its node 1 keeping edges 2 and 4 (edge 3 dropped: a row of zeros), the
    reduction cell's edge 1 projected to 'none'."""
    state = ProjectionState(("normal", "reduce"), sum(2 + i for i in range(nodes)),
                            darts_nid2eids(nodes))
    state.project_op("normal", 0, 2)
    state.project_edge("normal", 0, [2, 4])
    state.project_op("reduce", 1, 0)
    return state


def assert_same(a, b) -> None:
    alphas_a, state_a, losses_a, _ = a
    alphas_b, state_b, losses_b, _ = b
    assert losses_a == losses_b
    for x, y in zip(alphas_a, alphas_b):
        assert torch.equal(x, y)
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k


@pytest.mark.parametrize("kind", KINDS)
def test_emulated_recording_equals_eager(kind: str, tmp_path) -> None:
    """Warm-up (3 steps, then 1 per epoch), a recording, replays, over two epochs whose lr
    and epsilon differ: the same alpha, weights, BN statistics and losses as the eager path.
    (Epoch 0: steps 0-2 eager, 3 recorded; epoch 1: 0 eager, 1 recorded, 2-3 replayed.)"""
    eager = run(kind, "off", tmp_path)
    emulated = run(kind, "emulate", tmp_path)
    assert_same(eager, emulated)
    capture = emulated[3].capture
    assert capture.reason is None and capture.recorded_epochs == EPOCHS


@pytest.mark.parametrize("kind", ["first_order", "second_order", "pgd_linf"])
def test_grouped_edges_recorded_equal_eager(kind: str, tmp_path) -> None:
    """``--grouped_edges`` (the edges' convs as wide kernels over views of shared buffers, the
    per-edge BN statistics updated through one call) in the recorded step: the eager grouped
    run's numbers bit for bit."""
    eager = run(kind, "off", tmp_path, grouped=True)
    emulated = run(kind, "emulate", tmp_path, grouped=True)
    assert_same(eager, emulated)
    assert emulated[3].capture.reason is None


@pytest.mark.parametrize("kind", ["first_order", "second_order"])
def test_darts_pt_skip_of_zero_weights_recorded_equals_eager(kind: str, tmp_path) -> None:
    """DARTS-PT's supernet (candidates of weight exactly 0 not run: no output, gradient or BN
    statistics) with projected and dropped edges: each recorded epoch holds the zeros read at
    its start (``shared.models.live``) and gives the eager run's numbers bit for bit, the
    never-run candidates' parameters and statistics untouched alike."""
    eager = run(kind, "off", tmp_path, projected=True)
    emulated = run(kind, "emulate", tmp_path, projected=True)
    assert_same(eager, emulated)
    loop = emulated[3]
    assert loop.capture.reason is None and loop.capture.recorded_epochs == EPOCHS
    assert loop.capture.current.replays == STEPS - 2
    assert loop.model.held_live is None  # released at the epoch's end
    # the candidates that never ran (the normal cell's dropped edge 3, the reduction cells'
    # edge 1 but its 'none') kept their first parameters and BN statistics; the others moved
    torch.manual_seed(0)
    start = Network(4, 10, 3, get_space("s3"), in_channels=1, steps=2, multiplier=2).state_dict()
    never = ("cells.0._ops.3.", "cells.1._ops.1.", "cells.2._ops.1.")
    for key, value in emulated[1].items():
        if key.startswith(never):
            assert torch.equal(value, start[key]), key
    assert not torch.equal(emulated[1]["cells.0._ops.4._ops.2.0.3.running_mean"],
                           start["cells.0._ops.4._ops.2.0.3.running_mean"])


def test_a_zero_that_moves_during_a_recorded_epoch_stops_the_run(tmp_path) -> None:
    """A weight that becomes 0 inside a recorded epoch (here alpha pushed far down after the
    recording, so that softmax gives an exact 0 in the replays) is not the held pattern: the
    run stops at the epoch's end, before its checkpoint, saying how to redo it eagerly. The
    eager run reads the new zero and goes on."""
    def push(ctx) -> None:
        if ctx.epoch == 1 and ctx.step == 1:  # after epoch 1's recording, before its replays
            with torch.no_grad():
                ctx.loop.model.alphas_normal[1, 0] = -1e4

    run("first_order", "off", tmp_path, projected=True, hooks=(push,))
    with pytest.raises(UserError, match="during epoch 1.*--resume --step_capture off"):
        run("first_order", "emulate", tmp_path, projected=True, hooks=(push,))


def test_partial_batch_runs_eagerly(tmp_path) -> None:
    """A last batch of another shape does not fit the recorded buffers: it runs eagerly, and
    the numbers are still the eager path's."""
    assert_same(run("second_order", "off", tmp_path, last=7),
                run("second_order", "emulate", tmp_path, last=7))


def test_a_stale_recording_is_caught(tmp_path, monkeypatch) -> None:
    """The check has teeth: a loop that kept its first epoch's recording (its lr as eta,
    SDARTS' epsilon) would be wrong from the second epoch, and the emulation shows it."""
    first = {}
    original = step_capture.LoopStepCapture.for_epoch

    def stale(self, epoch, lr, update_alpha):
        if "run" not in first:
            first["run"] = original(self, epoch, lr, update_alpha)
        return first["run"]

    monkeypatch.setattr(step_capture.LoopStepCapture, "for_epoch", stale)
    eager = run("random", "off", tmp_path)
    emulated = run("random", "emulate", tmp_path)
    assert not all(torch.equal(x, y) for x, y in zip(eager[0], emulated[0]))


def test_captured_step_bookkeeping() -> None:
    calls = []

    def fn(x, y):
        calls.append(x)
        return SimpleNamespace(out=x * 2 + y)

    step = CapturedStep(fn, CPU, "emulate", warmup=2)
    a, b = torch.ones(3), torch.zeros(3)
    for i in range(5):
        out = step(a * i, b)
        assert torch.equal(out.out, a * 2 * i)
    assert step.eager_calls == 2 and step.replays == 2
    # the recording called fn with its buffer, refilled per call; a replay runs no Python
    assert len(calls) == 3 and calls[2] is step.static_inputs[0]
    assert torch.equal(step(torch.ones(4), torch.zeros(4)).out, torch.full((4,), 2.0))
    assert step.eager_calls == 3  # another shape: eager
    with pytest.raises(ValueError, match="CUDA device"):
        CapturedStep(fn, CPU, "cuda_graph")


def test_make_capturable_continues_adam() -> None:
    """An Adam that already stepped continues fused with its step count on the device; equal
    to the plain Adam's continuation to rounding."""
    torch.manual_seed(0)
    p, q = torch.nn.Parameter(torch.randn(20)), None
    q = torch.nn.Parameter(p.detach().clone())
    a = torch.optim.Adam([p], 3e-2, betas=(0.5, 0.999), weight_decay=1e-3)
    b = torch.optim.Adam([q], 3e-2, betas=(0.5, 0.999), weight_decay=1e-3)
    grads = [torch.randn(20) for _ in range(6)]
    for i, g in enumerate(grads):
        if i == 3:
            assert make_capturable(b) and not make_capturable(b)
            assert b.state[q]["step"].device == q.device and float(b.state[q]["step"]) == 3
        p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    assert b.param_groups[0]["fused"] and b.param_groups[0]["capturable"]
    torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def _loop_like(**kw) -> SimpleNamespace:
    base = dict(supports_step_capture=True, data_parallel=ONE_PROCESS,
                alpha_update=FixedAlpha(), perturbation=None, weight_grad_hooks=[],
                step_end_hooks=[], model=SimpleNamespace(skip_zero_weights=False))
    base.update(kw)
    return SimpleNamespace(**base)


def test_blockers_name_what_stays_eager() -> None:
    assert capture_blockers(_loop_like()) == []

    def hook(ctx):
        pass

    assert capture_blockers(_loop_like(weight_grad_hooks=[hook])) == [
        "the hook hook is not graph-safe"]
    hook.graph_safe = True
    assert capture_blockers(_loop_like(step_end_hooks=[hook])) == []
    assert capture_blockers(_loop_like(model=SimpleNamespace(skip_zero_weights=True))) == []
    assert "clamps mixing weights to 0 at random" in capture_blockers(
        _loop_like(model=SimpleNamespace(skip_zero_weights=True),
                   perturbation=make_perturbation("random", 0.3, EPOCHS)))[0]
    assert "all-reduces" in capture_blockers(
        _loop_like(data_parallel=DataParallel(rank=0, world_size=2)))[0]
    assert "carries host state" in capture_blockers(_loop_like(supports_step_capture=False))[0]
    assert capture_blockers(_loop_like(alpha_update=AlphaUpdate())) == [
        "AlphaUpdate is not graph-safe"]


@pytest.mark.parametrize("regularizer,kind", [("corr", "first_order"),
                                              ("signcorr", "pgd_linf")])
def test_lambda_darts_recorded_equals_eager(regularizer: str, kind: str, tmp_path) -> None:
    """Λ-DARTS' regulariser inside the recorded step (its ± passes, the device flags, the
    gradients it adds; λ 0 in epoch 0, 0.5 in epoch 1), its correlations read after each step
    (``step_report``): the eager run's alpha, weights, statistics, losses and train_/valid_corr
    bit for bit; with SDARTS-ADV's attack too."""
    eager = run(kind, "off", tmp_path, regularizer=regularizer)
    emulated = run(kind, "emulate", tmp_path, regularizer=regularizer)
    assert_same(eager, emulated)
    capture = emulated[3].capture
    assert capture.reason is None and capture.recorded_epochs == EPOCHS
    assert capture.current.replays == STEPS - 2  # epoch 1: an eager step, a recording


def test_lambda_darts_leaves_the_rng_alone_only_where_nothing_draws(tmp_path,
                                                                   monkeypatch) -> None:
    """The ± passes put the RNG state back only where the supernet's forward draws (S4's noise,
    dropout; a supernet that does not say); on s3 nothing draws, and the numbers are those of
    the run that puts the state back anyway."""
    for space, fresh, needs in (("s3", False, False), ("s4", False, True), ("s4", True, False)):
        loop = SimpleNamespace(model=Network(4, 10, 5, get_space(space)), alpha_update=None,
                               weight_grad_hooks=[], epoch_start_hooks=[], step_end_hooks=[],
                               step_report_hooks=[], epoch_end_hooks=[], publish_hooks=[],
                               scalar_tags={}, data_parallel=ONE_PROCESS)
        hook = LayerAlignment("corr", 0.5, 1e-3, 2, fresh_noise=fresh)
        hook.attach(loop)
        assert (hook.needs_rng_state, hook.graph_safe) == (needs, not needs), (space, fresh)
    left_alone = run("first_order", "off", tmp_path, steps=2, regularizer="corr")
    monkeypatch.setattr(Network, "forward_draws_random", lambda self: True)
    put_back = run("first_order", "off", tmp_path, steps=2, regularizer="corr")
    assert put_back[3].weight_grad_hooks[0].needs_rng_state
    assert_same(left_alone, put_back)


def test_lambda_darts_with_a_noise_op_stays_eager(tmp_path, caplog) -> None:
    """S4's noise op draws in the forward, so the ± passes put the RNG state back: not in a
    graph. The step runs eagerly, the log says why, and the numbers are the eager run's."""
    caplog.set_level(logging.INFO, logger="capture")
    eager = run("first_order", "off", tmp_path, steps=2, regularizer="corr", space="s4")
    blocked = run("first_order", "emulate", tmp_path, steps=2, regularizer="corr", space="s4")
    assert ("step capture: eager (the hook LayerAlignment is not graph-safe: its ± passes put "
            "back the RNG state") in caplog.text
    assert blocked[3].capture.recorded_epochs == 0
    assert_same(eager, blocked)


def test_blocked_loop_runs_eagerly_and_says_why(tmp_path, caplog, monkeypatch) -> None:
    """A hook that is not graph-safe: the emulated run is the eager run, and the log says
    why."""
    def alignment_like(ctx):
        pass

    caplog.set_level(logging.INFO, logger="capture")
    eager = run("first_order", "off", tmp_path, steps=2)
    orig_init = SearchLoop.__post_init__

    def with_hook(self):
        self.weight_grad_hooks.append(alignment_like)
        orig_init(self)

    monkeypatch.setattr(SearchLoop, "__post_init__", with_hook)
    blocked = run("first_order", "emulate", tmp_path, steps=2)
    assert "step capture: eager (the hook alignment_like is not graph-safe)" in caplog.text
    assert blocked[3].capture.recorded_epochs == 0
    assert eager[2] == blocked[2]


def test_cuda_graph_is_refused_off_cuda(tmp_path) -> None:
    with pytest.raises(UserError, match="this run is on cpu; run it with --step_capture off"):
        run("first_order", "cuda_graph", tmp_path)


@pytest.mark.parametrize("door", ["sdarts", "stacnas", "darts_pt"])
def test_doors_refuse_cuda_graph_on_the_cpu(door: str, tmp_path, capsys, monkeypatch) -> None:
    """Every search door has ``--step_capture``; on the CPU ``cuda_graph`` is refused with one
    line, before any data is read or folder made."""
    monkeypatch.chdir(tmp_path)
    if door == "sdarts":
        from sdarts.sota.cnn import train_search as module
        argv = ["--dataset", "digits", "--gpu", "-1", "--experiments", str(tmp_path / "run")]
    elif door == "stacnas":
        from stacnas import search as module
        argv = ["--name", "x", "--dataset", "digits", "--gpu", "-1", "--save_dir",
                str(tmp_path / "run")]
    else:
        from darts_pt.sota.cnn import train_search as module
        argv = ["--method", "darts", "--dataset", "digits", "--gpu", "-1", "--experiments",
                str(tmp_path / "run")]
    with pytest.raises(SystemExit) as info:
        module.main([*argv, "--step_capture", "cuda_graph"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "run it with --step_capture off" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("amp,grouped", [(False, False), (True, False), (False, True)])
def test_evaluation_step_recorded_equals_eager(tmp_path, monkeypatch, amp, grouped) -> None:
    """Evaluation training (auxiliary head, drop-path rising per epoch, Cutout, data on the
    device) with its step recorded: the same weights and history as the eager run; with
    ``--amp --channels_last`` too, where the recorded step casts its weights at once
    (``cast_once``) and the eager one leaves each cast to autocast; and with ``--grouped_ops``
    (each cell's separable convs as wide kernels over shared buffers)."""
    import json

    from shared.evaluation.config import EvalConfig
    from shared.evaluation.run import run_evaluation
    from shared.genotypes import load_genotype

    def train(capture: str) -> str:
        cfg = EvalConfig(dataset="digits", epochs=2, layers=3, init_channels=4, batch_size=32,
                         gpu=-1, auxiliary=True, cutout=True, cutout_length=4, progress=False,
                         num_workers=0, data_on_device=True, steps_per_epoch=5,
                         drop_path_prob=0.3, step_capture=capture, amp=amp,
                         channels_last=amp, grouped_ops=grouped)
        run_evaluation(cfg, load_genotype("DARTS_V2"), str(tmp_path / capture))
        return str(tmp_path / capture)

    from shared.evaluation import trainer
    casts = []

    def cast_once(model, x):
        casts.append(1)
        return forward_cast_once(model, x)

    forward_cast_once = trainer.forward_cast_once
    monkeypatch.setattr(trainer, "forward_cast_once", cast_once)
    eager = train("off")
    assert not casts
    emulated = train("emulate")
    assert bool(casts) == amp
    a, b = (torch.load(f"{d}/weights.pt", weights_only=True) for d in (eager, emulated))
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(open(f"{d}/history.json").read()) for d in (eager, emulated)]
    assert history[0] == history[1]
    assert "step capture = emulate" in open(f"{emulated}/log.txt").read()
