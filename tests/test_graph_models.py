"""PlantedPartition (the CLUSTER benchmark's recipe) and its exact prior over partitions; LogDegreeSBM with
random hyperparameters (K, a, b) and its exact likelihood."""

from __future__ import annotations

import itertools
import math
from itertools import combinations

import pyro
import pytest
import torch
from scipy import integrate, stats

import pyro_acp
from pyro_acp.data.partitions import canonicalize, enumerate_partitions
from pyro_acp.models import BalancedPartition, LogDegreeSBM, PlantedPartition, SizedBlocksPartition, model_from_config
from pyro_acp.models.block_priors import block_size_counts, sized_block_labels


def _recipe_distribution(num_blocks: int, low: int, high: int, n: int) -> dict[tuple, float]:
    """The recipe by brute force: every assignment of n nodes to labelled blocks, weighted by
    P(sizes | sum n) * P(assignment | sizes), summed per canonical partition."""
    vectors = [v for v in itertools.product(range(low, high), repeat=num_blocks) if sum(v) == n]
    out: dict[tuple, float] = {}
    for assignment in itertools.product(range(num_blocks), repeat=n):
        sizes = tuple(assignment.count(k) for k in range(num_blocks))
        if sizes not in vectors:
            continue
        p = 1 / len(vectors) * math.prod(math.factorial(s) for s in sizes) / math.factorial(n)
        key = tuple(canonicalize(torch.tensor(assignment)).tolist())
        out[key] = out.get(key, 0.0) + p
    return out


@pytest.mark.parametrize("num_blocks,low,high,n", [(2, 1, 4, 5), (3, 1, 3, 5), (2, 2, 5, 6)])
def test_sized_blocks_prior_equals_the_recipe_by_brute_force(num_blocks, low, high, n):
    prior = SizedBlocksPartition(num_blocks, (low, high), n)
    partitions = enumerate_partitions(n)
    probs = prior.log_prob(partitions).double().exp()
    reference = _recipe_distribution(num_blocks, low, high, n)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    for row, p in zip(partitions.tolist(), probs.tolist(), strict=True):
        assert p == pytest.approx(reference.get(tuple(row), 0.0), abs=1e-6)
    assert len(prior.enumerate_support()) == len(reference)


def test_sized_blocks_samples_follow_the_prior():
    prior = SizedBlocksPartition(2, (1, 4), 5)
    torch.manual_seed(0)
    draws = prior.sample((4000,))
    support = prior.enumerate_support()
    hits = (draws.unsqueeze(1) == support.unsqueeze(0)).all(-1)
    assert hits.any(1).all(), "every draw is in the support"
    probs = prior.log_prob(support).double().exp()
    expected = probs / probs.sum() * 4000  # log_prob is in the default (single) precision
    _, p_value = stats.chisquare(hits.sum(0).double().numpy(), expected.numpy())
    assert p_value > 1e-3


def test_conditional_block_sizes_are_in_range_and_sum_to_n():
    n = torch.tensor([30, 117, 204, 64])
    labels = sized_block_labels(n, 6, 5, 35, torch.Generator().manual_seed(1))
    for b in range(4):
        real = labels[b, : int(n[b])]
        sizes = torch.bincount(real, minlength=6)
        assert (labels[b, int(n[b]):] == -1).all() and sizes.sum() == n[b]
        assert ((sizes >= 5) & (sizes < 35)).all()
    assert block_size_counts(2, 1, 3, 4)[2].tolist() == [0, 0, 1, 2, 1]


def test_planted_partition_simulates_the_cluster_recipe():
    model = PlantedPartition()
    batch = model.simulate(64, seed=2)
    sizes = batch.num_points.double()
    assert (batch.num_clusters == 6).all() and (sizes >= 30).all() and (sizes <= 204).all()
    # N is a sum of 6 uniform sizes on 5..34: mean 117, sd sqrt(6 (30^2 - 1) / 12) = 21.2; the mean of 64
    # graphs has sd 2.65
    assert abs(sizes.mean().item() - 117) < 4 * 2.65
    same = batch.labels.unsqueeze(-1) == batch.labels.unsqueeze(-2)
    pair = (batch.mask.unsqueeze(-1) & batch.mask.unsqueeze(-2)) & ~torch.eye(batch.max_points, dtype=torch.bool)
    assert batch.adjacency[same & pair].mean().item() == pytest.approx(0.55, abs=0.01)
    assert batch.adjacency[~same & pair].mean().item() == pytest.approx(0.25, abs=0.01)
    conditioned = model.simulate(8, num_points=(60, 61), seed=3)
    assert (conditioned.num_points == 60).all() and (conditioned.num_clusters == 6).all()
    assert model_from_config(model.config()) == model


