"""Priors over partitions of a fixed number of nodes into blocks of constrained sizes (no batch shape):

- :class:`BalancedPartition` — uniform over the partitions of N nodes into ``num_blocks`` blocks of equal
  size (sizes differ by at most one): the "labels" site of :class:`~pyro_acp.models.LogDegreeSBM`.
- :class:`SizedBlocksPartition` — blocks of i.i.d. uniform sizes given their sum, nodes dealt at random: the
  "labels" site of :class:`~pyro_acp.models.PlantedPartition` (the CLUSTER benchmark's recipe).

Both have exact ``log_prob`` and ``enumerate_support`` (for exact posteriors at small N), and batched samplers
used by the graph simulators.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

from pyro_acp.data.partitions import canonicalize, check_labels, cluster_sizes, enumerate_partitions
from pyro_acp.validation import check_positive_int

_NO_SHAPE = torch.Size()
#: nats taken off a seating weight per unit of constraint violation (see SizedBlocksPartition.seating_log_weights):
#: far below any likelihood difference between two slots, so on a valid state an invalid move is never chosen
#: (its weight underflows to exactly 0 against a valid one), yet finite, so an invalid state moves towards validity
VIOLATION_PENALTY = 1e6


def balanced_block_sizes(num_points: int, num_blocks: int) -> list[int]:
    """Sizes of ``num_blocks`` blocks as equal as possible (differing by at most one), empty ones dropped."""
    q, r = divmod(num_points, num_blocks)
    return [s for s in [q + 1] * r + [q] * (num_blocks - r) if s > 0]


class _FixedPartition(TorchDistribution):
    """Shared parts of the priors over partitions of a fixed number of nodes with no batch shape: the
    support, ``expand`` and ``enumerate_support`` (the partitions of N nodes with finite ``log_prob``)."""

    arg_constraints: dict = {}
    has_enumerate_support = True
    num_points: int

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.num_points - 1), 1)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != torch.Size():
            raise NotImplementedError(f"{type(self).__name__} has no batch shape; use sample_shape")
        return self

    def enumerate_support(self, expand: bool = True) -> Tensor:
        partitions = enumerate_partitions(self.num_points)
        return partitions[torch.isfinite(self.log_prob(partitions))]


def check_block_counts(num_blocks: Any) -> tuple[int, ...]:
    """A positive int, or a non-empty sequence of distinct positive ints, as a sorted tuple of block counts."""
    if isinstance(num_blocks, (list, tuple)):
        if not num_blocks:
            raise ValueError("num_blocks must be a positive int or a non-empty sequence of them, got []")
        counts = tuple(sorted({check_positive_int(k, "num_blocks") for k in num_blocks}))
        if len(counts) != len(num_blocks):
            raise ValueError(f"num_blocks must list distinct block counts, got {list(num_blocks)}")
        return counts
    return (check_positive_int(num_blocks, "num_blocks"),)


class BalancedPartition(_FixedPartition):
    """Uniform over partitions of ``num_points`` into K blocks of (near-)equal size, K uniform on the
    ``num_blocks`` choices (an int: K fixed; a sequence such as (2, 3, 4): K drawn first).

    Sampling draws K, puts the points in a uniformly random order and deals them round-robin into the blocks,
    which is uniform over labelled equal-size assignments and hence over the unlabelled partitions. The
    number of such partitions is c_K = N! / (prod_k n_k! prod_s m_s!) with m_s the number of blocks of size
    s, so p(partition) = sum_K [its block sizes are K's] / (|choices| c_K), exact (-inf for any partition
    with other block sizes). Samples are canonical labels.
    """

    def __init__(self, num_blocks: int | tuple[int, ...], num_points: int, validate_args: bool | None = None):
        self.choices = check_block_counts(num_blocks)
        self.num_blocks = self.choices[0] if len(self.choices) == 1 else self.choices
        self.num_points = check_positive_int(num_points, "num_points")
        self._sizes, log_counts = [], []
        for k in self.choices:
            sizes = balanced_block_sizes(num_points, k)
            self._sizes.append(sorted(sizes, reverse=True) + [0] * (num_points - len(sizes)))
            multiplicities = torch.bincount(torch.tensor(sizes))
            log_counts.append(math.lgamma(num_points + 1) - sum(math.lgamma(s + 1) for s in sizes)
                              - float(torch.lgamma(multiplicities.double() + 1).sum()))
        self._sizes = torch.tensor(self._sizes)  # (C, N) sorted block sizes of each choice
        self._log_probs = -torch.tensor(log_counts, dtype=torch.float64) - math.log(len(self.choices))
        super().__init__(torch.Size(), torch.Size((num_points,)), validate_args=validate_args)

    def sample(self, sample_shape=_NO_SHAPE) -> Tensor:
        shape = torch.Size(sample_shape) + self.event_shape
        choices = torch.tensor(self.choices)
        k = choices[torch.randint(len(self.choices), shape[:-1])]
        rank = torch.rand(shape).argsort(-1).argsort(-1)
        return canonicalize(rank % k.unsqueeze(-1))

    def log_prob(self, value: Tensor) -> Tensor:
        labels = canonicalize(check_labels(value))
        sizes = cluster_sizes(labels, self.num_points).sort(-1, descending=True).values
        matches = (sizes.unsqueeze(-2) == self._sizes.to(sizes.device)).all(-1)  # (..., C)
        log_p = torch.where(matches, self._log_probs.to(sizes.device), -math.inf).logsumexp(-1)
        return log_p.to(torch.get_default_dtype())


def block_size_counts(num_blocks: int, low: int, high: int, max_points: int) -> Tensor:
    """(num_blocks + 1, max_points + 1) float64 table: entry [k, n] is the number of size vectors
    (n_1..n_k), each n_j in [low, high), summing to n (the k-fold convolution of a uniform count)."""
    counts = torch.zeros(num_blocks + 1, max_points + 1, dtype=torch.float64)
    counts[0, 0] = 1.0
    for k in range(1, num_blocks + 1):
        for size in range(low, min(high, max_points + 1)):
            counts[k, size:] += counts[k - 1, : max_points + 1 - size]
    return counts


class SizedBlocksPartition(_FixedPartition):
    """Partitions of N nodes into ``num_blocks`` blocks whose sizes are i.i.d. uniform on [low, high),
    conditioned on summing to N, the nodes dealt uniformly at random (the CLUSTER benchmark's recipe).

    With c_K(N) the number of size vectors of K blocks summing to N (:func:`block_size_counts`), every
    ordered size vector has probability 1 / c_K(N) and, given it, every assignment of the nodes
    prod_k n_k! / N!; the K! / prod_s m_s! size vectors and prod_s m_s! assignments that give one
    unordered partition (m_s blocks of size s) sum to
        p(partition) = K! prod_k n_k! / (N! c_K(N))
    for a partition into exactly K blocks of allowed sizes, 0 otherwise. Samples are canonical labels.
    """

    def __init__(self, num_blocks: int, block_sizes: tuple[int, int], num_points: int,
                 validate_args: bool | None = None):
        self.num_blocks = check_positive_int(num_blocks, "num_blocks")
        self.num_points = check_positive_int(num_points, "num_points")
        self.low, self.high = check_block_sizes(block_sizes)
        self._counts = block_size_counts(self.num_blocks, self.low, self.high, self.num_points)
        if self._counts[-1, -1] == 0:
            raise ValueError(f"{self.num_blocks} blocks of sizes in [{self.low}, {self.high}) cannot hold "
                             f"{self.num_points} nodes (between {self.num_blocks * self.low} and "
                             f"{self.num_blocks * (self.high - 1)})")
        super().__init__(torch.Size(), torch.Size((num_points,)), validate_args=validate_args)

    def sample(self, sample_shape=_NO_SHAPE, generator: torch.Generator | None = None) -> Tensor:
        shape = torch.Size(sample_shape)
        total = torch.full((shape.numel(),), self.num_points, dtype=torch.long)
        labels = sized_block_labels(total, self.num_blocks, self.low, self.high, generator)
        return canonicalize(labels).reshape(*shape, self.num_points)

    def log_prob(self, value: Tensor) -> Tensor:
        labels = canonicalize(check_labels(value))
        sizes = cluster_sizes(labels, self.num_points).to(torch.float64)
        used = sizes > 0
        ok = (used.sum(-1) == self.num_blocks) & ((~used) | ((sizes >= self.low) & (sizes < self.high))).all(-1)
        log_p = (math.lgamma(self.num_blocks + 1) + torch.lgamma(sizes + 1).sum(-1)
                 - math.lgamma(self.num_points + 1) - math.log(float(self._counts[-1, -1])))
        return torch.where(ok, log_p, -math.inf).to(torch.get_default_dtype())

    def seating_log_weights(self, counts: Tensor, num_seated: int) -> Tensor:
        """(..., W + 1) log weights of seating one more node in each of the W slots of sizes ``counts`` (...,
        W) (0: an empty slot, -inf) or in a new block (the last), with ``num_seated`` nodes in ``counts``.

        For a node of a complete partition (``num_seated`` = N - 1, what collapsed Gibbs sweeps need) these
        are exact: p(partition) is proportional to prod_k n_k! on the valid partitions (exactly K blocks, all
        sizes in [low, high)), so joining a block of n_k nodes weighs log(n_k + 1), a new block log 1 = 0,
        and a choice that leaves the partition invalid has probability 0. Invalid choices get
        -``VIOLATION_PENALTY`` per unit of violation instead of -inf: on a valid state they still never win
        against a valid one, and from an invalid state (a guide's sample with a block too small, say) the
        node goes where the partition comes closest to valid. With fewer nodes seated (Gibbs's sequential
        start) a choice counts as valid when the R = N - 1 - ``num_seated`` nodes still to come can complete
        it (bring every block up to ``low``, up to K blocks, none above ``high`` - 1): a feasible start, not
        the prior's marginal predictive.
        """
        counts = torch.as_tensor(counts, dtype=torch.float64)
        remaining = self.num_points - 1 - int(num_seated)
        width = counts.shape[-1]
        # after[..., j, :]: the slot sizes once the node took choice j (slot j, or j = W: a new block)
        grown = torch.nn.functional.pad(counts, (0, 1))
        after = grown.unsqueeze(-2) + torch.eye(width + 1, dtype=torch.float64)
        used = after > 0
        blocks = used.sum(-1)
        over = (after - (self.high - 1)).clamp(min=0).sum(-1)
        too_many = (blocks - self.num_blocks).clamp(min=0)
        missing = (self.num_blocks - blocks).clamp(min=0)
        shortfall = torch.where(used, (self.low - after).clamp(min=0), 0.0).sum(-1) + self.low * missing
        room = torch.where(used, (self.high - 1 - after).clamp(min=0), 0.0).sum(-1) + (self.high - 1) * missing
        violation = over + too_many + (shortfall - remaining).clamp(min=0) + (remaining - room).clamp(min=0)
        weights = torch.log(grown + 1.0) - VIOLATION_PENALTY * violation
        empty = torch.nn.functional.pad(counts == 0, (0, 1))
        return weights.masked_fill(empty, -math.inf)


def check_block_sizes(block_sizes: Any) -> tuple[int, int]:
    """(low, high) with 1 <= low < high: a half-open range of block sizes."""
    try:
        low, high = block_sizes
    except (TypeError, ValueError) as err:
        raise ValueError(f"block_sizes must be a range (low, high), got {block_sizes!r}") from err
    low, high = check_positive_int(low, "block_sizes low"), check_positive_int(high, "block_sizes high")
    if high <= low:
        raise ValueError(f"block_sizes (low, high) is half-open and needs high > low, got ({low}, {high})")
    return low, high


def sized_block_labels(num_points: Tensor, num_blocks: int, low: int, high: int,
                       generator: torch.Generator | None = None) -> Tensor:
    """(B, max N) labels (-1 beyond each N_b): block sizes uniform on [low, high) conditioned on summing to
    N_b, drawn one block at a time from the exact conditional P(n_k | rest) ∝ c_{K-k}(rest - n_k), then the
    first N_b positions of a random order dealt into the blocks. ``num_points`` (B,) long."""
    device = num_points.device
    n_max = int(num_points.max())
    counts = block_size_counts(num_blocks, low, high, n_max).to(device)
    sizes = torch.arange(low, high, device=device)
    remaining = num_points.clone()
    block_sizes = []
    for k in range(num_blocks - 1, -1, -1):  # k blocks still to fill after this one
        rest = remaining.unsqueeze(-1) - sizes  # (B, W)
        weights = torch.where((rest >= 0) & (rest <= n_max), counts[k, rest.clamp(0, n_max)], 0.0)
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(-1)
        block_sizes.append(sizes[pick])
        remaining = remaining - sizes[pick]
    ends = torch.stack(block_sizes, -1).cumsum(-1)  # (B, K)
    keys = torch.rand(num_points.shape[0], n_max, generator=generator, device=device)
    real = torch.arange(n_max, device=device) < num_points.unsqueeze(-1)
    rank = keys.masked_fill(~real, 2.0).argsort(-1).argsort(-1)
    labels = torch.searchsorted(ends, rank, right=True)
    return labels.masked_fill(~real, -1)
