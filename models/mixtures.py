"""Gaussian mixtures with a random partition: CRP, Pitman-Yor and Mixture-of-Finite-Mixtures priors.

Generative process (all three): labels ~ partition prior over N points; one mean per cluster
mu_k ~ N(0, mean_scale^2 I); x_i ~ N(mu_{c_i}, sigma^2 I). The means are conjugate, so the collapsed
likelihood p(x | partition) is exact (:mod:`pyro_acp.models.conjugate`): ``log_marginal_likelihood``
scores many partitions at once, ``log_predictive`` gives a point's collapsed predictive, and
``gibbs_statistics`` the sufficient statistics collapsed Gibbs updates. ``stick_breaking_form`` declares the
likelihood NUTS needs for the truncated stick-breaking mixture (with a CRP / Pitman-Yor prior).
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.distributions import CRP, MixtureOfFiniteMixtures, PitmanYor
from pyro_acp.protocols import StickBreakingForm
from pyro_acp.validation import check_positive, check_positive_int

from .base import ExactLikelihood, GenerativeModel
from .conjugate import GaussianGibbsStatistics, gaussian_log_marginal, gaussian_log_predictive, gaussian_stats


def gaussian_cluster_sites(labels: Tensor, dim: int, sigma: float, mean_scale: float,
                           obs: Tensor | None) -> tuple[Tensor, Tensor]:
    """Pyro sites "means" (one per cluster label) and "x" given the sampled ``labels`` (N,); (x, means)."""
    device = obs.device if obs is not None else torch.device("cpu")
    labels = labels.to(device)
    with pyro.plate("clusters", int(labels.max()) + 1):
        means = pyro.sample("means", dist.Normal(torch.zeros(dim, device=device), mean_scale).to_event(1))
    with pyro.plate("points", labels.shape[-1]):
        x = pyro.sample("x", dist.Normal(means[labels], sigma).to_event(1), obs=obs)
    return x, means


def gaussian_cluster_draws(labels: Tensor, dim: int, sigma: float, mean_scale: float,
                           generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Batched draws for padded ``labels`` (B, N): (x (B, N, dim), means (B, K, dim)), padding rows arbitrary."""
    batch, n = labels.shape
    device = labels.device
    means = mean_scale * torch.randn(batch, int(labels.max()) + 1, dim, generator=generator, device=device)
    index = labels.clamp(min=0).unsqueeze(-1).expand(batch, n, dim)
    noise = sigma * torch.randn(batch, n, dim, generator=generator, device=device)
    return means.gather(1, index) + noise, means


