"""Exact posteriors by enumeration, checked against a brute-force computation written independently here."""

from __future__ import annotations

import math
import time

import pytest
import torch
from scipy import integrate
from torch.distributions import MultivariateNormal

from pyro_acp.models import SBM, CRPGaussianMixture, OrderedGaussianCatalog, PitmanYorGaussianMixture
from pyro_acp.posteriors.enumerated import ExactPosterior
from pyro_acp.reference.exact import MAX_EXACT_POINTS, exact_posterior

# ---------------------------------------------------------------------------------------------- brute force


def set_partitions(items: list[int]) -> list[list[list[int]]]:
    """Every set partition of ``items`` as lists of blocks (recursive: the first item joins a block or is alone)."""
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    out = []
    for smaller in set_partitions(rest):
        out.append([[first], *smaller])
        for k in range(len(smaller)):
            out.append(smaller[:k] + [[first, *smaller[k]]] + smaller[k + 1 :])
    return out


def blocks_to_key(blocks: list[list[int]], n: int) -> tuple[int, ...]:
    """Canonical label tuple (clusters numbered by their smallest member's order)."""
    labels = [0] * n
    for k, block in enumerate(sorted(blocks, key=min)):
        for i in block:
            labels[i] = k
    return tuple(labels)


def pitman_yor_log_eppf(sizes: list[int], alpha: float, discount: float) -> float:
    """log EPPF: prod_{k<K}(alpha + k d) / (alpha + 1)_{N-1} * prod_k (1 - d)_{n_k - 1}."""
    n = sum(sizes)
    value = 0.0
    for k in range(1, len(sizes)):
        value += math.log(alpha + k * discount)
    for m in range(1, n):
        value -= math.log(alpha + m)
    for size in sizes:
        for m in range(1, size):
            value += math.log(m - discount)
    return value


def gaussian_cluster_log_marginal(points: torch.Tensor, sigma: float, mean_scale: float) -> float:
    """Per dimension the cluster's values are jointly N(0, sigma^2 I + s^2 11^T): score with MultivariateNormal."""
    n = points.shape[0]
    cov = sigma**2 * torch.eye(n, dtype=torch.float64) + mean_scale**2 * torch.ones(n, n, dtype=torch.float64)
    mvn = MultivariateNormal(torch.zeros(n, dtype=torch.float64), covariance_matrix=cov)
    return float(sum(mvn.log_prob(points[:, d]) for d in range(points.shape[1])))


def beta_bernoulli_integral(edges: int, pairs: int, a: float, b: float) -> float:
    """log ∫ φ^e (1-φ)^(m-e) Beta(φ | a, b) dφ by numerical quadrature."""
    norm = math.gamma(a) * math.gamma(b) / math.gamma(a + b)
    value, _ = integrate.quad(lambda p: p ** (edges + a - 1) * (1 - p) ** (pairs - edges + b - 1) / norm, 0, 1)
    return math.log(value)


def brute_force_mixture(x: torch.Tensor, alpha: float, discount: float, sigma: float, mean_scale: float) -> dict:
    n = x.shape[0]
    x = x.to(torch.float64)
    scores = {}
    for blocks in set_partitions(list(range(n))):
        log_prior = pitman_yor_log_eppf([len(b) for b in blocks], alpha, discount)
        log_lik = sum(gaussian_cluster_log_marginal(x[block], sigma, mean_scale) for block in blocks)
        scores[blocks_to_key(blocks, n)] = log_prior + log_lik
    return _normalise(scores)


def brute_force_sbm(adjacency: torch.Tensor, alpha: float, within, between) -> dict:
    n = adjacency.shape[0]
    scores = {}
    for blocks in set_partitions(list(range(n))):
        value = pitman_yor_log_eppf([len(b) for b in blocks], alpha, 0.0)
        for k, block_k in enumerate(blocks):
            for l in range(k, len(blocks)):
                pairs = [(i, j) for i in block_k for j in blocks[l] if (k != l or i < j)]
                edges = int(sum(adjacency[i, j] for i, j in pairs))
                a, b = within if k == l else between
                value += beta_bernoulli_integral(edges, len(pairs), a, b)
        scores[blocks_to_key(blocks, n)] = value
    return _normalise(scores)


def _normalise(scores: dict) -> dict:
    top = max(scores.values())
    total = sum(math.exp(v - top) for v in scores.values())
    return {key: math.exp(v - top) / total for key, v in scores.items()}


def as_dict(post: ExactPosterior) -> dict:
    return {tuple(p.tolist()): float(q) for p, q in zip(post.partitions, post.probs, strict=True)}


# ---------------------------------------------------------------------------------------------- tests


