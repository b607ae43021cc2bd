"""Is the data set one the model could have produced? A prior predictive check of summary statistics.

An amortized guide has only seen data simulated from the model's prior predictive, so on data the prior
makes implausible its answer is an extrapolation nobody checked (and the exact posterior may differ wildly
from what the guide says: e.g. two clusters far from the prior's mean location are merged by the exact
posterior of a CRP mixture with a narrow prior on the means). :func:`prior_predictive_check` simulates data
sets of the same size from the model and reports each summary statistic of ``x`` that lies beyond every
simulated value by more than a factor :data:`MARGIN`. With M simulations a data set truly drawn from the prior
puts a given statistic beyond the simulated range with probability 2 / (M + 1) (one side: 1 / (M + 1)), and the
margin makes a flag rarer still; the ranges are cached per (model, N), so repeated calls cost nothing.

Statistics of point data (N, D), all scale-sensitive, since the priors are:
- ``location``: the norm of the mean point;
- ``spread``: the root mean variance of the coordinates;
- ``neighbour_distance``: the (lower) median distance of a point to its nearest neighbour (the within-cluster scale),
  on at most 128 points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pyro_acp.validation import check_positive_int

DEFAULT_SIMULATIONS = 200
_MAX_NEIGHBOUR_POINTS = 128
#: a statistic is flagged only this factor beyond the simulated range (fewer false alarms on real prior draws)
MARGIN = 1.25
#: statistics only flagged when too large (a data set centred at the origin is never implausible)
_UPPER_ONLY = ("location",)

__all__ = ["PriorCheck", "PriorPredictiveWarning", "point_statistics", "prior_predictive_check"]


class PriorPredictiveWarning(UserWarning):
    """The data lie outside what the model's prior predictive produces (and what its guide was trained on)."""


def point_statistics(x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
    """The summary statistics (B,) of point data sets (B, N, D) with masks (B, N) (see the module docstring)."""
    x = x.to(torch.float64)
    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
    weight = mask.to(x.dtype).unsqueeze(-1)
    count = weight.sum(1)
    mean = (x * weight).sum(1) / count
    variance = (((x - mean.unsqueeze(1)) ** 2) * weight).sum(1) / count
    few = x[:, :_MAX_NEIGHBOUR_POINTS]
    few_mask = mask[:, :_MAX_NEIGHBOUR_POINTS]
    distance = torch.cdist(few, few)
    pair_ok = few_mask.unsqueeze(1) & few_mask.unsqueeze(2)
    pair_ok &= ~torch.eye(few.shape[1], dtype=torch.bool, device=x.device)
    nearest = distance.masked_fill(~pair_ok, float("inf")).min(-1).values
    nearest = nearest.masked_fill(~few_mask, float("nan"))
    return {
        "location": mean.norm(dim=-1),
        "spread": variance.mean(-1).sqrt(),
        "neighbour_distance": nearest.nanmedian(-1).values,
    }


@dataclass(frozen=True)
class PriorCheck:
    """Observed statistics, the range of the simulated ones, and the names of those outside it."""

    observed: dict[str, float]
    simulated_range: dict[str, tuple[float, float]]
    num_simulations: int

    @property
    def outside(self) -> list[str]:
        """Statistics of the data beyond every simulated value."""
        flagged = []
        for name, value in self.observed.items():
            low, high = self.simulated_range[name]
            if value > high * MARGIN or (name not in _UPPER_ONLY and value < low / MARGIN):
                flagged.append(name)
        return flagged

    def message(self, model: Any) -> str:
        """What lies outside, and what to do about it."""
        parts = [f"{name} {self.observed[name]:.3g} (prior predictive range {low:.3g} to {high:.3g})"
                 for name in self.outside for low, high in [self.simulated_range[name]]]
        return (
            f"the data lie outside the prior predictive of {model!r}: {'; '.join(parts)}, beyond all "
            f"{self.num_simulations} data sets simulated from the model. The guide was trained on such "
            "simulations only, so its answer here is unchecked, and the model's own posterior may be far from "
            "what you expect: rescale or centre the data, or choose hyperparameters whose prior covers them "
            "(e.g. the prior scale of the cluster means and the cluster spread), and check the answer with "
            "pyro_acp.exact_posterior or pyro_acp.mcmc.gibbs"
        )


def prior_predictive_check(model: Any, x: Tensor, *, num_simulations: int = DEFAULT_SIMULATIONS,
                           seed: int = 0) -> PriorCheck | None:
    """Compare :func:`point_statistics` of one point data set ``x`` (N, D) with ``num_simulations`` data sets
    of N points simulated from ``model`` (seeded: the check is deterministic). None for models whose data are
    not points (``data_kind != "vector"``)."""
    if getattr(model, "data_kind", None) != "vector":
        return None
    num_simulations = check_positive_int(num_simulations, "num_simulations")
    observed = point_statistics(x.detach().cpu().unsqueeze(0))
    return PriorCheck(
        observed={name: float(value[0]) for name, value in observed.items()},
        simulated_range=_simulated_range(model, int(x.shape[0]), num_simulations, seed),
        num_simulations=num_simulations,
    )


_RANGES: dict[tuple[str, int, int, int], dict[str, tuple[float, float]]] = {}


def _simulated_range(model: Any, num_points: int, num_simulations: int, seed: int) -> dict[str, tuple[float, float]]:
    """(min, max) of each statistic over simulated data sets of ``num_points`` points, cached."""
    key = (json.dumps(model.config(), sort_keys=True), num_points, num_simulations, seed)
    if key not in _RANGES:
        batch = model.simulate(num_simulations, num_points=num_points, seed=seed)
        simulated = point_statistics(batch.x, batch.mask)
        _RANGES[key] = {name: (float(v.min()), float(v.max())) for name, v in simulated.items()}
    return _RANGES[key]
