"""Data-parallel recurrent search (``shared.search.rnn_loop``): two gloo processes, each with
half of the sequences of every batch, move alpha, the weights and the search cell's BatchNorm
statistics as one process with all of them, for DARTS' first- and second-order steps, SDARTS'
two perturbations and Λ-DARTS' regulariser over 2 stacked cells; with dropout on everywhere,
so the global batch's masks (``RNNModel.shard_batches``) are part of what is compared. The
training of a found cell (``shared.rnn_evaluation``) likewise, through the switch to ASGD."""
from __future__ import annotations

import logging
import os

import pytest
import torch

from shared.data.text import batchify
from shared.models.search_rnn import RNNModelSearch
from shared.search.alignment_config import make_layer_alignment
from shared.search.data_parallel import ONE_PROCESS, DataParallel
from shared.search.perturbation import make_perturbation
from shared.search.rnn_architect import RNNArchitect
from shared.search.rnn_loop import RNNSearchLoop
from tests.conftest import run_ranks

KINDS = ("first_order", "second_order", "random", "pgd_linf", "lambda_corr")
NTOKEN, BATCH, BPTT, STEPS = 20, 4, 5, 2
CPU = torch.device("cpu")


def text(seed: int, words: int) -> torch.Tensor:
    return torch.randint(0, NTOKEN, (words,), generator=torch.Generator().manual_seed(seed))


def search(kind: str, dp: DataParallel, tmp: str) -> dict:
    """``STEPS`` steps of a tiny float64 recurrent search, this process's columns."""
    lambda_ = kind.startswith("lambda_")
    torch.manual_seed(0)
    # float64: the ranks sum in another order, and the finite difference magnifies rounding
    model = RNNModelSearch(NTOKEN, 6, 6, 6, 0.3, 0.2, 0.3, 0.2, 0.1,
                           nlayers=2 if lambda_ else 1).double()
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=2.0, weight_decay=5e-7)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    perturb = make_perturbation(kind if kind in ("random", "pgd_linf") else "none", 0.3, 4)
    if perturb is not None and hasattr(perturb, "steps"):
        perturb.steps = 2
    loop = RNNSearchLoop(
        model=model, optimizer=optimizer, scheduler=scheduler,
        alpha_update=RNNArchitect(model, unrolled=kind == "second_order"),
        train_queue=batchify(text(1, 80), BATCH, CPU),
        valid_queue=batchify(text(2, 60), BATCH, CPU),
        valid_eval_queue=batchify(text(2, 60), 3, CPU), epochs=1, device=CPU,
        logger=logging.getLogger("dp-rnn-test"), perturbation=perturb,
        checkpoint_path=os.path.join(tmp, f"{kind}-{dp.rank}.pth.tar"), grad_clip=0.25,
        generators=(torch.Generator().manual_seed(3),), progress=False, max_batches=STEPS,
        bptt=BPTT, batch_size=BATCH, data_parallel=dp)
    alignment = None
    if lambda_:
        alignment = make_layer_alignment("corr", lambda_=0.5, epsilon_0=1e-3, epochs=1,
                                         cells="all", record_corr=True, schedule=False)
        alignment.attach(loop)
    train_ppl, train_loss = loop.train_epoch(1, 2.0)
    out = {"alpha": model.weights.detach().clone(), "train": (train_ppl, train_loss),
           "state": {k: v.clone() for k, v in model.state_dict().items()},
           "valid": loop.infer()}
    if alignment is not None:
        out["train_corr"] = torch.stack(alignment._train)
    return out


