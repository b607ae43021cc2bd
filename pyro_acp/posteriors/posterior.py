"""Posterior distributions over partitions: the object every inference method returns.

A :class:`ClusteringPosterior` holds S partitions of N points (canonical labels, one row per sample),
optionally with estimated log posterior probabilities, importance / exact weights and chain indices. It
answers the questions statisticians ask of a clustering posterior: the MAP, the co-clustering matrix,
the posterior of the number of clusters, a decision-theoretic point estimate (Variation of Information or
Binder loss, found by a greedy search in the spirit of Dahl's SALSO), an ArviZ export and a figure.
:class:`~pyro_acp.posteriors.enumerated.ExactPosterior` (its own module) is the same object built from an
enumeration of every partition with its probability (small N).
Losses and their minimisation live in :mod:`pyro_acp.posteriors.point_estimate`, the figure in
:mod:`pyro_acp.posteriors.plots`, the summary in :mod:`pyro_acp.posteriors.summary`, the ArviZ export in
:mod:`pyro_acp.posteriors.arviz_export`.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize, cluster_sizes, coclustering_matrix
from pyro_acp.posteriors.arviz_export import _arviz_from_posterior, arviz_from_posterior, draw_grid  # noqa: F401
from pyro_acp.posteriors.deferred import DeferredLogProb, GuideChangedError
from pyro_acp.posteriors.plots import plot_posterior
from pyro_acp.posteriors.point_estimate import SEARCHES, check_loss, minimise_expected_loss
from pyro_acp.posteriors.summary import PosteriorSummary
from pyro_acp.protocols import support_violations
from pyro_acp.user_warnings import warn_user
from pyro_acp.validation import (
    check_chain,
    check_choice,
    check_partition_rows,
    check_positive_int,
    check_vector,
    check_weights,
)

__all__ = ["INVARIANT_METHODS", "ClusteringPosterior", "PosteriorSummary"]


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


# ---------------------------------------------------------------------------------------------- posterior

#: the methods whose ``log_joint`` is the invariant posterior's of standardised data (the NIW likelihood
#: integrated over each column's location and scale), not the model's own exact log joint
INVARIANT_METHODS = ("exact-invariant", "acp+is-invariant")

class ClusteringPosterior:
    """S posterior partitions of N points, with whatever the inference method knows about them.

    Args:
        samples: (S, N) integer labels, any labelling (stored canonical).
        log_prob: (S,) estimated log p(partition | x) (e.g. from an amortized guide); -inf allowed, NaN not.
            Or a :class:`~pyro_acp.posteriors.deferred.DeferredLogProb`, which brings its own errors and is
            estimated on the first read of ``log_prob`` or ``log_prob_error`` (``log_prob_pending`` says whether
            it has run).
        log_prob_error: (S,) standard error of each ``log_prob`` estimate in nats (NaN: unknown).
        weight_diagnostics: for importance weights, their
            :class:`~pyro_acp.diagnostics.importance.WeightDiagnostics` (effective sample size, Pareto k).
        weights: (S,) non-negative weights (normalised here) for weighted sets such as an exact posterior;
            None means every sample counts 1/S.
        chain: (S,) chain index of each sample (MCMC); draws keep their order within a chain.
        method: name of the inference method ("acp", "gibbs", "nuts", "exact", ...).
        wall_time: seconds the method took.
        log_likelihood: (S,) log p(x | partition) when known.
        log_joint: (S,) log p(partition, x) (unnormalised posterior) when known, e.g. from conjugate MCMC.
        x: the observed data (array / tensor, points first, or a networkx graph), for plots.
        model: the generative model, for plots (its ``data_kind``) and provenance.

    ``map`` is the sample with the highest ``log_joint`` (exact up to a constant, so it ranks samples without
    estimation noise; for the invariant posterior of standardised data, methods in :data:`INVARIANT_METHODS`, an
    importance-sampling estimate); without ``log_joint``, the highest ``log_prob``; without either, the
    partition with the largest total weight (the most frequent sample), ties going to the one seen first.

    Two class attributes say what the numbers are, so reports (:meth:`summary`) describe them truthfully:
    ``exact_log_prob`` (False here: ``log_prob`` is an estimate, e.g. a guide's) and
    ``weights_are_probabilities`` (False here: ``weights`` are importance weights, whose effective sample
    size is reported). An enumerated posterior (:class:`~pyro_acp.posteriors.enumerated.ExactPosterior`) sets both.
    """

    #: ``log_prob`` is the exact log posterior probability (True) or an estimate (False)
    exact_log_prob: ClassVar[bool] = False
    #: the samples are ordered partitions (labels = positions), not partitions
    ordered_samples: ClassVar[bool] = False
    #: ``weights`` are the posterior probabilities themselves (True), not importance weights (False), so
    #: an effective sample size says nothing about them
    weights_are_probabilities: ClassVar[bool] = False

    def __init__(
        self,
        samples: Any,
        *,
        log_prob: Any = None,
        weights: Any = None,
        chain: Any = None,
        method: str = "unknown",
        wall_time: float | None = None,
        log_likelihood: Any = None,
        x: Any = None,
        model: Any = None,
        log_joint: Any = None,
        log_prob_error: Any = None,
        weight_diagnostics: Any = None,
    ) -> None:
        self._samples = self.canonical_samples(samples)
        s = self._samples.shape[0]
        self._deferred: DeferredLogProb | None = None
        if isinstance(log_prob, DeferredLogProb):
            if log_prob_error is not None:
                raise ValueError("a deferred log_prob brings its own errors; pass no log_prob_error")
            self._deferred, log_prob = log_prob, None
        self._set_log_prob(log_prob, log_prob_error, s)
        self.weight_diagnostics = weight_diagnostics
        #: the stationarity check of the samples (:func:`pyro_acp.diagnostics.stationarity.check_stationarity`),
        #: set by ``infer`` where it applies; None when not made
        self.stationarity = None
        self._weights = check_weights(weights, s)
        self._chain = check_chain(chain, s)
        self._log_likelihood = check_vector(log_likelihood, "log_likelihood", s, allow_neg_inf=True)
        self._log_joint = check_vector(log_joint, "log_joint", s, allow_neg_inf=True)
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

    @classmethod
    def canonical_samples(cls, samples: Any, name: str = "samples") -> Tensor:
        """The stored form (S, N) of partitions given in any labelling: clusters numbered 0, 1, ... by first
        appearance, on the CPU. The hook a posterior over another kind of partition (e.g. ordered) overrides."""
        return canonicalize(check_partition_rows(samples, name))

    # ------------------------------------------------------------------ stored values
    @property
    def samples(self) -> Tensor:
        """(S, N) canonical labels (see :meth:`canonical_samples`)."""
        return self._samples

    def _set_log_prob(self, log_prob: Any, log_prob_error: Any, num_samples: int) -> None:
        """Check and store the (S,) estimates and their errors."""
        self._log_prob = check_vector(log_prob, "log_prob", num_samples, allow_neg_inf=True)
        self._log_prob_error = check_vector(log_prob_error, "log_prob_error", num_samples, allow_nan=True)
        if self._log_prob_error is not None and (self._log_prob_error < 0).any():
            raise ValueError("log_prob_error must be non-negative (NaN for unknown)")
        if self._log_prob_error is not None and self._log_prob is None:
            raise ValueError("log_prob_error needs log_prob")

    def _resolve_log_prob(self) -> None:
        """Store a deferred estimate's values (running it when still pending: once, even when shared)."""
        if self._deferred is not None and self._log_prob is None:
            self._set_log_prob(*self._deferred.value(), self._samples.shape[0])

    @property
    def log_prob(self) -> Tensor | None:
        """(S,) estimated log posterior probability of each sample, or None (estimated now when deferred)."""
        self._resolve_log_prob()
        return self._log_prob

    @property
    def log_prob_error(self) -> Tensor | None:
        """(S,) standard error in nats of each ``log_prob`` estimate (NaN where unknown), or None."""
        self._resolve_log_prob()
        return self._log_prob_error

    @property
    def log_prob_pending(self) -> bool:
        """True while a deferred ``log_prob`` has not been estimated yet (reading it runs the estimate)."""
        return self._deferred is not None and self._deferred.pending

    @property
    def log_prob_seconds(self) -> float | None:
        """Wall time of a deferred estimate once it has run (``wall_time`` counts the sampling alone)."""
        return None if self._deferred is None else self._deferred.seconds

    def log_prob_arguments(self) -> dict[str, Any]:
        """``log_prob`` / ``log_prob_error`` keywords that hand these estimates to another posterior of the
        same samples without running a pending estimate (it is then shared: it runs once for both)."""
        if self._deferred is not None:  # pending or not, it holds its values once run
            return {"log_prob": self._deferred}
        return {"log_prob": self._log_prob, "log_prob_error": self._log_prob_error}

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

    @cached_property
    def support_violations(self) -> dict[str, Tensor] | None:
        """Which samples (S,) lie outside the support of the model's posterior, by reason: the rules the model
        declares (``support_violations``, :mod:`pyro_acp.protocols`) where it does, else for an unordered model
        with an exact log joint the samples where it is -inf; None where neither is known (no model or data)."""
        if self.model is None or self.x is None:
            return None
        declared = support_violations(self.model, self.x, self._samples, ordered=self.ordered_samples)
        if declared is not None:
            return {reason: broken.cpu().bool() for reason, broken in declared.items()}
        if self._log_joint is not None and not getattr(self.model, "ordered", False):  # ordered: clamped orders
            return {"log p(c, x) = -inf: a partition its prior rules out": self._log_joint == -math.inf}
        return None

    @property
    def possible(self) -> Tensor | None:
        """Whether each sample (S,) has positive probability under the model (:attr:`support_violations`)."""
        violations = self.support_violations
        if violations is None:
            return None
        impossible = torch.zeros(self.num_samples, dtype=torch.bool)
        for broken in violations.values():
            impossible |= broken
        return ~impossible

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
        score = self._log_joint if self._log_joint is not None else self.log_prob
        if score is not None:
            return int(score.argmax())
        _, _, first = self._unique_with_first()
        return int(first[0])

    @property
    def map(self) -> Tensor:
        """(N,) the MAP partition."""
        return self._samples[self.map_index]

    def refined_map(self, num_starts: int = 4, max_rounds: int = 100) -> Tensor:
        """(N,) the MAP improved by greedy ascent on the model's exact log p(partition, x) to a local mode.

        Starts from the ``num_starts`` distinct samples of highest ``log_joint`` (the MAP first) and returns the
        best mode reached (:func:`pyro_acp.reference.map_ascent.ascend_to_mode`: point moves to the most
        probable cluster and merges of two clusters, neither of which lowers log p(partition, x)); the result
        is at least as probable as ``map``. Needs the model and data (``infer`` and ``gibbs`` record them) and
        a conjugate model with collapsed Gibbs statistics. The samples and weights are not changed. Refused for
        the invariant posterior (:data:`INVARIANT_METHODS`): the ascent climbs the model's plain log joint,
        whose modes are not that posterior's.
        """
        from pyro_acp.reference.map_ascent import ascend_to_mode

        num_starts = check_positive_int(num_starts, "num_starts")
        missing = [what for what, value in (("model", self.model), ("data", self.x), ("log joint", self._log_joint))
                   if value is None]
        if missing:
            raise ValueError("refined_map needs the model, the data and the samples' exact log joint; this "
                             f"{self.method} posterior has no {' and no '.join(missing)} (infer and gibbs on a "
                             "conjugate model record them)")
        if self.method in INVARIANT_METHODS:
            raise ValueError(f"refined_map climbs the model's plain log joint, but this {self.method} posterior "
                             f"is the invariant one (data drawn and then standardised), whose modes differ on "
                             f"small tables; use .map, ranked by the invariant log joint")
        if getattr(self.model, "ordered", False):
            raise NotImplementedError(f"refined_map ascends over unordered partitions; {type(self.model).__name__} "
                                      "orders its clusters (labels are positions), which the ascent would lose")
        key = ("refined_map", num_starts, max_rounds)
        if key not in self._point_estimates:
            uniq, _, first = self._unique_with_first()  # a partition's log joint is the same at every copy
            starts = uniq[self._log_joint[first].argsort(descending=True)[:num_starts]]
            modes, log_joint = ascend_to_mode(self.model, self.x, starts, max_rounds=max_rounds,
                                              **self.conditioning())
            self._point_estimates[key] = modes[int(log_joint.argmax())]
        return self._point_estimates[key].clone()

    def same_kind(self, other: ClusteringPosterior) -> ClusteringPosterior:
        """``other``, a posterior of the same data (e.g. Gibbs chains started at these samples), as a posterior of
        this kind: the same node names and conditioning (:meth:`conditioning`); here, ``other`` itself."""
        return other

    def conditioning(self) -> dict[str, Any]:
        """What the samples were conditioned on, as the Gibbs kernel's ``frozen`` / ``new_clusters`` options, which
        ``refined_map``, the stationarity check and Gibbs chains started at the samples must keep (none here;
        graph posteriors with known labels freeze the labelled nodes)."""
        return {}

    def coclustering(self) -> Tensor:
        """(N, N) posterior probability that points i and j share a cluster, in the default dtype: accumulated
        in float64 over the samples, with the diagonal exactly 1."""
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
        """Posterior of K, the MAP's probability (estimated, or exact for an enumerated posterior) and
        frequency, sizes and wall time; the effective sample size of importance weights (not of weights that
        are the posterior itself)."""
        dist = self.num_clusters_distribution()
        ks = torch.arange(dist.shape[0], dtype=torch.float64)
        try:
            log_prob, log_prob_error = self.log_prob, self.log_prob_error
        except GuideChangedError as refusal:
            warn_user(f"summary without the MAP's probability: {refusal}", UserWarning)
            log_prob = log_prob_error = None
        map_prob = None if log_prob is None else float(log_prob[self.map_index].exp())
        map_error = None if log_prob_error is None else float(log_prob_error[self.map_index])
        diagnostics, possible = self.weight_diagnostics, self.possible
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
            effective_sample_size=None if self.weights_are_probabilities else self.effective_sample_size,
            map_probability_exact=map_prob is not None and self.exact_log_prob,
            map_probability_error=map_error,
            pareto_k=None if diagnostics is None else diagnostics.pareto_k,
            **self._stationarity_fields(),
            weights_reliable=None if diagnostics is None else diagnostics.reliable,
            impossible_share=None if possible is None else float(self.sample_weights[~possible].sum()),
        )

    def _stationarity_fields(self) -> dict[str, Any]:
        check = self.stationarity
        if check is None:
            return {}
        return {"sweep_change": check.mean_change, "sweep_change_error": check.standard_error,
                "sweep_change_median": check.median_change, "sweep_change_rank_p": check.rank_p_value,
                "stationary": check.passes}

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

        ``search="greedy"``: a SALSO-style local search from the MAP (ranked by an exact log joint; without
        one, the most frequent partition: :meth:`_search_start`) and ``num_starts - 1`` further starts
        drawn from the posterior (distinct partitions, by weight; seeded): sweeps over the points in random
        order move each point to the existing cluster or the new cluster that lowers the expected loss most,
        until no point moves (or ``max_sweeps``); the start reaching the lowest expected loss wins. All
        starts run at once, and each move costs O(starts x distinct samples x clusters). ``"exhaustive"``
        scores all Bell(N) partitions (N <= 10). ``"auto"`` enumerates up to N = 7, searches greedily above.
        """
        loss = check_loss(loss)
        search = check_choice(search, "search", SEARCHES)
        num_starts = check_positive_int(num_starts, "num_starts")
        max_sweeps = check_positive_int(max_sweeps, "max_sweeps")
        key = (loss, num_starts, max_sweeps, search, seed)
        if key not in self._point_estimates:
            uniq, total, _ = self._unique_with_first()
            self._point_estimates[key] = minimise_expected_loss(
                uniq, total, self._search_start(), loss, num_starts=num_starts, max_sweeps=max_sweeps,
                search=search, seed=seed)
        return self._point_estimates[key].clone()

    def _search_start(self) -> Tensor:
        """The point estimate's first start: the MAP where it is ranked without estimation noise (an exact log
        joint, or an exact ``log_prob``), else the partition of largest total weight. Never a ranking by a
        guide's estimate: the search would wait on it (seconds; deferred until read) and carry its noise."""
        if self._log_joint is not None or (self.exact_log_prob and self._log_prob is not None):
            return self.map
        _, _, first = self._unique_with_first()
        return self._samples[first[0]]

    # ------------------------------------------------------------------ ArviZ
    def to_arviz(self, num_draws: int | None = None, seed: int = 0) -> Any:
        """ArviZ ``InferenceData`` (arviz 0.x) or ``DataTree`` (arviz 1.x) built with ``arviz.from_dict``.

        Posterior variables over (chain, draw): ``num_clusters``, ``largest_cluster_share``, ``log_prob``,
        ``log_likelihood`` and ``log_joint`` (when known), and ``labels`` over (chain, draw, point).
        Weighted sets (e.g. exact posteriors) are exported as one chain of ``num_draws`` (default
        max(S, 1000)) draws resampled by weight with ``seed``. Chains of unequal length are cut to the
        shortest, with a warning.
        """
        grid = draw_grid(self.num_samples, self._weights, self._chain, num_draws, seed)
        share = cluster_sizes(self._samples).max(-1).values.to(torch.float64) / self.num_points
        variables = {
            "num_clusters": self.num_clusters,
            "largest_cluster_share": share,
            "log_prob": self.log_prob,
            "log_likelihood": self._log_likelihood,
            "log_joint": self._log_joint,
            "labels": self._samples,
        }
        posterior = {name: value[grid].numpy() for name, value in variables.items() if value is not None}
        return arviz_from_posterior(posterior, self.num_points, self.method)

    # ------------------------------------------------------------------ plot
    def plot(self, ax: Any = None, path: str | Path | None = None, loss: str = "vi") -> Any:
        """Three panels: the data coloured by the ``loss`` point estimate, the co-clustering matrix sorted by
        that estimate, and the posterior of K. ``ax``: three matplotlib Axes to draw into (else a new
        figure). Saves to ``path`` when given; returns the figure. Never calls ``plt.show``.
        """
        return plot_posterior(self, ax=ax, path=path, loss=loss)

    def __repr__(self) -> str:
        k_mean = float((self.num_clusters.to(torch.float64) * self.sample_weights).sum())
        weighted = ", weighted" if self._weights is not None else ""
        return (
            f"{type(self).__name__}(method={self.method!r}, num_samples={self.num_samples}, "
            f"num_points={self.num_points}, mean_K={k_mean:.2f}{weighted})"
        )

