"""ClusteringPosterior / ExactPosterior / expected_loss against brute-force answers computed here."""

from __future__ import annotations

import itertools
import warnings
from collections import Counter
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import mutual_info_score  # noqa: E402

from pyro_acp.data.partitions import canonicalize, enumerate_partitions  # noqa: E402
from pyro_acp.posteriors.enumerated import ExactPosterior  # noqa: E402
from pyro_acp.posteriors.point_estimate import expected_loss  # noqa: E402
from pyro_acp.posteriors.posterior import ClusteringPosterior, _arviz_from_posterior  # noqa: E402


# ---------------------------------------------------------------------------------------------- helpers
def _random_posterior(seed: int, num_points: int, num_samples: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples scattered around a random partition, plus random positive weights."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 3, (num_points,), generator=g)
    noise = torch.randint(0, 4, (num_samples, num_points), generator=g)
    flip = torch.rand(num_samples, num_points, generator=g) < 0.35
    return torch.where(flip, noise, base), torch.rand(num_samples, generator=g, dtype=torch.float64) + 0.05


def _entropy(labels: np.ndarray) -> float:
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _vi_sklearn(a: np.ndarray, b: np.ndarray) -> float:
    return _entropy(a) + _entropy(b) - 2 * mutual_info_score(a, b)


def _binder_pairs(a: np.ndarray, b: np.ndarray) -> float:
    n = len(a)
    pairs = list(itertools.combinations(range(n), 2))
    return sum((a[i] == a[j]) != (b[i] == b[j]) for i, j in pairs) / len(pairs)


def _brute_losses(candidates: np.ndarray, samples: np.ndarray, weights: np.ndarray, loss: str) -> np.ndarray:
    """Expected loss of every candidate by dense contingency tables / pair matrices (numpy, independent)."""
    n = candidates.shape[1]
    w = weights / weights.sum()
    if loss == "binder":
        together_c = candidates[:, :, None] == candidates[:, None, :]
        together_s = samples[:, :, None] == samples[:, None, :]
        differ = together_c[:, None] != together_s[None]  # (C, S, N, N)
        upper = np.triu(np.ones((n, n), dtype=bool), 1)
        return (differ[..., upper].sum(-1) / upper.sum()) @ w
    onehot_c = candidates[:, None, :] == np.arange(n)[None, :, None]  # (C, N, N): cluster x point
    onehot_s = samples[:, None, :] == np.arange(n)[None, :, None]
    table = np.einsum("ckn,sln->cskl", onehot_c.astype(float), onehot_s.astype(float)) / n

    def plogp(p: np.ndarray, axes: tuple) -> np.ndarray:
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axes)

    h_joint = -plogp(table, (2, 3))
    h_c = -plogp(table.sum(3), (2,))
    h_s = -plogp(table.sum(2), (2,))
    return (2 * h_joint - h_c - h_s) @ w


# ---------------------------------------------------------------------------------------------- basics
def test_samples_are_canonical_and_shapes_match():
    raw = torch.tensor([[3, 3, 1, 7], [0, 1, 0, 1], [2, 2, 2, 2]])
    post = ClusteringPosterior(raw.numpy(), log_prob=[-1.0, -2.0, -0.5], method="test", wall_time=0.1)
    assert post.samples.tolist() == [[0, 0, 1, 2], [0, 1, 0, 1], [0, 0, 0, 0]]
    assert post.samples.dtype == torch.long
    assert post.num_clusters.tolist() == [3, 2, 1]
    assert post.map.tolist() == [0, 0, 0, 0]
    assert post.coclustering().shape == (4, 4)
    assert post.log_prob.shape == (3,)
    assert "method='test'" in repr(post) and len(repr(post)) < 150


def test_map_rules():
    samples = torch.tensor([[0, 1, 1], [0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 1, 2]])
    log_prob = torch.tensor([-3.0, -2.0, -1.0, -2.0, -5.0])
    assert ClusteringPosterior(samples, log_prob=log_prob).map_index == 2
    assert ClusteringPosterior(samples, log_joint=-log_prob).map_index == 4
    # the exact log joint outranks a noisy estimate when both are known
    assert ClusteringPosterior(samples, log_prob=log_prob, log_joint=-log_prob).map_index == 4
    assert ClusteringPosterior(samples).map.tolist() == [0, 0, 0]  # the most frequent
    weights = torch.tensor([0.1, 0.2, 0.3, 0.05, 0.35])  # [0,0,0] totals 0.25 < 0.35
    assert ClusteringPosterior(samples, weights=weights).map.tolist() == [0, 1, 2]


