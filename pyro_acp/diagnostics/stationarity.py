"""Are the guide's samples from the posterior? A stationarity check by a collapsed Gibbs sweep.

A collapsed Gibbs sweep is a Markov kernel that leaves p(c | x) invariant: if c ~ p(c | x), then the partition
c' after a sweep started at c is again distributed as p(c | x). :func:`check_stationarity` starts one
symmetric sweep (the points in a random order, then in the reverse order: a reversible kernel for every order,
:class:`~pyro_acp.reference.gibbs_kernel.CollapsedGibbs`) at each of S independent samples and looks at the
change of the exact log joint, d = log p(c', x) - log p(c, x). For posterior samples

- its mean is zero (any p-invariant kernel): the mean with its standard error sd / sqrt(S);
- its distribution is symmetric about zero (a reversible kernel makes (c, c') exchangeable): the Wilcoxon
  signed-rank test (exact) of the samples the sweep moved, which heavy tails do not blunt.

Samples from a guide that is off (too spread out, or piled on the wrong mode) move systematically. The mean alone
is conservative: a few samples that gain hundreds of nats (a wrong merge) widen its standard error, so samples
whose typical gain is tens of nats could pass it (benchmarks/stationarity_check.py, docs/benchmarks.md); the rank
test sees them. Both are necessary conditions only: samples that are wrong in a way one sweep does not undo (a
locally stable wrong mode) can pass. Samples of zero posterior probability (log p(c, x) = -inf: a partition the
prior rules out, e.g. a block below a planted partition's minimum size) are left out of the check and warned about
on their own (:func:`warn_if_impossible`, :class:`ZeroProbabilityWarning`). Samples drawn conditionally (a graph's
known labels) are checked under the same conditions (the labelled nodes frozen). The cure for failing samples is to
let Gibbs chains started at them run on (``pyro_acp.mcmc.gibbs(model, x, init=posterior, ...)``). The answer is
about the model's plain posterior: where a model's guides target another one (``plain_posterior_from_points``: an
NIW table below 10 points, trained for the invariant posterior), the check is not made. Hand-written because no
library runs a posterior's own Gibbs kernel from given states."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.protocols import can_ascend_to_mode
from pyro_acp.user_warnings import warn_user

#: samples the check starts a sweep at (the first ones: the samples are independent): as many as keep the
#: sweeps within :data:`STATIONARITY_POINT_MOVES` point moves per direction, between 16 and 32 (the signed-rank
#: test cannot reach p = 1e-4 with fewer than 15 moved samples: its smallest two-sided p is 2^(1 - n); at
#: N = 1,000 the NIW sweep of 32 samples took 3x the sampling)
STATIONARITY_SAMPLES = (16, 32)
STATIONARITY_POINT_MOVES = 8192
#: a mean change of at least :data:`STATIONARITY_NATS` fails the check when a t-test of a zero mean (S - 1
#: degrees of freedom) or the signed-rank test of symmetry rejects at this level: each a 1e-4 false-alarm rate
#: for posterior samples (exactly for the rank test; for the t-test where the changes are near normal)
STATIONARITY_P = 1e-4
STATIONARITY_NATS = 1.0
#: the t-test's two-sided 1e-4 critical values of |mean / standard error| for 1, 2, ..., 31 degrees of freedom
#: (scipy.stats.t.isf(5e-5, df), checked by tests/test_stationarity.py; more degrees of freedom use the last,
#: which is then conservative). A table, because importing scipy.stats would cost 0.9 s, 4x infer's sampling.
T_CRITICAL = (6366.198, 99.992, 28.0, 15.544, 11.178, 9.082, 7.885, 7.12, 6.594, 6.211, 5.921, 5.694, 5.513,
              5.363, 5.239, 5.134, 5.044, 4.966, 4.897, 4.837, 4.784, 4.736, 4.693, 4.654, 4.619, 4.587, 4.558,
              4.53, 4.506, 4.482, 4.461)

__all__ = ["StationarityCheck", "StationarityWarning", "ZeroProbabilityWarning", "check_stationarity",
           "stationarity_applies", "symmetry_p_value", "warn_if_impossible"]


class StationarityWarning(UserWarning):
    """A collapsed Gibbs sweep moves the samples' log joint systematically: they are not from the posterior."""


class ZeroProbabilityWarning(UserWarning):
    """Some samples have zero probability under the model (a rule of its prior broken, or log p(c, x) = -inf):
    they are not from the posterior."""