def test_planted_partition_likelihood_and_exact_posterior():
    model = PlantedPartition(num_blocks=2, p_in=0.7, p_out=0.2, block_sizes=(2, 5))
    adjacency = model.simulate(1, num_points=6, seed=4).adjacency[0].double()
    labels = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 0, 1]])
    for row, value in zip(labels, model.log_marginal_likelihood(adjacency, labels), strict=True):
        ref = sum(stats.bernoulli.logpmf(int(adjacency[i, j]), 0.7 if row[i] == row[j] else 0.2)
                  for i, j in combinations(range(6), 2))
        assert value.item() == pytest.approx(ref, abs=1e-8)
    exact = pyro_acp.exact_posterior(model, adjacency)
    sizes = torch.stack([(exact.partitions == k).sum(-1) for k in range(6)], -1)
    allowed = (exact.partitions.max(-1).values == 1) & (sizes[:, :2] >= 2).all(-1)  # 2 blocks of 2..4 nodes
    assert (exact.probs[~allowed] == 0).all() and (exact.probs[allowed] > 0).all()
    assert exact.probs.sum().item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("kwargs,message", [
    ({"p_in": 1.5}, "p_in"),
    ({"p_out": 0.0}, "p_out"),
    ({"block_sizes": (5, 5)}, "high > low"),
    ({"block_sizes": 5}, "range"),
])
def test_planted_partition_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PlantedPartition(**kwargs)


def test_planted_partition_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="goes beyond"):
        PlantedPartition().simulate(2, num_points=(10, 40))
    with pytest.raises(ValueError, match="cannot hold 20 nodes"):
        PlantedPartition().partition_prior(20)


# ---------------------------------------------------------------------------------------------- random (K, a, b)


def test_balanced_partition_over_several_block_counts_is_the_mixture_of_the_fixed_ones():
    prior = BalancedPartition((2, 3), 6)
    partitions = enumerate_partitions(6)
    probs = prior.log_prob(partitions).double().exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    sizes = [sorted(torch.bincount(p).tolist()) for p in partitions]
    # 10 partitions into two blocks of 3 and 15 into three of 2, each K with probability 1/2
    expected = [1 / 20 if s == [3, 3] else 1 / 30 if s == [2, 2, 2] else 0.0 for s in sizes]
    assert probs.tolist() == pytest.approx(expected, abs=1e-7)
    draws = prior.sample((400,))
    assert set(draws.max(-1).values.add(1).tolist()) == {2, 3}
    assert torch.isfinite(prior.log_prob(draws)).all()
    with pytest.raises(ValueError, match="distinct"):
        BalancedPartition((2, 2), 6)


def test_log_degree_sbm_with_random_rates_integrates_them_out_exactly():
    n = 12
    gen = torch.Generator().manual_seed(4)
    upper = (torch.rand(n, n, generator=gen) < 0.3).triu(1)
    adj = (upper | upper.T).double()
    model = LogDegreeSBM(num_blocks=(2, 3), a=(1.0, 4.0), b=(0.5, 2.0))
    scale = math.log(n) / n
    labels = torch.tensor([[0, 1, 2] * 4, [0] * 6 + [1] * 6])
    for row, value in zip(labels, model.log_marginal_likelihood(adj, labels), strict=True):
        pairs = list(combinations(range(n), 2))
        within = [adj[i, j].item() for i, j in pairs if row[i] == row[j]]
        between = [adj[i, j].item() for i, j in pairs if row[i] != row[j]]

        def mean_likelihood(ys, low, high):
            f = lambda r: math.prod((r * scale) ** y * (1 - r * scale) ** (1 - y) for y in ys)  # noqa: E731
            return integrate.quad(f, low, high, epsabs=0, epsrel=1e-10)[0] / (high - low)

        ref = math.log(mean_likelihood(within, 1.0, 4.0)) + math.log(mean_likelihood(between, 0.5, 2.0))
        assert value.item() == pytest.approx(ref, abs=1e-5)
    joint = model.log_joint(adj, labels)
    prior = BalancedPartition((2, 3), n).log_prob(labels).double()
    assert torch.allclose(joint, prior + model.log_marginal_likelihood(adj, labels), atol=1e-6)


def test_log_degree_sbm_simulates_random_block_counts_and_rates():
    model = LogDegreeSBM(num_blocks=(2, 3, 4), a=(1, 30), b=(1, 10))
    assert model_from_config(model.config()) == model
    assert model.config()["a"] == [1.0, 30.0] and model.config()["num_blocks"] == [2, 3, 4]
    batch = model.simulate(24, num_points=(300, 320), seed=0)
    assert set(batch.num_clusters.tolist()) == {2, 3, 4}
    same = batch.labels.unsqueeze(-1) == batch.labels.unsqueeze(-2)
    pair = batch.mask.unsqueeze(-1) & batch.mask.unsqueeze(-2) & ~torch.eye(batch.max_points, dtype=torch.bool)
    scale = math.log(300) / 300
    within = (batch.adjacency * (same & pair)).sum((1, 2)) / (same & pair).sum((1, 2)) / scale
    between = (batch.adjacency * (~same & pair)).sum((1, 2)) / (~same & pair).sum((1, 2)) / scale
    assert (within > 0.5).all() and (within < 31).all() and within.std() > 3  # a varies over [1, 30]
    assert (between > 0.5).all() and (between < 11).all() and between.std() > 1
    with pyro_acp.seeding.forked_rng(0):
        sites = pyro.poutine.trace(model.model).get_trace(num_points=300).nodes
    assert 1 <= sites["a"]["value"] <= 30 and 1 <= sites["b"]["value"] <= 10
    with pytest.raises(ValueError, match="exceeds 1"):
        model.simulate(2, num_points=(20, 30))
    with pytest.raises(ValueError, match="high > low"):
        LogDegreeSBM(a=(3, 1))
