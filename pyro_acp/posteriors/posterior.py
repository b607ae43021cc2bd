"""Posterior distributions over partitions: the object every inference method returns.

A :class:`ClusteringPosterior` holds S partitions of N points (canonical labels, one row per sample),
optionally with estimated log posterior probabilities, importance / exact weights and chain indices. It
answers the questions statisticians ask of a clustering posterior: the MAP, the co-clustering matrix,
the posterior of the number of clusters, a decision-theoretic point estimate (Variation of Information or
Binder loss, found by a greedy search in the spirit of Dahl's SALSO), an ArviZ export and a figure.
:class:`ExactPosterior` is the same object built from an enumeration of every partition with its
probability (small N), and can draw samples for calibration checks.

Loss conventions (used by :func:`expected_loss` and :meth:`ClusteringPosterior.point_estimate`):

- **VI** (Variation of Information, Meila 2007) in nats: ``VI(c, s) = H(c) + H(s) - 2 I(c; s)`` with the
  entropies of the empirical cluster proportions (``n_k / N``). It lies in ``[0, log N]``.
- **Binder** with unit costs, *normalised*: the fraction of the ``N (N - 1) / 2`` point pairs on which the
  two partitions disagree (together in one, apart in the other), in ``[0, 1]``; 0 when N = 1. Multiply by
  ``N (N - 1) / 2`` for the count of disagreeing pairs.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.partitions import (
    bell_number,
    canonicalize,
    check_labels,
    cluster_sizes,
    coclustering_matrix,
    enumerate_partitions,
    one_hot_clusters,
)

LOSSES = ("vi", "binder")
_CHUNK_ELEMENTS = 4_000_000  # elements per chunk when evaluating losses over (candidates, samples, points)
_SEARCH_ELEMENTS = 40_000_000  # cap on the VI search's contingency tables (int32 entries)
_TOL = 1e-9  # a move must improve the expected loss by more than this to be taken
_EXHAUSTIVE_MAX_POINTS = 7  # search="auto" enumerates all Bell(N) partitions up to this N

__all__ = ["LOSSES", "ClusteringPosterior", "ExactPosterior", "PosteriorSummary", "expected_loss"]


# ---------------------------------------------------------------------------------------------- validation
def _check_partitions(samples: Any, name: str = "samples") -> Tensor:
    """(S, N) canonical LongTensor on the CPU, or ValueError naming the problem."""
    if isinstance(samples, (list, tuple)) and len(samples) == 0:
        raise ValueError(f"{name} is empty: at least one partition is needed")
    try:
        samples = torch.as_tensor(np.asarray(samples) if not isinstance(samples, Tensor) else samples)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an integer array of shape (S, N): {err}") from err
    if samples.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D of shape (S, N) (one partition per row), got shape {tuple(samples.shape)}"
            + ("; use samples[None] for a single partition" if samples.dim() == 1 else "")
        )
    if samples.shape[0] == 0:
        raise ValueError(f"{name} is empty: at least one partition is needed")
    samples = check_labels(samples.cpu(), name)
    if (samples < 0).any():
        raise ValueError(f"{name} contains negative labels; posterior partitions cannot be padded")
    return canonicalize(samples)


def _check_vector(value: Any, name: str, length: int, allow_neg_inf: bool = False) -> Tensor | None:
    """Optional (S,) float64 vector with no NaN (and no inf unless ``allow_neg_inf`` permits -inf)."""
    if value is None:
        return None
    value = torch.as_tensor(value).detach().cpu()
    if value.dtype == torch.bool or value.dtype.is_complex:
        raise TypeError(f"{name} must be a real-valued vector, got dtype {value.dtype}")
    value = value.to(torch.float64)
    if value.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},) to match the samples, got {tuple(value.shape)}")
    if torch.isnan(value).any():
        raise ValueError(f"{name} contains NaN")
    bad = torch.isposinf(value) | (torch.isneginf(value) & (not allow_neg_inf))
    if bad.any():
        raise ValueError(f"{name} contains inf")
    return value


def _check_weights(weights: Any, length: int, name: str = "weights") -> Tensor | None:
    """Optional non-negative (S,) weights, returned normalised to sum to one."""
    weights = _check_vector(weights, name, length)
    if weights is None:
        return None
    if (weights < 0).any():
        raise ValueError(f"{name} must be non-negative")
    total = weights.sum()
    if not total > 0:
        raise ValueError(f"{name} sum to zero")
    return weights / total


def _check_chain(chain: Any, length: int) -> Tensor | None:
    if chain is None:
        return None
    chain = torch.as_tensor(chain).cpu()
    if chain.dtype.is_floating_point or chain.dtype == torch.bool:
        raise TypeError(f"chain must hold integer chain indices, got dtype {chain.dtype}")
    if chain.shape != (length,):
        raise ValueError(f"chain must have shape ({length},) to match the samples, got {tuple(chain.shape)}")
    if (chain < 0).any():
        raise ValueError("chain indices must be non-negative")
    return chain.long()


def _check_x(x: Any, num_points: int) -> Any:
    """Keep the data as given, checking only that it describes ``num_points`` points."""
    if x is None:
        return None
    if hasattr(x, "number_of_nodes"):  # a networkx graph
        count = x.number_of_nodes()
    else:
        shape = tuple(np.shape(x.detach().cpu() if isinstance(x, Tensor) else x))
        if not shape:
            raise ValueError("x must be the observed data set (points first), got a scalar")
        count = shape[0]
    if count != num_points:
        raise ValueError(f"x describes {count} points but the samples have {num_points}")
    return x


def _check_loss(loss: str) -> str:
    if not isinstance(loss, str) or loss.lower() not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return loss.lower()


# ---------------------------------------------------------------------------------------------- losses
def _sum_xlogx_of_runs(codes: Tensor) -> Tensor:
    """Σ_v n_v log n_v over the multiplicities n_v of the values in each row of ``codes`` (R, N) -> (R,).

    Rows are sorted, runs of equal values numbered by a cumulative sum and counted with one scatter, so
    the cost is O(R N log N) whatever the number of distinct values.
    """
    ordered = codes.sort(dim=-1).values
    new_run = torch.ones_like(ordered, dtype=torch.bool)
    new_run[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run = new_run.cumsum(-1) - 1
    ones = torch.ones_like(run, dtype=torch.float64)
    counts = torch.zeros(codes.shape, dtype=torch.float64).scatter_add_(1, run, ones)
    return torch.xlogy(counts, counts).sum(-1)


def _expected_vi(candidates: Tensor, samples: Tensor, weights: Tensor) -> Tensor:
    """E_s VI(c, s) in nats for every candidate, chunked over candidates to bound memory."""
    n = candidates.shape[1]
    a_c = _sum_xlogx_of_runs(candidates)  # (C,)
    a_s = (weights * _sum_xlogx_of_runs(samples)).sum()
    width = int(samples.max()) + 1
    chunk = max(1, _CHUNK_ELEMENTS // (samples.shape[0] * n))
    a_cs = []
    for start in range(0, candidates.shape[0], chunk):
        joint = candidates[start : start + chunk, None, :] * width + samples[None]  # (c, S, N)
        a_cs.append(_sum_xlogx_of_runs(joint.reshape(-1, n)).reshape(joint.shape[:2]) @ weights)
    return ((a_c + a_s - 2 * torch.cat(a_cs)) / n).clamp(min=0.0)


def _coclustering64(samples: Tensor, weights: Tensor) -> Tensor:
    """Co-clustering matrix in float64, so that expected Binder losses are exact to rounding."""
    members = one_hot_clusters(samples).to(torch.float64)  # (S, K, N)
    return torch.einsum("s,ski,skj->ij", weights, members, members)


def _expected_binder(candidates: Tensor, coclustering: Tensor) -> Tensor:
    """Expected fraction of disagreeing pairs: Σ_{i<j} [C_ij (1 - P_ij) + (1 - C_ij) P_ij] / (N(N-1)/2)."""
    n = candidates.shape[1]
    if n < 2:
        return torch.zeros(candidates.shape[0], dtype=torch.float64)
    p = coclustering.to(torch.float64).clone()
    p.fill_diagonal_(0.0)
    q = 1.0 - 2.0 * p
    q.fill_diagonal_(0.0)
    chunk = max(1, _CHUNK_ELEMENTS // (n * n))
    together = []
    for start in range(0, candidates.shape[0], chunk):
        members = one_hot_clusters(candidates[start : start + chunk]).to(torch.float64)  # (c, K, N)
        together.append(torch.einsum("ckn,nm,ckm->c", members, q, members))
    return (p.sum() + torch.cat(together)) / (n * (n - 1))


def expected_loss(
    candidates: Tensor, samples: Tensor, loss: str = "vi", weights: Tensor | None = None
) -> Tensor:
    """Posterior expected loss (C,) of each candidate partition (C, N) against samples (S, N).

    ``weights`` (S,) are normalised (uniform when None). VI is in nats; Binder is the expected *fraction* of
    disagreeing pairs (see the module docstring). Vectorised over candidates and samples (chunked).
    """
    loss = _check_loss(loss)
    candidates = _check_partitions(candidates, "candidates")
    samples = _check_partitions(samples, "samples")
    if candidates.shape[1] != samples.shape[1]:
        raise ValueError(
            f"candidates have {candidates.shape[1]} points but samples have {samples.shape[1]}"
        )
    weights = _check_weights(weights, samples.shape[0])
    if weights is None:
        weights = torch.full((samples.shape[0],), 1.0 / samples.shape[0], dtype=torch.float64)
    if loss == "vi":
        return _expected_vi(candidates, samples, weights)
    return _expected_binder(candidates, _coclustering64(samples, weights))


# ---------------------------------------------------------------------------------------------- search
class _SearchState:
    """Candidate partitions (R, N) in cluster slots (R, Kcap), with the statistics that make moves cheap.

    ``delta(i)`` is the change in the expected loss (up to a positive factor) of inserting point i, already
    removed, into each slot; an empty slot (a new cluster) always scores 0.

    - VI: with h(n) = n log n, N E[VI] = Σ_k h(n_k) - 2 Σ_s w_s Σ_{l,k} h(T^s_lk) + const, where T^s is the
      contingency table of sample s against the candidate. Inserting i into cluster k adds
      dh(n_k) - 2 Σ_s w_s dh(T^s_{s_i,k}), dh(n) = h(n + 1) - h(n). Tables are kept as integer counts
      (R, S, L, Kcap) and dh is looked up, so one point costs O(R S Kcap).
    - Binder: E[pairs] = const + Σ_{i<j together} (1 - 2 P_ij); inserting i into k adds
      G[k, i] = Σ_{j in k} (1 - 2 P_ij), kept as (R, Kcap, N).
    """

    def __init__(self, starts: Tensor, samples: Tensor, weights: Tensor, loss: str) -> None:
        self.loss = loss
        self.labels = starts.clone()
        self.samples, self.weights = samples, weights
        num_runs, n = starts.shape
        self.rows = torch.arange(num_runs)
        self.capacity = int(starts.max()) + 2
        members = one_hot_clusters(starts, self.capacity).to(torch.float64)  # (R, Kcap, N)
        self.sizes = members.sum(-1).long()
        self.dh = _dh(torch.arange(n + 2, dtype=torch.float64))
        if loss == "vi":
            sample_members = one_hot_clusters(samples).to(torch.float64)  # (S, L, N)
            self.table = torch.einsum("sln,rkn->rslk", sample_members, members).round().int().contiguous()
            num_samples, num_labels = sample_members.shape[:2]
            # flat offset of (r, s, samples[s, i]) in the table, without the slot: (R, S, N)
            cell = torch.arange(num_samples)[:, None] * num_labels + samples  # (S, N)
            self.cell = self.rows[:, None, None] * (num_samples * num_labels) + cell[None]
            self.ones = torch.ones(num_runs * num_samples, dtype=torch.int32)
        else:
            p = _coclustering64(samples, weights)
            self.q = 1.0 - 2.0 * p
            self.q.fill_diagonal_(0.0)
            self.g = torch.einsum("jl,rkl->rkj", self.q, members).contiguous()

    def ensure_free_slot(self) -> None:
        """Grow the slot capacity so that every candidate keeps at least one empty slot."""
        if bool((self.sizes > 0).all(-1).any()):
            extra = max(4, self.capacity // 4)
            self.capacity += extra
            self.sizes = torch.nn.functional.pad(self.sizes, (0, extra))
            if self.loss == "vi":
                self.table = torch.nn.functional.pad(self.table, (0, extra))
            else:
                self.g = torch.nn.functional.pad(self.g, (0, 0, 0, extra))

    def _shift(self, i: int, slots: Tensor, sign: int) -> None:
        self.sizes[self.rows, slots] += sign
        if self.loss == "vi":
            index = (self.cell[:, :, i] * self.capacity + slots[:, None]).flatten()
            self.table.view(-1).index_add_(0, index, self.ones[: index.shape[0]], alpha=sign)
        else:
            rows = self.rows * self.capacity + slots
            self.g.view(-1, self.g.shape[-1]).index_add_(0, rows, self.q[i].expand(len(rows), -1), alpha=sign)

    def delta(self, i: int) -> Tensor:
        if self.loss == "vi":
            width = self.capacity
            counts = self.table.view(-1, width).index_select(0, self.cell[:, :, i].flatten())  # (R S, Kcap)
            gains = self.dh.take(counts.long()).view(*self.cell.shape[:2], width)
            joint = torch.einsum("s,rsk->rk", self.weights, gains)
            return self.dh[self.sizes] - 2.0 * joint
        return self.g[:, :, i].clone()

    def sweep(self, order: Tensor) -> Tensor:
        """Move each point (in ``order``) to its best slot; returns (R,) whether anything moved."""
        moved = torch.zeros(self.labels.shape[0], dtype=torch.bool)
        for i in order.tolist():
            self.ensure_free_slot()
            old = self.labels[:, i].clone()
            self._shift(i, old, -1)
            delta = self.delta(i)
            stay_delta = delta[self.rows, old]  # staying put is always allowed, even in an empty slot
            empty = self.sizes == 0
            first_empty = empty & (empty.cumsum(-1) == 1)
            delta = delta.masked_fill(empty & ~first_empty, math.inf)
            best = delta.argmin(-1)
            stay = delta[self.rows, best] >= stay_delta - _TOL
            new = torch.where(stay, old, best)
            self._shift(i, new, 1)
            self.labels[:, i] = new
            moved |= new != old
        return moved


def _h(n: Tensor) -> Tensor:
    return torch.xlogy(n, n)


def _dh(n: Tensor) -> Tensor:
    """h(n + 1) - h(n) with h(n) = n log n: the cost of growing a count by one."""
    return _h(n + 1.0) - _h(n)


def _starts_per_run(starts: Tensor, samples: Tensor, loss: str) -> int:
    """How many starts to search at once so that the VI tables stay within ``_SEARCH_ELEMENTS``."""
    if loss != "vi":
        return starts.shape[0]
    per_start = samples.shape[0] * (int(samples.max()) + 1) * 2 * (int(starts.max()) + 2)
    return max(1, min(starts.shape[0], _SEARCH_ELEMENTS // per_start))


def _greedy_search(
    starts: Tensor, samples: Tensor, weights: Tensor, loss: str, max_sweeps: int, generator: torch.Generator
) -> Tensor:
    """Local search from every start at once: sweeps over the points in random order until none moves."""
    state = _SearchState(starts, samples, weights, loss)
    for _ in range(max_sweeps):
        if not bool(state.sweep(torch.randperm(starts.shape[1], generator=generator)).any()):
            break
    return canonicalize(state.labels)


# ---------------------------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class PosteriorSummary:
    """What :meth:`ClusteringPosterior.summary` reports; ``str()`` gives a readable block."""

    method: str
    num_points: int
    num_samples: int
    num_unique: int
    k_mean: float
    k_mode: int
    k_distribution: dict[int, float]
    map_num_clusters: int
    map_probability: float | None
    map_frequency: float
    wall_time: float | None
    weighted: bool = False
    effective_sample_size: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        kind = "weighted partitions" if self.weighted else "samples"
        dist = ", ".join(f"{k}: {p:.3f}" for k, p in self.k_distribution.items() if p >= 5e-4)
        prob = "n/a" if self.map_probability is None else f"{self.map_probability:.4g}"
        lines = [
            f"Clustering posterior ({self.method})",
            f"  points N = {self.num_points}, {kind} S = {self.num_samples}, unique = {self.num_unique}"
            + (f", effective sample size {self.effective_sample_size:.1f}"
               if self.weighted and self.effective_sample_size is not None else ""),
            f"  number of clusters K: mean {self.k_mean:.3f}, mode {self.k_mode}",
            f"  P(K): {dist}",
            f"  MAP: K = {self.map_num_clusters}, probability {prob} (estimated), "
            f"frequency among {kind} {self.map_frequency:.3f}",
            "  wall time: " + ("n/a" if self.wall_time is None else f"{self.wall_time:.3f} s"),
        ]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- posterior
class ClusteringPosterior:
    """S posterior partitions of N points, with whatever the inference method knows about them.

    Args:
        samples: (S, N) integer labels, any labelling (stored canonical).
        log_prob: (S,) estimated log p(partition | x) (e.g. from an amortized guide); -inf allowed, NaN not.
        weights: (S,) non-negative weights (normalised here) for weighted sets such as an exact posterior;
            None means every sample counts 1/S.
        chain: (S,) chain index of each sample (MCMC); draws keep their order within a chain.
        method: name of the inference method ("acp", "gibbs", "nuts", "exact", ...).
        wall_time: seconds the method took.
        log_likelihood: (S,) log p(x | partition) when known.
        log_joint: (S,) log p(partition, x) (unnormalised posterior) when known, e.g. from conjugate MCMC.
        x: the observed data (array / tensor, points first, or a networkx graph), for plots.
        model: the generative model, for plots (its ``data_kind``) and provenance.

    ``map`` is the sample with the highest ``log_joint`` (exact up to a constant, so it ranks samples
    without estimation noise); without ``log_joint``, the highest ``log_prob``; without either, the
    partition with the largest total weight (the most frequent sample), ties going to the one seen first.
    """

    def __init__(
        self,
        samples: Any,
        log_prob: Any = None,
        weights: Any = None,
        chain: Any = None,
        method: str = "unknown",
        wall_time: float | None = None,
        log_likelihood: Any = None,
        x: Any = None,
        model: Any = None,
        *,
        log_joint: Any = None,
    ) -> None:
        self._samples = _check_partitions(samples)
        s = self._samples.shape[0]
        self._log_prob = _check_vector(log_prob, "log_prob", s, allow_neg_inf=True)
        self._weights = _check_weights(weights, s)
        self._chain = _check_chain(chain, s)
        self._log_likelihood = _check_vector(log_likelihood, "log_likelihood", s, allow_neg_inf=True)
        self._log_joint = _check_vector(log_joint, "log_joint", s, allow_neg_inf=True)
        if not isinstance(method, str):
            raise TypeError(f"method must be a string, got {type(method).__name__}")
        if wall_time is not None:
            wall_time = float(wall_time)
            if not (math.isfinite(wall_time) and wall_time >= 0):
                raise ValueError(f"wall_time must be a non-negative number of seconds, got {wall_time}")
        self.method = method
        self.wall_time = wall_time
        self.x = _check_x(x, self._samples.shape[1])
        self.model = model
        self._point_estimates: dict[tuple, Tensor] = {}

    # ------------------------------------------------------------------ stored values
    @property
    def samples(self) -> Tensor:
        """(S, N) canonical labels."""
        return self._samples

    @property
    def log_prob(self) -> Tensor | None:
        """(S,) estimated log posterior probability of each sample, or None."""
        return self._log_prob

    @property
    def weights(self) -> Tensor | None:
        """(S,) normalised weights, or None for equally weighted samples."""
        return self._weights

    @property
    def chain(self) -> Tensor | None:
        return self._chain

    @property
    def log_likelihood(self) -> Tensor | None:
        return self._log_likelihood

    @property
    def log_joint(self) -> Tensor | None:
        return self._log_joint

    @property
    def num_samples(self) -> int:
        return self._samples.shape[0]

    @property
    def num_points(self) -> int:
        return self._samples.shape[1]

    @property
    def effective_sample_size(self) -> float:
        """Kish's effective sample size 1 / sum w^2 of the (normalised) weights; S when unweighted."""
        return float(1.0 / (self.sample_weights**2).sum())

    @property
    def sample_weights(self) -> Tensor:
        """(S,) float64 weights summing to one (uniform when the samples are unweighted)."""
        if self._weights is not None:
            return self._weights
        return torch.full((self.num_samples,), 1.0 / self.num_samples, dtype=torch.float64)

    # ------------------------------------------------------------------ derived quantities
    @cached_property
    def num_clusters(self) -> Tensor:
        """(S,) number of clusters of each sample."""
        return self._samples.max(-1).values + 1

    @cached_property
    def map_index(self) -> int:
        """Index in ``samples`` of the MAP partition (see the class docstring for the rule)."""
        score = self._log_joint if self._log_joint is not None else self._log_prob
        if score is not None:
            return int(score.argmax())
        _, _, first = self._unique_with_first()
        return int(first[0])

    @property
    def map(self) -> Tensor:
        """(N,) the MAP partition."""
        return self._samples[self.map_index]

    def coclustering(self) -> Tensor:
        """(N, N) posterior probability that points i and j share a cluster."""
        return coclustering_matrix(self._samples, weights=self.sample_weights)

    def _unique_with_first(self) -> tuple[Tensor, Tensor, Tensor]:
        """Distinct partitions in decreasing total weight (ties: first seen), their weights, first index."""
        uniq, inverse = self._samples.unique(dim=0, return_inverse=True)
        total = torch.zeros(uniq.shape[0], dtype=torch.float64).index_add_(0, inverse, self.sample_weights)
        first = torch.full((uniq.shape[0],), self.num_samples, dtype=torch.long)
        first.scatter_reduce_(0, inverse, torch.arange(self.num_samples), "amin")
        order = first.argsort(stable=True)
        order = order[(-total[order]).argsort(stable=True)]
        return uniq[order], total[order], first[order]

    def unique(self) -> tuple[Tensor, Tensor]:
        """Distinct partitions (U, N) and their counts (LongTensor) or, when weighted, total weights.

        Sorted from the most to the least frequent; ties keep the order of first appearance.
        """
        uniq, total, _ = self._unique_with_first()
        if self._weights is None:
            return uniq, (total * self.num_samples).round().long()
        return uniq, total

    def num_clusters_distribution(self) -> Tensor:
        """(K_max + 1,) float64 posterior probability of each number of clusters (entry 0 is always 0)."""
        k = self.num_clusters
        return torch.zeros(int(k.max()) + 1, dtype=torch.float64).index_add_(0, k, self.sample_weights)

    def map_frequency(self) -> float:
        """Share of the samples (total weight) equal to the MAP partition."""
        same = (self._samples == self.map).all(-1)
        return float(self.sample_weights[same].sum())

    def summary(self) -> PosteriorSummary:
        """Posterior of K, the MAP's estimated probability and frequency, sizes and wall time."""
        dist = self.num_clusters_distribution()
        ks = torch.arange(dist.shape[0], dtype=torch.float64)
        map_prob = None if self._log_prob is None else float(self._log_prob[self.map_index].exp())
        return PosteriorSummary(
            method=self.method,
            num_points=self.num_points,
            num_samples=self.num_samples,
            num_unique=int(self._samples.unique(dim=0).shape[0]),
            k_mean=float((ks * dist).sum()),
            k_mode=int(dist.argmax()),
            k_distribution={k: float(p) for k, p in enumerate(dist.tolist()) if k > 0},
            map_num_clusters=int(self.num_clusters[self.map_index]),
            map_probability=map_prob,
            map_frequency=self.map_frequency(),
            wall_time=self.wall_time,
            weighted=self._weights is not None,
            effective_sample_size=self.effective_sample_size,
        )

    # ------------------------------------------------------------------ point estimate
    def point_estimate(
        self,
        loss: str = "vi",
        *,
        num_starts: int = 8,
        max_sweeps: int = 50,
        search: str = "auto",
        seed: int = 0,
    ) -> Tensor:
        """(N,) partition minimising the posterior expected loss ("vi" or "binder"; see the module docstring).

        ``search="greedy"``: a SALSO-style local search from the MAP and ``num_starts - 1`` further starts
        drawn from the posterior (distinct partitions, by weight; seeded): sweeps over the points in random
        order move each point to the existing cluster or the new cluster that lowers the expected loss most,
        until no point moves (or ``max_sweeps``); the start reaching the lowest expected loss wins. All
        starts run at once, and each move costs O(starts x distinct samples x clusters). ``"exhaustive"``
        scores all Bell(N) partitions (N <= 10). ``"auto"`` enumerates up to N = 7, searches greedily above.
        """
        loss = _check_loss(loss)
        if search not in ("auto", "greedy", "exhaustive"):
            raise ValueError(f"search must be 'auto', 'greedy' or 'exhaustive', got {search!r}")
        if isinstance(num_starts, bool) or not isinstance(num_starts, int) or num_starts < 1:
            raise ValueError(f"num_starts must be a positive integer, got {num_starts!r}")
        if isinstance(max_sweeps, bool) or not isinstance(max_sweeps, int) or max_sweeps < 1:
            raise ValueError(f"max_sweeps must be a positive integer, got {max_sweeps!r}")
        if search == "auto":
            search = "exhaustive" if self.num_points <= _EXHAUSTIVE_MAX_POINTS else "greedy"
        key = (loss, num_starts, max_sweeps, search, seed)
        if key not in self._point_estimates:
            self._point_estimates[key] = self._search(loss, num_starts, max_sweeps, search, seed)
        return self._point_estimates[key].clone()

    def _search(self, loss: str, num_starts: int, max_sweeps: int, search: str, seed: int) -> Tensor:
        uniq, total, _ = self._unique_with_first()
        if search == "exhaustive":
            if bell_number(self.num_points) > bell_number(10):
                raise ValueError(f"exhaustive search over Bell({self.num_points}) partitions is too large")
            candidates = enumerate_partitions(self.num_points)
        else:
            generator = torch.Generator().manual_seed(seed)
            extra = min(num_starts - 1, int((total > 0).sum()))
            drawn = torch.multinomial(total, extra, replacement=False, generator=generator) if extra else None
            starts = self.map[None] if drawn is None else torch.cat([self.map[None], uniq[drawn]])
            candidates = torch.cat([
                _greedy_search(group, uniq, total, loss, max_sweeps, generator)
                for group in starts.split(_starts_per_run(starts, uniq, loss))
            ])
        scores = expected_loss(candidates, uniq, loss, weights=total)
        return candidates[int(scores.argmin())]

    # ------------------------------------------------------------------ ArviZ
    def _draw_grid(self, num_draws: int | None, seed: int) -> Tensor:
        """(chains, draws) sample indices: chains as given, or a weighted resample for weighted sets."""
        if self._weights is not None:
            count = num_draws or max(self.num_samples, 1000)
            generator = torch.Generator().manual_seed(seed)
            return torch.multinomial(self._weights, count, replacement=True, generator=generator)[None]
        chain = self._chain if self._chain is not None else torch.zeros(self.num_samples, dtype=torch.long)
        ids, rank, counts = chain.unique(return_inverse=True, return_counts=True)
        length = int(counts.min())
        if int(counts.max()) != length:
            warnings.warn(
                f"chains have unequal lengths {counts.tolist()}; keeping the first {length} draws of each",
                stacklevel=3,
            )
        order = rank.argsort(stable=True)
        starts = counts.cumsum(0) - counts
        position = torch.arange(self.num_samples) - starts[rank[order]]
        keep = position < length
        grid = torch.empty(ids.shape[0], length, dtype=torch.long)
        grid[rank[order][keep], position[keep]] = order[keep]
        return grid

    def to_arviz(self, num_draws: int | None = None, seed: int = 0) -> Any:
        """ArviZ ``InferenceData`` (arviz 0.x) or ``DataTree`` (arviz 1.x) built with ``arviz.from_dict``.

        Posterior variables over (chain, draw): ``num_clusters``, ``largest_cluster_share``, ``log_prob``,
        ``log_likelihood`` and ``log_joint`` (when known), and ``labels`` over (chain, draw, point).
        Weighted sets (e.g. exact posteriors) are exported as one chain of ``num_draws`` (default
        max(S, 1000)) draws resampled by weight with ``seed``. Chains of unequal length are cut to the
        shortest, with a warning.
        """
        import arviz as az

        grid = self._draw_grid(num_draws, seed)
        share = cluster_sizes(self._samples).max(-1).values.to(torch.float64) / self.num_points
        variables = {
            "num_clusters": self.num_clusters,
            "largest_cluster_share": share,
            "log_prob": self._log_prob,
            "log_likelihood": self._log_likelihood,
            "log_joint": self._log_joint,
            "labels": self._samples,
        }
        posterior = {name: value[grid].numpy() for name, value in variables.items() if value is not None}
        return _arviz_from_posterior(az, posterior, self.num_points, self.method)

    # ------------------------------------------------------------------ plot
    def plot(self, ax: Any = None, path: str | Path | None = None, loss: str = "vi") -> Any:
        """Three panels: the data coloured by the ``loss`` point estimate, the co-clustering matrix sorted by
        that estimate, and the posterior of K. ``ax``: three matplotlib Axes to draw into (else a new
        figure). Saves to ``path`` when given; returns the figure. Never calls ``plt.show``.
        """
        return _plot_posterior(self, ax=ax, path=path, loss=loss)

    def __repr__(self) -> str:
        k_mean = float((self.num_clusters.to(torch.float64) * self.sample_weights).sum())
        weighted = ", weighted" if self._weights is not None else ""
        return (
            f"{type(self).__name__}(method={self.method!r}, num_samples={self.num_samples}, "
            f"num_points={self.num_points}, mean_K={k_mean:.2f}{weighted})"
        )


