"""A user's own conjugate model plugs into exact enumeration, collapsed Gibbs and the exact MAP by protocol.

The model below is written from scratch, as a user would: no library model class, only the methods of
:class:`pyro_acp.protocols.CollapsedModel` (``check_data``, ``num_points_of``, ``partition_prior``,
``log_marginal_likelihood``, ``log_joint``, ``log_predictive``, ``gibbs_statistics``; not ``simulate``, which
only training a guide needs) and sufficient statistics with the :class:`pyro_acp.protocols.GibbsStatistics`
methods. Nothing in the library was edited for it.
"""

from __future__ import annotations

import math

import pytest
import torch

import pyro_acp
from pyro_acp.distributions import CRP
from pyro_acp.mcmc import CollapsedGibbs
from pyro_acp.protocols import CollapsedModel, GibbsStatistics, exact_log_joint
from tests.mcmc_checks import (  # one_thread: an autouse fixture
    TOLERANCE,
    assert_matches_exact,
    iid_total_variation,
    one_thread,  # noqa: F401
    total_variation,
)


def cluster_log_marginal(count, total, log_fact, a: float, b: float):
    """log ∫ Π_i Poisson(x_i | λ) Gamma(λ | a, b) dλ of a cluster with ``count`` points summing to ``total``
    (``log_fact`` = Σ log x_i!); 0 for an empty cluster."""
    return (a * math.log(b) - math.lgamma(a) + torch.lgamma(a + total) - (a + total) * torch.log(b + count)
            - log_fact)


def cluster_log_predictive(x_i, count, total, a: float, b: float):
    """log p(x_i | a cluster's ``count`` points summing to ``total``): the negative binomial predictive."""
    shape, rate = a + total, b + count
    return (torch.lgamma(shape + x_i) - torch.lgamma(shape) - torch.lgamma(x_i + 1.0)
            + shape * torch.log(rate) - (shape + x_i) * torch.log1p(rate))


class PoissonGammaStatistics:
    """Per-slot counts, sums and Σ log x! of C chains (the GibbsStatistics protocol)."""

    def __init__(self, x: torch.Tensor, a: float, b: float) -> None:
        self.x, self.a, self.b = x[:, 0], a, b
        self.log_fact = torch.lgamma(self.x + 1.0)

    def init(self, labels: torch.Tensor, width: int) -> None:
        z = (labels.unsqueeze(-1) == torch.arange(width)).to(self.x.dtype)  # (C, N, W); label -1: no slot
        self.count, self.total, self.logs = z.sum(-2), self.x @ z, self.log_fact @ z

    @property
    def counts(self) -> torch.Tensor:
        return self.count[:, :-1]

    def grow(self, extra: int) -> None:
        pad = torch.nn.functional.pad
        self.count, self.total, self.logs = (pad(t, (0, extra)) for t in (self.count, self.total, self.logs))

    def move(self, i: int, slot: torch.Tensor, weight: torch.Tensor) -> None:
        index, weight = slot.unsqueeze(-1), weight.unsqueeze(-1)
        self.count.scatter_add_(1, index, weight)
        self.total.scatter_add_(1, index, weight * self.x[i])
        self.logs.scatter_add_(1, index, weight * self.log_fact[i])

    def log_predictive(self, i: int) -> torch.Tensor:
        return cluster_log_predictive(self.x[i], self.count, self.total, self.a, self.b)

    def log_likelihood(self) -> torch.Tensor:
        terms = cluster_log_marginal(self.count, self.total, self.logs, self.a, self.b)
        return torch.where(self.count > 0, terms, 0.0).sum(-1)


class PoissonGammaMixture:
    """CRP(alpha) partition, λ_k ~ Gamma(a, b) (rate b), x_i ~ Poisson(λ_{c_i}); 1-D counts (N,) or (N, 1)."""

    data_kind = "vector"
    ordered = False
    data_dim = 1

    def __init__(self, alpha: float = 1.0, a: float = 2.0, b: float = 0.5) -> None:
        self.alpha, self.a, self.b = alpha, a, b

    def config(self) -> dict:
        return {"type": "PoissonGammaMixture", "alpha": self.alpha, "a": self.a, "b": self.b}

    def check_data(self, x) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1)
        if not bool(((x >= 0) & (x == x.round())).all()):
            raise ValueError("Poisson data must be non-negative integer counts")
        return x

    def num_points_of(self, x: torch.Tensor) -> int:
        return int(x.shape[0])

    def partition_prior(self, num_points: int) -> CRP:
        return CRP(self.alpha, num_points)

    def gibbs_statistics(self, x: torch.Tensor) -> PoissonGammaStatistics:
        return PoissonGammaStatistics(x, self.a, self.b)

    def _statistics(self, x, labels, width: int) -> PoissonGammaStatistics:
        stats = self.gibbs_statistics(self.check_data(x))
        stats.init(torch.as_tensor(labels).long().reshape(-1, stats.x.shape[0]), width)
        return stats

    def log_marginal_likelihood(self, x, labels) -> torch.Tensor:
        labels = torch.as_tensor(labels).long()
        stats = self._statistics(x, labels, int(labels.max()) + 1)
        return stats.log_likelihood().reshape(labels.shape[:-1])

    def log_joint(self, x, labels) -> torch.Tensor:
        labels = torch.as_tensor(labels).long()
        prior = self.partition_prior(labels.shape[-1]).log_prob(labels).to(torch.float64)
        return prior + self.log_marginal_likelihood(x, labels)

    def log_predictive(self, x, labels, index: int, num_clusters: int | None = None) -> torch.Tensor:
        others = torch.as_tensor(labels).long().clone()
        others[..., index] = -1
        k = int(others.max()) + 1 if num_clusters is None else num_clusters
        stats = self._statistics(x, others, k + 1)
        return stats.log_predictive(index).reshape(*others.shape[:-1], k + 1)