class GaussianMixture(ExactLikelihood, GenerativeModel):
    """Isotropic Gaussian clusters with conjugate means; subclasses choose the partition prior."""

    data_kind = "vector"
    ordered = False
    default_num_points = (50, 200)
    rotation_invariant = True  # isotropic clusters, means N(0, mean_scale^2 I)

    def __init__(self, dim: int, sigma: float, mean_scale: float, **prior_params: Any):
        self.dim = check_positive_int(dim, "dim")
        self.sigma = check_positive(sigma, "sigma")
        self.mean_scale = check_positive(mean_scale, "mean_scale")
        super().__init__(dim=self.dim, **prior_params, sigma=self.sigma, mean_scale=self.mean_scale)

    @property
    def data_dim(self) -> int:
        return self.dim

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        labels = pyro.sample("labels", self.partition_prior(num_points))
        return gaussian_cluster_sites(labels, self.dim, self.sigma, self.mean_scale, obs)[0]

    def _simulate(self, sizes: Tensor, mask: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        labels = self.sample_prior(mask.shape[1], mask.shape[0], generator).masked_fill(~mask, -1)
        x, _ = gaussian_cluster_draws(labels, self.dim, self.sigma, self.mean_scale, generator)
        return {"x": x, "labels": labels}

    # ------------------------------------------------------------------ exact collapsed likelihood
    def log_marginal_likelihood(self, x: Any, labels: Any) -> Tensor:
        """log p(x | partition) with the means integrated out; labels (..., N), any labelling -> (...,)."""
        x, labels = self._check_data_labels(x, labels)
        labels = canonicalize(labels)
        stats = gaussian_stats(x, labels, int(labels.max()) + 1)
        return gaussian_log_marginal(stats, self.sigma, self.mean_scale).sum(-1)

    def log_predictive(self, x: Any, labels: Any, index: int, num_clusters: int | None = None) -> Tensor:
        """log p(x_index | the other points of cluster k) for slots k = 0..K-1 and a new cluster (slot K).

        ``labels`` (..., N) in 0..K-1; the label at ``index`` is ignored. Shape (..., K+1), the slot layout of
        the partition prior's ``seating_log_weights``.
        """
        x, labels = self._check_data_labels(x, labels)
        others, k = self._without_point(labels, index, num_clusters)
        stats = gaussian_stats(x, others, k + 1)
        return gaussian_log_predictive(x[index], stats, self.sigma, self.mean_scale)

    def gibbs_statistics(self, x: Tensor) -> GaussianGibbsStatistics:
        """Per-cluster counts, sums and sums of squares of C chains over the validated points ``x``."""
        return GaussianGibbsStatistics(x, self.sigma, self.mean_scale)

    def stick_breaking_form(self) -> StickBreakingForm:
        """sigma and mean_scale: the likelihood of the truncated stick-breaking mixture that NUTS runs."""
        return StickBreakingForm(self.sigma, self.mean_scale)


class CRPGaussianMixture(GaussianMixture):
    """CRP(alpha) partition, N(0, mean_scale^2 I) means, N(mu, sigma^2 I) points. Default N in [50, 200)."""

    def __init__(self, dim: int = 2, alpha: float = 0.7, sigma: float = 1.0, mean_scale: float = 10.0):
        self.alpha = check_positive(alpha, "alpha")
        super().__init__(dim, sigma, mean_scale, alpha=self.alpha)

    def partition_prior(self, num_points: int) -> CRP:
        return CRP(self.alpha, check_positive_int(num_points, "num_points"))


class PitmanYorGaussianMixture(GaussianMixture):
    """Pitman-Yor(alpha, discount) partition with conjugate Gaussian clusters."""

    def __init__(self, dim: int = 2, alpha: float = 0.7, discount: float = 0.25, sigma: float = 1.0,
                 mean_scale: float = 10.0):
        discount = float(discount)
        if not 0.0 <= discount < 1.0:
            raise ValueError(f"discount must lie in [0, 1), got {discount!r}")
        alpha = float(alpha)
        if not alpha > -discount:
            raise ValueError(f"alpha must exceed -discount = {-discount}, got {alpha!r}")
        self.alpha, self.discount = alpha, discount
        super().__init__(dim, sigma, mean_scale, alpha=alpha, discount=discount)

    def partition_prior(self, num_points: int) -> PitmanYor:
        return PitmanYor(self.alpha, self.discount, check_positive_int(num_points, "num_points"))


class MFMGaussianMixture(GaussianMixture):
    """Mixture-of-finite-mixtures partition (K - 1 ~ Poisson(rate), Dirichlet(gamma) weights), Gaussian clusters."""

    def __init__(self, dim: int = 2, num_components_rate: float = 3.0, gamma: float = 1.0, sigma: float = 1.0,
                 mean_scale: float = 10.0):
        self.num_components_rate = check_positive(num_components_rate, "num_components_rate")
        self.gamma = check_positive(gamma, "gamma")
        super().__init__(dim, sigma, mean_scale, num_components_rate=self.num_components_rate, gamma=self.gamma)

    def partition_prior(self, num_points: int) -> MixtureOfFiniteMixtures:
        return MixtureOfFiniteMixtures(check_positive_int(num_points, "num_points"), self.num_components_rate,
                                       self.gamma)