class ExactPosterior(ClusteringPosterior):
    """An enumerated posterior: every partition (M, N) with its probability (M,), e.g. from exact inference.

    ``log_prob`` is log ``probs`` (normalised), ``weights`` are ``probs``, the MAP is the most probable
    partition, and :meth:`sample` draws partitions from it.
    """

    def __init__(
        self,
        partitions: Any,
        probs: Any,
        *,
        method: str = "exact",
        wall_time: float | None = None,
        log_likelihood: Any = None,
        x: Any = None,
        model: Any = None,
        log_joint: Any = None,
    ) -> None:
        partitions = _check_partitions(partitions, "partitions")
        probs = _check_weights(probs, partitions.shape[0], name="probs")
        super().__init__(
            partitions, log_prob=probs.log(), weights=probs, method=method, wall_time=wall_time,
            log_likelihood=log_likelihood, x=x, model=model, log_joint=log_joint,
        )

    @classmethod
    def from_log_joint(cls, partitions: Any, log_joint: Any, **kwargs: Any) -> ExactPosterior:
        """Normalise log p(partition, x) over the enumerated partitions in log space (no underflow)."""
        partitions = _check_partitions(partitions, "partitions")
        log_joint = _check_vector(log_joint, "log_joint", partitions.shape[0], allow_neg_inf=True)
        if torch.isneginf(log_joint).all():
            raise ValueError("log_joint is -inf for every partition")
        probs = (log_joint - torch.logsumexp(log_joint, 0)).exp()
        return cls(partitions, probs, log_joint=log_joint, **kwargs)

    @property
    def partitions(self) -> Tensor:
        """(M, N) every enumerated partition, canonical."""
        return self._samples

    @property
    def probs(self) -> Tensor:
        """(M,) float64 posterior probabilities, summing to one."""
        return self._weights

    def sample(self, num_samples: int, seed: int | None = None) -> Tensor:
        """(num_samples, N) partitions drawn i.i.d. from the exact posterior (seeded when ``seed`` is given)."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        index = torch.multinomial(self._weights, num_samples, replacement=True, generator=generator)
        return self._samples[index]


def _arviz_from_posterior(az: Any, posterior: dict[str, np.ndarray], num_points: int, method: str) -> Any:
    """Call ``az.from_dict`` in the form of the installed ArviZ (0.x keywords, 1.x a dict of groups)."""
    coords = {"point": np.arange(num_points)}
    dims = {"labels": ["point"]}
    with warnings.catch_warnings():  # our log_likelihood is the total per draw, not loo's pointwise group
        warnings.filterwarnings("ignore", message="log_likelihood variable found in posterior")
        if "posterior" in inspect.signature(az.from_dict).parameters:  # arviz < 1.0: InferenceData
            data = az.from_dict(posterior=posterior, coords=coords, dims=dims)
        else:  # arviz >= 1.0: from_dict(groups) returns an xarray DataTree
            data = az.from_dict({"posterior": posterior}, coords=coords, dims=dims)
    data["posterior"].attrs["inference_method"] = method
    return data


# ---------------------------------------------------------------------------------------------- plotting
def _is_adjacency(a: np.ndarray, model: Any) -> bool:
    """Square 0/1 symmetric matrix with an empty diagonal, or any square matrix of a graph model."""
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        return False
    if getattr(model, "data_kind", None) == "graph":
        return True
    if model is not None or a.shape[0] < 3:
        return False
    binary = np.isin(a, (0, 1)).all()
    return bool(binary and np.array_equal(a, a.T) and not np.diag(a).any())


def _layout(post: ClusteringPosterior) -> tuple[np.ndarray | None, Any, str]:
    """(N, 2) positions of the points, the graph to draw edges of (or None) and an axis caption."""
    import networkx as nx

    x = post.x
    if x is None:
        return None, None, "no data"
    if hasattr(x, "number_of_nodes"):
        graph = x
    else:
        a = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=float)
        if _is_adjacency(a, post.model):
            graph = nx.from_numpy_array(a)
        elif a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1):
            return np.stack([a.reshape(-1), np.arange(a.shape[0])], 1), None, "x (vertical: point index)"
        elif a.ndim == 2 and a.shape[1] == 2:
            return a, None, "x"
        elif a.ndim == 2:
            centred = a - a.mean(0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            return centred @ vt[:2].T, None, "first two principal components"
        else:
            return None, None, f"no 2-D view of data of shape {a.shape}"
    pos = nx.spring_layout(graph, seed=0)
    return np.array([pos[node] for node in graph.nodes]), graph, "graph (spring layout)"


def _plot_points(ax: Any, post: ClusteringPosterior, estimate: np.ndarray, loss: str) -> None:
    import matplotlib as mpl

    coords, graph, caption = _layout(post)
    colours = mpl.colormaps["tab20"]((2 * estimate) % 20 + (estimate // 10) % 2)  # strong hues first
    if coords is None:  # no usable data: one row of points, coloured
        coords = np.stack([np.arange(post.num_points), np.zeros(post.num_points)], 1)
    if graph is not None:
        index = {node: i for i, node in enumerate(graph.nodes)}
        segments = [(coords[index[u]], coords[index[v]]) for u, v in graph.edges]
        ax.add_collection(mpl.collections.LineCollection(segments, colors="0.8", linewidths=0.5, zorder=1))
    ax.scatter(coords[:, 0], coords[:, 1], c=colours, s=18, edgecolors="none", zorder=2)
    ax.set_title(f"{loss.upper()} point estimate: K = {int(estimate.max()) + 1}")
    ax.set_xlabel(caption)


def _plot_coclustering(ax: Any, post: ClusteringPosterior, estimate: np.ndarray) -> Any:
    order = np.lexsort((np.arange(post.num_points), estimate))
    matrix = post.coclustering().numpy()[np.ix_(order, order)]
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
    ax.set_title("co-clustering (sorted by estimate)")
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def _plot_num_clusters(ax: Any, post: ClusteringPosterior) -> None:
    from matplotlib.ticker import MaxNLocator

    dist = post.num_clusters_distribution().numpy()
    ks = np.arange(dist.shape[0])
    ax.bar(ks[1:], dist[1:], color="tab:blue")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of clusters K")
    ax.set_ylabel("posterior probability")
    ax.set_title(f"posterior of K ({post.method})")


def _plot_posterior(post: ClusteringPosterior, ax: Any = None, path: str | Path | None = None,
                    loss: str = "vi") -> Any:
    """Draw the three panels with the object-oriented API (no pyplot state, safe under Agg)."""
    from matplotlib.figure import Figure

    loss = _check_loss(loss)
    if ax is None:
        fig = Figure(figsize=(13, 4), layout="constrained")
        axes = fig.subplots(1, 3)
    else:
        axes = list(np.ravel(ax)) if not hasattr(ax, "figure") or isinstance(ax, np.ndarray) else [ax]
        if len(axes) != 3:
            raise ValueError(f"ax must be three matplotlib Axes, got {len(axes)}")
        fig = axes[0].figure
    estimate = post.point_estimate(loss).numpy()
    _plot_points(axes[0], post, estimate, loss)
    image = _plot_coclustering(axes[1], post, estimate)
    fig.colorbar(image, ax=axes[1], fraction=0.046)
    _plot_num_clusters(axes[2], post)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