def test_set_partitions_reference_counts():
    assert [len(set_partitions(list(range(n)))) for n in range(1, 7)] == [1, 2, 5, 15, 52, 203]


@pytest.mark.parametrize("num_points", [1, 3, 5])
def test_crp_mixture_matches_brute_force(num_points):
    model = CRPGaussianMixture(alpha=0.7, sigma=1.0, mean_scale=3.0)
    x, _ = model.simulate(1, num_points=num_points, seed=num_points).unpadded(0)
    post = exact_posterior(model, x)
    reference = brute_force_mixture(x, 0.7, 0.0, 1.0, 3.0)
    assert isinstance(post, ExactPosterior) and post.method == "exact"
    assert post.partitions.shape[0] == len(reference)
    assert float(post.probs.sum()) == pytest.approx(1.0, abs=1e-12)
    got = as_dict(post)
    assert got.keys() == reference.keys()
    for key, prob in reference.items():
        assert got[key] == pytest.approx(prob, rel=1e-6, abs=1e-12)


def test_pitman_yor_mixture_matches_brute_force():
    model = PitmanYorGaussianMixture(dim=3, alpha=1.3, discount=0.4, sigma=0.8, mean_scale=2.0)
    x, _ = model.simulate(1, num_points=5, seed=11).unpadded(0)
    reference = brute_force_mixture(x, 1.3, 0.4, 0.8, 2.0)
    got = as_dict(exact_posterior(model, x))
    for key, prob in reference.items():
        assert got[key] == pytest.approx(prob, rel=1e-6, abs=1e-12)


def test_sbm_matches_brute_force_quadrature():
    model = SBM(alpha=0.9, within=(4.0, 2.0), between=(1.0, 3.0))
    batch = model.simulate(1, num_points=5, seed=2)
    adjacency = batch.adjacency[0]
    reference = brute_force_sbm(adjacency, 0.9, (4.0, 2.0), (1.0, 3.0))
    post = exact_posterior(model, adjacency)
    got = as_dict(post)
    for key, prob in reference.items():
        assert got[key] == pytest.approx(prob, rel=1e-5, abs=1e-10)
    # networkx input gives the same posterior
    graph = model.to_networkx(adjacency)
    assert torch.allclose(exact_posterior(model, graph).probs, post.probs)


def test_posterior_object_is_consistent():
    model = CRPGaussianMixture(mean_scale=3.0)
    x, _ = model.simulate(1, num_points=7, seed=0).unpadded(0)
    began = time.perf_counter()
    post = exact_posterior(model, x)
    elapsed = time.perf_counter() - began
    assert post.partitions.shape == (877, 7)  # Bell(7)
    assert post.partitions.unique(dim=0).shape[0] == 877
    log_joint = model.log_joint(x.double(), post.partitions)
    expected = torch.softmax(log_joint.double(), 0)
    assert torch.allclose(post.probs, expected, atol=1e-10)
    assert torch.allclose(post.log_likelihood, model.log_marginal_likelihood(x.double(), post.partitions).double())
    # the MAP is the most probable partition; the co-clustering matrix is a probability-weighted average
    assert torch.equal(post.map, post.partitions[post.probs.argmax()])
    manual = sum(p * (part[:, None] == part[None, :]).double() for part, p in zip(post.partitions, post.probs,
                                                                                   strict=True))
    assert torch.allclose(post.coclustering().double(), manual, atol=1e-5)
    # the recorded time is the enumeration's own: positive, and within the time the call took
    assert 0 < post.wall_time <= elapsed


def test_chunking_does_not_change_the_answer():
    model = CRPGaussianMixture(mean_scale=3.0)
    x, _ = model.simulate(1, num_points=6, seed=4).unpadded(0)
    assert torch.allclose(exact_posterior(model, x, chunk_size=7).probs, exact_posterior(model, x).probs)


def test_too_many_points_suggests_gibbs():
    model = CRPGaussianMixture()
    x = torch.randn(MAX_EXACT_POINTS + 1, 2)
    with pytest.raises(ValueError, match="gibbs"):
        exact_posterior(model, x)


def test_non_conjugate_model_is_a_type_error():
    with pytest.raises(TypeError, match="log_marginal_likelihood"):
        exact_posterior(OrderedGaussianCatalog(), torch.randn(5, 2))
    with pytest.raises(TypeError, match="conjugate"):
        exact_posterior(object(), torch.randn(5, 2))


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), "NaN"),
        (torch.randn(4, 3), "shape"),
        (torch.randn(4), "shape"),
    ],
)
def test_bad_data(x, message):
    with pytest.raises(ValueError, match=message):
        exact_posterior(CRPGaussianMixture(), x)


def test_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        exact_posterior(CRPGaussianMixture(), torch.randn(3, 2), chunk_size=0)
