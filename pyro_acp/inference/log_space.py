"""Log-space reductions by group, for Monte-Carlo estimates of log probabilities: a scatter log-sum-exp and
the log of a group's mean with its delta-method standard error (written here: torch has no grouped
log-sum-exp, and a plain index_add of exp() underflows for the log-weights these estimates average)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["log_mean_and_error", "scatter_logsumexp"]


def log_mean_and_error(log_values: Tensor, group: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Per group: log of the mean of exp(values), and the delta-method standard error of that log (NaN for a
    group of one)."""
    count = torch.zeros(num_groups, dtype=log_values.dtype, device=log_values.device).index_add(
        0, group, torch.ones_like(log_values))
    log_mean = scatter_logsumexp(log_values, group, num_groups) - count.log()
    ratio = (log_values - log_mean[group]).exp().double().nan_to_num(nan=1.0)  # mean 1 within a group
    squares = torch.zeros(num_groups, dtype=torch.float64, device=log_values.device).index_add(
        0, group, (ratio - 1.0) ** 2)
    variance = squares / (count.double() - 1.0)
    error = (variance / count.double()).sqrt().to(log_values.dtype)
    return log_mean, error.masked_fill(count < 2, float("nan"))


def scatter_logsumexp(values: Tensor, index: Tensor, size: int) -> Tensor:
    """log sum_{i : index_i = g} exp(values_i) for g < ``size`` (-inf for an empty group)."""
    peak = values.new_full((size,), float("-inf")).scatter_reduce(0, index, values, "amax", include_self=True)
    safe = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = values.new_zeros(size).index_add(0, index, (values - safe[index]).exp())
    return safe + total.log()