def train(dp: DataParallel, save_dir: str) -> dict:
    """4 epochs of training DARTS_V2's cell (float64, tiny, every dropout on); ``nonmono`` 1:
    the validation loss switches it to ASGD after epoch 3, and epoch 4 steps ASGD and
    validates its averaged weights."""
    from shared.models.rnn import RNNModel
    from shared.rnn_evaluation import RNNTrainConfig, RNNTrainer, model_args
    from shared.rnn_genotype import load_rnn_genotype

    cfg = RNNTrainConfig(emsize=6, nhid=6, nhidlast=6, epochs=4, batch_size=BATCH, bptt=BPTT,
                         dropout=0.3, dropouth=0.2, dropoutx=0.3, dropouti=0.2, dropoute=0.1,
                         nonmono=1, log_interval=2, max_seq_len_delta=2, gpu=-1,
                         progress=False)
    genotype = load_rnn_genotype("DARTS_V2")
    torch.manual_seed(cfg.seed)
    model = RNNModel(genotype=genotype, **model_args(cfg, NTOKEN)).double()
    trainer = RNNTrainer(cfg=cfg, model=model, genotype=genotype,
                         train_data=batchify(text(1, 120), BATCH, CPU),
                         valid_data=batchify(text(2, 60), 10, CPU),
                         test_data=batchify(text(3, 30), 1, CPU), vocabulary="test",
                         device=CPU, logger=logging.getLogger("dp-rnn-test"), save_dir=save_dir,
                         generator=torch.Generator().manual_seed(5), data_parallel=dp)
    trainer.run()
    test_loss, _ = trainer.test()
    return {"history": [{k: h[k] for k in ("train_loss", "valid_loss", "optimizer", "best",
                                            "switched_to_asgd")} for h in trainer.history],
            "state": {k: v.clone() for k, v in trainer.model.state_dict().items()},
            "test_loss": test_loss}


def work(dp: DataParallel, folder: str) -> dict:
    results = {kind: search(kind, dp, folder) for kind in KINDS}
    results["train"] = train(dp, folder)
    return results


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    return run_ranks(work, tmp_path_factory.mktemp("dp-rnn"))[0]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_equal_one_process(two_ranks: dict, kind: str, tmp_path) -> None:
    one, two = search(kind, ONE_PROCESS, str(tmp_path)), two_ranks[kind]
    assert torch.allclose(one["alpha"], two["alpha"], rtol=0, atol=1e-12), \
        (one["alpha"] - two["alpha"]).abs().max()
    assert not torch.equal(one["alpha"], torch.zeros_like(one["alpha"]))
    for name, value in one["state"].items():  # the weights and the BN running statistics
        assert torch.allclose(value.double(), two["state"][name].double(), rtol=0,
                              atol=1e-10), name
    for a, b in zip(one["train"] + one["valid"], two["train"] + two["valid"]):
        assert b == pytest.approx(a, rel=1e-12)
    if "train_corr" in one:
        assert torch.allclose(one["train_corr"], two["train_corr"], rtol=0, atol=1e-10)


@pytest.mark.slow
def test_two_ranks_train_a_cell_as_one_process(two_ranks: dict, tmp_path) -> None:
    one, two = train(ONE_PROCESS, str(tmp_path)), two_ranks["train"]
    assert [h["optimizer"] for h in one["history"]] == [h["optimizer"] for h in two["history"]]
    assert [h["optimizer"] for h in one["history"]][-1] == "asgd"  # both optimisers ran
    for a, b in zip(one["history"], two["history"]):
        assert (a["best"], a["switched_to_asgd"]) == (b["best"], b["switched_to_asgd"])
        for key in ("train_loss", "valid_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-12), key
    for name, value in one["state"].items():
        assert torch.allclose(value, two["state"][name], rtol=0, atol=1e-12), name
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-12)


def test_an_uneven_batch_is_refused() -> None:
    from shared.errors import UserError

    model = RNNModelSearch(NTOKEN, 6, 6, 6, 0.0, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(UserError, match="split evenly over 2 processes"):
        RNNSearchLoop(model=model, optimizer=torch.optim.SGD(model.weight_parameters(), lr=1.0),
                      scheduler=None, alpha_update=RNNArchitect(model),
                      train_queue=batchify(text(1, 30), 3, CPU),
                      valid_queue=batchify(text(2, 30), 3, CPU), valid_eval_queue=None, epochs=1,
                      device=CPU, logger=logging.getLogger("dp-rnn-test"), checkpoint_path="x",
                      batch_size=3, data_parallel=DataParallel(rank=0, world_size=2))
