"""Metrics against hand-computed values and plain-Python definitions."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch

from pyro_acp.diagnostics.metrics import (
    adjusted_mutual_info,
    adjusted_rand_index,
    coclustering,
    coclustering_error,
    kendall_tau,
    normalized_mutual_info,
    num_clusters_error,
    total_variation,
    v_measure,
)

SCORES = [adjusted_mutual_info, adjusted_rand_index, normalized_mutual_info, v_measure]


def rand_index_reference(a: list[int], b: list[int]) -> float:
    """Adjusted Rand index from its pair-counting definition (Hubert & Arabie)."""
    n = len(a)
    pairs = math.comb(n, 2)
    same_a = sum(math.comb(c, 2) for c in Counter(a).values())
    same_b = sum(math.comb(c, 2) for c in Counter(b).values())
    same_both = sum(math.comb(c, 2) for c in Counter(zip(a, b, strict=True)).values())
    expected = same_a * same_b / pairs
    return (same_both - expected) / (0.5 * (same_a + same_b) - expected)


def entropy(labels: list) -> float:
    counts = np.array(list(Counter(labels).values()), dtype=float)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi_reference(a: list[int], b: list[int]) -> float:
    """Mutual information over the arithmetic mean of the entropies."""
    mutual = entropy(a) + entropy(b) - entropy(list(zip(a, b, strict=True)))
    return mutual / (0.5 * (entropy(a) + entropy(b)))


def test_scores_equal_one_for_the_same_partition_in_any_labelling():
    truth = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    relabelled = torch.tensor([7, 7, 2, 2, 2, 0, 5, 5])
    for score in SCORES:
        assert score(truth, relabelled) == pytest.approx(1.0)


def test_ari_and_nmi_match_their_definitions():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 4, 30).tolist(), rng.integers(0, 3, 30).tolist()
        assert adjusted_rand_index(a, b) == pytest.approx(rand_index_reference(a, b))
        assert normalized_mutual_info(np.array(a), np.array(b)) == pytest.approx(nmi_reference(a, b))
        assert v_measure(a, b) == pytest.approx(nmi_reference(a, b))  # V-measure with beta=1 is this NMI


def test_batched_scores_drop_padding_and_equal_single_calls():
    rng = np.random.default_rng(1)
    sizes = [5, 9, 7]
    truth = torch.full((3, 9), -1)
    pred = torch.full((3, 9), -1)
    for row, n in enumerate(sizes):
        truth[row, :n] = torch.from_numpy(rng.integers(0, 3, n))
        pred[row, :n] = torch.from_numpy(rng.integers(0, 3, n))
    for score in [*SCORES, kendall_tau]:
        batched = score(truth, pred)
        assert batched.shape == (3,) and batched.dtype == torch.float64
        singles = [score(truth[r, :n], pred[r, :n]) for r, n in enumerate(sizes)]
        np.testing.assert_allclose(batched.numpy(), singles)
    assert num_clusters_error(truth, pred).tolist() == [
        abs(len(set(truth[r, :n].tolist())) - len(set(pred[r, :n].tolist()))) for r, n in enumerate(sizes)]


def test_ami_is_near_zero_for_independent_labels():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 5, 2000), rng.integers(0, 5, 2000)
    assert abs(adjusted_mutual_info(a, b)) < 0.01


def test_kendall_tau_counts_concordant_pairs():
    a = [0, 1, 2, 3, 4, 5]
    b = [0, 2, 1, 3, 5, 4]
    pairs = list(itertools.combinations(range(6), 2))
    sign = [np.sign(a[j] - a[i]) * np.sign(b[j] - b[i]) for i, j in pairs]
    assert kendall_tau(a, b) == pytest.approx(sum(sign) / len(pairs))
    assert kendall_tau(a, a[::-1]) == pytest.approx(-1.0)


def test_kendall_tau_degenerate_orders():
    # one side constant: the dummy element ranked last in both gives 3 concordant pairs out of tau-b's norm
    assert kendall_tau([0, 0, 0], [0, 1, 2]) == pytest.approx(3 / math.sqrt(3 * 6))
    assert math.isnan(kendall_tau([0, 0, 0], [0, 1, 2], degenerate="nan"))
    with pytest.raises(ValueError, match="degenerate"):
        kendall_tau([0, 1], [0, 1], degenerate="zero")


def test_num_clusters_error_single():
    assert num_clusters_error([0, 0, 1], [0, 1, 2]) == 1
    assert num_clusters_error([5, 5, 1], [0, 0, 1]) == 0


def test_coclustering_and_its_error_against_pair_loops():
    samples = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 2], [0, 0, 0, 1]])
    weights = [0.5, 0.25, 0.25]
    matrix = coclustering(samples.numpy(), weights)
    for i, j in itertools.product(range(4), repeat=2):
        expected = sum(w for row, w in zip(samples.tolist(), weights, strict=True) if row[i] == row[j])
        assert float(matrix[i, j]) == pytest.approx(expected)
    other = coclustering(samples[:1])
    pairs = list(itertools.combinations(range(4), 2))
    expected = sum(abs(float(matrix[i, j] - other[i, j])) for i, j in pairs) / len(pairs)
    assert coclustering_error(matrix, other) == pytest.approx(expected)
    assert coclustering_error(matrix, matrix) == 0.0
    batched = coclustering_error(torch.stack([matrix, other]), other.expand(2, 4, 4))
    assert batched.shape == (2,) and batched[1] == 0 and float(batched[0]) == pytest.approx(expected)


def test_coclustering_error_accepts_posterior_objects():
    class Posterior:
        def coclustering(self):
            return torch.eye(3)

    assert coclustering_error(Posterior(), torch.ones(3, 3)) == pytest.approx(1.0)


def test_total_variation_against_dictionary_reference():
    rng = np.random.default_rng(3)
    p_rows = rng.integers(0, 3, (40, 4))
    q_rows = rng.integers(0, 3, (25, 4))
    q_probs = rng.random(25)

    def canonical(row):
        seen: dict[int, int] = {}
        return tuple(seen.setdefault(v, len(seen)) for v in row)

    p_mass, q_mass = Counter(), Counter()
    for row in p_rows:
        p_mass[canonical(row)] += 1 / 40
    for row, w in zip(q_rows, q_probs / q_probs.sum(), strict=True):
        q_mass[canonical(row)] += w
    expected = 0.5 * sum(abs(p_mass[k] - q_mass[k]) for k in set(p_mass) | set(q_mass))
    assert total_variation(torch.from_numpy(p_rows), (q_rows, q_probs)) == pytest.approx(expected)
    assert total_variation((q_rows, q_probs), (q_rows + 5, q_probs * 3)) == pytest.approx(0.0, abs=1e-12)


def test_total_variation_accepts_posterior_like_objects():
    class Exact:
        partitions = torch.tensor([[0, 0], [0, 1]])
        probs = torch.tensor([0.25, 0.75])

    class Samples:
        samples = torch.tensor([[0, 0], [0, 1], [0, 1], [1, 0]])
        weights = None

    assert total_variation(Exact(), Samples()) == pytest.approx(0.0)


@pytest.mark.parametrize("call,match", [
    (lambda: adjusted_rand_index([0, 1, 1], [0, 1]), "shape"),
    (lambda: v_measure(torch.tensor([[0, 1, -1]]), torch.tensor([[0, -1, 1]])), "padding"),
    (lambda: adjusted_mutual_info([0.5, 1], [0, 1]), "integer"),
    (lambda: adjusted_mutual_info(torch.zeros(2, 2, 2), torch.zeros(2, 2, 2)), "shape"),
    (lambda: total_variation(torch.zeros(3, 4), torch.zeros(3, 5)), "points"),
    (lambda: total_variation((torch.zeros(3, 4), torch.ones(2)), torch.zeros(3, 4)), "entries"),
    (lambda: total_variation((torch.zeros(2, 4), torch.tensor([1.0, -1.0])), torch.zeros(3, 4)), "non-negative"),
    (lambda: coclustering_error(torch.eye(3), torch.eye(4)), "points"),
    (lambda: coclustering_error(torch.ones(3), torch.ones(3)), "shape"),
    (lambda: coclustering_error(torch.full((2, 2), math.nan), torch.eye(2)), "NaN"),
    (lambda: coclustering([[0, 1], [1, 1]], [1.0]), "entries"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_label_input_raises_type_error():
    with pytest.raises(TypeError, match="labels_true"):
        adjusted_rand_index("abc", [0, 1, 2])