def warn_if_impossible(posterior: Any) -> int:
    """The number of samples outside the support of the posterior (``posterior.possible`` False: a rule of the
    model's prior they break, or an exact log joint of -inf), with a :class:`ZeroProbabilityWarning` that
    counts them by reason when there are any (0 when the support is not known)."""
    violations, possible = posterior.support_violations, posterior.possible
    if not violations or bool(possible.all()):
        return 0
    impossible, model = int((~possible).sum()), posterior.model
    reasons = "; ".join(f"{reason}: {int(broken.sum())}" for reason, broken in violations.items() if broken.any())
    if gibbs_can_repair(model):
        remedy = ("the MAP, ranked by the exact log joint, is one of them only if all are. Gibbs chains started at "
                  "the others (pyro_acp.mcmc.gibbs(model, x, init=posterior) leaves these out) or reweight=True "
                  "(weight 0 for these) repair it")
    elif impossible == possible.numel():
        remedy = "none is possible, so no summary of these samples describes the posterior"
    else:
        remedy = ("posterior.possible marks the others (posterior.samples[posterior.possible]: the guide's "
                  "distribution restricted to the support, closer to the posterior but not it)")
    warn_user(f"{impossible} of {possible.numel()} samples have zero probability under {model!r} ({reasons}): "
              f"they are not posterior samples, yet the co-clustering and P(K) count them; {remedy}",
              ZeroProbabilityWarning)
    return impossible


def gibbs_can_repair(model: Any) -> bool:
    """Whether Gibbs chains and exact weights can repair impossible samples: a model with an exact collapsed
    likelihood and Gibbs statistics that is not ordered."""
    return can_ascend_to_mode(model) and not getattr(model, "ordered", False)


@dataclass(frozen=True)
class StationarityCheck:
    """A symmetric Gibbs sweep from ``num_samples`` samples: the mean change of log p(c, x) (nats), its standard
    error, the share of samples the sweep changed at all, the median change, and the two-sided p-value of the
    Wilcoxon signed-rank test of symmetry about 0 of the changes of the moved samples (1 when none moved)."""

    mean_change: float
    standard_error: float
    moved_share: float
    num_samples: int
    median_change: float = math.nan
    rank_p_value: float = 1.0

    @property
    def z(self) -> float:
        """The mean change in standard errors (inf when every sample changed by the same amount)."""
        if self.standard_error > 0:
            return self.mean_change / self.standard_error
        return 0.0 if self.mean_change == 0 else math.copysign(math.inf, self.mean_change)

    @property
    def z_bound(self) -> float:
        """The |z| at which the t-test of a zero mean rejects at :data:`STATIONARITY_P` (:data:`T_CRITICAL`)."""
        return T_CRITICAL[min(max(self.num_samples - 1, 1), len(T_CRITICAL)) - 1]

    @property
    def passes(self) -> bool:
        """False when the mean change is at least :data:`STATIONARITY_NATS` and the t-test of its mean or the
        signed-rank test of its symmetry rejects at :data:`STATIONARITY_P` (fewer than two samples checked: no
        error, so it passes)."""
        if self.num_samples < 2 or math.isnan(self.mean_change) or abs(self.mean_change) < STATIONARITY_NATS:
            return True
        return abs(self.z) < self.z_bound and self.rank_p_value > STATIONARITY_P

    def message(self, model: Any) -> str:
        direction = ("raises" if self.mean_change > 0 else "lowers")
        reading = ("the samples are more spread out than the posterior, or off its modes" if self.mean_change > 0
                   else "the samples sit on higher modes than the posterior spreads over")
        return (f"a collapsed Gibbs sweep from {self.num_samples} of the samples {direction} their log p(c, x) by "
                f"{self.mean_change:+.1f} +- {self.standard_error:.1f} nats, median {self.median_change:+.1f} "
                f"(z = {self.z:.1f}, bound {self.z_bound:.1f}; signed-rank p = {self.rank_p_value:.1g}; zero and "
                f"symmetric for posterior samples) under {model!r}: {reading}. Do not trust their co-clustering "
                f"or P(K); the MAP (ranked by the exact log joint) and posterior.refined_map() still climb the "
                f"exact posterior. Let Gibbs chains started at them run on: pyro_acp.mcmc.gibbs(model, x, "
                f"init=posterior, warmup_steps=10, num_samples=1): 11 sweeps (or weigh them with reweight=True)")


def stationarity_applies(model: Any, num_points: int) -> bool:
    """Whether :func:`check_stationarity` can be made for an N-point data set of ``model``: an unordered model
    (of points or of a graph) with the statistics collapsed Gibbs updates, whose guides target its plain
    posterior at this size (a model whose guides target another posterior below some size declares
    ``plain_posterior_from_points``)."""
    return can_ascend_to_mode(model) and num_points >= int(getattr(model, "plain_posterior_from_points", 0))


