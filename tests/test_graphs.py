"""Graph models: Beta-Bernoulli marginals, adjacency distribution, balanced prior, encodings, networkx."""

from __future__ import annotations

import math
from itertools import combinations

import networkx as nx
import numpy as np
import pytest
import torch
from scipy import integrate, stats

from pyro_acp.data.partitions import enumerate_partitions
from pyro_acp.models import (
    SBM,
    BalancedPartition,
    LogDegreeSBM,
    SymmetricAdjacency,
    from_networkx,
    laplacian_positional_encoding,
    to_networkx,
)


def _random_graph(n: int, p: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    upper = (torch.rand(n, n, generator=gen) < p).triu(1)
    return (upper | upper.T).double()


# ---------------------------------------------------------------------------------------------- Beta-Bernoulli


def _integrated_block_pair(edges: int, non_edges: int, a: float, b: float) -> float:
    """log of the integral of phi^e (1 - phi)^m Beta(phi | a, b) over [0, 1], by quadrature."""
    value, _ = integrate.quad(lambda p: p**edges * (1 - p) ** non_edges * stats.beta.pdf(p, a, b), 0, 1,
                              epsabs=1e-14, epsrel=1e-12)
    return math.log(value)


def _brute_force_sbm_marginal(adj: torch.Tensor, labels: list[int], within, between) -> float:
    """Walk the node pairs one by one, tally per unordered block pair, integrate each numerically."""
    tally: dict[tuple[int, int], list[int]] = {}
    for i, j in combinations(range(len(labels)), 2):
        key = tuple(sorted((labels[i], labels[j])))
        counts = tally.setdefault(key, [0, 0])
        counts[0 if adj[i, j] > 0 else 1] += 1
    total = 0.0
    for (k, l), (e, m) in tally.items():
        a, b = within if k == l else between
        total += _integrated_block_pair(e, m, a, b)
    return total


def test_beta_bernoulli_marginal_matches_numerical_integration():
    adj = _random_graph(5, 0.5, seed=0)
    model = SBM(within=(6, 3), between=(1, 5))
    partitions = enumerate_partitions(5)
    ours = model.log_marginal_likelihood(adj, partitions)
    for i in range(0, len(partitions), 3):
        ref = _brute_force_sbm_marginal(adj, partitions[i].tolist(), (6, 3), (1, 5))
        assert ours[i].item() == pytest.approx(ref, abs=1e-7)


def test_sbm_marginal_relabelling_invariance_and_networkx_input():
    adj = _random_graph(6, 0.4, seed=1)
    model = SBM(within=(2.0, 1.5), between=(1.0, 3.0))
    partitions = enumerate_partitions(6)[::7]
    relabelled = torch.tensor([4, 0, 5, 2, 3, 1])[partitions]
    ours = model.log_marginal_likelihood(adj, partitions)
    assert torch.allclose(ours, model.log_marginal_likelihood(adj, relabelled))
    from_graph = model.log_marginal_likelihood(to_networkx(adj), partitions)  # default dtype
    assert torch.allclose(ours, from_graph.to(ours), atol=1e-4)
    joint = model.log_joint(adj, partitions)
    assert torch.allclose(joint, ours + model.partition_prior(6).log_prob(partitions).double(), atol=1e-6)


def test_block_log_predictive_equals_ratio_of_marginals():
    adj = _random_graph(7, 0.5, seed=2)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    model = SBM(within=(3.0, 2.0), between=(1.0, 4.0))
    i = 3
    pred = model.log_predictive(adj, labels, i)
    assert pred.shape == (4,)
    keep = [j for j in range(7) if j != i]
    without = _brute_force_sbm_marginal(adj[keep][:, keep], labels[keep].tolist(), (3.0, 2.0), (1.0, 4.0))
    for k in range(4):
        joined = labels.clone()
        joined[i] = k
        ref = _brute_force_sbm_marginal(adj, joined.tolist(), (3.0, 2.0), (1.0, 4.0)) - without
        assert pred[k].item() == pytest.approx(ref, abs=1e-7)


def test_log_degree_sbm_likelihood_is_a_product_of_bernoullis():
    n = 12
    adj = _random_graph(n, 0.3, seed=3)
    model = LogDegreeSBM(num_blocks=3, a=4.0, b=1.0)
    labels = torch.tensor([[0, 1, 2] * 4, [0] * 6 + [1] * 6])
    p, q = 4.0 * math.log(n) / n, 1.0 * math.log(n) / n
    for row, value in zip(labels, model.log_marginal_likelihood(adj, labels), strict=True):
        ref = sum(stats.bernoulli.logpmf(int(adj[i, j]), p if row[i] == row[j] else q)
                  for i, j in combinations(range(n), 2))
        assert value.item() == pytest.approx(ref, abs=1e-8)
    with pytest.raises(ValueError, match="exceeds 1"):
        model.edge_probabilities(5)


# ---------------------------------------------------------------------------------------------- distributions


def test_symmetric_adjacency_samples_and_log_prob():
    gen = torch.Generator().manual_seed(4)
    probs = torch.rand(6, 6, generator=gen).double()
    d = SymmetricAdjacency(probs)
    torch.manual_seed(0)
    draws = d.sample((50,))
    assert draws.shape == (50, 6, 6)
    assert torch.equal(draws, draws.transpose(1, 2)) and (draws.diagonal(dim1=1, dim2=2) == 0).all()
    value = draws[0]
    ref = sum(math.log(probs[i, j]) if value[i, j] else math.log1p(-probs[i, j])
              for i, j in combinations(range(6), 2))
    assert d.log_prob(value).item() == pytest.approx(ref, abs=1e-10)
    # Edge frequencies follow the upper triangle's probabilities.
    freq = d.sample((4000,)).mean(0)
    upper = torch.ones(6, 6, dtype=torch.bool).triu(1)
    assert (freq[upper] - probs[upper]).abs().max() < 0.04


def _corrupt(kind: str) -> torch.Tensor:
    adj = _random_graph(5, 0.5, seed=5)
    if kind == "symmetric":
        adj[0, 1], adj[1, 0] = 1.0, 0.0
    elif kind == "zero diagonal":
        adj[2, 2] = 1.0
    else:
        adj[2, 3] = adj[3, 2] = 2.0
    return adj


@pytest.mark.parametrize("message", ["symmetric", "zero diagonal", "0/1"])
def test_symmetric_adjacency_validates_values(message):
    bad = _corrupt(message)
    d = SymmetricAdjacency(torch.full((5, 5), 0.3, dtype=torch.float64), validate_args=True)
    with pytest.raises(ValueError, match=message):
        d.log_prob(bad)
    with pytest.raises(ValueError, match=message):
        SBM().check_data(bad)
    with pytest.raises(ValueError, match=message):
        SBM().model(obs=bad)


@pytest.mark.parametrize("bad,message", [
    (torch.zeros(3, 4), "square"),
    (torch.tensor([[0.0, math.nan], [math.nan, 0.0]]), "NaN or inf"),
    (torch.zeros(0, 0), "empty"),
])
def test_sbm_rejects_bad_adjacency(bad, message):
    with pytest.raises(ValueError, match=message):
        SBM().model(obs=bad)


def test_balanced_partition_is_uniform_over_equal_size_partitions():
    for n, k, count in [(5, 2, 10), (6, 3, 15), (7, 3, 105), (4, 6, 1)]:
        d = BalancedPartition(k, n)
        probs = d.log_prob(enumerate_partitions(n)).exp()
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
        support = d.enumerate_support()
        assert len(support) == count  # n! / (prod n_k! prod m_s!) counted by hand
        assert torch.allclose(d.log_prob(support).exp(), torch.full((count,), 1.0 / count))
    torch.manual_seed(0)
    d = BalancedPartition(3, 6)
    draws = d.sample((3000,))
    support = d.enumerate_support()
    hits = (draws.unsqueeze(1) == support.unsqueeze(0)).all(-1)
    assert hits.any(1).all(), "every draw is a balanced partition"
    _, p_value = stats.chisquare(hits.sum(0).numpy())
    assert p_value > 1e-3


# ---------------------------------------------------------------------------------------------- encodings


def _connected_graph(n: int, seed: int) -> torch.Tensor:
    """A connected random graph whose normalised Laplacian has well-separated eigenvalues (unique vectors)."""
    rng = np.random.default_rng(seed)
    while True:
        g = nx.gnp_random_graph(n, 0.3, seed=int(rng.integers(1 << 30)))
        if nx.is_connected(g):
            values = np.linalg.eigvalsh(nx.normalized_laplacian_matrix(g).toarray())
            if np.diff(values).min() > 1e-3:
                return torch.as_tensor(nx.to_numpy_array(g), dtype=torch.float64)


def test_positional_encodings_are_laplacian_eigenvectors():
    adj = _connected_graph(30, seed=6)
    pe = laplacian_positional_encoding(adj, dim=20)
    lap = torch.as_tensor(nx.normalized_laplacian_matrix(nx.from_numpy_array(adj.numpy())).toarray())
    values = torch.linalg.eigvalsh(lap)
    residual = lap @ pe - pe * values[1:21]
    assert residual.abs().max() < 1e-8
    assert torch.allclose(pe.T @ pe, torch.eye(20, dtype=torch.float64), atol=1e-8)


def test_padded_encodings_equal_unpadded_up_to_sign():
    graphs = [_connected_graph(n, seed=n) for n in (25, 12, 8)]
    n_max = 25
    adj = torch.zeros(3, n_max, n_max, dtype=torch.float64)
    mask = torch.zeros(3, n_max, dtype=torch.bool)
    for b, g in enumerate(graphs):
        adj[b, : len(g), : len(g)] = g
        mask[b, : len(g)] = True
    padded = laplacian_positional_encoding(adj, mask, dim=20)
    assert padded.shape == (3, n_max, 20)
    for b, g in enumerate(graphs):
        n = len(g)
        alone = laplacian_positional_encoding(g, dim=20)
        ours = padded[b, :n]
        signs = torch.sign((ours * alone).sum(0))
        signs[signs == 0] = 1
        assert torch.allclose(ours, alone * signs, atol=1e-7)
        assert (padded[b, n:] == 0).all(), "padding rows are zero"
        assert (ours[:, n - 1 :] == 0).all(), "columns beyond the N-1 real eigenvectors are zero"


def test_sign_flips_keep_magnitudes():
    adj = _connected_graph(15, seed=7)
    plain = laplacian_positional_encoding(adj)
    flipped = laplacian_positional_encoding(adj, sign_flip_generator=torch.Generator().manual_seed(0))
    assert torch.allclose(plain.abs(), flipped.abs())
    ratio = (flipped[:, :14] / plain[:, :14])[plain[:, :14].abs() > 1e-6]
    assert set(ratio.round().unique().tolist()) == {-1.0, 1.0}


# ---------------------------------------------------------------------------------------------- networkx


def test_networkx_round_trip():
    adj = _random_graph(9, 0.4, seed=8)
    labels = torch.tensor([0, 0, 1, 2, 1, 0, 2, 2, 1])
    graph = to_networkx(adj, labels)
    assert graph.number_of_nodes() == 9 and graph.number_of_edges() == int(adj.triu(1).sum())
    back, back_labels = from_networkx(graph)
    assert torch.equal(back, adj.to(back.dtype)) and torch.equal(back_labels, labels)
    assert from_networkx(to_networkx(adj))[1] is None
    named = nx.relabel_nodes(graph, {i: f"n{i}" for i in range(9)})
    assert torch.equal(SBM().check_data(named), back)


def test_from_networkx_rejects_bad_graphs():
    with pytest.raises(ValueError, match="undirected"):
        from_networkx(nx.DiGraph([(0, 1)]))
    with pytest.raises(ValueError, match="self loops"):
        from_networkx(nx.Graph([(0, 0), (0, 1)]))
    partial = nx.Graph([(0, 1), (1, 2)])
    partial.nodes[0]["label"] = 1
    with pytest.raises(ValueError, match="only some nodes"):
        from_networkx(partial)


def test_sbm_simulation_matches_block_densities():
    batch = SBM().simulate(12, num_points=(40, 80), seed=9)
    same = batch.labels.unsqueeze(-1) == batch.labels.unsqueeze(-2)
    pair = (batch.mask.unsqueeze(-1) & batch.mask.unsqueeze(-2)) & ~torch.eye(batch.max_points, dtype=torch.bool)
    within = batch.adjacency[same & pair].mean().item()
    between = batch.adjacency[~same & pair].mean().item()
    # Beta(6, 3) has mean 2/3, Beta(1, 5) mean 1/6; block probabilities vary, so loose bounds.
    assert 0.45 < within < 0.85 and 0.05 < between < 0.3
    assert batch.x.shape[-1] == 20 and batch.pos_enc is batch.x
