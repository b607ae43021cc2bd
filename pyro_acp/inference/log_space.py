"""Log-space reductions by group, for Monte-Carlo estimates of log probabilities: a scatter log-sum-exp and
the log of a group's mean with its delta-method standard error (written here: torch has no grouped
log-sum-exp, and a plain index_add of exp() underflows for the log-weights these estimates average)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["log_mean_and_error", "log_stratified_mean_and_error", "scatter_logsumexp"]


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


def log_stratified_mean_and_error(log_values: Tensor, stratum: Tensor, stratum_log_weight: Tensor,
                                  stratum_group: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Per group: log of the stratified mean sum_h w_h mean_{u in h} exp(values_u) over the group's strata h,
    and its delta-method standard error in nats, (sum_h w_h^2 var_h / n_h)^(1/2) / mean (NaN where a stratum
    that has units has only one).

    ``stratum`` (U,): each value's stratum; ``stratum_log_weight`` (H,): log w_h; ``stratum_group`` (H,): the
    group each stratum belongs to. A stratum without values is left out (its weight must then be zero for
    the mean to be unbiased: the caller's business). One stratum of weight 1 per group is
    :func:`log_mean_and_error`.
    """
    num_strata = stratum_log_weight.shape[0]
    present = torch.zeros(num_strata, dtype=torch.bool, device=log_values.device).index_fill(0, stratum, True)
    log_stratum_mean, stratum_error = log_mean_and_error(log_values, stratum, num_strata)
    term = torch.where(present, stratum_log_weight + log_stratum_mean, float("-inf"))
    log_mean = scatter_logsumexp(term, stratum_group, num_groups)
    share = (term - log_mean[stratum_group]).exp().nan_to_num(nan=0.0)  # w_h mean_h / mean, 0 when absent
    spread = torch.where(present, (share * stratum_error).double().square(), 0.0)
    error = torch.zeros(num_groups, dtype=torch.float64, device=log_values.device).index_add(
        0, stratum_group, spread).sqrt()
    return log_mean, error.to(log_values.dtype)


def scatter_logsumexp(values: Tensor, index: Tensor, size: int) -> Tensor:
    """log sum_{i : index_i = g} exp(values_i) for g < ``size`` (-inf for an empty group)."""
    peak = values.new_full((size,), float("-inf")).scatter_reduce(0, index, values, "amax", include_self=True)
    safe = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = values.new_zeros(size).index_add(0, index, (values - safe[index]).exp())
    return safe + total.log()
