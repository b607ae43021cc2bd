"""The summary a clustering posterior reports (:meth:`~pyro_acp.posteriors.ClusteringPosterior.summary`): K, the
MAP with its probability and that probability's error, importance-weight health; ``str()`` is a readable block."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: a log-probability error (nats) from which the estimate is called not reliable: the delta-method error of a
#: mean of R replicates is at most 1 nat (one replicate holding all the mass), and from half that one
#: replicate dominates; such estimates were off by up to tens of nats at N = 100 (docs/benchmarks.md)
UNRELIABLE_ERROR = 0.5


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
    #: Kish's effective sample size of importance weights; None when the weights are the posterior itself
    effective_sample_size: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: whether ``map_probability`` is exact (an enumerated posterior) rather than an estimate
    map_probability_exact: bool = False
    #: standard error in nats of an estimated ``map_probability``'s logarithm (NaN: unknown)
    map_probability_error: float | None = None
    #: Pareto k of importance weights and whether the weights passed their checks (None: not reweighted)
    pareto_k: float | None = None
    weights_reliable: bool | None = None
    #: the stationarity check of the samples (:mod:`pyro_acp.diagnostics.stationarity`): the mean change of
    #: log p(c, x) in a symmetric Gibbs sweep, its standard error, its median, the signed-rank p-value of its
    #: symmetry and whether it passed (None: not made)
    sweep_change: float | None = None
    sweep_change_error: float | None = None
    sweep_change_median: float | None = None
    sweep_change_rank_p: float | None = None
    stationary: bool | None = None
    #: share of the samples (their total weight, if weighted) outside the support of the posterior: a rule of
    #: the model's prior broken (:attr:`ClusteringPosterior.possible`); None where the support is not known
    impossible_share: float | None = None

    def _probability_text(self) -> str:
        if self.map_probability is None:
            return "n/a"
        if self.map_probability_exact:
            return f"{self.map_probability:.4g} (exact)"
        error = self.map_probability_error
        if error is None or math.isnan(error):
            return f"{self.map_probability:.4g} (estimated, error unknown)"
        if error >= UNRELIABLE_ERROR:
            return (f"{self.map_probability:.3g} (estimated, standard error {error:.2f} nats: one replicate "
                    "dominates, not reliable)")
        low, high = self.map_probability * math.exp(-2 * error), min(1.0, self.map_probability * math.exp(2 * error))
        return f"{self.map_probability:.4g} (estimated; about {low:.3g}-{high:.3g})"

    def _weights_text(self) -> str:
        if not self.weighted or self.effective_sample_size is None:
            return ""
        text = f", effective sample size {self.effective_sample_size:.1f}"
        if self.pareto_k is not None and not math.isnan(self.pareto_k):
            text += f", Pareto k {self.pareto_k:.2f}"
        if self.weights_reliable is False:
            text += " (weights collapsed: not reliable)"
        return text

    def __str__(self) -> str:
        kind = "weighted partitions" if self.weighted else "samples"
        dist = ", ".join(f"{k}: {p:.3f}" for k, p in self.k_distribution.items() if p >= 5e-4)
        lines = [
            f"Clustering posterior ({self.method})",
            f"  points N = {self.num_points}, {kind} S = {self.num_samples}, unique = {self.num_unique}"
            + self._weights_text(),
            f"  number of clusters K: mean {self.k_mean:.3f}, mode {self.k_mode}",
            f"  P(K): {dist}",
            f"  MAP: K = {self.map_num_clusters}, probability {self._probability_text()}, "
            f"frequency among {kind} {self.map_frequency:.3f}",
            "  wall time: " + ("n/a" if self.wall_time is None else f"{self.wall_time:.3f} s"),
        ]
        if self.impossible_share:
            lines.append(f"  impossible under the model (zero probability): {self.impossible_share:.3f} of the "
                         f"{kind}; they are not posterior samples")
        if self.stationary is not None:
            verdict = "within" if self.stationary else "beyond"
            lines.append(f"  a Gibbs sweep moves log p(c, x) by {self.sweep_change:+.2f} +- "
                         f"{self.sweep_change_error:.2f} nats, median {self.sweep_change_median:+.2f}, signed-rank "
                         f"p {self.sweep_change_rank_p:.2g} (0 and symmetric for posterior samples): {verdict} "
                         f"the check's bounds")
        return "\n".join(lines)