def test_coclustering_matches_double_loop():
    samples, weights = _random_posterior(1, 7, 30)
    for w in (None, weights):
        post = ClusteringPosterior(samples, weights=w)
        p = np.full(30, 1 / 30) if w is None else (w / w.sum()).numpy()
        lab = samples.numpy()
        expected = np.zeros((7, 7))
        for s in range(30):
            for i in range(7):
                for j in range(7):
                    expected[i, j] += p[s] * (lab[s, i] == lab[s, j])
        np.testing.assert_allclose(post.coclustering().numpy(), expected, atol=1e-6)


def test_unique_and_num_clusters_distribution():
    samples, weights = _random_posterior(2, 4, 60)
    post = ClusteringPosterior(samples)
    canon = [tuple(r) for r in post.samples.tolist()]
    counts = Counter(canon)
    uniq, got = post.unique()
    assert got.dtype == torch.long and int(got.sum()) == 60
    assert {tuple(u): int(c) for u, c in zip(uniq.tolist(), got, strict=True)} == dict(counts)
    assert (got[:-1] >= got[1:]).all()
    assert got[0] == max(counts.values())
    k_counts = Counter(len(set(r)) for r in canon)
    dist = post.num_clusters_distribution()
    assert dist[0] == 0
    for k, c in k_counts.items():
        assert dist[k].item() == pytest.approx(c / 60)
    weighted = ClusteringPosterior(samples, weights=weights)
    uniq_w, totals = weighted.unique()
    assert totals.dtype == torch.float64 and totals.sum().item() == pytest.approx(1.0)
    first = tuple(uniq_w[0].tolist())
    expected = sum(w for r, w in zip(canon, (weights / weights.sum()).tolist(), strict=True) if r == first)
    assert totals[0].item() == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------- losses
def test_expected_vi_matches_sklearn_entropies():
    samples, weights = _random_posterior(3, 8, 12)
    candidates = torch.cat([samples[:3], torch.zeros(1, 8, dtype=torch.long), torch.arange(8)[None]])
    got = expected_loss(candidates, samples, "vi", weights=weights).numpy()
    p = (weights / weights.sum()).numpy()
    for c, cand in enumerate(candidates.numpy()):
        expected = sum(p[s] * _vi_sklearn(cand, samp) for s, samp in enumerate(samples.numpy()))
        assert got[c] == pytest.approx(expected, abs=1e-10)
    assert expected_loss(samples[:1], samples[:1], "vi").item() == pytest.approx(0.0, abs=1e-12)


def test_expected_binder_is_fraction_of_disagreeing_pairs():
    samples, _ = _random_posterior(4, 7, 10)
    candidates = samples[:4]
    got = expected_loss(candidates, samples, "binder").numpy()
    for c, cand in enumerate(candidates.numpy()):
        expected = np.mean([_binder_pairs(cand, samp) for samp in samples.numpy()])
        assert got[c] == pytest.approx(expected, abs=1e-12)
    assert expected_loss(torch.zeros(1, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long), "binder") == 0


