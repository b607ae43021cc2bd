"""Are the guide's samples from the posterior? A stationarity check by one collapsed Gibbs sweep.

A collapsed Gibbs sweep is a Markov kernel that leaves p(c | x) invariant: if c ~ p(c | x), then the partition
c' after one sweep started at c is again distributed as p(c | x), so

    E[log p(c', x) - log p(c, x)] = 0.

:func:`check_stationarity` starts one sweep at each of S independent samples of a posterior and averages the
change of the exact log joint, with its standard error sd / sqrt(S) (the samples are independent, so are the
changes). Samples from a guide that is off (too spread out, or piled on the wrong mode) move systematically:
on iris (4-D, N = 150) the shipped NIW guide's samples gain +72 +- 7 nats in one sweep, collapsed Gibbs's own
draws -0.2 +- 0.7. It is a necessary condition only (samples that are wrong in a way one sweep does not
undo can pass), and a conservative one: a few samples that gain hundreds of nats (a wrong merge) widen the
standard error, so the shipped CRP guide's samples of its own simulations pass at N = 50 and 150 although
their median gain is +8 and +29 nats, where Gibbs's draws gain 0 (benchmarks/stationarity_check.py,
docs/benchmarks.md). The answer is about the model's plain posterior: where a model's guides target another one
(``plain_posterior_from_points``: an NIW table below 10 points, trained for the invariant posterior), the
check is not made. Hand-written because no library runs a posterior's own Gibbs kernel from given states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.protocols import can_ascend_to_mode

#: samples the check starts a sweep at (the first ones: the samples are independent): as many as keep the
#: sweeps within :data:`STATIONARITY_POINT_MOVES` point moves, between 8 and 32 (at N = 1,000 the NIW sweep of
#: 32 samples took 3x the sampling)
STATIONARITY_SAMPLES = (8, 32)
STATIONARITY_POINT_MOVES = 8192
#: a mean change this many standard errors from zero, and at least :data:`STATIONARITY_NATS`, fails the check
STATIONARITY_Z = 4.0
STATIONARITY_NATS = 1.0

__all__ = ["StationarityCheck", "StationarityWarning", "check_stationarity", "stationarity_applies"]


class StationarityWarning(UserWarning):
    """One collapsed Gibbs sweep moves the samples' log joint systematically: they are not from the posterior."""


@dataclass(frozen=True)
class StationarityCheck:
    """The mean change of log p(c, x) (nats) after one Gibbs sweep from ``num_samples`` samples, its standard
    error, the share of samples the sweep changed at all, and the median change (for posterior samples the
    change is symmetric about 0, the sweep's random scan making it reversible; a median far from 0 beside a
    passing mean means heavy tails, not posterior samples)."""

    mean_change: float
    standard_error: float
    moved_share: float
    num_samples: int
    median_change: float = math.nan

    @property
    def z(self) -> float:
        """The mean change in standard errors (inf when every sample changed by the same amount)."""
        if self.standard_error > 0:
            return self.mean_change / self.standard_error
        return 0.0 if self.mean_change == 0 else math.copysign(math.inf, self.mean_change)

    @property
    def passes(self) -> bool:
        """Whether the change is within :data:`STATIONARITY_Z` standard errors of zero or below
        :data:`STATIONARITY_NATS` (one sample: no error, so it passes)."""
        if math.isnan(self.z):
            return True
        return abs(self.z) < STATIONARITY_Z or abs(self.mean_change) < STATIONARITY_NATS

    def message(self, model: Any) -> str:
        direction = ("raises" if self.mean_change > 0 else "lowers")
        reading = ("the samples are more spread out than the posterior, or off its modes" if self.mean_change > 0
                   else "the samples sit on higher modes than the posterior spreads over")
        return (f"one collapsed Gibbs sweep from {self.num_samples} of the samples {direction} their log p(c, x) by "
                f"{self.mean_change:+.1f} +- {self.standard_error:.1f} nats (zero for posterior samples) under "
                f"{model!r}: {reading}. Do not trust their co-clustering or P(K); the MAP (ranked by the exact "
                f"log joint) and posterior.refined_map() still climb the exact posterior. Check with "
                f"pyro_acp.mcmc.gibbs, or weigh the samples with reweight=True")


def stationarity_applies(model: Any, num_points: int) -> bool:
    """Whether :func:`check_stationarity` can be made for an N-point data set of ``model``: an unordered model
    of points with the statistics collapsed Gibbs updates, whose guides target its plain posterior at this size
    (a model whose guides target another posterior below some size declares ``plain_posterior_from_points``).
    Not yet for graphs (whose samples may be conditioned on known labels)."""
    return (getattr(model, "data_kind", "vector") == "vector" and can_ascend_to_mode(model)
            and num_points >= int(getattr(model, "plain_posterior_from_points", 0)))


def check_stationarity(model: Any, x: Any, samples: Tensor, *, num_samples: int | None = None,
                       seed: int = 0) -> StationarityCheck:
    """One collapsed Gibbs sweep (points in a random order from ``seed``) from each of the first
    ``num_samples`` of ``samples`` (S, N), independent draws of a posterior of ``x`` under ``model``; the
    mean change of log p(c, x) and its standard error (module docstring). ``num_samples`` None: within
    :data:`STATIONARITY_POINT_MOVES` (:data:`STATIONARITY_SAMPLES`). Needs :func:`stationarity_applies`.
    """
    from pyro_acp.reference.gibbs_kernel import started_kernel  # the references import the posteriors

    if num_samples is None:
        low, high = STATIONARITY_SAMPLES
        num_samples = max(low, min(high, STATIONARITY_POINT_MOVES // max(1, samples.shape[-1])))
    data = model.check_data(x).to(torch.float64)
    starts = canonicalize(samples[:num_samples].to(torch.long).cpu())
    kernel, start = started_kernel(model, data, starts, seed=seed)
    after = kernel.sample(start)
    change = after["log_joint"] - start["log_joint"]  # both from the kernel's exact statistics, float64
    moved = (after["labels"].long() != starts).any(-1)
    error = float(change.std(unbiased=True) / math.sqrt(change.numel())) if change.numel() > 1 else math.nan
    return StationarityCheck(float(change.mean()), error, float(moved.double().mean()), int(change.numel()),
                             float(change.median()))
