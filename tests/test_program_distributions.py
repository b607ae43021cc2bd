"""Partition distributions with tensor hyperparameters, and Pyro's own NUTS refused on a partition site
(issue 18 item 4).

A batch of concentrations (or one that requires grad) is a batch of priors: each element's log EPPF equals
the scalar prior's, the gradient is the closed form's, draws follow each element's law of K, and a Gamma
prior on the concentration inside a plate traces and scores as Pyro expects. A program with that prior is
vectorised by importance sampling and its enumerated posterior matches one computed by quadrature over α.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS

from pyro_acp.data.partitions import enumerate_partitions
from pyro_acp.distributions import CRP, PitmanYor
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.reference.exact import exact_posterior
from tests.mcmc_checks import one_thread  # noqa: F401  (autouse)


@pytest.mark.parametrize("alpha, discount", [(0.7, 0.0), (1.3, 0.25), (0.2, 0.5)])
def test_batched_hyperparameters_give_each_elements_exact_eppf(alpha, discount):
    partitions = enumerate_partitions(5)
    scalar = PitmanYor(alpha, discount, 5).log_prob(partitions)
    batched = PitmanYor(torch.tensor([alpha, 2.0]), torch.tensor([discount, 0.1]), 5)
    assert batched.batch_shape == (2,) and batched.tensor_parameters
    log_prob = batched.log_prob(partitions.unsqueeze(1))  # (52, 2)
    assert torch.allclose(log_prob[:, 0], scalar, atol=1e-5)
    assert torch.allclose(log_prob[:, 1], PitmanYor(2.0, 0.1, 5).log_prob(partitions), atol=1e-5)
    assert torch.allclose(log_prob.double().logsumexp(0), torch.zeros(2, dtype=torch.float64), atol=1e-5)


def test_the_log_prob_is_differentiable_in_the_concentration():
    """d/dα log CRP(π | α) = K/α - Σ_{i<N} 1/(α + i)."""
    alpha = torch.tensor(0.8, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 0])
    CRP(alpha, 6).log_prob(labels).backward()
    expected = 3 / 0.8 - sum(1 / (0.8 + i) for i in range(6))
    assert float(alpha.grad) == pytest.approx(expected, rel=1e-5)


def test_batched_draws_follow_each_elements_law_of_k():
    draws = CRP(torch.tensor([0.3, 3.0]), 8).sample((20000,))
    assert draws.shape == (20000, 2, 8)
    k = (draws.max(-1).values + 1).double()
    for column, alpha in enumerate((0.3, 3.0)):
        exact = CRP(alpha, 8)
        sd = math.sqrt(float((exact.num_clusters_distribution() * torch.arange(9.0).double().square()).sum())
                       - exact.expected_num_clusters() ** 2)
        assert abs(float(k[:, column].mean()) - exact.expected_num_clusters()) < 4 * sd / math.sqrt(20000)
    mixed = PitmanYor(torch.tensor([0.5, 1.0]), torch.tensor([0.0, 0.4]), 6).sample((3,))
    assert mixed.shape == (3, 2, 6)


def test_a_gamma_prior_on_the_concentration_inside_a_plate():
    def program():
        with pyro.plate("sets", 3):
            alpha = pyro.sample("alpha", dist.Gamma(2.0, 2.0))
            return pyro.sample("labels", CRP(alpha, 4))

    trace = pyro.poutine.trace(program).get_trace()
    labels, alpha = trace.nodes["labels"]["value"], trace.nodes["alpha"]["value"]
    assert labels.shape == (3, 4)
    expected = sum(float(CRP(float(a), 4).log_prob(row)) for a, row in zip(alpha, labels, strict=True))
    trace.compute_log_prob()
    assert float(trace.nodes["labels"]["log_prob_sum"]) == pytest.approx(expected, abs=1e-4)


def test_gibbs_only_pieces_need_scalar_hyperparameters():
    batched = CRP(torch.tensor([1.0, 2.0]), 4)
    with pytest.raises(TypeError, match="seating_log_weights .* needs scalar hyperparameters"):
        batched.seating_log_weights(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="alpha"):
        CRP(torch.tensor([1.0, -1.0]), 4)


def hierarchical_crp(num_points, x=None):
    """α ~ Gamma(2, 2), CRP(α) clusters of 1-D points, means N(0, 2²), unit noise."""
    alpha = pyro.sample("alpha", dist.Gamma(2.0, 2.0))
    labels = pyro.sample("labels", CRP(alpha, num_points))
    with pyro.plate("clusters", num_points):
        loc = pyro.sample("loc", dist.Normal(0.0, 2.0).expand([1]).to_event(1))
    with pyro.plate("points", num_points):
        pyro.sample("x", dist.Normal(loc[..., labels, :], 1.0).to_event(1), obs=x)


def test_a_program_with_a_prior_on_alpha_matches_quadrature_over_alpha():
    """p(π, x) = p(x | π) ∫ CRP(π | α) Gamma(α | 2, 2) dα (trapezoid rule on 4,000 points of (0, 20])."""
    x = torch.tensor([[-2.1], [-1.8], [0.3], [2.2], [2.5]])
    estimated = exact_posterior(hierarchical_crp, x, seed=0)
    assert estimated.model.particles_vectorised  # α arrives as a batch of particles
    partitions = estimated.partitions
    grid = torch.linspace(1e-4, 20.0, 4000, dtype=torch.float64)
    prior = CRP(grid.unsqueeze(-1), 5).log_prob(partitions.unsqueeze(0).unsqueeze(0)).squeeze(0)  # (G, M)
    prior = prior + dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 2.0).log_prob(grid).unsqueeze(-1)
    log_prior = torch.logsumexp(prior + math.log(float(grid[1] - grid[0])), 0)
    exact = log_prior + CRPGaussianMixture(dim=1, mean_scale=2.0).log_marginal_likelihood(x.double(), partitions)
    probs = (exact - exact.logsumexp(0)).exp()
    gap = (estimated.probs - probs).abs()
    assert bool((gap <= 4 * estimated.probs_error + 1e-4).all())
    assert 0.5 * float(gap.sum()) <= 3 * estimated.tv_error


def test_pyro_nuts_on_a_built_in_model_points_to_pyro_acp_mcmc():
    model = CRPGaussianMixture()
    mcmc = MCMC(NUTS(model.model), num_samples=2, warmup_steps=1, disable_progbar=True)
    with pytest.raises(ValueError, match="Pyro cannot enumerate a CRP partition site .* pyro_acp.mcmc.gibbs"):
        mcmc.run(obs=torch.randn(5, 2))
    assert CRP(0.7, 4).enumerate_support().shape == (15, 4)  # outside Pyro's enumeration it still works


# ---------------------------------------------------------------------------------------------- the amortized posterior
def test_the_amortized_posterior_is_a_pyro_distribution_that_guides_a_program():
    """Samples and log_prob agree: the estimates sum to one over all 203 partitions of N = 6 (within 0.05), and
    the frequencies of 2,000 draws are within 2.5 times the TV of 2,000 i.i.d. draws from exp(log_prob)."""
    import pyro_acp
    from pyro_acp.distributions import AmortizedPartition
    from pyro_acp.guides import ACPS
    from pyro_acp.models import as_clustering_model
    from pyro_acp.posteriors.enumerated import ExactPosterior
    from tests.mcmc_checks import iid_total_variation, total_variation
    from tests.test_program_references import finite_mixture

    x = torch.tensor([-3.0, -2.6, 0.2, 0.5, 3.1, 2.7])
    model = as_clustering_model(finite_mixture, x)
    torch.manual_seed(0)
    guide = ACPS(1, hidden_dim=16)
    pyro_acp.train(model, guide, steps=3, batch_size=4, num_particles=2, seed=0, progress_bar=False,
                   validate_every=0)
    q = AmortizedPartition(guide, x, num_anchors=None, num_z=8, num_orders=8)
    pyro.set_rng_seed(0)
    draws = q.sample((2000,))
    pyro.set_rng_seed(0)
    assert torch.equal(q.sample((2000,)), draws) and draws.shape == (2000, 6)
    partitions = enumerate_partitions(6)
    probs = q.log_prob(partitions).double().exp()
    assert abs(float(probs.sum()) - 1.0) < 0.05
    reference = ExactPosterior(partitions, probs / probs.sum())
    assert total_variation(draws, reference) < 2.5 * iid_total_variation(reference, 2000)

    def partition_guide(num_points, x=None):
        pyro.sample("labels", AmortizedPartition(guide, data))

    data = x
    predictive = pyro.infer.Predictive(finite_mixture, guide=partition_guide, num_samples=5)(6)
    assert predictive["labels"].shape == (5, 6) and predictive["x"].shape == (5, 6)
    trace = pyro.poutine.trace(partition_guide).get_trace(6)
    assert trace.nodes["labels"]["value"].shape == (6,) and torch.isfinite(trace.log_prob_sum())
