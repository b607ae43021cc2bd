"""References for a plain Pyro program (issue 18 item 3): exact_posterior by enumeration with importance
sampling, and NUTS with the Categorical partition site enumerated.

The programs are written only as Pyro code. The enumerated posterior of a program is checked against the
closed-form exact posterior of the same model (a Gaussian CRP mixture, and a CRP Poisson-Gamma mixture: a
non-Gaussian likelihood) within the Monte-Carlo error it reports, and the check's power is shown with a
program whose concentration is wrong. NUTS on a finite-mixture program is checked against the program's own
enumerated posterior.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

from pyro_acp.distributions import CRP
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.reference.exact import EstimatedExactPosterior, exact_posterior
from pyro_acp.reference.nuts import nuts
from tests.mcmc_checks import TOLERANCE, iid_total_variation, one_thread, total_variation  # noqa: F401
from tests.test_gibbs_protocol import PoissonGammaMixture


def gaussian_crp(alpha: float):
    """CRP(alpha) clusters of 1-D points, means N(0, 2²), unit noise: CRPGaussianMixture(dim=1, mean_scale=2)."""

    def program(num_points, x=None):
        labels = pyro.sample("labels", CRP(alpha, num_points))
        with pyro.plate("clusters", num_points):
            loc = pyro.sample("loc", dist.Normal(0.0, 2.0).expand([1]).to_event(1))
        with pyro.plate("points", num_points):
            pyro.sample("x", dist.Normal(loc[..., labels, :], 1.0).to_event(1), obs=x)

    return program


def poisson_crp(num_points, x=None):
    """CRP(1) clusters of counts, rates Gamma(2, rate 0.5), Poisson points: one value per point."""
    labels = pyro.sample("labels", CRP(1.0, num_points))
    with pyro.plate("clusters", num_points):
        rate = pyro.sample("rate", dist.Gamma(2.0, 0.5))
    with pyro.plate("points", num_points):
        pyro.sample("x", dist.Poisson(rate[..., labels]), obs=x)


def finite_mixture(num_points, x=None):
    """Three-component 1-D mixture: Dirichlet weights, N(0, 3²) means, unit noise; Categorical site."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("components", 3):
        loc = pyro.sample("loc", dist.Normal(0.0, 3.0))
    with pyro.plate("points", num_points):
        labels = pyro.sample("labels", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(Vindex(loc.unsqueeze(-2))[..., labels], 1.0), obs=x)


def assert_within_reported_error(estimated: EstimatedExactPosterior, exact) -> None:
    """Per-partition probabilities within 4 reported standard errors (+1e-4), TV within 3 reported TV errors."""
    assert torch.equal(estimated.partitions, exact.partitions)
    gap = (estimated.probs - exact.probs).abs()
    assert bool((gap <= 4 * estimated.probs_error + 1e-4).all()), float((gap / estimated.probs_error).max())
    tv = 0.5 * float(gap.sum())
    assert tv <= 3 * estimated.tv_error, (tv, estimated.tv_error)


@pytest.fixture(scope="module")
def gaussian_case():
    model = CRPGaussianMixture(dim=1, alpha=0.7, mean_scale=2.0)
    x, _ = model.simulate(1, num_points=6, seed=3).unpadded(0)
    return x, exact_posterior(model, x)


def test_program_posterior_matches_the_closed_form_within_its_reported_error(gaussian_case):
    x, exact = gaussian_case
    estimated = exact_posterior(gaussian_crp(0.7), x, seed=0)
    assert isinstance(estimated, EstimatedExactPosterior) and estimated.method == "exact-is"
    assert estimated.model.particles_vectorised
    assert estimated.tv_error < 0.05  # the estimate is informative, not only within a huge error
    assert_within_reported_error(estimated, exact)
    residual = (estimated.log_joint - exact.log_joint) / estimated.log_joint_error
    assert float(residual.abs().max()) < 5.0  # log p(partition, x) itself, no unknown constant


def test_the_comparison_has_power_against_a_wrong_program(gaussian_case):
    x, exact = gaussian_case
    wrong = exact_posterior(gaussian_crp(2.5), x, seed=0)
    gap = (wrong.probs - exact.probs).abs()
    assert 0.5 * float(gap.sum()) > 3 * wrong.tv_error


def test_a_crp_program_with_a_poisson_likelihood_matches_its_closed_form():
    model = PoissonGammaMixture(alpha=1.0, a=2.0, b=0.5)
    x = torch.tensor([0.0, 1.0, 2.0, 9.0, 11.0, 8.0])
    estimated = exact_posterior(poisson_crp, x, seed=1)  # one value per point, shape (N,)
    assert estimated.model.data_dim == 1
    assert_within_reported_error(estimated, exact_posterior(model, x))


def test_estimates_are_reproducible_and_leave_the_global_rng_alone(gaussian_case):
    x, _ = gaussian_case
    state = torch.get_rng_state()
    first = exact_posterior(finite_mixture, x.squeeze(-1)[:4], seed=5, num_particles=256)
    assert torch.equal(torch.get_rng_state(), state)
    second = exact_posterior(finite_mixture, x.squeeze(-1)[:4], seed=5, num_particles=256)
    assert torch.equal(first.probs, second.probs)


def test_programs_are_limited_to_seven_points():
    with pytest.raises(ValueError, match="N <= 7 .* this data set has N = 8"):
        exact_posterior(poisson_crp, torch.arange(8.0))


# ---------------------------------------------------------------------------------------------- NUTS
@pytest.mark.slow
def test_nuts_on_a_finite_mixture_program_matches_its_enumerated_posterior():
    x = torch.tensor([-3.0, -2.6, 0.2, 0.5, 3.1, 2.7])
    exact = exact_posterior(finite_mixture, x, seed=0)
    post = nuts(finite_mixture, x, num_samples=200, warmup_steps=100, seed=0, progress_bar=False)
    assert post.method == "nuts" and post.samples.shape == (200, 6) and post.log_joint is None
    tv = total_variation(post.samples, exact)
    assert tv < TOLERANCE * iid_total_variation(exact, 200) + exact.tv_error, tv
    assert float((post.coclustering() - exact.coclustering()).abs().max()) < 0.12


def test_nuts_refuses_a_crp_site_pointing_to_stick_breaking_or_gibbs():
    with pytest.raises(TypeError, match="site 'labels' of poisson_crp is a partition distribution.*truncated "
                                        "stick-breaking.*pyro_acp.mcmc.gibbs"):
        nuts(poisson_crp, torch.arange(5.0))


def test_a_program_indexing_loc_by_labels_vectorises_with_copies_right_most(gaussian_case):
    """The built-in model's own program indexes its means as means[labels]: the particles go right-most (the
    verified second layout), and its enumerated posterior matches the closed form."""
    x, exact = gaussian_case
    model = CRPGaussianMixture(dim=1, alpha=0.7, mean_scale=2.0)

    def own_program(num_points, x=None):
        return model.model(num_points=num_points, obs=x)

    estimated = exact_posterior(own_program, x, seed=0)
    assert estimated.model.particles_vectorised and estimated.model._particle_dim == -1
    assert_within_reported_error(estimated, exact)
