"""Collapsed Gibbs sampling over partitions (Neal 2000, algorithm 3) with optional split-merge moves.

The cluster parameters of the conjugate models are integrated out, so the chain moves on partitions only.
Point i's full conditional is

    p(c_i = k | c_-i, x) ∝ prior seating weight of slot k given the others' cluster sizes
                           × p(x_i | the other points of cluster k)   (collapsed posterior predictive)

with one extra slot for a new cluster. The seating weights come from the partition prior's
``seating_log_weights`` (CRP, Pitman-Yor, MFM alike; for these Gibbs-type priors they are read from small
lookup tables built from, and checked against, that method); the predictives are those of
:mod:`pyro_acp.models.conjugate` (the Gaussian one in a leaner form, equal up to a constant), on per-cluster
sufficient statistics that each move updates in place instead of recomputing.

**Chains are vectorised**: the kernel state holds the labels of all C chains, (C, N), and their statistics
with a shared number of cluster slots; point i is updated in every chain at once. Split-merge moves
(Jain & Neal 2004, restricted Gibbs launch states, one Metropolis-Hastings proposal per sweep and chain)
are vectorised the same way, with per-chain masks.

The kernel is a :class:`pyro.infer.mcmc.mcmc_kernel.MCMCKernel`, so ``pyro.infer.MCMC`` runs it (progress
bar, warmup, ``get_samples``, ``summary``); :func:`gibbs` wraps that into a
:class:`~pyro_acp.posteriors.posterior.ClusteringPosterior`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pyro
import torch
from pyro.infer.mcmc import MCMC
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch import Tensor

from pyro_acp.data.partitions import canonicalize, check_labels
from pyro_acp.models.conjugate import (
    BlockStats,
    GaussianStats,
    block_log_marginal,
    block_log_predictive,
    gaussian_log_marginal,
    gaussian_log_predictive,
)
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.protocols import require_collapsed
from pyro_acp.validation import check_int

__all__ = ["CollapsedGibbs", "gibbs"]

_SLACK = 8  # spare empty cluster slots kept per chain (fewer host syncs; see CollapsedGibbs._refresh_slack)


# ---------------------------------------------------------------------------------------------- likelihoods
# Both likelihoods keep per-slot statistics of all chains, (C, W) with W = cluster slots + 1: the last slot
# is never occupied, so its predictive is the "new cluster" one, in the slot layout of the prior's
# ``seating_log_weights`` (K existing slots, then new).


class _GaussianLikelihood:
    """Isotropic Gaussian clusters with a conjugate N(0, s²I) mean: per-slot counts, sums, sums of squares.

    Moves update counts and sums only (all the predictive needs); ``init`` recomputes all three from the
    labels, which also clears any round-off drift, and ``log_likelihood`` reads the last ``init``.
    """

    def __init__(self, model: Any, x: Tensor, num_chains: int) -> None:
        self.sigma, self.mean_scale = float(model.sigma), float(model.mean_scale)
        self.x = x
        self.sq = x.square().sum(-1, keepdim=True)
        self.ratio = (self.sigma / self.mean_scale) ** 2  # sigma² / s²: the prior's weight in points

    def init(self, labels: Tensor, width: int) -> None:
        """Statistics of ``labels`` (C, N) in ``width`` slots (label -1 = not placed)."""
        z = _one_hot(labels, width, self.x.dtype).transpose(-1, -2)  # (C, W, N)
        self.count, self.total, self.sumsq = z.sum(-1), z @ self.x, (z @ self.sq).squeeze(-1)

    @property
    def counts(self) -> Tensor:
        """(C, W - 1) sizes of the cluster slots (a view)."""
        return self.count[:, :-1]

    def grow(self, extra: int) -> None:
        pad = torch.nn.functional.pad
        self.count, self.sumsq = pad(self.count, (0, extra)), pad(self.sumsq, (0, extra))
        self.total = pad(self.total, (0, 0, 0, extra))

    def move(self, i: int, slot: Tensor, weight: Tensor) -> None:
        """Add point i to ``slot`` (C,) with ``weight`` (C,): +1 joins, -1 leaves, 0 leaves things as they are."""
        index = slot.unsqueeze(-1)
        self.count.scatter_add_(1, index, weight.unsqueeze(-1))
        values = (weight.unsqueeze(-1) * self.x[i]).unsqueeze(1)  # (C, 1, D)
        self.total.scatter_add_(1, index.unsqueeze(-1).expand(values.shape), values)

    def log_predictive(self, i: int) -> Tensor:
        """(C, W) log p(x_i | the points in each slot) up to a constant shared by all slots (all a Gibbs draw
        or a restricted scan needs); empty slots give the prior predictive. Exactly
        :func:`~pyro_acp.models.conjugate.gaussian_log_predictive` minus its slot-independent terms, in fewer
        tensor ops: with h = n + σ²/s², the predictive is N(Σx / h, σ² (1 + 1/h) I).
        """
        inv = (self.count + self.ratio).reciprocal_()  # 1 / h
        dist2 = (self.total * inv.unsqueeze(-1) - self.x[i]).square_().sum(-1)
        spread = inv.add_(1.0)  # predictive variance / σ²
        out = dist2.div_(spread).mul_(-0.5 / self.sigma**2)
        return out.sub_(spread.log_().mul_(0.5 * self.x.shape[-1]))

    def exact_log_predictive(self, i: int) -> Tensor:
        """The full :func:`~pyro_acp.models.conjugate.gaussian_log_predictive` (for checks)."""
        return gaussian_log_predictive(self.x[i], GaussianStats(self.count, self.total, self.sumsq), self.sigma,
                                       self.mean_scale)

    def log_likelihood(self) -> Tensor:
        """(C,) log p(x | partition) from the statistics of the last ``init``."""
        stats = GaussianStats(self.count, self.total, self.sumsq)
        return gaussian_log_marginal(stats, self.sigma, self.mean_scale).sum(-1)


class _BlockLikelihood:
    """Beta-Bernoulli blocks of a symmetric graph.

    Keeps M = A Z (C, N, W): edges from every node to every block, E = Zᵀ A Z (C, W, W) (ordered pairs, so
    the diagonal counts within-block edges twice) and the block sizes. Moving node i into block k adds M[i]
    to row and column k of E and A[:, i] to column k of M.
    """

    def __init__(self, model: Any, adjacency: Tensor, num_chains: int) -> None:
        self.within, self.between = tuple(model.within), tuple(model.between)
        self.adjacency = adjacency

    def init(self, labels: Tensor, width: int) -> None:
        z = _one_hot(labels, width, self.adjacency.dtype)  # (C, N, W)
        self.m = self.adjacency @ z
        self.e = z.transpose(-1, -2) @ self.m
        self.sizes = z.sum(-2)
        self._eye = torch.eye(width, dtype=self.adjacency.dtype, device=self.adjacency.device)

    @property
    def counts(self) -> Tensor:
        return self.sizes[:, :-1]

    def grow(self, extra: int) -> None:
        pad = torch.nn.functional.pad
        self.m, self.sizes = pad(self.m, (0, extra)), pad(self.sizes, (0, extra))
        self.e = pad(self.e, (0, extra, 0, extra))
        self._eye = torch.eye(self.sizes.shape[-1], dtype=self.adjacency.dtype, device=self.adjacency.device)

    def move(self, i: int, slot: Tensor, weight: Tensor) -> None:
        delta = weight.unsqueeze(-1) * self._eye[slot]  # (C, W)
        outer = delta.unsqueeze(-1) * self.m[:, i, :].unsqueeze(-2)  # row k += M[i]
        self.e += outer + outer.transpose(-1, -2)
        self.m += self.adjacency[i].unsqueeze(-1) * delta.unsqueeze(-2)
        self.sizes += delta

    def _stats(self) -> BlockStats:
        eye = self._eye.bool()
        pairs = self.sizes.unsqueeze(-1) * self.sizes.unsqueeze(-2)
        edges = torch.where(eye, 0.5 * self.e, self.e)
        pairs = torch.where(eye, 0.5 * (pairs - self.sizes.unsqueeze(-1)), pairs)
        return BlockStats(edges, pairs)

    def log_predictive(self, i: int) -> Tensor:
        return block_log_predictive(self.m[:, i, :], self.sizes, self._stats(), self.within, self.between)

    def log_likelihood(self) -> Tensor:
        return block_log_marginal(self._stats(), self.within, self.between)


def _one_hot(labels: Tensor, width: int, dtype: torch.dtype) -> Tensor:
    """(C, N, W) float memberships; label -1 gives a zero row."""
    return (labels.unsqueeze(-1) == torch.arange(width, device=labels.device)).to(dtype)


# ---------------------------------------------------------------------------------------------- seating
class _SeatingTable:
    """The prior's seating weights at a fixed number n of seated points, as table lookups.

    For a Gibbs-type prior (CRP, Pitman-Yor, MFM) the log weight of joining a block of size m when t blocks
    are occupied is S(m) + D(t), and that of a new block is New(t), whatever the other block sizes. The
    tables are filled from the prior's own ``seating_log_weights`` on a few constructed count vectors, and
    :meth:`matches` checks them against it on random count vectors before they are trusted, so a prior of
    another kind is detected (the kernel then calls ``seating_log_weights`` directly). A lookup is a few
    gathers instead of a full evaluation of the prior's predictive.

    The sequential start seats points given m < n others. Where the prior's weights at m differ from those at
    n only by a constant per row (CRP, Pitman-Yor: the normaliser 1 / (m + alpha); not MFM), the same tables
    serve there too, since a constant shift does not change a Gumbel-max draw (:meth:`matches` with
    ``up_to_shift``).
    """

    def __init__(self, prior: Any, num_seated: int, dtype: torch.dtype, device: torch.device) -> None:
        self.prior, self.n, self.dtype, self.device = prior, num_seated, dtype, device
        n = num_seated
        size = torch.full((n + 1,), -math.inf, dtype=torch.float64, device=device)  # S(0) = -inf: empty slot
        if n >= 2:
            m = torch.arange(1, n, dtype=torch.float64, device=device)
            size[1:n] = self._call(torch.stack([m, n - m], -1))[:, 0]  # two blocks: S(m) (D(2) = 0)
        self.size = size
        self.max_blocks = 0
        self.ensure(1)

    def _call(self, counts: Tensor, num_seated: int | None = None) -> Tensor:
        return self.prior.seating_log_weights(counts, self.n if num_seated is None else num_seated).to(torch.float64)

    def ensure(self, max_blocks: int) -> None:
        """Fill D(t) and New(t) for t = 0..max_blocks (one call on a (T, T) batch of count vectors)."""
        if max_blocks <= self.max_blocks:
            return
        n, device = self.n, self.device
        top = max(1, min(n, max_blocks))
        t = torch.arange(1, top + 1, device=device).unsqueeze(-1)
        slot = torch.arange(top, device=device)
        # t blocks: t - 1 singletons and one block holding the rest.
        rows = torch.where(slot < t - 1, 1.0, torch.where(slot == t - 1, (n - t + 1).double(), 0.0))
        out = self._call(rows.to(torch.float64)) if n >= 1 else None
        join = torch.full((max_blocks + 1,), -math.inf, dtype=torch.float64, device=device)
        new = torch.full((max_blocks + 1,), -math.inf, dtype=torch.float64, device=device)
        if out is None:  # nothing seated yet: only "new block"
            new[0] = self._call(torch.zeros(1, 1, dtype=torch.float64, device=device))[0, -1]
        else:
            new[1 : top + 1] = out[:, -1]
            join[1] = 0.0
            self.size[n] = out[0, 0]  # t = 1: the single block holds all n points
            if top >= 2:
                join[2 : top + 1] = out[1:, 0] - self.size[1]  # W(t, 1) = S(1) + D(t)
        self.join, self.new, self.max_blocks = join, new, max_blocks

    def __call__(self, counts: Tensor) -> Tensor:
        """(C, K+1) log seating weights for counts (C, K), in the layout of ``seating_log_weights``."""
        out = torch.zeros(*counts.shape[:-1], counts.shape[-1] + 1, dtype=self.dtype, device=counts.device)
        return self.add_to(out, counts)

    def add_to(self, scores: Tensor, counts: Tensor) -> Tensor:
        """Add the seating weights for ``counts`` (C, K) to ``scores`` (C, K+1) in place (index_select lookups)."""
        t = (counts > 0).sum(-1)
        index = counts.long()
        join = self.size.index_select(0, index.flatten()).view(index.shape)
        join += self.join.index_select(0, t).unsqueeze(-1)
        scores[..., :-1] += join
        scores[..., -1] += self.new.index_select(0, t)
        return scores

    def matches(self, num_checks: int = 64, width: int = 8, num_seated: int | None = None,
                up_to_shift: bool = False) -> bool:
        """Whether the tables reproduce ``seating_log_weights`` on random count vectors summing to
        ``num_seated`` (default n; 1 <= num_seated <= n), exactly or, with ``up_to_shift``, up to a constant
        per count vector."""
        seated = self.n if num_seated is None else num_seated
        if seated < 1:
            return True
        generator = torch.Generator(device=self.device).manual_seed(0)
        blocks = torch.randint(1, min(seated, width) + 1, (num_checks,), generator=generator, device=self.device)
        cuts = torch.rand(num_checks, width, generator=generator, device=self.device).argsort(-1)
        labels = torch.randint(0, width, (num_checks, seated), generator=generator, device=self.device)
        labels = cuts.gather(1, labels % blocks.unsqueeze(-1))  # t blocks in random slots of ``width``
        counts = torch.zeros(num_checks, width, dtype=torch.float64, device=self.device)
        counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float64))
        self.ensure(width)
        expected = self._call(counts, seated)
        got = self(counts).to(torch.float64)
        finite = torch.isfinite(expected)
        if not bool((finite == torch.isfinite(got)).all()):
            return False
        difference = torch.where(finite, got - expected, 0.0)
        if up_to_shift:  # remove each row's mean difference over its finite slots
            row_mean = difference.sum(-1, keepdim=True) / finite.sum(-1, keepdim=True)
            difference = torch.where(finite, difference - row_mean, 0.0)
        return bool(torch.allclose(difference, torch.zeros_like(difference), atol=1e-9))

    def serves_every_count(self) -> bool:
        """Whether the tables also give the weights, up to a constant, with fewer than n points seated (checked
        at a few numbers from 1 to n - 1): then the sequential start can use them too."""
        return all(self.matches(num_seated=m, up_to_shift=True) for m in sorted({1, 2, self.n // 2, self.n - 1})
                   if 1 <= m < self.n)


def _likelihood_for(model: Any, data: Tensor, num_chains: int = 1) -> _GaussianLikelihood | _BlockLikelihood:
    """The sufficient-statistic likelihood of a supported conjugate model, else TypeError."""
    from pyro_acp.models.mixtures import GaussianMixture
    from pyro_acp.models.sbm import SBM

    require_collapsed(model, "collapsed Gibbs")
    prior = model.partition_prior(1)
    if not callable(getattr(prior, "seating_log_weights", None)):
        raise TypeError(
            f"collapsed Gibbs needs a partition prior with seating_log_weights (an exchangeable Gibbs-type prior "
            f"such as CRP, PitmanYor or MFM); {type(model).__name__}'s prior {type(prior).__name__} has none"
        )
    probe = prior.seating_log_weights(torch.tensor([[2.0, 0.0, 1.0]]), 3)
    if probe.shape != (1, 4) or not torch.isneginf(probe[0, 1]) or not torch.isfinite(probe[0, [0, 2, 3]]).all():
        raise TypeError(
            f"{type(prior).__name__}.seating_log_weights must return (..., K+1) with -inf for empty slots "
            f"and finite weights elsewhere; got {probe.tolist()} for counts [[2, 0, 1]]"
        )
    if isinstance(model, GaussianMixture):
        return _GaussianLikelihood(model, data, num_chains)
    if isinstance(model, SBM):
        return _BlockLikelihood(model, data, num_chains)
    raise TypeError(
        f"collapsed Gibbs supports the conjugate Gaussian mixtures (CRP / Pitman-Yor / MFM) and the "
        f"Beta-Bernoulli SBM; got {type(model).__name__}"
    )


# ---------------------------------------------------------------------------------------------- the kernel
class CollapsedGibbs(MCMCKernel):
    """Collapsed Gibbs kernel over partitions with ``num_chains`` chains vectorised in one state.

    Use with ``pyro.infer.MCMC(kernel, num_samples, warmup_steps).run(x)`` (leave MCMC's own ``num_chains``
    at 1: the chains live inside the kernel). Each ``sample`` call is ``sweeps`` sweeps over the points in
    random order, followed by one split-merge proposal per chain when ``split_merge`` is set. The params it
    returns are ``labels`` (C, N) (float, as MCMC concatenates all sites; round to integers),
    ``log_joint`` (C,) = log p(partition) + log p(x | partition) and ``log_likelihood`` (C,).

    Args:
        model: a conjugate model (Gaussian mixture or SBM) from :mod:`pyro_acp.models`.
        num_chains: number of chains C.
        split_merge: add a Jain-Neal split-merge proposal to every sweep.
        restricted_scans: intermediate restricted Gibbs scans that build the split-merge launch state.
        seed: seeds the kernel's own generator (None: drawn from torch's global RNG, so ``pyro.set_rng_seed``
            makes runs reproducible).
        sweeps: Gibbs sweeps per ``sample`` call (thinning); 0 with ``split_merge`` runs split-merge moves
            alone (an irreducible chain too, used to check the split-merge acceptance ratio).
    """

    def __init__(
        self,
        model: Any,
        num_chains: int = 4,
        split_merge: bool = False,
        restricted_scans: int = 3,
        seed: int | None = None,
        sweeps: int = 1,
    ) -> None:
        require_collapsed(model, "collapsed Gibbs")
        self.model = model
        self.num_chains = check_int(num_chains, "num_chains", 1)
        self.split_merge = bool(split_merge)
        self.restricted_scans = check_int(restricted_scans, "restricted_scans", 0)
        self.sweeps = check_int(sweeps, "sweeps", 0)
        if self.sweeps == 0 and not self.split_merge:
            raise ValueError("sweeps=0 needs split_merge=True: the kernel would never move")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.transforms: dict = {}
        self._init_labels: Tensor | None = None
        self._params: dict[str, Tensor] | None = None
        self._sm_proposed = 0
        self._sm_accepted = 0

    # ------------------------------------------------------------------ MCMCKernel interface
    def setup(self, warmup_steps: int, x: Any, *args: Any, **kwargs: Any) -> None:
        """Validate the data, seed the generator and initialise every chain."""
        data = self.model.check_data(x).to(torch.float64)
        self.data = data
        self.num_points = int(self.model.num_points_of(data))
        self.likelihood = _likelihood_for(self.model, data, self.num_chains)
        self.prior = self.model.partition_prior(self.num_points)
        device = data.device
        table = _SeatingTable(self.prior, self.num_points - 1, data.dtype, device)
        self._table = table if table.matches() else None
        # the fewest seated points at which the tables give the weights: N - 1 (sweeps), 1 (the start too: see
        # _SeatingTable) or N (never: no tables)
        if self._table is None:
            self._table_from_seated = self.num_points
        else:
            self._table_from_seated = 1 if table.serves_every_count() else self.num_points - 1
        self._one = torch.ones(self.num_chains, dtype=data.dtype, device=device)
        self._minus_one = -self._one
        seed = int(torch.randint(0, 2**62, ())) if self.seed is None else self.seed
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._sm_proposed = self._sm_accepted = 0
        with pyro.validation_enabled(False):
            if self._init_labels is not None:
                self._set_state(self._init_labels.to(device))
            else:
                self._sequential_init()
            self._params = self._make_params()

    @property
    def initial_params(self) -> dict[str, Tensor]:
        if self._params is None:
            raise RuntimeError("call setup(warmup_steps, x) (or run the kernel under pyro.infer.MCMC) first")
        return self._params

    @initial_params.setter
    def initial_params(self, params: dict[str, Tensor]) -> None:
        labels = check_labels(torch.as_tensor(params["labels"]).round(), "initial labels")
        if labels.dim() == 1:
            labels = labels.expand(self.num_chains, -1)
        if labels.shape[0] != self.num_chains or (labels < 0).any():
            raise ValueError(f"initial labels must be (num_chains={self.num_chains}, N) non-negative, "
                             f"got shape {tuple(labels.shape)}")
        self._init_labels = labels.clone()

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One sweep (+ a split-merge proposal), returning the new params of all chains."""
        if params is not self._params:  # handed a state we did not produce: restart from its labels
            self._set_state(params["labels"].round().long().to(self.data.device))
        with pyro.validation_enabled(False):  # counts and labels are exact by construction: skip per-call checks
            for _ in range(self.sweeps):
                order = torch.randperm(self.num_points, generator=self.generator, device=self.data.device)
                self._seat(order.tolist(), seated=None)
            if self.split_merge and self.num_points > 1:
                self._split_merge()
            self._params = self._make_params()
        return self._params

    def logging(self) -> dict[str, str]:
        k = (self.likelihood.counts > 0).sum(-1).to(torch.float64).mean()
        out = {"mean K": f"{float(k):.2f}"}
        if self.split_merge and self._sm_proposed:
            out["split-merge acc."] = f"{self._sm_accepted / self._sm_proposed:.3f}"
        return out

    def diagnostics(self) -> dict[str, float]:
        if not self.split_merge:
            return {}
        return {"split_merge_acceptance": self._sm_accepted / max(self._sm_proposed, 1)}

    # ------------------------------------------------------------------ state
    def _set_state(self, labels: Tensor) -> None:
        labels = canonicalize(labels)
        if labels.shape != (self.num_chains, self.num_points):
            raise ValueError(
                f"labels must have shape ({self.num_chains}, {self.num_points}), got {tuple(labels.shape)}"
            )
        self.labels = labels.clone()
        max_clusters = int(labels.max()) + 1
        self.capacity = max_clusters + _SLACK
        self.likelihood.init(self.labels, self.capacity + 1)
        self._safe_steps = self.capacity - max_clusters
        if self._table is not None:
            self._table.ensure(self.capacity)

    def _refresh_slack(self) -> None:
        """Make sure every chain keeps an empty cluster slot for the next ``_safe_steps`` point updates.

        A point update opens at most one cluster, so with K_max clusters in the fullest chain the next
        ``capacity - K_max`` updates always find an empty slot: one host sync per that many updates.
        """
        max_clusters = int((self.likelihood.counts > 0).sum(-1).max())
        if self.capacity - max_clusters < _SLACK // 2:
            extra = max_clusters + _SLACK - self.capacity
            self.likelihood.grow(extra)
            self.capacity += extra
        if self._table is not None:
            self._table.ensure(self.capacity)
        self._safe_steps = self.capacity - max_clusters

    def _make_params(self) -> dict[str, Tensor]:
        self.likelihood.init(self.labels, self.capacity + 1)  # fresh statistics: exact, no round-off drift
        log_likelihood = self.likelihood.log_likelihood()
        log_prior = self.prior.log_prob(self.labels).to(log_likelihood)
        return {
            "labels": self.labels.to(torch.float64),
            "log_joint": log_prior + log_likelihood,
            "log_likelihood": log_likelihood,
        }

    def _log_target(self, labels: Tensor) -> Tensor:
        """(C,) log p(partition) + log p(x | partition) of ``labels`` (split-merge acceptance)."""
        self.likelihood.init(labels, self.capacity + 1)
        return self.prior.log_prob(labels).to(self.data) + self.likelihood.log_likelihood()

    def _gumbel(self, shape: tuple[int, ...]) -> Tensor:
        u = torch.rand(shape, generator=self.generator, device=self.data.device, dtype=self.data.dtype)
        return -torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))

    def _scores(self, i: int, num_seated: int) -> Tensor:
        """(C, W) unnormalised log p(c_i = slot | rest): cluster slots (-inf when empty), then new cluster."""
        counts = self.likelihood.counts
        scores = self.likelihood.log_predictive(i)
        if num_seated >= self._table_from_seated:  # below N - 1 seated: the right weights up to a constant
            return self._table.add_to(scores, counts)
        return scores + self.prior.seating_log_weights(counts, num_seated).to(self.data.dtype)

    # ------------------------------------------------------------------ Gibbs moves
    def _seat(self, order: list[int], seated: list[int] | None) -> None:
        """Gibbs-update the points in ``order``; ``seated`` None means every other point is placed (a sweep),
        else ``seated[t]`` points are placed before step t and point ``order[t]`` is not (initialisation).

        Sampling is Gumbel-max over the W scores; "new cluster" (the last slot) goes to the chain's first
        empty slot, which ``argmin`` of the slot sizes finds without a host sync.
        """
        noise = self._gumbel((len(order), self.num_chains, self.capacity + 1))
        for t, i in enumerate(order):
            if self._safe_steps <= 0:
                self._refresh_slack()
                if noise.shape[-1] != self.capacity + 1:
                    noise = self._gumbel((len(order), self.num_chains, self.capacity + 1))
            self._safe_steps -= 1
            if seated is None:
                self.likelihood.move(i, self.labels[:, i], self._minus_one)
            num_seated = self.num_points - 1 if seated is None else seated[t]
            choice = (self._scores(i, num_seated) + noise[t]).argmax(-1)
            new = torch.where(choice == self.capacity, self.likelihood.counts.argmin(-1), choice)
            self.likelihood.move(i, new, self._one)
            self.labels[:, i] = new

    def _sequential_init(self) -> None:
        """Seat the points one by one from their predictive given the points already seated: a dispersed,
        data-aware start that differs between chains."""
        self.labels = torch.full((self.num_chains, self.num_points), -1, dtype=torch.long, device=self.data.device)
        self.capacity = _SLACK
        self.likelihood.init(self.labels, self.capacity + 1)
        self._safe_steps = self.capacity
        if self._table is not None:
            self._table.ensure(self.capacity)
        order = torch.randperm(self.num_points, generator=self.generator, device=self.data.device)
        self._seat(order.tolist(), seated=list(range(self.num_points)))
        self._set_state(self.labels)

    # ------------------------------------------------------------------ split-merge (Jain & Neal 2004)
    def _restricted_scan(self, labels: Tensor, a: Tensor, b: Tensor, active: Tensor, points: list[int],
                         forced: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Restricted Gibbs scan: every active point ((C, N) mask) is resampled between slots a and b (C,).

        ``forced = (rows, choice)``: in chains ``rows`` (C,) the choice "slot a" is imposed as ``choice`` (C, N)
        instead of sampled. Returns (C,) the log probability of the choices made or imposed.
        """
        rows = torch.arange(self.num_chains, device=labels.device)
        log_q = torch.zeros(self.num_chains, dtype=self.data.dtype, device=labels.device)
        uniform = torch.rand((len(points), self.num_chains), generator=self.generator, device=labels.device,
                             dtype=self.data.dtype)
        for t, k in enumerate(points):
            act = active[:, k]
            weight = act.to(self.data.dtype)
            self.likelihood.move(k, labels[:, k], -weight)
            score = self._scores(k, self.num_points - 1)
            score_a, score_b = score[rows, a], score[rows, b]
            norm = torch.logaddexp(score_a, score_b)
            log_pa, log_pb = score_a - norm, score_b - norm
            choose_a = uniform[t].log() < log_pa
            if forced is not None:
                choose_a = torch.where(forced[0], forced[1][:, k], choose_a)
            log_q = log_q + torch.where(act, torch.where(choose_a, log_pa, log_pb), 0.0)
            new = torch.where(act, torch.where(choose_a, a, b), labels[:, k])
            self.likelihood.move(k, new, weight)
            labels[:, k] = new
        return log_q

    def _split_merge(self) -> None:
        """One split-merge Metropolis-Hastings proposal per chain, all chains at once.

        Two distinct points i, j are drawn per chain. Same cluster: propose a split, built by restricted
        Gibbs scans from a random launch state, with proposal probability q; accept with
        min(1, π(split) / (π(current) q)). Different clusters: propose the merge; q is then the probability
        that the final restricted scan recreates the current split, and the ratio is π(merge) q / π(current).
        """
        c, n, device = self.num_chains, self.num_points, self.data.device
        rows = torch.arange(c, device=device)
        gen = self.generator
        i = torch.randint(0, n, (c,), generator=gen, device=device)
        j = torch.randint(0, n - 1, (c,), generator=gen, device=device)
        j = j + (j >= i).long()
        current = self.labels
        ci, cj = current[rows, i], current[rows, j]
        same = ci == cj
        self._refresh_slack()  # guarantees an empty slot for the split
        new_slot = self.likelihood.counts.argmin(-1)
        a, b = torch.where(same, new_slot, ci), cj
        pair = torch.zeros(c, n, dtype=torch.bool, device=device)
        pair[rows, i] = True
        pair[rows, j] = True
        active = ((current == ci[:, None]) | (current == cj[:, None])) & ~pair
        # Launch state: the other members of the two clusters assigned at random, i to slot a, j to slot b.
        coin = torch.rand(c, n, generator=gen, device=device) < 0.5
        launch = torch.where(active, torch.where(coin, a[:, None], b[:, None]), current)
        launch[rows, i] = a
        self.likelihood.init(launch, self.capacity + 1)
        points = active.any(0).nonzero().flatten().tolist()
        for _ in range(self.restricted_scans):
            self._restricted_scan(launch, a, b, active, points)
        log_q = self._restricted_scan(launch, a, b, active, points, forced=(~same, current == ci[:, None]))
        merged = torch.where(active | pair, b[:, None], current)
        proposal = canonicalize(torch.where(same[:, None], launch, merged))
        log_ratio = self._log_target(proposal) - self._log_target(current) + torch.where(same, -log_q, log_q)
        u = torch.rand(c, generator=gen, device=device, dtype=self.data.dtype)
        accept = u.log() < log_ratio
        self._sm_proposed += c
        self._sm_accepted += int(accept.sum())
        self._set_state(torch.where(accept[:, None], proposal, current))


# ---------------------------------------------------------------------------------------------- entry point
def gibbs(
    model: Any,
    x: Any,
    num_samples: int = 1000,
    warmup_steps: int = 200,
    num_chains: int = 4,
    seed: int | None = None,
    split_merge: bool = False,
    progress_bar: bool = True,
) -> ClusteringPosterior:
    """Collapsed Gibbs posterior over partitions of ``x`` under a conjugate ``model``.

    Runs :class:`CollapsedGibbs` under ``pyro.infer.MCMC`` with ``num_chains`` vectorised chains, keeping
    ``num_samples`` sweeps per chain after ``warmup_steps``. Returns a
    :class:`~pyro_acp.posteriors.posterior.ClusteringPosterior` (method "gibbs") with num_chains × num_samples
    partitions (chain-major), their chain ids, log joint and log likelihood (for ESS / R-hat) and the wall
    time. Supported: CRP / Pitman-Yor / MFM Gaussian mixtures and the Beta-Bernoulli SBM.
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
    num_chains = check_int(num_chains, "num_chains", 1)
    began = time.perf_counter()
    require_collapsed(model, "collapsed Gibbs")
    data = model.check_data(x)
    _likelihood_for(model, data)  # fail early on unsupported models
    kernel = CollapsedGibbs(model, num_chains=num_chains, split_merge=split_merge, seed=seed)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=1,
                disable_progbar=not progress_bar)
    mcmc.run(data)
    wall_time = time.perf_counter() - began
    draws = mcmc.get_samples(group_by_chain=True)  # each (1, S, C, ...)
    labels = draws["labels"][0].round().long().transpose(0, 1).reshape(num_chains * num_samples, -1)
    per_chain = {name: draws[name][0].transpose(0, 1).reshape(-1) for name in ("log_joint", "log_likelihood")}
    chain = torch.arange(num_chains).repeat_interleave(num_samples)
    return ClusteringPosterior(
        labels.cpu(),
        chain=chain,
        method="gibbs",
        wall_time=wall_time,
        log_likelihood=per_chain["log_likelihood"].cpu(),
        log_joint=per_chain["log_joint"].cpu(),
        x=x,
        model=model,
    )
