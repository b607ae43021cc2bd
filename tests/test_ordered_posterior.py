"""OrderedClusteringPosterior: position labels kept, order summaries against brute force, unordered ones intact."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from pyro_acp.data.partitions import canonicalize  # noqa: E402
from pyro_acp.guides import ACPS  # noqa: E402
from pyro_acp.inference.sampling import sample_partitions  # noqa: E402
from pyro_acp.posteriors import (  # noqa: E402
    ClusteringPosterior,
    ExactPosterior,
    OrderedClusteringPosterior,
    OrderedExactPosterior,
)

# three ordered partitions of 5 points; rows 0 and 2 are the same partition in two different orders
SAMPLES = torch.tensor([[1, 1, 0, 2, 0], [0, 0, 1, 1, 1], [0, 0, 2, 1, 2], [1, 1, 0, 2, 0]])
WEIGHTS = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)


def test_labels_are_kept_as_positions_and_validated():
    post = OrderedClusteringPosterior(SAMPLES)
    assert torch.equal(post.samples, SAMPLES)  # not renumbered by first appearance
    assert torch.equal(ClusteringPosterior(SAMPLES).samples, canonicalize(SAMPLES))  # the unordered type is
    with pytest.raises(ValueError, match=r"row 1 uses labels \[0, 2\] but not \[1\]"):
        OrderedClusteringPosterior([[0, 1, 1], [2, 0, 2]])
    with pytest.raises(ValueError, match="negative labels"):
        OrderedClusteringPosterior([[0, -1, 1]])
    with pytest.raises(ValueError, match="2-D"):
        OrderedClusteringPosterior([0, 1, 1])


def test_unordered_summaries_match_the_unordered_posterior():
    ordered = OrderedClusteringPosterior(SAMPLES, weights=WEIGHTS)
    plain = ClusteringPosterior(SAMPLES, weights=WEIGHTS)
    assert torch.allclose(ordered.coclustering(), plain.coclustering())
    assert torch.equal(ordered.num_clusters, plain.num_clusters)
    assert torch.allclose(ordered.num_clusters_distribution(), plain.num_clusters_distribution())
    assert torch.equal(ordered.point_estimate().unique(), plain.point_estimate().unique())
    unordered = ordered.unordered()
    assert type(unordered) is ClusteringPosterior and torch.equal(unordered.samples, plain.samples)


def test_map_is_the_most_probable_ordered_partition():
    # rows 0 and 2 share a partition, but the most frequent *ordered* partition is row 0 (= row 3)
    assert torch.equal(OrderedClusteringPosterior(SAMPLES).map, SAMPLES[0])
    log_prob = torch.tensor([-3.0, -1.0, -2.0, -3.0])
    assert torch.equal(OrderedClusteringPosterior(SAMPLES, log_prob=log_prob).map, SAMPLES[1])


def test_precedence_and_positions_against_brute_force():
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 4, (30, 6), generator=g)  # random labels; closing the gaps gives random orders
    samples = torch.stack([torch.unique(row, return_inverse=True)[1] for row in raw])
    weights = torch.rand(30, generator=g, dtype=torch.float64) + 0.1
    post = OrderedClusteringPosterior(samples, weights=weights)
    w = weights / weights.sum()
    expected = torch.zeros(6, 6, dtype=torch.float64)
    for s, i, j in itertools.product(range(30), range(6), range(6)):
        expected[i, j] += w[s] * float(samples[s, i] < samples[s, j])
    assert torch.allclose(post.precedence().double(), expected, atol=1e-6)
    total = post.precedence() + post.precedence().T + post.coclustering()
    assert torch.allclose(total, torch.ones(6, 6), atol=1e-6)
    positions = post.position_distribution()
    k_max = int(samples.max()) + 1
    brute = torch.stack([torch.stack([(w * (samples[:, i] == p)).sum() for p in range(k_max)]) for i in range(6)])
    assert torch.allclose(positions, brute) and torch.allclose(positions.sum(-1), torch.ones(6, dtype=torch.float64))


def test_unique_ordered_and_unordered():
    post = OrderedClusteringPosterior(SAMPLES, weights=WEIGHTS)
    uniq, total = post.unique()
    assert uniq.tolist() == [[1, 1, 0, 2, 0], [0, 0, 2, 1, 2], [0, 0, 1, 1, 1]]
    assert torch.allclose(total, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    uniq, total = post.unique(ordered=False)
    assert uniq.tolist() == [[0, 0, 1, 2, 1], [0, 0, 1, 1, 1]]
    assert torch.allclose(total, torch.tensor([0.8, 0.2], dtype=torch.float64))
    counts = OrderedClusteringPosterior(SAMPLES).unique()[1]
    assert counts.dtype == torch.long and counts.tolist() == [2, 1, 1]


def test_point_estimate_numbers_clusters_by_mean_position():
    # one partition {0,1} {2,4} {3}, almost always ordered {2,4} < {0,1} < {3}
    post = OrderedClusteringPosterior(SAMPLES[[0, 0, 0, 2]])
    assert post.point_estimate().tolist() == [1, 1, 0, 2, 0]
    assert post.point_estimate("binder").tolist() == [1, 1, 0, 2, 0]


def test_exact_ordered_posterior_keeps_positions():
    post = OrderedExactPosterior.from_log_joint(SAMPLES[:3], torch.tensor([0.0, -1.0, -2.0]))
    assert isinstance(post, ExactPosterior) and torch.equal(post.partitions, SAMPLES[:3])
    assert torch.allclose(post.probs.sum(), torch.tensor(1.0, dtype=torch.float64))
    draws = post.sample(50, seed=0)
    assert all(any(torch.equal(d, p) for p in SAMPLES[:3]) for d in draws)
    assert torch.allclose(post.precedence().double(), torch.einsum(
        "s,sij->ij", post.probs, (SAMPLES[:3, :, None] < SAMPLES[:3, None, :]).double()), atol=1e-6)


def test_arviz_export_and_plot(tmp_path):
    x = torch.randn(5, 2)
    post = OrderedClusteringPosterior(SAMPLES, log_prob=torch.tensor([-1.0, -2.0, -3.0, -1.0]), x=x,
                                      method="noc")
    data = post.to_arviz()
    labels = data["posterior"]["labels"].values
    assert labels.shape == (1, 4, 5) and (labels[0] == SAMPLES.numpy()).all()
    assert "order" in data["posterior"].attrs["labels"]
    assert data["posterior"]["num_clusters"].values.tolist() == [[3, 2, 3, 3]]
    fig = post.plot(path=tmp_path / "ordered.png")
    assert (tmp_path / "ordered.png").stat().st_size > 0 and len(fig.axes) >= 3


def test_ordered_sampling_feeds_the_ordered_posterior():
    torch.manual_seed(0)
    guide = ACPS(2, 16).eval()
    x = torch.randn(9, 2) * 3
    labels = sample_partitions(guide, x, 16, ordered=True, generator=torch.Generator().manual_seed(0))[0]
    post = OrderedClusteringPosterior(labels, x=x)
    assert torch.equal(post.samples, labels)  # the sampler's position labels are already canonical
    assert torch.allclose(post.precedence() + post.precedence().T + post.coclustering(), torch.ones(9, 9), atol=1e-6)
