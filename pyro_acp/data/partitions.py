"""Tensor utilities for partitions written as integer label vectors.

A partition of N points is a LongTensor of shape (..., N). Its *canonical* form numbers the clusters
0, 1, 2, ... by order of first appearance, so two labellings of the same partition have one canonical
form. Padding positions carry the label -1 and are left untouched by every function here.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from pyro_acp.validation import PAD_LABEL, check_labels


def canonicalize(labels: Tensor) -> Tensor:
    """Relabel clusters 0, 1, ... by order of first appearance, batched over leading dimensions.

    Vectorised: first-appearance positions are found with one ``scatter_reduce`` and ranked with a sort,
    so the cost is O(N log N) per partition with no Python loop.
    """
    labels = check_labels(labels)
    shape = labels.shape
    flat = labels.reshape(-1, shape[-1])
    num_points = flat.shape[-1]
    pad = flat < 0
    safe = flat.clamp(min=0)
    num_labels = int(safe.max()) + 1
    positions = torch.arange(num_points, device=flat.device).expand_as(flat)
    first = torch.full((flat.shape[0], num_labels), num_points, device=flat.device, dtype=torch.long)
    first.scatter_reduce_(1, safe.masked_fill(pad, 0), positions.masked_fill(pad, num_points), "amin")
    rank = first.argsort(dim=1).argsort(dim=1)
    out = rank.gather(1, safe).masked_fill(pad, PAD_LABEL)
    return out.reshape(shape)


def is_canonical(labels: Tensor) -> Tensor:
    """Boolean (...,) telling which labellings are already canonical."""
    labels = check_labels(labels)
    return (canonicalize(labels) == labels).all(-1)


def num_clusters(labels: Tensor) -> Tensor:
    """Number of distinct clusters of each partition (padding ignored), shape (...,)."""
    return canonicalize(labels).max(-1).values + 1


def cluster_sizes(labels: Tensor, max_clusters: int | None = None) -> Tensor:
    """Cluster sizes (..., K) of canonical labels (K = max number of clusters unless given)."""
    labels = check_labels(labels)
    k = int(labels.max()) + 1 if max_clusters is None else max_clusters
    shape = labels.shape
    flat = labels.reshape(-1, shape[-1])
    valid = flat >= 0
    sizes = torch.zeros(flat.shape[0], k + 1, dtype=torch.long, device=flat.device)
    sizes.scatter_add_(1, flat.masked_fill(~valid, k), valid.long())
    return sizes[:, :k].reshape(*shape[:-1], k)


def one_hot_clusters(labels: Tensor, max_clusters: int | None = None) -> Tensor:
    """Membership tensor (..., K, N) of bools: entry (k, i) is True when point i is in cluster k."""
    labels = check_labels(labels)
    k = int(labels.max()) + 1 if max_clusters is None else max_clusters
    ks = torch.arange(k, device=labels.device)
    return labels.unsqueeze(-2) == ks.unsqueeze(-1)


def coclustering_matrix(labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Posterior co-clustering matrix (N, N) from partitions (S, N), optionally weighted (S,).

    Entry (i, j) is the (weighted) fraction of partitions in which i and j share a cluster; the weights are
    normalised here (they must have a positive sum). Accumulated in float64 (float32 sums over many samples
    drift by ~1e-4) and returned in the default dtype, with the diagonal exactly 1 (every point shares its
    own cluster).
    """
    labels = canonicalize(labels)
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    members = one_hot_clusters(labels).to(torch.float64)  # (S, K, N)
    if weights is None:
        weights = torch.ones(labels.shape[0], dtype=torch.float64, device=labels.device)
    weights = torch.as_tensor(weights, device=labels.device).to(torch.float64)
    total = weights.sum()
    if not total > 0:
        raise ValueError("the co-clustering weights must have a positive sum")
    matrix = torch.einsum("s,ski,skj->ij", weights / total, members, members)
    matrix.diagonal().fill_(1.0)
    return matrix.to(torch.get_default_dtype())


@lru_cache(maxsize=32)
def bell_number(n: int) -> int:
    """Number of partitions of n points (Bell triangle)."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    row = [1]
    for _ in range(n):
        nxt = [row[-1]]
        for value in row:
            nxt.append(nxt[-1] + value)
        row = nxt
    return row[0]


def enumerate_partitions(num_points: int, max_partitions: int = 5_000_000) -> Tensor:
    """Every partition of ``num_points`` points as canonical labels, shape (Bell(N), N).

    Built column by column as restricted growth strings: each partial partition with current maximum m
    is extended by the labels 0..m+1, all rows at once.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    total = bell_number(num_points)
    if total > max_partitions:
        raise ValueError(
            f"enumerating Bell({num_points}) = {total:,} partitions is too many (limit {max_partitions:,})"
        )
    rows = torch.zeros(1, 1, dtype=torch.long)
    maxima = torch.zeros(1, dtype=torch.long)
    for _ in range(1, num_points):
        choices = maxima + 2  # labels 0..m+1
        parent = torch.repeat_interleave(torch.arange(rows.shape[0]), choices)
        offsets = torch.arange(parent.shape[0]) - torch.repeat_interleave(choices.cumsum(0) - choices, choices)
        rows = torch.cat([rows[parent], offsets.unsqueeze(1)], dim=1)
        maxima = torch.maximum(maxima[parent], offsets)
    return rows


def log_falling_factorial(x: Tensor, n: Tensor) -> Tensor:
    """log of x (x-1) ... (x-n+1) via lgamma; requires x > n - 1."""
    return torch.lgamma(x + 1) - torch.lgamma(x - n + 1)


def log_rising_factorial(x: Tensor, n: Tensor) -> Tensor:
    """log of x (x+1) ... (x+n-1) via lgamma; requires x > 0."""
    return torch.lgamma(x + n) - torch.lgamma(x)


def log_unsigned_stirling1(n: int) -> Tensor:
    """log |s(n, k)| for k = 0..n as a float64 tensor (log 0 = -inf), by the standard recurrence."""
    row = torch.full((n + 1,), -math.inf, dtype=torch.float64)
    row[0] = 0.0
    for m in range(1, n + 1):
        shifted = torch.cat([torch.tensor([-math.inf], dtype=torch.float64), row[:-1]])
        row = torch.logaddexp(shifted, row + math.log(m - 1) if m > 1 else torch.full_like(row, -math.inf))
    return row


def size_biased_relabel(labels: Tensor, generator: torch.Generator | None = None, keys: Tensor | None = None
                        ) -> Tensor:
    """Renumber clusters (T, N) by first appearance in a uniformly random point order, per row (``keys``
    (T, N): the uniforms ordering the points, drawn from ``generator`` when None).

    The resulting cluster order is size-biased: cluster s comes first with probability |s| / N.
    """
    if keys is None:
        keys = torch.rand(labels.shape, generator=generator, device=labels.device)
    valid = labels >= 0
    safe = labels.clamp(min=0)
    num_labels = int(safe.max()) + 1
    first = keys.new_full((labels.shape[0], num_labels), 2.0)
    first.scatter_reduce_(1, safe, keys.masked_fill(~valid, 2.0), "amin")
    rank = first.argsort(1).argsort(1)
    return rank.gather(1, safe).masked_fill(~valid, PAD_LABEL)
