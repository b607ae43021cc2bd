"""Partition distributions against exact answers computed independently, in plain Python, here."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pyro
import pytest
import torch
from scipy.stats import chisquare

from pyro_acp.data.partitions import canonicalize, enumerate_partitions
from pyro_acp.distributions import CRP, MixtureOfFiniteMixtures, PitmanYor, canonical_partition_labels

# ---------------------------------------------------------------------------------------------- references


def seating_log_prob(labels: list[int], alpha: float, discount: float) -> float:
    """Pitman-Yor probability of a labelling as the product of sequential seating probabilities."""
    counts: dict[int, int] = {}
    total = 0.0
    for i, label in enumerate(labels):
        if i == 0:
            counts[label] = 1  # the first point opens a block with probability 1
        elif label in counts:
            total += math.log(counts[label] - discount) - math.log(alpha + i)
            counts[label] += 1
        else:
            total += math.log(alpha + len(counts) * discount) - math.log(alpha + i)
            counts[label] = 1
    return total


def mfm_log_prob(labels: list[int], rate: float, gamma: float, k_max: int = 150) -> float:
    """MFM probability from its definition: sum over K of P(K) times the Dirichlet-multinomial probability of
    every labelling with components in {1..K} inducing the partition (K!/(K-t)! of them)."""
    sizes = list(Counter(labels).values())
    n, t = len(labels), len(sizes)
    terms = []
    for k in range(t, k_max):
        log_pk = -rate + (k - 1) * math.log(rate) - math.lgamma(k)
        log_dm = math.lgamma(k * gamma) - math.lgamma(k * gamma + n) + sum(
            math.lgamma(gamma + s) - math.lgamma(gamma) for s in sizes)
        terms.append(log_pk + math.lgamma(k + 1) - math.lgamma(k - t + 1) + log_dm)
    top = max(terms)
    return top + math.log(sum(math.exp(v - top) for v in terms))


def stirling1_unsigned(n: int) -> list[int]:
    """|s(n, k)|, k = 0..n, exact integers by c(m+1, k) = m c(m, k) + c(m, k-1)."""
    row = [1]
    for m in range(n):
        row = [(m * (row[k] if k < len(row) else 0)) + (row[k - 1] if k >= 1 else 0) for k in range(m + 2)]
    return row


CASES = [
    ("crp", lambda n: CRP(0.7, n), lambda lab: seating_log_prob(lab, 0.7, 0.0)),
    ("crp-large-alpha", lambda n: CRP(3.5, n), lambda lab: seating_log_prob(lab, 3.5, 0.0)),
    ("py", lambda n: PitmanYor(0.5, 0.3, n), lambda lab: seating_log_prob(lab, 0.5, 0.3)),
    ("py-negative-alpha", lambda n: PitmanYor(-0.2, 0.5, n), lambda lab: seating_log_prob(lab, -0.2, 0.5)),
    ("mfm", lambda n: MixtureOfFiniteMixtures(n), lambda lab: mfm_log_prob(lab, 3.0, 1.0)),
    ("mfm-2", lambda n: MixtureOfFiniteMixtures(n, num_components_rate=0.5, gamma=2.0),
     lambda lab: mfm_log_prob(lab, 0.5, 2.0)),
]
IDS = [c[0] for c in CASES]


# ---------------------------------------------------------------------------------------------- log_prob


@pytest.mark.parametrize("name,make,reference", CASES, ids=IDS)
def test_log_prob_matches_reference_and_sums_to_one(name, make, reference):
    for n in range(1, 8):
        dist = make(n)
        parts = dist.enumerate_support()
        log_p = dist.log_prob(parts).double()
        expected = torch.tensor([reference(row) for row in parts.tolist()], dtype=torch.float64)
        torch.testing.assert_close(log_p, expected, atol=2e-5, rtol=1e-5)
        assert abs(float(torch.logsumexp(log_p, 0))) < 1e-5


@pytest.mark.parametrize("name,make,reference", CASES, ids=IDS)
def test_log_prob_invariant_under_relabelling_and_point_permutation(name, make, reference):
    g = torch.Generator().manual_seed(1)
    dist = make(9)
    labels = dist.sample((50,))
    base = dist.log_prob(labels)
    relabel = torch.randperm(9, generator=g) * 7 + 3  # non-canonical, large label values
    torch.testing.assert_close(dist.log_prob(relabel[labels]), base)
    perm = torch.randperm(9, generator=g)
    torch.testing.assert_close(dist.log_prob(labels[:, perm]), base)
    torch.testing.assert_close(dist.log_prob(labels[:, perm]), torch.tensor(
        [reference(row) for row in labels[:, perm].tolist()], dtype=base.dtype), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name,make,reference", CASES, ids=IDS)
def test_log_prob_ignores_padding(name, make, reference):
    g = torch.Generator().manual_seed(2)
    labels = make(6).sample((20,))
    padded = torch.full((20, 10), -1)
    slots = torch.rand(20, 10, generator=g).argsort(1)[:, :6].sort(1).values  # 6 real positions per row
    padded.scatter_(1, slots, labels)
    torch.testing.assert_close(make(10).log_prob(padded), make(6).log_prob(labels))


def test_log_prob_batches_over_leading_dims_and_float64_parameters():
    dist = CRP(torch.tensor(0.7, dtype=torch.float64), 5)
    labels = dist.sample((2, 3))
    assert labels.shape == (2, 3, 5)
    log_p = dist.log_prob(labels)
    assert log_p.shape == (2, 3) and log_p.dtype == torch.float64
    flat = torch.tensor([seating_log_prob(row, 0.7, 0.0) for row in labels.reshape(-1, 5).tolist()])
    torch.testing.assert_close(log_p.reshape(-1), flat.double())


@pytest.mark.parametrize("name,make,reference", CASES, ids=IDS)
def test_projective_marginalising_the_last_point(name, make, reference):
    small, large = make(5), make(6)
    parts = large.enumerate_support()
    prefix = canonicalize(parts[:, :5])
    log_p = large.log_prob(parts).double()
    small_parts = small.enumerate_support()
    keys = {tuple(r): i for i, r in enumerate(small_parts.tolist())}
    index = torch.tensor([keys[tuple(r)] for r in prefix.tolist()])
    marginal = torch.zeros(len(small_parts), dtype=torch.float64).index_add_(0, index, log_p.exp()).log()
    torch.testing.assert_close(marginal, small.log_prob(small_parts).double(), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- seating


@pytest.mark.parametrize("name,make,reference", CASES, ids=IDS)
def test_seating_weights_are_the_exact_predictive(name, make, reference):
    labels = torch.tensor([0, 1, 0, 2, 2, 0])
    counts = torch.tensor([3.0, 1.0, 0.0, 2.0])  # blocks 0, 1, (empty slot), 2
    dist = make(7)
    weights = dist.seating_log_weights(counts, 6).double()
    assert weights.shape == (5,) and weights[2] == -math.inf
    base = reference(labels.tolist())
    for slot, label in [(0, 0), (1, 1), (3, 2), (4, 3)]:
        expected = reference([*labels.tolist(), label]) - base
        assert abs(float(weights[slot]) - expected) < 1e-5
    assert abs(float(weights.exp().sum()) - 1) < 1e-5


def test_seating_weights_pitman_yor_closed_form_and_batching():
    dist = PitmanYor(0.4, 0.25, 10)
    counts = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    weights = dist.seating_log_weights(counts)
    n = counts.sum(-1, keepdim=True)
    t = (counts > 0).sum(-1, keepdim=True)
    expected = torch.cat([torch.where(counts > 0, torch.log(counts - 0.25), -math.inf),
                          torch.log(0.4 + 0.25 * t)], -1) - torch.log(0.4 + n)
    assert weights.dtype == torch.float64
    torch.testing.assert_close(weights, expected)


def test_seating_weights_validation():
    dist = CRP(1.0, 5)
    with pytest.raises(ValueError, match="num_points_seated"):
        dist.seating_log_weights(torch.tensor([1.0, 2.0]), 4)
    with pytest.raises(ValueError, match="counts"):
        dist.seating_log_weights(torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match="counts"):
        dist.seating_log_weights(torch.tensor([1.5, 2.0]))


# ---------------------------------------------------------------------------------------------- sampling


def _chisquare_pvalue(observed: np.ndarray, probs: np.ndarray) -> float:
    """Chi-square goodness of fit after pooling cells with expected count < 5 into one."""
    expected = probs * observed.sum()
    small = expected < 5
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


@pytest.mark.parametrize("name,make,reference", CASES, ids=IDS)
def test_samples_are_canonical_and_follow_the_exact_law_of_partitions(name, make, reference):
    pyro.set_rng_seed(3)
    dist = make(5)
    samples = dist.sample((20000,))
    assert samples.dtype == torch.long and samples.shape == (20000, 5)
    assert bool(canonical_partition_labels.check(samples).all())
    parts = enumerate_partitions(5)
    index = (samples.unsqueeze(1) == parts).all(-1).long().argmax(1)
    observed = torch.bincount(index, minlength=len(parts)).numpy()
    probs = np.array([math.exp(reference(row)) for row in parts.tolist()])
    assert _chisquare_pvalue(observed, probs) > 1e-3


@pytest.mark.parametrize("name,make,reference", CASES, ids=IDS)
def test_number_of_clusters_at_n20_matches_exact_law(name, make, reference):
    pyro.set_rng_seed(0)
    dist = make(20)
    probs = dist.num_clusters_distribution().numpy()
    assert probs.shape == (21,) and abs(probs.sum() - 1) < 1e-9 and probs[0] == 0
    k = (dist.sample((20000,)).max(-1).values + 1).numpy()
    observed = np.bincount(k, minlength=21)
    assert _chisquare_pvalue(observed, probs) > 1e-3
    assert 0.5 * np.abs(observed / observed.sum() - probs).sum() < 0.03
    assert abs(k.mean() - dist.expected_num_clusters()) < 4 * k.std() / math.sqrt(len(k))


def test_crp_number_of_clusters_equals_stirling_formula():
    for n in (1, 7, 20, 60):
        dist = CRP(0.7, n)
        stirling = stirling1_unsigned(n)
        rising = math.prod(0.7 + i for i in range(n))
        expected = torch.tensor([0.7**k * s / rising for k, s in enumerate(stirling)], dtype=torch.float64)
        torch.testing.assert_close(dist.num_clusters_distribution(), expected, rtol=1e-9, atol=1e-15)
        assert abs(dist.expected_num_clusters() - sum(0.7 / (0.7 + i) for i in range(n))) < 1e-9


@pytest.mark.parametrize("name,make,reference", CASES, ids=IDS)
def test_number_of_clusters_matches_enumeration(name, make, reference):
    dist = make(7)
    parts = enumerate_partitions(7)
    probs = np.array([math.exp(reference(row)) for row in parts.tolist()])
    by_k = np.bincount((parts.max(-1).values + 1).numpy(), weights=probs, minlength=8)
    np.testing.assert_allclose(dist.num_clusters_distribution().numpy(), by_k, atol=1e-12)


def test_pitman_yor_expected_clusters_closed_form():
    alpha, d, n = 1.3, 0.4, 50
    log_ratio = sum(math.log(alpha + d + i) - math.log(alpha + i) for i in range(n))
    expected = alpha / d * (math.exp(log_ratio) - 1)
    assert abs(PitmanYor(alpha, d, n).expected_num_clusters() - expected) < 1e-8


def test_mfm_large_n_matches_definition():
    dist = MixtureOfFiniteMixtures(60, num_components_rate=2.0, gamma=0.5, validate_args=False)
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 6, (3, 60), generator=g)
    labels[2] = torch.arange(60)  # 60 singletons: V_n(t) at t = n
    expected = torch.tensor([mfm_log_prob(row, 2.0, 0.5, k_max=600) for row in labels.tolist()])
    torch.testing.assert_close(dist.log_prob(labels).double(), expected.double(), rtol=1e-5, atol=1e-4)


def test_mfm_samples_match_the_generative_process():
    """The MFM partition law against a direct simulation of K, Dirichlet weights and i.i.d. labels."""
    rng = np.random.default_rng(6)
    n, rate, gamma, draws = 4, 1.5, 0.7, 40000
    k = 1 + rng.poisson(rate, draws)
    weights = rng.gamma(gamma, size=(draws, k.max())) * (np.arange(k.max()) < k[:, None])
    weights /= weights.sum(1, keepdims=True)
    cum = weights.cumsum(1)
    z = (rng.random((draws, n, 1)) > cum[:, None, :-1]).sum(-1)
    simulated = canonicalize(torch.from_numpy(z))
    parts = enumerate_partitions(n)
    index = (simulated.unsqueeze(1) == parts).all(-1).long().argmax(1)
    observed = torch.bincount(index, minlength=len(parts)).numpy()
    probs = MixtureOfFiniteMixtures(n, rate, gamma).log_prob(parts).double().exp().numpy()
    assert _chisquare_pvalue(observed, probs) > 1e-3


def test_crp_fast_sampler_agrees_with_pitman_yor_general_sampler():
    """Discount 0 uses the pointer-jumping sampler; a tiny discount uses the sequential one."""
    pyro.set_rng_seed(7)
    k_fast = (CRP(2.0, 30).sample((20000,)).max(-1).values + 1).double()
    k_slow = (PitmanYor(2.0, 1e-9, 30).sample((20000,)).max(-1).values + 1).double()
    se = math.sqrt(k_fast.var() / 20000 + k_slow.var() / 20000)
    assert abs(float(k_fast.mean() - k_slow.mean())) < 4 * se
    assert abs(float(k_fast.mean()) - CRP(2.0, 30).expected_num_clusters()) < 4 * float(k_fast.std()) / 141


def test_sampling_respects_the_global_seed_and_shapes():
    dist = PitmanYor(0.5, 0.5, 12)
    pyro.set_rng_seed(0)
    first = dist.sample((4,))
    pyro.set_rng_seed(0)
    assert torch.equal(first, dist.sample((4,)))
    assert dist.sample().shape == (12,)
    assert CRP(1.0, 1).sample((3,)).tolist() == [[0], [0], [0]]
    assert dist.expand((2, 3)).sample((5,)).shape == (5, 2, 3, 12)


# ---------------------------------------------------------------------------------------------- Pyro integration


def test_pyro_trace_plate_and_enumerate_support():
    def program():
        with pyro.plate("sets", 3):
            return pyro.sample("labels", CRP(0.7, 6))

    trace = pyro.poutine.trace(program).get_trace()
    labels = trace.nodes["labels"]["value"]
    assert labels.shape == (3, 6)
    expected = sum(seating_log_prob(row, 0.7, 0.0) for row in labels.tolist())  # the plate sums its 3 draws
    assert float(trace.log_prob_sum()) == pytest.approx(expected, abs=1e-4)
    dist = MixtureOfFiniteMixtures(4).expand((2,))
    assert dist.enumerate_support().shape == (15, 2, 4)
    assert dist.enumerate_support(expand=False).shape == (15, 1, 4)
    assert dist.log_prob(dist.enumerate_support()).shape == (15, 2)
    assert "CRP(alpha=0.7, num_points=6)" == repr(CRP(0.7, 6))


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("build,match", [
    (lambda: CRP(0.0, 5), "alpha"),
    (lambda: CRP(-1.0, 5), "alpha"),
    (lambda: CRP(float("nan"), 5), "alpha"),
    (lambda: CRP(torch.tensor([1.0, -1.0]), 5), "alpha"),
    (lambda: CRP(0.7, 0), "num_points"),
    (lambda: CRP(0.7, 2.5), "num_points"),
    (lambda: CRP(0.7, True), "num_points"),
    (lambda: PitmanYor(1.0, 1.0, 5), "discount"),
    (lambda: PitmanYor(1.0, -0.1, 5), "discount"),
    (lambda: PitmanYor(-0.5, 0.3, 5), "alpha"),
    (lambda: PitmanYor(1.0, float("inf"), 5), "discount"),
    (lambda: MixtureOfFiniteMixtures(5, num_components_rate=0.0), "num_components_rate"),
    (lambda: MixtureOfFiniteMixtures(5, gamma=-1.0), "gamma"),
    (lambda: MixtureOfFiniteMixtures(0), "num_points"),
    (lambda: CRP(0.7, 13).enumerate_support(), "num_points"),
])
def test_bad_parameters_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("value,match", [
    (torch.tensor([0, 1, 1]), "points"),
    (torch.tensor([0, 1, 1, -2]), "non-negative"),
    (torch.tensor([-1, -1, -1, -1]), "no real point"),
    (torch.tensor([0.0, 0.5, 1.0, 1.0]), "integer"),
    (torch.tensor([0.0, float("nan"), 1.0, 1.0]), "NaN"),
    (torch.zeros(3, 4, dtype=torch.long), "batch_shape"),
])
def test_bad_labels_raise(value, match):
    with pytest.raises(ValueError, match=match):
        CRP(0.7, 4).expand((2,)).log_prob(value)
