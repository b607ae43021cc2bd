"""Partition utilities against pure-Python references."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_acp.data.partitions import (
    bell_number,
    canonicalize,
    check_labels,
    cluster_sizes,
    coclustering_matrix,
    enumerate_partitions,
    is_canonical,
    log_falling_factorial,
    log_rising_factorial,
    log_unsigned_stirling1,
    num_clusters,
    one_hot_clusters,
)

BELL = [1, 1, 2, 5, 15, 52, 203, 877, 4140, 21147, 115975]  # OEIS A000110


def canonical_reference(row: list[int]) -> list[int]:
    """First-appearance numbering in plain Python, -1 padding kept."""
    seen: dict[int, int] = {}
    return [-1 if v == -1 else seen.setdefault(v, len(seen)) for v in row]


def random_labels(shape: tuple[int, ...], seed: int, pad: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 50, shape, generator=g)
    if pad:
        labels = labels.masked_fill(torch.rand(shape, generator=g) < 0.2, -1)
    return labels


def test_canonicalize_matches_reference_batched_with_padding():
    labels = random_labels((4, 6, 15), seed=0)
    out = canonicalize(labels)
    assert out.shape == labels.shape and out.dtype == torch.long
    expected = [canonical_reference(row) for row in labels.reshape(-1, 15).tolist()]
    assert out.reshape(-1, 15).tolist() == expected
    assert bool(is_canonical(out).all())
    assert torch.equal(canonicalize(out), out)


def test_is_canonical_num_clusters_and_sizes():
    labels = torch.tensor([[2, 2, 0, -1, 5], [0, 1, 0, 2, -1]])
    assert is_canonical(labels).tolist() == [False, True]
    assert num_clusters(labels).tolist() == [3, 3]
    assert cluster_sizes(canonicalize(labels)).tolist() == [[2, 1, 1], [2, 1, 1]]
    assert cluster_sizes(torch.tensor([0, 0, 1]), max_clusters=4).tolist() == [2, 1, 0, 0]


def test_one_hot_clusters():
    labels = torch.tensor([0, 1, 0, -1])
    members = one_hot_clusters(labels)
    assert members.tolist() == [[True, False, True, False], [False, True, False, False]]


@pytest.mark.parametrize("n", range(1, 9))
def test_enumerate_partitions_counts_uniqueness_and_canonical(n):
    parts = enumerate_partitions(n)
    assert parts.shape == (BELL[n], n) and bell_number(n) == BELL[n]
    assert torch.unique(parts, dim=0).shape[0] == BELL[n]
    assert bool(is_canonical(parts).all())


def test_enumerate_partitions_equals_brute_force_at_n5():
    import itertools

    brute = {tuple(canonical_reference(list(p))) for p in itertools.product(range(5), repeat=5)}
    assert {tuple(r) for r in enumerate_partitions(5).tolist()} == brute


def test_enumerate_and_bell_reject_bad_sizes():
    with pytest.raises(ValueError, match="num_points"):
        enumerate_partitions(0)
    with pytest.raises(ValueError, match="too many"):
        enumerate_partitions(12, max_partitions=1000)
    with pytest.raises(ValueError, match="non-negative"):
        bell_number(-1)


def test_coclustering_matrix_against_pair_loop():
    samples = random_labels((30, 7), seed=1, pad=False) % 3
    weights = torch.rand(30, generator=torch.Generator().manual_seed(2))
    weights = weights / weights.sum()
    matrix = coclustering_matrix(samples, weights)
    rows = samples.tolist()
    for i in range(7):
        for j in range(7):
            expected = sum(float(w) for row, w in zip(rows, weights, strict=True) if row[i] == row[j])
            assert float(matrix[i, j]) == pytest.approx(expected, abs=1e-6)
    unweighted = coclustering_matrix(samples)
    assert float(unweighted[0, 1]) == pytest.approx(sum(r[0] == r[1] for r in rows) / 30, abs=1e-6)


def test_stirling_numbers_and_factorials():
    expected = [0, 120, 274, 225, 85, 15, 1]  # |s(6, k)|
    log_s = log_unsigned_stirling1(6)
    assert torch.allclose(log_s.exp(), torch.tensor(expected, dtype=torch.float64))
    assert abs(float(torch.logsumexp(log_unsigned_stirling1(30), 0)) - math.lgamma(31)) < 1e-9
    x, n = torch.tensor(2.5, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    assert float(log_rising_factorial(x, n).exp()) == pytest.approx(2.5 * 3.5 * 4.5)
    assert float(log_falling_factorial(x, n).exp()) == pytest.approx(2.5 * 1.5 * 0.5)


@pytest.mark.parametrize("value,match", [
    (torch.tensor([0.0, float("nan")]), "NaN"),
    (torch.tensor([0.0, 0.5]), "integer"),
    (torch.tensor([0, -3]), "non-negative"),
    (torch.tensor(3), "shape"),
    (torch.tensor([True, False]), "shape"),
    (torch.zeros(2, 0, dtype=torch.long), "empty"),
])
def test_check_labels_rejects_bad_input(value, match):
    with pytest.raises(ValueError, match=match):
        check_labels(value)
