"""Partition-valued Pyro distributions: the CRP, Pitman-Yor and Mixture-of-Finite-Mixtures priors.

All three are exchangeable, projective ("Gibbs-type") priors whose EPPF factorises as

    p(partition of n points into blocks of sizes n_1..n_K) = V(n, K) * prod_k W(n_k),
    W(m) = (1 + c)(2 + c)...(m - 1 + c),

so a block of current size m is joined with weight m + c and only V depends on the prior:

- ``CRP(alpha)``:            c = 0,         V(n, K) = alpha^K / (alpha)_n;
- ``PitmanYor(alpha, d)``:   c = -d,        V(n, K) = prod_{i=1}^{K-1} (alpha + i d) / (alpha + 1)_{n-1};
- ``MixtureOfFiniteMixtures(rate, gamma)`` (Miller & Harrison 2018; K - 1 ~ Poisson(rate), Dirichlet(gamma)
  weights): c = gamma, V(n, K) = gamma^K V_n(K) with V_n(t) = sum_{k >= t} k!/(k-t)! / (gamma k)_n p(k),
  a truncated sum computed once per (rate, gamma, N) in log space.

That one form gives the exact ``log_prob``, the Gibbs predictive ``seating_log_weights`` (what collapsed Gibbs
and the sequential samplers use), and the exact law of the number of clusters by a recursion on n.
Hyperparameters are scalars (Python numbers or 0-dim tensors, whose dtype and device the distribution
adopts); batch shapes only come from ``expand`` (i.i.d. copies, as ``pyro.plate`` needs).
Samples are canonical LongTensors (clusters numbered by first appearance); ``log_prob`` accepts any labelling,
batched, with -1 padding ignored.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

from pyro_acp.data.partitions import (
    PAD_LABEL,
    canonicalize,
    check_labels,
    cluster_sizes,
    enumerate_partitions,
)
from pyro_acp.validation import check_positive_int

__all__ = ["GibbsPartition", "canonical_partition_labels", "partition_labels"]

MAX_ENUMERATE_POINTS = 12


# ---------------------------------------------------------------------------------------------- constraints


class _PartitionLabels(constraints.Constraint):
    """Integer labellings of a partition (..., N): labels >= 0, padding -1, at least one real point."""

    is_discrete = True
    event_dim = 1

    def __init__(self, canonical: bool = False):
        self.canonical = canonical
        super().__init__()

    def check(self, value: Tensor) -> Tensor:
        value = torch.as_tensor(value)
        integral = value == value.round() if value.dtype.is_floating_point else torch.ones_like(value, dtype=bool)
        ok = (integral & (value >= PAD_LABEL)).all(-1) & (value >= 0).any(-1)
        if self.canonical and bool(ok.all()):
            ok = ok & (canonicalize(value.long()) == value).all(-1)
        return ok

    def __repr__(self) -> str:
        return f"{type(self).__name__[1:]}(canonical={self.canonical})"


partition_labels = _PartitionLabels()
canonical_partition_labels = _PartitionLabels(canonical=True)


def _dtype_device(*params: Any) -> tuple[torch.dtype, torch.device]:
    """dtype and device of the first floating tensor hyperparameter, else the defaults."""
    for p in params:
        if torch.is_tensor(p) and p.dtype.is_floating_point:
            return p.dtype, p.device
    return torch.get_default_dtype(), torch.device("cpu")


# ---------------------------------------------------------------------------------------------- base class


class GibbsPartition(TorchDistribution):
    """Base of exchangeable partition priors with EPPF V(n, K) prod_k (1 + c)_{n_k - 1}.

    Subclasses set ``size_shift`` (c) and implement ``log_v(n, k, bound)`` (float64, any n, k <= bound).
    Event shape (num_points,); batch shape () unless expanded.
    """

    arg_constraints: dict = {}
    support = partition_labels
    has_enumerate_support = True
    has_rsample = False
    size_shift: float = 0.0

    def __init__(self, num_points: int, dtype: torch.dtype, device: torch.device,
                 validate_args: bool | None = None, batch_shape: torch.Size = torch.Size()):  # noqa: B008
        self.num_points = check_positive_int(num_points, "num_points")
        self._dtype = dtype
        self._device = device
        self._tables: dict[torch.device, Tensor] = {}
        super().__init__(torch.Size(batch_shape), torch.Size((self.num_points,)), validate_args=validate_args)

    # ------------------------------------------------------------------ pieces every subclass provides
    def log_v(self, n: Tensor, k: Tensor, bound: int) -> Tensor:
        """log V(n, k), float64, broadcast over n and k; -inf where no partition exists. n, k <= bound."""
        raise NotImplementedError

    def _params(self) -> dict[str, float]:
        raise NotImplementedError

    def _build_table(self, size: int, device: torch.device) -> Tensor:
        """The subclass's float64 lookup table for n, k = 0..size."""
        raise NotImplementedError

    def _table(self, bound: int, device: torch.device) -> Tensor:
        """Per-device cache of :meth:`_build_table`, rebuilt larger when n may exceed it."""
        cached = self._tables.get(device)
        if cached is None or cached.shape[0] <= bound:
            cached = self._build_table(max(bound, self.num_points), device)
            self._tables[device] = cached
        return cached

    def _log_w(self, sizes: Tensor) -> Tensor:
        """log W(m) = log (1 + c)_{m-1} for block sizes m >= 1 (float64)."""
        c = self.size_shift
        return torch.lgamma(sizes + c) - math.lgamma(1.0 + c)

    # ------------------------------------------------------------------ distribution API
    def expand(self, batch_shape, _instance=None):
        """i.i.d. copies over ``batch_shape`` (hyperparameters are scalars)."""
        new = self._get_checked_instance(type(self), _instance)
        new.__dict__.update(self.__dict__)
        TorchDistribution.__init__(new, torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:g}" for k, v in self._params().items())
        batch = f", batch_shape={tuple(self.batch_shape)}" if self.batch_shape else ""
        return f"{type(self).__name__}({params}, num_points={self.num_points}{batch})"

    def _validate_sample(self, value: Tensor) -> None:
        """ValueError naming what is wrong with a labelling passed to ``log_prob``."""
        if not torch.is_tensor(value):
            raise ValueError(f"labels must be a tensor, got {type(value).__name__}")
        labels = check_labels(value)
        if labels.shape[-1] != self.num_points:
            raise ValueError(f"labels must have {self.num_points} points in the last dimension (event_shape), "
                             f"got shape {tuple(labels.shape)}")
        if not bool((labels >= 0).any(-1).all()):
            raise ValueError("labels contain a partition with no real point (all entries are -1 padding)")
        try:
            torch.broadcast_shapes(labels.shape[:-1], self.batch_shape)
        except RuntimeError:
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not broadcast with batch_shape "
                             f"{tuple(self.batch_shape)}") from None

    def log_prob(self, value: Tensor) -> Tensor:
        """Exact log EPPF of any labelling (..., N), batched; -1 entries are padding (N = real points)."""
        if self._validate_args:
            self._validate_sample(value)
        labels = check_labels(value)
        width = labels.shape[-1]
        if labels.numel() and int(labels.max()) >= width:
            labels = canonicalize(labels)
        sizes = cluster_sizes(labels, width).to(torch.float64)
        n = sizes.sum(-1)
        k = (sizes > 0).sum(-1)
        log_w = torch.where(sizes > 0, self._log_w(sizes.clamp(min=1)), 0.0).sum(-1)
        out = (self.log_v(n, k, max(width, self.num_points)) + log_w).to(self._dtype)
        shape = torch.broadcast_shapes(out.shape, self.batch_shape)
        return out.expand(shape)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        """All Bell(N) canonical partitions, shape (Bell(N), *batch_shape, N); N <= 12 only.

        Refused inside Pyro's own enumeration (``pyro.infer.NUTS`` / ``TraceEnum_ELBO`` / ``infer_discrete`` on a
        program with this site): the partition would be one discrete variable with Bell(N) values on which the
        number of cluster parameters depends, which no parallel enumeration can broadcast. The error points to
        the samplers that handle partitions.
        """
        _refuse_pyro_enumeration(type(self).__name__, self.num_points)
        if self.num_points > MAX_ENUMERATE_POINTS:
            raise ValueError(f"enumerate_support needs num_points <= {MAX_ENUMERATE_POINTS}, "
                             f"got {self.num_points}")
        parts = enumerate_partitions(self.num_points).to(self._device)
        parts = parts.reshape(parts.shape[0], *(1,) * len(self.batch_shape), self.num_points)
        if expand:
            parts = parts.expand(parts.shape[0], *self.batch_shape, self.num_points)
        return parts

    # ------------------------------------------------------------------ Gibbs predictive
    def seating_log_weights(self, counts: Tensor, num_points_seated: int | Tensor | None = None) -> Tensor:
        """Log probability that the next point joins each block or opens a new one: (..., K) -> (..., K+1).

        ``counts`` (..., K) are the block sizes of the points already seated (0 = empty slot, weight -inf);
        the last output slot is a new block. ``num_points_seated`` (defaults to ``counts.sum(-1)``) must equal
        that sum. The weights are the exact predictive, so they are already normalised: exp sums to 1.
        """
        counts = torch.as_tensor(counts)
        out_dtype = counts.dtype if counts.dtype.is_floating_point else self._dtype
        if counts.dim() < 1:
            raise ValueError(f"counts must have shape (..., K), got {tuple(counts.shape)}")
        c64 = counts.to(torch.float64)
        n = c64.sum(-1) if num_points_seated is None else torch.as_tensor(
            num_points_seated, dtype=torch.float64, device=counts.device)
        if self._validate_args:
            if not bool(torch.isfinite(c64).all()) or bool((c64 < 0).any()) or bool((c64 != c64.round()).any()):
                raise ValueError("counts must be finite non-negative integers (block sizes)")
            if bool((n != c64.sum(-1)).any()):
                raise ValueError("num_points_seated must equal counts.sum(-1), the number of seated points")
        bound = int(n.max()) + 1 if n.numel() else 1
        return self._seating(c64, n, bound).to(out_dtype)

    def _seating(self, counts: Tensor, n: Tensor, bound: int) -> Tensor:
        """Unvalidated float64 core of :meth:`seating_log_weights`; ``bound`` >= n + 1."""
        t = (counts > 0).sum(-1)
        base = self.log_v(n, t, bound)
        join_v = self.log_v(n + 1, t, bound) - base
        join = torch.where(counts > 0, torch.log(counts.clamp(min=1) + self.size_shift) + join_v.unsqueeze(-1),
                           -math.inf)
        new = self.log_v(n + 1, t + 1, bound) - base
        return torch.cat([join, new.expand(join.shape[:-1]).unsqueeze(-1)], dim=-1)

    # ------------------------------------------------------------------ sampling
    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        """Canonical labels (*sample_shape, *batch_shape, N)."""
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            labels = self._sample_flat(max(1, math.prod(shape)))
        return labels[: math.prod(shape)].reshape(shape + self.event_shape)

    def _sample_flat(self, num: int) -> Tensor:
        """(num, N) exact draws of the sequential seating process, vectorised over the ``num`` partitions.

        With i points seated in t blocks, point i opens a block with probability V(i+1, t+1) / V(i, t), which
        depends on (i, t) only: a loop over the N points samples these openings (two tiny ops per step, see
        ``_markov_openings``). Otherwise point i joins block b with probability proportional to
        n_b + c = (n_b - 1) + (1 + c): with weight i - t it copies the label of a uniformly chosen earlier point
        that did not open a block, with weight t (1 + c) it picks a uniform block. Given the openings these
        choices are independent, so they are drawn at once and the copies resolved by pointer jumping
        (ceil(log2 N) gathers). New blocks get the next label, so the output is canonical.
        """
        n_pts, device, c = self.num_points, self._device, self.size_shift
        steps = torch.arange(n_pts, device=device)
        p_new = self._opening_probabilities()
        opens = _markov_openings(p_new, torch.rand(n_pts, num, dtype=torch.float64, device=device)).T
        u = torch.rand(2, num, n_pts, dtype=torch.float64, device=device)
        before = opens.long().cumsum(1) - opens.long()  # blocks open before point i
        num_copyable = steps - before
        use_copy = ~opens & (u[0] * (steps + before * c) < num_copyable)
        pick = (u[1] * torch.where(use_copy, num_copyable, before)).long()
        copyable = opens.to(torch.uint8).argsort(dim=1, stable=True)  # non-opening points first, in order
        target = copyable.gather(1, torch.minimum(pick, (num_copyable - 1).clamp(min=0)))
        pointer = torch.where(use_copy, target, steps)
        direct = torch.where(opens, before, pick)
        return direct.gather(1, _resolve_pointers(pointer))

    def _opening_probabilities(self) -> np.ndarray:
        """(N, N+1) float64 array: P(point i opens a block | t blocks open) = V(i+1, t+1) / V(i, t).

        Entries with t > i are unreachable junk. NumPy (single-threaded, on the CPU) because the sampling loop
        that reads it runs there.
        """
        steps = torch.arange(self.num_points, dtype=torch.float64).unsqueeze(-1)
        ts = torch.arange(self.num_points + 1, dtype=torch.float64)
        log_p = self.log_v(steps + 1, ts + 1, self.num_points) - self.log_v(steps, ts, self.num_points)
        return torch.nan_to_num(log_p.exp(), nan=0.0).numpy()

    # ------------------------------------------------------------------ number of clusters
    def _log_generalised_factorials(self, num_points: int) -> Tensor:
        """log C(n, k), k = 0..n: the sum over partitions with k blocks of prod W(n_j), by recursion on n.

        C(m + 1, k) = C(m, k - 1) + (m + k c) C(m, k): the new point opens a block or joins one (total
        join weight m + k c over the k blocks).
        """
        ks = torch.arange(num_points + 1, dtype=torch.float64)
        row = torch.full((num_points + 1,), -math.inf, dtype=torch.float64)
        row[0] = 0.0
        minus_inf = torch.tensor([-math.inf], dtype=torch.float64)
        for m in range(num_points):
            live = (ks >= 1) & (ks <= m)
            weight = torch.log(torch.where(live, m + ks * self.size_shift, 1.0))
            stay = torch.where(live, row + weight, -math.inf)
            row = torch.logaddexp(torch.cat([minus_inf, row[:-1]]), stay)
        return row

    def _log_num_clusters_distribution(self, num_points: int) -> Tensor:
        ks = torch.arange(num_points + 1, dtype=torch.float64)
        n = torch.tensor(float(num_points), dtype=torch.float64)
        return self._log_generalised_factorials(num_points) + self.log_v(n, ks, num_points)

    def num_clusters_distribution(self, num_points: int | None = None) -> Tensor:
        """Exact P(K = k), k = 0..N, as a float64 tensor (N+1,) (default N: ``num_points``)."""
        n = self.num_points if num_points is None else check_positive_int(num_points, "num_points")
        return self._log_num_clusters_distribution(n).exp()

    def expected_num_clusters(self, num_points: int | None = None) -> float:
        """E[K] for N points (default ``num_points``)."""
        probs = self.num_clusters_distribution(num_points)
        return float((probs * torch.arange(probs.shape[0], dtype=torch.float64)).sum())


