"""The Pitman-Yor process prior over partitions and its one-parameter case, the Chinese Restaurant Process.

Gibbs-type with c = -d and V(n, K) = prod_{i=1}^{K-1} (alpha + i d) / (alpha + 1)_{n-1} (d = 0: the CRP,
V(n, K) = alpha^K / (alpha)_n); see :mod:`pyro_acp.distributions.gibbs_type`. Sampling runs the sequential
seating scheme vectorised over draws.

Hyperparameters may be tensors: a batch of them (e.g. a concentration drawn from a Gamma prior inside a
``pyro.plate``) gives the distribution that batch shape, and a tensor that requires grad keeps ``log_prob``
differentiable in it. ``log_prob`` then uses the closed form
log V(n, K) = Σ_{i<K} log(α + i d) - log (α + 1)_{n-1}, with Σ_{i<K} log(α + i d) = (K - 1) log d +
log Γ(α/d + K) - log Γ(α/d + 1) for d > 0 and (K - 1) log α for d = 0, and log W(m) = log Γ(m - d) - log Γ(1 - d),
all in the hyperparameters' dtype. Sampling draws each batch element with its own hyperparameters (the CRP
fully vectorised). The seating tables of collapsed Gibbs and the law of K need scalar hyperparameters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pyro.distributions import TorchDistribution
from torch import Tensor

from pyro_acp.data.partitions import (
    canonicalize,
    check_labels,
    cluster_sizes,
    log_rising_factorial,
    log_unsigned_stirling1,
)
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
        self.tensor_parameters = _is_tensor_parameter(alpha) or _is_tensor_parameter(discount)
        if self.tensor_parameters:
            alpha, discount = _tensor_parameters(alpha, discount)
            self.alpha, self.discount = alpha, discount
            self._check_tensor_params()
            super().__init__(num_points, alpha.dtype, alpha.device, validate_args=validate_args,
                             batch_shape=alpha.shape)
            return
        self.alpha = check_scalar(alpha, "alpha")
        self.discount = check_scalar(discount, "discount")
        self._check_params()
        self.size_shift = -self.discount
        super().__init__(num_points, *_dtype_device(alpha, discount), validate_args=validate_args)

    def _check_tensor_params(self) -> None:
        if not bool(torch.isfinite(self.alpha).all() & torch.isfinite(self.discount).all()):
            raise ValueError("alpha and discount must be finite")
        if not bool(((self.discount >= 0) & (self.discount < 1)).all()):
            raise ValueError(f"discount must lie in [0, 1), got {self.discount.detach().min()} .. "
                             f"{self.discount.detach().max()}")
        if not bool((self.alpha > -self.discount).all()):
            raise ValueError("alpha must be > -discount for every element")

    # ------------------------------------------------------------------ tensor hyperparameters
    def _scalar_only(self, what: str) -> None:
        if self.tensor_parameters:
            raise TypeError(f"{what} needs scalar hyperparameters; this {type(self).__name__} has a batch of "
                            f"shape {tuple(self.alpha.shape)} (build one per element)")

    def expand(self, batch_shape, _instance=None):
        if not self.tensor_parameters:
            return super().expand(batch_shape, _instance)
        batch_shape = torch.Size(batch_shape)
        new = self._get_checked_instance(type(self), _instance)
        new.__dict__.update(self.__dict__)
        new.alpha, new.discount = self.alpha.expand(batch_shape), self.discount.expand(batch_shape)
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        if not self.tensor_parameters:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        labels = check_labels(value)
        width = labels.shape[-1]
        if labels.numel() and int(labels.max()) >= width:
            labels = canonicalize(labels)
        sizes = cluster_sizes(labels, width).to(self.alpha.dtype)  # (..., K)
        n, k = sizes.sum(-1), (sizes > 0).sum(-1).to(self.alpha.dtype)
        shape = torch.broadcast_shapes(n.shape, self.batch_shape)
        alpha, d = self.alpha.expand(shape), self.discount.expand(shape)
        n, k = n.expand(shape), k.expand(shape)
        sizes = sizes.expand(*shape, sizes.shape[-1])
        positive = d > 0
        safe_d = torch.where(positive, d, torch.ones_like(d))
        ratio = alpha / safe_d
        stick = torch.where(positive, (k - 1) * safe_d.log() + torch.lgamma(ratio + k) - torch.lgamma(ratio + 1),
                            (k - 1) * torch.where(positive, torch.ones_like(alpha), alpha).log())
        log_v = stick - (torch.lgamma(alpha + n) - torch.lgamma(alpha + 1))
        d_ = d.unsqueeze(-1)
        log_w = torch.where(sizes > 0, torch.lgamma(sizes.clamp(min=1) - d_) - torch.lgamma(1 - d_), 0.0).sum(-1)
        return log_v + log_w

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        if not self.tensor_parameters:
            return super().sample(sample_shape)
        shape = torch.Size(sample_shape) + self.batch_shape
        alpha = self.alpha.detach().expand(shape).reshape(-1).to(torch.float64)
        discount = self.discount.detach().expand(shape).reshape(-1).to(torch.float64)
        with torch.no_grad():
            if bool((discount == 0).all()):
                labels = _crp_sample(alpha.unsqueeze(-1), alpha.shape[0], self.num_points, self._device)
            else:
                labels = torch.cat([PitmanYor(float(a), float(d), self.num_points).sample((1,))
                                    for a, d in zip(alpha.tolist(), discount.tolist(), strict=True)])
        return labels.reshape(shape + self.event_shape).to(self._device)

    def seating_log_weights(self, counts: Tensor, num_points_seated: int | Tensor | None = None) -> Tensor:
        self._scalar_only("seating_log_weights (collapsed Gibbs)")
        return super().seating_log_weights(counts, num_points_seated)

    def log_v(self, n: Tensor, k: Tensor, bound: int) -> Tensor:
        self._scalar_only("log_v")
        return self._log_v(n, k, bound)

    def num_clusters_distribution(self, num_points: int | None = None) -> Tensor:
        self._scalar_only("num_clusters_distribution")
        return super().num_clusters_distribution(num_points)

    def _check_params(self) -> None:
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount must lie in [0, 1), got {self.discount}")
        if not self.alpha > -self.discount:
            raise ValueError(f"alpha must be > -discount = {-self.discount}, got {self.alpha}")

    def _params(self) -> dict[str, float]:
        if self.tensor_parameters:
            return {"alpha.shape": float("nan")}
        return {"alpha": self.alpha, "discount": self.discount}

    def __repr__(self) -> str:
        if self.tensor_parameters:
            return f"{type(self).__name__}(tensor hyperparameters, batch_shape={tuple(self.batch_shape)}, " \
                   f"num_points={self.num_points})"
        return super().__repr__()

    def _build_table(self, size: int, device: torch.device) -> Tensor:
        """S[j] = sum_{i=1}^{j} log(alpha + i d) for j = 0..size."""
        i = torch.arange(1, size + 1, dtype=torch.float64, device=device)
        terms = torch.log(self.alpha + self.discount * i)
        return torch.cat([terms.new_zeros(1), terms.cumsum(0)])

    def _log_v(self, n: Tensor, k: Tensor, bound: int) -> Tensor:
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


def _is_tensor_parameter(value) -> bool:
    """A hyperparameter that needs the tensor path: a batch (dim > 0) or one that requires grad."""
    return torch.is_tensor(value) and (value.dim() > 0 or value.requires_grad)


def _tensor_parameters(alpha, discount) -> tuple[Tensor, Tensor]:
    """alpha and discount as floating tensors of one broadcast shape, dtype and device."""
    like = alpha if torch.is_tensor(alpha) and alpha.dtype.is_floating_point else discount
    dtype = like.dtype if torch.is_tensor(like) and like.dtype.is_floating_point else torch.get_default_dtype()
    device = like.device if torch.is_tensor(like) else torch.device("cpu")
    alpha = torch.as_tensor(alpha, dtype=dtype, device=device)
    discount = torch.as_tensor(discount, dtype=dtype, device=device)
    return torch.broadcast_tensors(alpha, discount)


def _crp_sample(alpha: float | Tensor, num: int, num_points: int, device: torch.device) -> Tensor:
    """(num, N) exact CRP draws with no loop over points (``alpha``: a number, or a (num, 1) tensor).

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
        self._scalar_only("expected_num_clusters")
        n = self.num_points if num_points is None else check_positive_int(num_points, "num_points")
        return float((self.alpha / (self.alpha + torch.arange(n, dtype=torch.float64))).sum())


# ---------------------------------------------------------------------------------------------- MFM
