"""Are self-normalised importance weights trustworthy? Effective sample size and Pareto-k.

Weights w_s ∝ p(c_s, x) / q(c_s) estimate posterior expectations well only when no few samples carry all
the weight. Two standard diagnostics, both reported and both turned into a warning when they fail:

- Kish's effective sample size ESS = 1 / Σ w_s² of the normalised weights;
- the shape k of a generalised Pareto distribution fitted to the largest weights (Pareto smoothed importance
  sampling, Vehtari et al. 2024; ArviZ's ``psislw``): the estimates are unreliable when
  k > min(1 - 1 / log10 S, 0.7) — flagged here when the ESS is also under a quarter of S, because the weights
  of repeated small-N partitions often give k > 0.7 with accurate weighted posteriors.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from pyro_acp.user_warnings import warn_user

#: fewer effective samples than this is a collapse whatever k says
MIN_EFFECTIVE_SAMPLES = 20.0
#: a large k only flags weights whose ESS is also below this share of S: on 30 N = 7 sets (20 simulated, 10
#: close-cluster) k exceeded 0.7 on 18, most with ESS > 75 % of S and TV to exact 0.01-0.04 after reweighting
FLAGGED_ESS_SHARE = 0.25

__all__ = ["ImportanceWeightWarning", "WeightDiagnostics", "weight_diagnostics"]


class ImportanceWeightWarning(UserWarning):
    """Importance weights that have collapsed onto a few samples: the weighted posterior is not reliable."""


@dataclass(frozen=True)
class WeightDiagnostics:
    """ESS and Pareto-k of one set of importance weights, and whether they pass."""

    num_samples: int
    effective_sample_size: float
    pareto_k: float  # NaN when ArviZ cannot fit it (e.g. too few samples)

    @property
    def pareto_k_threshold(self) -> float:
        return min(1.0 - 1.0 / math.log10(self.num_samples), 0.7) if self.num_samples > 10 else 0.0

    @property
    def reliable(self) -> bool:
        k_ok = math.isnan(self.pareto_k) or self.pareto_k <= self.pareto_k_threshold
        spread = self.effective_sample_size >= FLAGGED_ESS_SHARE * self.num_samples
        return (k_ok or spread) and self.effective_sample_size >= min(MIN_EFFECTIVE_SAMPLES, self.num_samples)

    def message(self) -> str:
        tail = ("Pareto k not estimated (too few or too repetitive weights to fit their tail)"
                if math.isnan(self.pareto_k) else
                f"Pareto k {self.pareto_k:.2f} (reliable below {self.pareto_k_threshold:.2f})")
        return (
            f"the importance weights have collapsed: effective sample size {self.effective_sample_size:.1f} of "
            f"{self.num_samples}, {tail}. "
            "The guide is a poor proposal for this data set (too large, or unlike the model's simulations): do "
            "not trust the weighted posterior; use the raw samples with care, or pyro_acp.mcmc.gibbs"
        )


def _pareto_k(log_weights: Tensor) -> float:
    """ArviZ's PSIS shape estimate for 1-D log weights; NaN when ArviZ has no ``psislw`` or the tail cannot be
    fitted: PSIS fits the M = min(S / 5, 3 sqrt(S)) largest weights, and a tail of few distinct values (repeated
    partitions share their weight; even weights) has no Pareto shape, ArviZ would report k = inf."""
    import arviz as az  # imported on use: ArviZ takes a second or two to import

    psislw = getattr(az, "psislw", None)
    tail_size = math.ceil(min(0.2 * log_weights.numel(), 3 * math.sqrt(log_weights.numel())))
    if psislw is None or tail_size < 5:
        return float("nan")
    if log_weights.topk(tail_size).values.unique().numel() < tail_size // 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns about large k itself; we report it our way
        return float(psislw(log_weights.double().cpu().numpy())[1])


def weight_diagnostics(log_weights: Tensor, *, warn: bool = True) -> WeightDiagnostics:
    """ESS and Pareto-k of unnormalised log weights (S,); warns with :class:`ImportanceWeightWarning` when
    they fail (``warn=False``: just report)."""
    log_weights = log_weights.double()
    normalised = torch.softmax(log_weights, 0)
    diagnostics = WeightDiagnostics(
        num_samples=int(log_weights.numel()),
        effective_sample_size=float(1.0 / (normalised**2).sum()),
        pareto_k=_pareto_k(log_weights),
    )
    if warn and not diagnostics.reliable:
        warn_user(diagnostics.message(), ImportanceWeightWarning)
    return diagnostics