def check_stationarity(model: Any, x: Any, samples: Tensor, *, num_samples: int | None = None,
                       seed: int = 0, frozen: Tensor | None = None, new_clusters: bool = True,
                       log_joint: Tensor | None = None) -> StationarityCheck:
    """One symmetric collapsed Gibbs sweep (points in a random order from ``seed``, then reversed) from each of
    the first ``num_samples`` of ``samples`` (S, N) of positive probability, independent draws of a posterior
    of ``x`` under ``model``; the change of log p(c, x): its mean and standard error, median, and the
    signed-rank test of its symmetry (module docstring). ``num_samples`` None: within
    :data:`STATIONARITY_POINT_MOVES` point moves per direction (:data:`STATIONARITY_SAMPLES`). ``frozen``,
    ``new_clusters``: what the samples were conditioned on (``posterior.conditioning()``), kept by the sweep.
    ``log_joint``: the samples' exact log p(c, x) (S,) when the caller holds it (``posterior.log_joint``), else
    computed here; it tells which samples are possible. Needs :func:`stationarity_applies`.
    """
    from pyro_acp.reference.gibbs_kernel import started_kernel  # the references import the posteriors

    if num_samples is None:
        low, high = STATIONARITY_SAMPLES
        num_samples = max(low, min(high, STATIONARITY_POINT_MOVES // max(1, samples.shape[-1])))
    data = model.check_data(x).to(torch.float64)
    samples = canonicalize(samples.to(torch.long).cpu())
    if log_joint is None:
        log_joint = model.log_joint(data, samples)
    possible = log_joint.cpu() > -math.inf  # a sweep from an impossible partition means nothing
    starts = samples[possible][:num_samples]
    if starts.shape[0] == 0:
        return StationarityCheck(math.nan, math.nan, 0.0, 0)
    constraints = {} if frozen is None else {"frozen": frozen, "new_clusters": new_clusters}
    kernel, start = started_kernel(model, data, starts, seed=seed, symmetric_scan=True, **constraints)
    after = kernel.sample(start)
    change = after["log_joint"] - start["log_joint"]  # both from the kernel's exact statistics, float64
    moved = (after["labels"].long() != starts).any(-1)
    error = float(change.std(unbiased=True) / math.sqrt(change.numel())) if change.numel() > 1 else math.nan
    return StationarityCheck(float(change.mean()), error, float(moved.double().mean()), int(change.numel()),
                             float(change.median()), symmetry_p_value(change[moved]))


def symmetry_p_value(changes: Tensor) -> float:
    """Two-sided p-value of the exact Wilcoxon signed-rank test that ``changes`` (the log-joint changes of the
    moved samples) are symmetric about zero, leaving out the changes that are zero up to round-off (a move to an
    equally probable partition); 1 for none.

    Exact with ties: tied |changes| get their mean rank, and the null distribution of the positive samples' rank
    sum is that of independent random signs, counted over all 2^n sign patterns by dynamic programming on the
    doubled (integer) ranks, as probabilities (exact dyadic fractions up to n = 32; no overflow at any n).
    Hand-written because scipy.stats costs 0.9 s to import (:data:`T_CRITICAL`); O(n^3): a few thousand
    additions at n = 32, 0.04 s at n = 300, 9 s at n = 1,000.
    """
    values = changes.detach().double().cpu()
    tolerance = 1e-9 * max(1.0, float(values.abs().max())) if values.numel() else 0.0
    values = values[values.abs() > tolerance]
    if values.numel() == 0:
        return 1.0
    doubled = doubled_midranks(values.abs())
    observed = int(doubled[values > 0].sum())
    total = int(doubled.sum())
    probs = torch.zeros(total + 1, dtype=torch.float64)  # probs[s]: P(the positive ranks sum to s) under the null
    probs[0] = 1.0
    for rank in doubled.tolist():  # one more random sign: halves of the old and of the old shifted by its rank
        shifted = torch.zeros_like(probs)
        shifted[rank:] = probs[: total + 1 - rank]
        probs = 0.5 * (probs + shifted)
    lower, upper = float(probs[: observed + 1].sum()), float(probs[observed:].sum())
    return min(1.0, 2.0 * min(lower, upper))


def doubled_midranks(values: Tensor) -> Tensor:
    """2 x the ranks (1 = smallest) of ``values`` (n,), ties sharing their mean rank: integers (LongTensor)."""
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0)  # the last rank of each group of ties
    return (2 * ends - (counts - 1))[inverse]
