"""The Mixture-of-Finite-Mixtures prior over partitions (Miller & Harrison 2018).

K - 1 ~ Poisson(rate), Dirichlet(gamma) weights: Gibbs-type with c = gamma and V(n, K) = gamma^K V_n(K),
V_n(t) = sum_{k >= t} k!/(k-t)! / (gamma k)_n p(k), a truncated sum computed once per (rate, gamma, N) in
log space and cached.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pyro_acp.distributions.gibbs_type import GibbsPartition, _dtype_device
from pyro_acp.validation import check_scalar

MAX_MFM_RATE = 1e4  # keeps the truncated V_n(t) sum (about 4 * rate terms) small

_MFM_TABLES: dict[tuple[float, float], tuple[Tensor, Tensor]] = {}
_MFM_TABLE_STEP = 64


def _mfm_tables(rate: float, gamma: float, n_max: int) -> tuple[Tensor, Tensor]:
    """log V_n(t) (n, t <= n_max) and the opening probabilities (i < n_max, t <= n_max), float64, CPU.

    Sliced from the largest tables built so far for (rate, gamma); sizes are rounded up to a multiple of 64, so
    models drawing a new N per data set reuse one table. Opening probability: gamma V_{i+1}(t+1) / V_i(t).
    """
    cached = _MFM_TABLES.get((rate, gamma))
    if cached is None or cached[0].shape[0] <= n_max:
        log_v = _build_mfm_log_v_table(rate, gamma, _MFM_TABLE_STEP * math.ceil((n_max + 1) / _MFM_TABLE_STEP))
        p_open = torch.nan_to_num((math.log(gamma) + log_v[1:, 1:] - log_v[:-1, :-1]).exp(), nan=0.0)
        cached = _MFM_TABLES[(rate, gamma)] = (log_v, p_open)
    return cached[0][: n_max + 1, : n_max + 1], cached[1][:n_max, : n_max + 1]


def _build_mfm_log_v_table(rate: float, gamma: float, n_max: int) -> Tensor:
    """log V_n(t) for n, t = 0..n_max (Miller & Harrison), float64 on CPU; entries with t > n are junk.

    The last row V_{n_max}(t) = sum_{k >= 1} k!/(k-t)! / (gamma k)_{n_max} p(k), p(k) the Poisson(rate) law of
    k - 1, is a truncated sum: for k >= max(2 n_max, 4 rate) successive terms shrink by a factor <= 1/2 (ratio
    <= rate/k * (k+1)/(k+1-t)), so stopping 100 terms later leaves a relative error below 2^-99. The other
    rows follow from V_n(t) = (n + gamma t) V_{n+1}(t) + gamma V_{n+1}(t+1), a sum of positive terms (stable).
    """
    k_max = math.ceil(max(2 * n_max, 4 * rate)) + 100
    k = torch.arange(1, k_max + 1, dtype=torch.float64)
    log_pk = -rate + (k - 1) * math.log(rate) - torch.lgamma(k)
    t = torch.arange(n_max + 1, dtype=torch.float64)
    falls = k >= t.unsqueeze(-1)
    log_fall = torch.where(falls, torch.lgamma(k + 1) - torch.lgamma((k - t.unsqueeze(-1)).clamp(min=0) + 1),
                           -math.inf)
    log_rise = torch.lgamma(gamma * k + n_max) - torch.lgamma(gamma * k)
    rows = [torch.logsumexp(log_fall + log_pk - log_rise, dim=-1)]
    minus_inf = torch.tensor([-math.inf], dtype=torch.float64)
    for n in range(n_max - 1, -1, -1):
        above = rows[-1]
        rows.append(torch.logaddexp(torch.log(n + gamma * t) + above,
                                    math.log(gamma) + torch.cat([above[1:], minus_inf])))
    return torch.stack(rows[::-1])


class MixtureOfFiniteMixtures(GibbsPartition):
    """Partition of a mixture of finite mixtures (Miller & Harrison 2018).

    K - 1 ~ Poisson(num_components_rate), weights ~ Dirichlet(gamma, ..., gamma), labels i.i.d. from the
    weights, labels forgotten. EPPF V_n(t) prod_c gamma^(n_c) (rising factorials); its restaurant process joins
    a block of size m with weight (m + gamma) V_{n+1}(t) and opens one with weight gamma V_{n+1}(t+1).
    Sampling loops over the N points, each step vectorised over all partitions. Defaults: rate 3, gamma 1.
    """

    def __init__(self, num_points: int, num_components_rate: float | Tensor = 3.0, gamma: float | Tensor = 1.0,
                 validate_args: bool | None = None):
        self.num_components_rate = check_scalar(num_components_rate, "num_components_rate")
        self.gamma = check_scalar(gamma, "gamma")
        if not 0.0 < self.num_components_rate <= MAX_MFM_RATE:
            raise ValueError(f"num_components_rate must lie in (0, {MAX_MFM_RATE:g}], got {self.num_components_rate}")
        if not self.gamma > 0.0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        self.size_shift = self.gamma
        super().__init__(num_points, *_dtype_device(num_components_rate, gamma), validate_args=validate_args)

    def _params(self) -> dict[str, float]:
        return {"num_components_rate": self.num_components_rate, "gamma": self.gamma}

    def _build_table(self, size: int, device: torch.device) -> Tensor:
        return _mfm_tables(self.num_components_rate, self.gamma, size)[0].to(device)

    def _opening_probabilities(self) -> np.ndarray:
        n = self.num_points
        return _mfm_tables(self.num_components_rate, self.gamma, n + 1)[1][:n].numpy()

    def log_v(self, n: Tensor, k: Tensor, bound: int) -> Tensor:
        n = torch.as_tensor(n, dtype=torch.float64)
        k = torch.as_tensor(k, device=n.device)
        table = self._table(bound, k.device)
        top = table.shape[0] - 1
        value = table[n.long().clamp(0, top), k.long().clamp(0, top)] + k * math.log(self.gamma)
        valid = (k <= n) & ((k >= 1) | (n == 0))
        return torch.where(valid, value, -math.inf)