@pytest.mark.parametrize("loss", ["binder", "vi"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_greedy_point_estimate_is_the_brute_force_minimiser(loss, seed):
    num_points = 5 + seed % 2
    samples, weights = _random_posterior(10 + seed, num_points)
    w = weights if seed % 2 else None
    post = ClusteringPosterior(samples, weights=w)
    everything = enumerate_partitions(num_points)
    brute = _brute_losses(everything.numpy(), post.samples.numpy(), post.sample_weights.numpy(), loss)
    estimate = post.point_estimate(loss, search="greedy")
    ours = _brute_losses(estimate[None].numpy(), post.samples.numpy(), post.sample_weights.numpy(), loss)[0]
    assert ours == pytest.approx(brute.min(), abs=1e-9)
    best = np.flatnonzero(brute <= brute.min() + 1e-9)
    if len(best) == 1:
        assert estimate.tolist() == everything[best[0]].tolist()
    exhaustive = post.point_estimate(loss)  # N <= 7: "auto" enumerates
    assert exhaustive.tolist() in everything[best].tolist()


def test_greedy_point_estimate_improves_on_the_map_for_larger_n():
    g = torch.Generator().manual_seed(5)
    truth = torch.randint(0, 4, (40,), generator=g)
    flip = torch.rand(200, 40, generator=g) < 0.15
    samples = torch.where(flip, torch.randint(0, 6, (200, 40), generator=g), truth)
    post = ClusteringPosterior(samples)
    for loss in ("vi", "binder"):
        estimate = post.point_estimate(loss)
        assert expected_loss(estimate[None], samples, loss) <= expected_loss(samples, samples, loss).min()
        assert estimate.tolist() == canonicalize(truth).tolist()  # the noise is mild: the truth is optimal


# ---------------------------------------------------------------------------------------------- exact
def test_exact_posterior():
    parts = enumerate_partitions(4)
    g = torch.Generator().manual_seed(6)
    probs = torch.rand(parts.shape[0], generator=g)
    exact = ExactPosterior(parts, probs)
    normalised = probs.double() / probs.double().sum()
    torch.testing.assert_close(exact.probs, normalised)
    torch.testing.assert_close(exact.log_prob, normalised.log())
    assert exact.map.tolist() == parts[int(probs.argmax())].tolist()
    assert exact.partitions.shape == (15, 4)
    draws = exact.sample(20000, seed=1)
    assert torch.equal(draws, exact.sample(20000, seed=1))
    freq = (draws[:, None, :] == parts[None]).all(-1).double().mean(0).numpy()
    assert 0.5 * np.abs(freq - normalised.numpy()).sum() < 0.03
    from_joint = ExactPosterior.from_log_joint(parts, normalised.log() + 123.0)
    torch.testing.assert_close(from_joint.probs, normalised)
    k_mean = sum(p * (max(r) + 1) for p, r in zip(normalised.tolist(), parts.tolist(), strict=True))
    assert exact.summary().k_mean == pytest.approx(k_mean)


# ---------------------------------------------------------------------------------------------- arviz
@pytest.fixture(scope="module")
def az():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz

    return arviz


def test_to_arviz_dims_and_diagnostics(az):
    samples, _ = _random_posterior(7, 6, 40)
    chain = torch.arange(40) % 4
    log_lik = torch.linspace(-5, -1, 40)
    post = ClusteringPosterior(samples, log_prob=torch.linspace(-3, -1, 40), chain=chain, log_likelihood=log_lik)
    data = post.to_arviz()
    ds = data["posterior"]
    assert dict(ds.sizes) == {"chain": 4, "draw": 10, "point": 6}
    assert ds["labels"].dims == ("chain", "draw", "point")
    assert set(ds.data_vars) == {"num_clusters", "largest_cluster_share", "log_prob", "log_likelihood", "labels"}
    # chain c, draw d is the d-th sample of chain c
    np.testing.assert_array_equal(ds["labels"].values[1, 2], post.samples[1 + 4 * 2].numpy())
    np.testing.assert_array_equal(ds["num_clusters"].values[3], post.num_clusters[3::4].numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(data, var_names=["num_clusters", "log_prob", "largest_cluster_share"])
        ess = az.ess(data, var_names=["num_clusters"])
    assert list(summary.index) == ["num_clusters", "log_prob", "largest_cluster_share"]
    assert float(ess["num_clusters"]) > 0


def test_to_arviz_single_chain_unequal_chains_and_weighted(az):
    samples, weights = _random_posterior(8, 5, 12)
    assert dict(ClusteringPosterior(samples).to_arviz()["posterior"].sizes) == {"chain": 1, "draw": 12, "point": 5}
    with pytest.warns(UserWarning, match="unequal lengths"):
        data = ClusteringPosterior(samples, chain=[0] * 7 + [1] * 5).to_arviz()
    assert dict(data["posterior"].sizes)["draw"] == 5
    weighted = ClusteringPosterior(samples, weights=weights).to_arviz(num_draws=300, seed=0)
    assert dict(weighted["posterior"].sizes) == {"chain": 1, "draw": 300, "point": 5}


def test_arviz_1x_call_form():
    """arviz >= 1 takes one dict of groups; the helper must use that form when ``posterior`` is no keyword."""
    calls = {}

    def from_dict(data, *, coords=None, dims=None):
        calls.update(data=data, coords=coords, dims=dims)
        return {"posterior": SimpleNamespace(attrs={})}

    result = _arviz_from_posterior(SimpleNamespace(from_dict=from_dict), {"num_clusters": np.ones((1, 3))}, 4, "m")
    assert list(calls["data"]) == ["posterior"] and calls["dims"] == {"labels": ["point"]}
    np.testing.assert_array_equal(calls["coords"]["point"], np.arange(4))
    assert result["posterior"].attrs["inference_method"] == "m"


# ---------------------------------------------------------------------------------------------- plot, summary
def test_plot_writes_png(tmp_path):
    from matplotlib.figure import Figure

    g = torch.Generator().manual_seed(9)
    samples, _ = _random_posterior(9, 12, 20)
    graph = nx.planted_partition_graph(3, 4, 0.9, 0.1, seed=0)
    for name, x in [("xy", torch.randn(12, 2, generator=g)), ("pca", torch.randn(12, 5, generator=g)),
                    ("graph", graph), ("adjacency", nx.to_numpy_array(graph)), ("none", None)]:
        path = tmp_path / f"{name}.png"
        fig = ClusteringPosterior(samples, x=x).plot(path=path)
        assert isinstance(fig, Figure) and len(fig.axes) >= 3
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    outer = Figure()
    axes = outer.subplots(1, 3)
    assert ClusteringPosterior(samples).plot(ax=axes) is outer


def test_summary_reports_k():
    samples = torch.tensor([[0, 0, 1], [0, 1, 2], [0, 0, 1], [0, 0, 0]])
    post = ClusteringPosterior(samples, log_prob=[-0.5, -2.0, -0.5, -1.5], method="acp", wall_time=0.25)
    summary = post.summary()
    assert summary.k_mean == pytest.approx(2.0) and summary.k_mode == 2
    assert summary.k_distribution == {1: 0.25, 2: 0.5, 3: 0.25}
    assert summary.map_probability == pytest.approx(np.exp(-0.5)) and summary.map_frequency == 0.5
    text = str(summary)
    for piece in ("mean 2.000", "mode 2", "1: 0.250", "2: 0.500", "3: 0.250", "acp", "0.250 s", "unique = 3"):
        assert piece in text


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"samples": [0, 1, 1]}, "2-D"),
        ({"samples": torch.zeros(0, 3, dtype=torch.long)}, "empty"),
        ({"samples": []}, "empty"),
        ({"samples": torch.zeros(2, 0, dtype=torch.long)}, "empty"),
        ({"samples": [[0, -1]]}, "negative"),
        ({"samples": [[0.0, 0.5]]}, "integer"),
        ({"samples": [[0, 1]], "log_prob": [0.0, 1.0]}, "log_prob must have shape"),
        ({"samples": [[0, 1], [0, 0]], "log_prob": [float("nan"), 0.0]}, "log_prob contains NaN"),
        ({"samples": [[0, 1], [0, 0]], "weights": [-1.0, 2.0]}, "non-negative"),
        ({"samples": [[0, 1], [0, 0]], "weights": [0.0, 0.0]}, "sum to zero"),
        ({"samples": [[0, 1], [0, 0]], "log_likelihood": [1.0]}, "log_likelihood must have shape"),
        ({"samples": [[0, 1], [0, 0]], "chain": [0, 1, 2]}, "chain must have shape"),
        ({"samples": [[0, 1], [0, 0]], "x": np.zeros((3, 2))}, "x describes 3 points"),
        ({"samples": [[0, 1], [0, 0]], "wall_time": -1.0}, "wall_time"),
    ],
)
def test_bad_input_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClusteringPosterior(**kwargs)


def test_bad_arguments_raise():
    post = ClusteringPosterior([[0, 1], [0, 0]])
    with pytest.raises(ValueError, match="loss must be one of"):
        post.point_estimate("hamming")
    with pytest.raises(ValueError, match="candidates have 3 points"):
        expected_loss(torch.zeros(1, 3, dtype=torch.long), post.samples)
    with pytest.raises(ValueError, match="probs"):
        ExactPosterior([[0, 0], [0, 1]], [0.5, float("nan")])
    with pytest.raises(ValueError, match="num_samples"):
        ExactPosterior([[0, 0], [0, 1]], [0.5, 0.5]).sample(0)
    with pytest.raises(TypeError, match="chain"):
        ClusteringPosterior([[0, 1], [0, 0]], chain=[0.5, 1.0])