def _refuse_pyro_enumeration(name: str, num_points: int) -> None:
    """ValueError when Pyro's enumeration (an active ``EnumMessenger``) asks for every partition."""
    from pyro.poutine.enum_messenger import EnumMessenger
    from pyro.poutine.runtime import _PYRO_STACK

    if any(isinstance(handler, EnumMessenger) for handler in _PYRO_STACK):
        raise ValueError(
            f"Pyro cannot enumerate a {name} partition site (Bell({num_points}) partitions as one discrete variable, "
            "with as many cluster parameters as each has clusters), so pyro.infer.NUTS, TraceEnum_ELBO and "
            "infer_discrete do not apply to it. Use pyro_acp.mcmc.gibbs(model, x) (collapsed Gibbs) or "
            "pyro_acp.mcmc.nuts(model, x) (NUTS on the truncated stick-breaking form, or on a program with a finite "
            "Categorical partition site), and pyro_acp.exact_posterior(model, x) for small N"
        )


# ---------------------------------------------------------------------------------------------- Pitman-Yor


def _markov_openings(probs: np.ndarray, u: Tensor) -> Tensor:
    """Openings (N, num) of the chain t -> t + 1{u_i < probs[i, t]}, on ``u``'s device.

    Each step is two tiny ops on (num,) vectors, so the loop runs in NumPy on the CPU, where such ops cost
    about a microsecond rather than several (and far less than a kernel launch on a GPU).
    """
    draws = u.cpu().numpy()
    opens = np.empty(draws.shape, dtype=bool)
    opened = np.zeros(draws.shape[1], dtype=np.int64)
    for i in range(draws.shape[0]):
        step = np.less(draws[i], probs[i, opened], out=opens[i])
        opened += step
    return torch.from_numpy(opens).to(u.device)


def _resolve_pointers(pointer: Tensor) -> Tensor:
    """Follow pointers (num, N) to earlier points until a fixed point (the root), ceil(log2 N) gathers."""
    for _ in range(max(1, math.ceil(math.log2(pointer.shape[-1])))):
        pointer = pointer.gather(-1, pointer)
    return pointer