COUNTS = torch.tensor([0.0, 1.0, 2.0, 9.0, 11.0, 7.0, 4.0])


@pytest.fixture(scope="module")
def case():
    model = PoissonGammaMixture()
    return model, COUNTS, pyro_acp.exact_posterior(model, COUNTS)


def test_the_user_model_meets_the_protocols(case):
    """All the collapsed-likelihood methods (``simulate``, for training a guide, is left out here)."""
    model, x, _ = case
    for name in ("check_data", "num_points_of", "partition_prior", "log_marginal_likelihood", "log_joint",
                 "log_predictive", "gibbs_statistics"):
        assert hasattr(CollapsedModel, name) and callable(getattr(model, name))
    statistics = model.gibbs_statistics(model.check_data(x))
    statistics.init(torch.zeros(2, 7, dtype=torch.long), 3)
    assert isinstance(statistics, GibbsStatistics)


def test_the_user_model_has_the_right_collapsed_likelihood(case):
    """Checked against numerical integration over λ for one partition."""
    model, x, exact = case
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    lam = torch.linspace(1e-6, 60.0, 400_001, dtype=torch.float64)
    log_gamma = torch.distributions.Gamma(model.a, model.b).log_prob(lam)
    expected = 0.0
    for k in range(3):
        points = x[labels == k].double()
        log_pois = torch.distributions.Poisson(lam.unsqueeze(-1)).log_prob(points).sum(-1)
        expected += math.log(torch.trapezoid((log_pois + log_gamma).exp(), lam))
    assert float(model.log_marginal_likelihood(x, labels)) == pytest.approx(expected, abs=1e-6)
    # the exact MAP that infer uses ranks samples by the same log joint
    joint = exact_log_joint(model, model.check_data(x), exact.partitions[:5])
    assert torch.allclose(joint, model.log_joint(x, exact.partitions[:5]))
    assert exact.probs.max() < 0.5  # a posterior spread over several partitions: a real test for Gibbs


def test_gibbs_on_the_user_model_matches_exact_enumeration(case):
    model, x, exact = case
    post = pyro_acp.mcmc.gibbs(model, x, num_samples=250, warmup_steps=25, num_chains=32, seed=0,
                               progress_bar=False)
    assert post.samples.shape == (32 * 250, 7)
    assert torch.allclose(post.log_joint, model.log_joint(x, post.samples), atol=1e-9)
    assert_matches_exact(post, exact)
    split_merge = pyro_acp.mcmc.gibbs(model, x, num_samples=100, warmup_steps=10, num_chains=32, seed=1,
                                      split_merge=True, progress_bar=False)
    assert_matches_exact(split_merge, exact, cc_tol=0.06)


def test_the_check_has_power_on_the_user_model(case):
    model, x, exact = case
    wrong = PoissonGammaMixture(alpha=1.0, a=20.0, b=0.5)  # prior mean 40: far from the data
    post = pyro_acp.mcmc.gibbs(wrong, x, num_samples=100, warmup_steps=10, num_chains=32, seed=0,
                               progress_bar=False)
    assert total_variation(post.samples, exact) > TOLERANCE * iid_total_variation(exact, post.num_samples)


def test_the_user_statistics_predict_like_the_model(case):
    model, x, _ = case
    kernel = CollapsedGibbs(model, num_chains=3, seed=0)
    kernel.setup(0, x)
    one = torch.ones(3, dtype=torch.float64)
    for i in (0, 3, 6):
        kernel.statistics.move(i, kernel.labels[:, i], -one)
        exact = model.log_predictive(x, kernel.labels, i, num_clusters=kernel.capacity)
        assert torch.allclose(kernel.statistics.log_predictive(i), exact)
        kernel.statistics.move(i, kernel.labels[:, i], one)
