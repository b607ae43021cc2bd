"""Decision-theoretic point estimates of a clustering posterior: expected losses and their minimisation.

Loss conventions (used by :func:`expected_loss` and :meth:`ClusteringPosterior.point_estimate`):

- **VI** (Variation of Information, Meila 2007) in nats: ``VI(c, s) = H(c) + H(s) - 2 I(c; s)`` with the
  entropies of the empirical cluster proportions (``n_k / N``). It lies in ``[0, log N]``.
- **Binder** with unit costs, *normalised*: the fraction of the ``N (N - 1) / 2`` point pairs on which the
  two partitions disagree (together in one, apart in the other), in ``[0, 1]``; 0 when N = 1. Multiply by
  ``N (N - 1) / 2`` for the count of disagreeing pairs.

The minimiser is found by exhaustive scoring (small N) or a greedy local search in the spirit of Dahl's SALSO
(:func:`minimise_expected_loss`); no maintained Python library offers a batched SALSO, hence this module.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pyro_acp.data.partitions import bell_number, canonicalize, enumerate_partitions, one_hot_clusters
from pyro_acp.validation import check_choice, check_partition_rows, check_weights

LOSSES = ("vi", "binder")
SEARCHES = ("auto", "greedy", "exhaustive")
_CHUNK_ELEMENTS = 4_000_000  # elements per chunk when evaluating losses over (candidates, samples, points)
_SEARCH_ELEMENTS = 40_000_000  # cap on the VI search's contingency tables (int32 entries)
_TOL = 1e-9  # a move must improve the expected loss by more than this to be taken
_EXHAUSTIVE_MAX_POINTS = 7  # search="auto" enumerates all Bell(N) partitions up to this N

__all__ = ["LOSSES", "SEARCHES", "expected_loss", "minimise_expected_loss"]


def check_loss(loss: str) -> str:
    """``loss`` as one of :data:`LOSSES`."""
    return check_choice(loss, "loss", LOSSES)


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
    loss = check_loss(loss)
    candidates = canonicalize(check_partition_rows(candidates, "candidates"))
    samples = canonicalize(check_partition_rows(samples, "samples"))
    if candidates.shape[1] != samples.shape[1]:
        raise ValueError(
            f"candidates have {candidates.shape[1]} points but samples have {samples.shape[1]}"
        )
    weights = check_weights(weights, samples.shape[0])
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


def minimise_expected_loss(
    uniq: Tensor, total: Tensor, start: Tensor, loss: str, *, num_starts: int, max_sweeps: int, search: str,
    seed: int,
) -> Tensor:
    """(N,) the partition minimising the expected ``loss`` under distinct partitions ``uniq`` (U, N) with
    weights ``total`` (U,).

    ``search="greedy"`` runs the local search from ``start`` and ``num_starts - 1`` further starts drawn from
    the posterior (distinct partitions, by weight, seeded); ``"exhaustive"`` scores all Bell(N) partitions
    (N <= 10); ``"auto"`` enumerates up to N = 7 and searches greedily above.
    """
    num_points = uniq.shape[1]
    if search == "auto":
        search = "exhaustive" if num_points <= _EXHAUSTIVE_MAX_POINTS else "greedy"
    if search == "exhaustive":
        if bell_number(num_points) > bell_number(10):
            raise ValueError(f"exhaustive search over Bell({num_points}) partitions is too large")
        candidates = enumerate_partitions(num_points)
    else:
        generator = torch.Generator().manual_seed(seed)
        extra = min(num_starts - 1, int((total > 0).sum()))
        drawn = torch.multinomial(total, extra, replacement=False, generator=generator) if extra else None
        starts = start[None] if drawn is None else torch.cat([start[None], uniq[drawn]])
        candidates = torch.cat([
            _greedy_search(group, uniq, total, loss, max_sweeps, generator)
            for group in starts.split(_starts_per_run(starts, uniq, loss))
        ])
    scores = expected_loss(candidates, uniq, loss, weights=total)
    return candidates[int(scores.argmin())]
