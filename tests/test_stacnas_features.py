"""StacNAS' feature-correlation analysis (stacnas/feature_stats.py, stacnas/feature_plots.py)."""
import json
import os

import numpy as np
import pytest
import torch

from shared.errors import UserError
from shared.models.search_cnn import Network
from stacnas.feature_plots import analyse, cluster_ops, plot_clusters, write_correlation_csv
from stacnas.feature_stats import (
    ConcernEdge,
    StreamingCorrelation,
    collect_features,
    concern_edges,
)
from stacnas.spaces import GROUP_OPS, stage1_space

OPS = [n for n in GROUP_OPS if n != "none"]


def _pooled(feats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Reference: per-op means over samples and the co-moments of the pooled features."""
    x = np.stack([f.reshape(f.shape[0], -1) for f in feats]).astype(np.float64)  # ops, n, d
    xc = (x - x.mean(axis=1, keepdims=True)).reshape(len(feats), -1)
    return x.mean(axis=1), xc @ xc.T


def _net() -> Network:
    return Network(4, 10, 3, stage1_space("groups"), in_channels=1)


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_streaming_correlation_equals_the_pooled_computation() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(23, 2, 3, 3))
    feats = [base + 5, 2 * base + rng.normal(size=base.shape), rng.normal(size=base.shape) - 3]
    st = StreamingCorrelation()
    for a, b in [(0, 1), (1, 8), (8, 8), (8, 20), (20, 23)]:  # uneven, one empty batch
        st.update([torch.from_numpy(f[a:b]) for f in feats])
    mean, com = _pooled(feats)
    assert st.count == 23
    np.testing.assert_allclose(st.means, mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(st.comoments, com, rtol=1e-10, atol=1e-10)
    ref = com / np.sqrt(np.outer(np.diag(com), np.diag(com)))
    np.testing.assert_allclose(st.correlation(), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.diag(st.correlation()), 1.0, atol=1e-12)


def test_zero_variance_op_gives_nan_not_a_crash() -> None:
    st = StreamingCorrelation()
    st.update([torch.randn(6, 4), torch.zeros(6, 4), torch.randn(6, 4)])
    corr = st.correlation()
    assert np.isnan(corr[1]).all() and np.isnan(corr[:, 1]).all()
    assert np.isfinite(corr[np.ix_([0, 2], [0, 2])]).all()


def test_concern_edges_are_the_released_ones() -> None:
    e0, e1 = concern_edges(4)
    assert (e0.node, e0.input, e0.index) == (0, 0, 0)
    assert (e1.node, e1.input, e1.index) == (3, 4, 13)
    assert e1.key(2) == "cell2_node3_edge4"
    assert [ConcernEdge(n, i).index for n in range(4) for i in range(n + 2)] == list(range(14))


def test_collect_features_counts_dims_hooks_and_fast_flag() -> None:
    model = _net()
    model.train()
    loader = [(torch.randn(5, 1, 8, 8), torch.zeros(5)) for _ in range(4)]
    stats = collect_features(model, loader, max_samples=12, device="cpu")
    assert len(stats) == 2 * len(model.cells)
    assert _hooks(model) == 0 and model.fast is True and model.training
    for c, cell in enumerate(model.cells):
        for edge in concern_edges():
            st = stats[edge.key(c)]
            assert st.count == 12 and list(st.op_names) == OPS
            mixed = cell._ops[edge.index]
            # the op output numel per sample, from the state the edge reads
            side = 8 // 2 ** sum(m.reduction for m in model.cells[:c + 1])
            assert st.means.shape == (4, mixed._ops[0][1].num_features * side * side)


def test_collected_features_equal_a_direct_computation() -> None:
    model = _net()
    data = torch.randn(12, 1, 8, 8)
    loader = [data[i:i + 5] for i in range(0, 15, 5)] + [torch.randn(5, 1, 8, 8)]
    stats = collect_features(model, loader, max_samples=12)
    # reference: the input the edge saw (one batch of all 12), each candidate run on it
    mixed = model.cells[1]._ops[13]
    seen = []
    h = mixed.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    model.eval()
    model.fast = False
    with torch.no_grad():
        model(data)
        feats = [op(seen[0]).numpy() for op, n in zip(mixed._ops, mixed.op_names)
                 if n != "none"]
    h.remove()
    mean, com = _pooled(feats)
    st = stats["cell1_node3_edge4"]
    np.testing.assert_allclose(st.means, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(st.comoments, com, rtol=1e-4, atol=1e-4)


def test_hooks_removed_and_flag_restored_on_error() -> None:
    model = _net()
    with pytest.raises(RuntimeError):  # 3 channels into a 1-channel stem
        collect_features(model, [torch.randn(2, 3, 8, 8)], max_samples=2)
    assert _hooks(model) == 0 and model.fast is True
    with pytest.raises(UserError, match="gave 4 samples"):
        collect_features(model, [torch.randn(4, 1, 8, 8)], max_samples=5)
    assert _hooks(model) == 0


def test_seeded_kmeans_is_deterministic() -> None:
    means = np.random.default_rng(1).normal(size=(7, 50))
    names = [f"op{i}" for i in range(7)]
    a = cluster_ops(means, names, [2, 3, 4], seed=3)
    assert a == cluster_ops(means, names, [2, 3, 4], seed=3)
    assert sorted(a) == [2, 3, 4] and all(len(v) == 7 for v in a.values())


def test_analyse_writes_the_files_and_the_csv_round_trips(tmp_path) -> None:
    model = _net()
    stats = collect_features(model, [torch.randn(6, 1, 8, 8)], max_samples=6, cells=[0])
    out = str(tmp_path / "feat")
    summary = analyse(stats, None, out, seed=0)
    assert set(summary["edges"]) == {"cell0_node0_edge0", "cell0_node3_edge4"}
    for key, st in stats.items():
        for name in [f"corr_{key}.txt", f"corr_{key}.png"] + [
                f"dist_{key}_group{k}.png" for k in (2, 3, 4)]:
            assert os.path.getsize(os.path.join(out, name)) > 0
        path = os.path.join(out, f"corr_{key}.txt")
        with open(path) as f:
            assert f.readline().strip().split(",") == OPS
        np.testing.assert_allclose(np.loadtxt(path, delimiter=",", skiprows=1),
                                   st.correlation(), atol=1e-6)
    with open(os.path.join(out, "clusters.json")) as f:
        assert json.load(f) == summary
    assert sorted(summary["edges"]["cell0_node0_edge0"]["groups"]) == ["2", "3", "4"]


def test_nan_csv_round_trips(tmp_path) -> None:
    corr = np.array([[1.0, np.nan], [np.nan, np.nan]])
    path = write_correlation_csv(corr, ["a", "b"], str(tmp_path / "c.txt"))
    np.testing.assert_array_equal(np.loadtxt(path, delimiter=",", skiprows=1), corr)


def test_fewer_than_two_ops_refused(tmp_path) -> None:
    st = StreamingCorrelation(["skip_connect"])
    st.update([torch.randn(3, 4)])
    with pytest.raises(UserError, match="at least 2"):
        analyse({"k": st}, None, str(tmp_path))
    with pytest.raises(UserError, match="at least 2"):
        cluster_ops(np.zeros((1, 3)), ["a"], [2])
    with pytest.raises(UserError, match="at least 2"):
        plot_clusters(np.zeros((1, 3)), ["a"], [0], str(tmp_path / "x.png"))
