"""Regression against the published genotypes: they build, run, and have the paper's size."""
import math
import subprocess
import sys

import pytest
import torch

from shared.errors import UserError
from shared.genotypes import Genotype, load_genotype, published
from shared.models.cnn import build_final_network, count_parameters
from tests.conftest import ROOT, run_module_here

REGISTRY = published()
DATASET_OF = {"cifar100": "cifar100", "svhn": "svhn"}


def _dataset(entry) -> str:
    return DATASET_OF.get(entry.search_dataset, "cifar10")


def _decimals(value: float) -> int:
    text = repr(float(value))
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def test_registry_holds_every_published_cnn_genotype():
    # 43 CNN (SDARTS/DARTS file) + 82 (DARTS-PT / Lambda-DARTS / DXYs) + 3 StacNAS
    assert len(REGISTRY) == 43 + 82 + 3
    for name in ("DARTS_V2", "c10_s5_pgd", "darts_pt_s5_0", "blank_pt_s3_svhn_1",
                 "lambdadarts_corr_3", "DXYs_SETN", "StacNAS_cifar10", "AmoebaNet"):
        assert name in REGISTRY
    assert REGISTRY["DARTS"].genotype == REGISTRY["DARTS_V2"].genotype


@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if "params_M" in e.reported])
def test_parameter_count_matches_the_paper(name):
    entry = REGISTRY[name]
    model = build_final_network(entry.genotype, _dataset(entry), 36, 20, auxiliary=True)
    params = count_parameters(model) / 1e6
    reported = entry.reported["params_M"]
    if "params_discrepancy" in entry.reported:
        # Documented mismatch between the paper and its own cell (e.g. StacNAS): hold the
        # count to our independent reference computation instead.
        assert entry.reference_params_M is not None
        assert abs(params - entry.reference_params_M) <= 0.01
        return
    places = _decimals(reported)
    # The authors wrote these from the logged "param size = x.xxxxxxMB", sometimes rounded,
    # sometimes cut off (darts_pt_s1_svhn_1: 2.385766 -> "2.38"): accept either reading.
    rounded = round(params, places)
    truncated = math.floor(params * 10 ** places) / 10 ** places
    assert reported in (pytest.approx(rounded), pytest.approx(truncated)), (name, params)


@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items()
                                  if e.reference_params_M is not None])
def test_parameter_count_matches_reference_computation(name):
    entry = REGISTRY[name]
    model = build_final_network(entry.genotype, _dataset(entry), 36, 20)
    params = count_parameters(model) / 1e6
    places = min(_decimals(entry.reference_params_M), 6)
    # StacNAS' figure was counted on its own AugmentCNN, hence one unit of slack everywhere.
    assert abs(params - entry.reference_params_M) <= 10 ** -places + 1e-9, (name, params)


def test_darts_v2_exact_count():
    # 3,349,342: the "param size = 3.349342MB" DARTS logs print.
    model = build_final_network(load_genotype("DARTS_V2"), "cifar10", 36, 20, auxiliary=True)
    assert count_parameters(model) == 3_349_342


def test_darts_imagenet_size():
    model = build_final_network(load_genotype("DARTS_V2"), "imagenet", 48, 14, auxiliary=True)
    assert round(count_parameters(model) / 1e6, 1) == 4.7  # DARTS README: 4.7M


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_genotype_trains_a_step(name):
    g = REGISTRY[name].genotype
    model = build_final_network(g, "cifar10", 8, 5, auxiliary=True)
    model.drop_path_prob = 0.2
    model.train()
    x = torch.randn(4, 3, 16, 16)
    logits, aux = model(x)
    assert logits.shape == (4, 10) and aux.shape == (4, 10)
    (logits.sum() + 0.4 * aux.sum()).backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        logits, aux = model(x)
    assert aux is None and torch.isfinite(logits).all()


def test_genotype_json_round_trip(tmp_path):
    from shared.genotypes import save_genotype

    g = REGISTRY["c10_s1_random"].genotype
    path = tmp_path / "g.json"
    save_genotype(g, str(path), search_space="s1")
    assert load_genotype(str(path)) == g
    assert Genotype.from_dict(g.to_dict()) == g


def test_unknown_name_is_a_user_error():
    with pytest.raises(UserError, match="DARTS_V3"):
        load_genotype("DARTS_V3")


def _cli(*args, process: bool = False):
    """``python -m shared.genotypes ARGS``: as a process, or (the interpreter's start is most of
    the cost) its ``main`` in this one, exit status and output captured alike."""
    if process:
        return subprocess.run([sys.executable, "-m", "shared.genotypes", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    return run_module_here("shared.genotypes", list(args))


@pytest.mark.slow
def test_cli_list_and_show():
    out = _cli("list", process=True)
    assert out.returncode == 0 and "darts_pt_s5_0" in out.stdout and "StacNAS_cifar10" in out.stdout
    out = _cli("show", "DARTS_V2")
    assert out.returncode == 0, out.stderr
    assert "params: 3349342" in out.stdout
    out = _cli("show", "darts_pt_s1_c100_1", "--dataset", "cifar100")
    assert out.returncode == 0 and "params: 2465992" in out.stdout


def test_cli_unknown_name():
    out = _cli("show", "NOPE")
    assert out.returncode == 2
    assert "unknown architecture 'NOPE'" in out.stderr and "Traceback" not in out.stderr
