"""The Pitman-Yor process prior over partitions and its one-parameter case, the Chinese Restaurant Process.

Gibbs-type with c = -d and V(n, K) = prod_{i=1}^{K-1} (alpha + i d) / (alpha + 1)_{n-1} (d = 0: the CRP,
V(n, K) = alpha^K / (alpha)_n); see :mod:`pyro_acp.distributions.gibbs_type`. Sampling runs the sequential
seating scheme vectorised over draws.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.partitions import log_rising_factorial, log_unsigned_stirling1
from pyro_acp.distributions.gibbs_type import GibbsPartition, _dtype_device, _resolve_pointers
from pyro_acp.validation import check_positive_int, check_scalar


class PitmanYor(GibbsPartition):
    """Two-parameter Pitman-Yor (Ewens-Pitman) partition: discount in [0, 1), alpha > -discount.

    Sequential seating: the point after n others joins a block of size m with probability (m - d)/(alpha + n)
    and opens a new block with probability (alpha + K d)/(alpha + n). With discount 0 this is the CRP and the
    fast vectorised sampler of :class:`CRP` is used; otherwise sampling loops over the N points, each step
    vectorised over all partitions.
    """

    def __init__(self, alpha: float | Tensor, discount: float | Tensor, num_points: int,
                 validate_args: bool | None = None):
        self.alpha = check_scalar(alpha, "alpha")
        self.discount = check_scalar(discount, "discount")
        self._check_params()
        self.size_shift = -self.discount
        super().__init__(num_points, *_dtype_device(alpha, discount), validate_args=validate_args)

    def _check_params(self) -> None:
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount must lie in [0, 1), got {self.discount}")
        if not self.alpha > -self.discount:
            raise ValueError(f"alpha must be > -discount = {-self.discount}, got {self.alpha}")

    def _params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "discount": self.discount}

    def _build_table(self, size: int, device: torch.device) -> Tensor:
        """S[j] = sum_{i=1}^{j} log(alpha + i d) for j = 0..size."""
        i = torch.arange(1, size + 1, dtype=torch.float64, device=device)
        terms = torch.log(self.alpha + self.discount * i)
        return torch.cat([terms.new_zeros(1), terms.cumsum(0)])

    def log_v(self, n: Tensor, k: Tensor, bound: int) -> Tensor:
        n = torch.as_tensor(n, dtype=torch.float64)
        k = torch.as_tensor(k, device=n.device)
        table = self._table(bound, k.device)
        kk = k.long().clamp(1, table.shape[0]) - 1
        denom = log_rising_factorial(torch.tensor(self.alpha + 1.0, dtype=torch.float64), n.clamp(min=1) - 1)
        value = table[kk] - denom
        valid = (k >= 1) & (k <= n)
        empty = (k == 0) & (n == 0)
        return torch.where(valid, value, torch.where(empty, 0.0, -math.inf))

    def _opening_probabilities(self) -> np.ndarray:
        """(alpha + t d) / (alpha + i) (row 0: the first point always opens)."""
        ts = np.arange(self.num_points + 1, dtype=np.float64)
        steps = np.arange(1, self.num_points, dtype=np.float64)[:, None]
        rest = (self.alpha + self.discount * ts) / (self.alpha + steps)
        return np.concatenate([np.ones((1, self.num_points + 1)), rest])

    def _sample_flat(self, num: int) -> Tensor:
        if self.discount == 0.0:
            return _crp_sample(self.alpha, num, self.num_points, self._device)
        return super()._sample_flat(num)


def _crp_sample(alpha: float, num: int, num_points: int, device: torch.device) -> Tensor:
    """(num, N) exact CRP draws with no loop over points.

    Point i opens a table with probability alpha / (alpha + i), otherwise it copies the table of a uniformly
    chosen earlier point (probability n_c / (alpha + i) for table c). Following the copy pointers to their
    roots (pointer jumping, ceil(log2 N) gathers) finds each point's table; the root is the table's first
    point, so a cumulative count of roots numbers tables by first appearance.
    """
    i = torch.arange(num_points, device=device)
    u = torch.rand(num, num_points, dtype=torch.float64, device=device)
    opens = u * (alpha + i) < alpha
    parent = (torch.rand(num, num_points, dtype=torch.float64, device=device) * i).long()
    parent = torch.minimum(parent, (i - 1).clamp(min=0))
    pointer = torch.where(opens, i, parent)
    table_number = opens.long().cumsum(1) - 1
    return table_number.gather(1, _resolve_pointers(pointer))


class CRP(PitmanYor):
    """Chinese restaurant process CRP(alpha), alpha > 0: the Pitman-Yor partition with discount 0.

    EPPF alpha^K prod_k (n_k - 1)! / (alpha)_N. Sampling is fully vectorised (see ``_crp_sample``).
    """

    def __init__(self, alpha: float | Tensor, num_points: int, validate_args: bool | None = None):
        super().__init__(alpha, 0.0, num_points, validate_args=validate_args)

    def _check_params(self) -> None:
        if not self.alpha > 0.0:
            raise ValueError(f"alpha must be > 0 for the CRP, got {self.alpha}")

    def _params(self) -> dict[str, float]:
        return {"alpha": self.alpha}

    def _log_num_clusters_distribution(self, num_points: int) -> Tensor:
        """log P(K = k) = k log alpha + log |s(N, k)| - log (alpha)_N (unsigned Stirling numbers)."""
        ks = torch.arange(num_points + 1, dtype=torch.float64)
        log_norm = log_rising_factorial(torch.tensor(self.alpha, dtype=torch.float64),
                                        torch.tensor(float(num_points), dtype=torch.float64))
        return ks * math.log(self.alpha) + log_unsigned_stirling1(num_points) - log_norm

    def expected_num_clusters(self, num_points: int | None = None) -> float:
        """E[K] = sum_{i<N} alpha / (alpha + i)."""
        n = self.num_points if num_points is None else check_positive_int(num_points, "num_points")
        return float((self.alpha / (self.alpha + torch.arange(n, dtype=torch.float64))).sum())


# ---------------------------------------------------------------------------------------------- MFM
