"""The stationarity check of a posterior's samples by one collapsed Gibbs sweep (diagnostics/stationarity.py):
posterior draws stay put on average, wrong draws move, and infer / infer_many warn about the latter."""

import warnings

import pytest
import torch
from sklearn.datasets import load_iris

import pyro_acp
from pyro_acp.diagnostics.stationarity import STATIONARITY_Z, StationarityWarning, check_stationarity
from pyro_acp.distributions import CRP
from pyro_acp.models import CRPGaussianMixture, NIWGaussianMixture
from pyro_acp.seeding import forked_rng

MODEL = CRPGaussianMixture()


def _small_set(seed: int) -> torch.Tensor:
    return MODEL.simulate(1, num_points=8, seed=seed).unpadded(0)[0]


def test_exact_posterior_draws_pass_and_prior_draws_fail():
    """At N = 8 (4,140 partitions, enumerated), 256 exact draws: the mean change after one sweep is within 3
    of its standard errors of zero on every set (measured z 1.7 / 1.2 / -1.0 / -0.3: the sweep leaves the
    posterior invariant), and for as many draws from the CRP prior it is far above (z 16-80: the power)."""
    for seed in range(4):
        x = _small_set(seed)
        exact = pyro_acp.exact_posterior(MODEL, x)
        draws = exact.sample(256, seed=seed)
        check = check_stationarity(MODEL, x, draws, num_samples=256, seed=seed)
        assert abs(check.z) < 3 and check.passes, (seed, check)
        with forked_rng(seed):
            prior = CRP(MODEL.alpha, 8).sample((256,))
        wrong = check_stationarity(MODEL, x, prior, num_samples=256, seed=seed)
        assert wrong.z > 2 * STATIONARITY_Z and not wrong.passes, (seed, wrong)
        assert abs(check.median_change) < 1.0 < wrong.median_change, (check, wrong)  # symmetric about 0 / not


def test_infer_checks_its_samples_and_reports_it():
    x, _ = MODEL.simulate(1, num_points=60, seed=4).unpadded(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StationarityWarning)
        post = pyro_acp.infer(MODEL, x, num_samples=40, seed=0, progress_bar=False)
    assert post.stationarity is not None and post.stationarity.passes and post.stationarity.num_samples == 32
    assert "one Gibbs sweep moves log p(c, x)" in str(post.summary())
    for options in ({"check_samples": False}, {"reweight": True}):  # not asked for, or weighted samples
        assert pyro_acp.infer(MODEL, x[:12], num_samples=64, seed=0, progress_bar=False,
                              **options).stationarity is None
    # an NIW table below 10 points: the guides target the invariant posterior there, not the plain one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small-table warning
        small = pyro_acp.infer(NIWGaussianMixture(dim=2), x[:8], num_samples=8, seed=0, progress_bar=False)
    assert small.stationarity is None


@pytest.mark.slow
def test_the_shipped_niw_guide_on_iris_is_caught_and_infer_many_reports_it_the_same():
    """Iris (4-D, N = 150): the shipped guide's P(K) spreads over 1-23 clusters where collapsed Gibbs keeps
    2-7; one sweep from its samples gains about +70 nats (Gibbs's own draws: -0.2 +- 0.7)."""
    x = load_iris().data
    model = NIWGaussianMixture(dim=4)
    with pytest.warns(StationarityWarning, match="raises their log p"):
        post = pyro_acp.infer(model, x, num_samples=64, seed=0, progress_bar=False)
    assert post.stationarity.mean_change > 20 and not post.stationarity.passes
    with pytest.warns(StationarityWarning, match="for 1 of 1 data sets"):
        (many,) = pyro_acp.infer_many(model, [x], num_samples=64, seed=0, progress_bar=False)
    assert many.stationarity is not None and not many.stationarity.passes
