"""Issue 15, item 9 (the smaller trust fixes): numpy integers accepted as counts, an exact co-clustering
diagonal, an exact posterior's summary that says what is exact, float64 data kept in float64 for the exact
computation, and a comparison table that describes only the columns it has."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyro_acp
from pyro_acp.diagnostics.compare import compare
from pyro_acp.mcmc import gibbs
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.posteriors.ordered import OrderedClusteringPosterior, OrderedExactPosterior
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.reference.exact import exact_posterior
from pyro_acp.validation import check_vectors


@pytest.fixture(autouse=True)
def no_training(monkeypatch, tmp_path):
    """infer must find the shipped guide here; an empty cache keeps any on-demand training out of the tests."""
    monkeypatch.setenv("PYRO_ACP_CACHE", str(tmp_path))


@pytest.fixture(scope="module")
def case():
    model = CRPGaussianMixture()  # the defaults: infer uses the shipped guide (no training)
    x, _ = model.simulate(1, num_points=6, seed=3).unpadded(0)
    return model, x


# ---------------------------------------------------------------------------------------------- numpy integers
@pytest.mark.parametrize("integer", [np.int64, np.int32])
def test_numpy_integers_are_accepted_as_counts(case, integer):
    model, x = case
    post = pyro_acp.infer(model, x, num_samples=integer(5), seed=0, train=False)
    assert post.samples.shape == (5, 6)
    exact = exact_posterior(model, x, chunk_size=integer(64))
    assert exact.sample(integer(5), seed=0).shape == (5, 6)
    chains = gibbs(model, x, num_samples=integer(6), warmup_steps=integer(2), num_chains=integer(2), seed=0,
                   progress_bar=False)
    assert chains.samples.shape == (12, 6)
    estimate = chains.point_estimate(num_starts=integer(3), max_sweeps=integer(5))
    assert estimate.shape == (6,)
    assert torch.equal(estimate, chains.point_estimate(num_starts=3, max_sweeps=5))


# ---------------------------------------------------------------------------------------------- co-clustering
def _coclustering_float64(samples: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    same = (samples[:, :, None] == samples[:, None, :]).to(torch.float64)
    return torch.einsum("s,sij->ij", weights / weights.sum(), same)


@pytest.mark.parametrize("weighted", [False, True])
def test_coclustering_diagonal_is_exactly_one_and_entries_accurate(weighted):
    g = torch.Generator().manual_seed(0)
    samples = torch.randint(0, 3, (20_000, 8), generator=g)
    weights = torch.rand(20_000, generator=g, dtype=torch.float64) + 0.01 if weighted else None
    post = ClusteringPosterior(samples, weights=weights)
    matrix = post.coclustering()
    assert matrix.dtype == torch.get_default_dtype()
    assert torch.equal(matrix.diagonal(), torch.ones(8, dtype=matrix.dtype))
    assert torch.equal(matrix, matrix.T)
    reference = _coclustering_float64(post.samples, post.sample_weights)
    # float32 rounding of numbers in [0, 1] is below 6e-8; float32 accumulation over 20,000 samples was ~1e-4 off
    assert (matrix.to(torch.float64) - reference).abs().max() < 1e-7


def test_coclustering_matrix_function_and_ordered_identity():
    from pyro_acp.data.partitions import coclustering_matrix

    g = torch.Generator().manual_seed(1)
    samples = torch.randint(0, 4, (30_000, 6), generator=g)
    matrix = coclustering_matrix(samples)
    assert torch.equal(matrix.diagonal(), torch.ones(6, dtype=matrix.dtype))
    assert torch.equal(coclustering_matrix(samples[0]).diagonal(), torch.ones(6))  # one partition (N,)
    positions = torch.tensor([[0, 0, 1, 1, 2, 2], [1, 0, 0, 2, 2, 1], [0, 1, 0, 1, 0, 1]] * 5000)
    ordered = OrderedClusteringPosterior(positions)
    total = ordered.precedence() + ordered.precedence().T + ordered.coclustering()
    assert torch.allclose(total, torch.ones(6, 6), atol=1e-7)


# ---------------------------------------------------------------------------------------------- summary
def test_exact_posterior_summary_says_exact_and_has_no_ess(case):
    model, x = case
    summary = exact_posterior(model, x).summary()
    text = str(summary)
    assert "(exact)" in text and "estimated" not in text
    assert "effective sample size" not in text
    assert summary.effective_sample_size is None
    assert summary.map_probability_exact


def test_ordered_exact_posterior_summary_says_exact():
    post = OrderedExactPosterior([[0, 0, 1], [1, 1, 0], [0, 1, 2]], [0.5, 0.3, 0.2])
    text = str(post.summary())
    assert "(exact)" in text and "effective sample size" not in text


def test_importance_weighted_summary_keeps_ess_and_estimated():
    samples = torch.tensor([[0, 0, 1], [0, 1, 2], [0, 0, 1], [0, 0, 0]])
    post = ClusteringPosterior(samples, log_prob=[-0.5, -2.0, -0.5, -1.5], weights=[0.4, 0.1, 0.4, 0.1])
    summary = post.summary()
    text = str(summary)
    assert "(estimated" in text and "exact" not in text
    assert summary.effective_sample_size == pytest.approx(1 / (0.16 + 0.01 + 0.16 + 0.01))
    assert "effective sample size 2.9" in text
    assert not summary.map_probability_exact
    plain = str(ClusteringPosterior(samples, log_prob=[-0.5, -2.0, -0.5, -1.5]).summary())
    assert "(estimated" in plain and "effective sample size" not in plain


# ---------------------------------------------------------------------------------------------- float64 data
def test_check_vectors_keeps_floating_precision():
    assert check_vectors(np.zeros((3, 2)), 2).dtype == torch.float64
    assert check_vectors(np.zeros((3, 2), dtype=np.float32), 2).dtype == torch.float32
    assert check_vectors(torch.zeros(3, 2, dtype=torch.float64), 2).dtype == torch.float64
    default = torch.get_default_dtype()
    assert check_vectors(np.zeros((3, 2), dtype=np.int64), 2).dtype == default
    assert check_vectors([[0, 1], [2, 3]], 2).dtype == default
    assert check_vectors(torch.zeros(3, 2, dtype=torch.long), 2).dtype == default
    value = 1e4 + 1e-4
    assert float(check_vectors(np.array([[value, 0.0]]), 2)[0, 0]) == value  # float32 would round it
    with pytest.raises(ValueError, match="NaN or inf"):
        check_vectors(np.array([[np.nan, 0.0]]), 2)


def test_one_value_per_point_may_be_given_flat():
    """(N,) is N points for a one-dimensional model (and for no other: a flat array of a 2-D model is refused)."""
    from pyro_acp.models import NIWGaussianMixture

    assert check_vectors(np.arange(5.0), 1).shape == (5, 1)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        check_vectors(np.arange(6.0), 2)
    flat = np.array([0.1, 0.3, 0.2, 5.0, 5.2, 4.9])
    model = NIWGaussianMixture(dim=1)
    assert torch.equal(model.check_data(flat), model.check_data(flat[:, None]))


def _far_data() -> np.ndarray:
    """Two pairs of 1-D points near 10^4, 6 sigma apart (sigma = 1e-3): a borderline case where float32
    rounding (its spacing there is 2^-10 ~ 0.98 sigma) moves the second pair to 5.9 and 6.8 sigma."""
    return 1e4 + np.array([[0.0], [0.0004], [0.006], [0.0064]])


def test_exact_posterior_of_float64_data_uses_the_float64_values():
    model = CRPGaussianMixture(dim=1, sigma=1e-3, mean_scale=1e4)
    x = _far_data()
    from_numpy = exact_posterior(model, x)
    from_float64 = exact_posterior(model, torch.as_tensor(x, dtype=torch.float64))
    rounded = exact_posterior(model, torch.as_tensor(x.astype(np.float32), dtype=torch.float64))
    assert torch.equal(from_numpy.partitions, from_float64.partitions)
    assert torch.allclose(from_numpy.probs, from_float64.probs, rtol=0, atol=1e-12)
    assert from_numpy.x is x  # the data as given, for plots
    # the exact values favour one cluster (P = 0.67); the float32-rounded ones two (TV 0.47 between them)
    assert from_numpy.map.tolist() == [0, 0, 0, 0] and rounded.map.tolist() == [0, 0, 1, 1]
    assert (from_numpy.probs - rounded.probs).abs().sum() / 2 > 0.4


def test_float64_data_still_run_through_infer_gibbs_and_the_models(case):
    model, x = case
    x64 = x.to(torch.float64).numpy()
    post = pyro_acp.infer(model, x64, num_samples=4, seed=0, train=False)
    assert post.samples.shape == (4, 6) and post.x.dtype == torch.get_default_dtype()
    chains = gibbs(model, x64, num_samples=5, warmup_steps=2, num_chains=2, seed=0, progress_bar=False)
    assert chains.samples.shape == (10, 6)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 0, 0]])
    lml = model.log_marginal_likelihood(x64, labels)
    assert lml.dtype == torch.float64
    assert torch.allclose(lml, model.log_marginal_likelihood(x, labels).to(torch.float64), atol=1e-3)
    assert torch.isfinite(model.log_joint(x64, labels)).all()
    assert model.log_predictive(x64, labels[0], 0).dtype == torch.float64


# ---------------------------------------------------------------------------------------------- compare
def test_compare_with_a_gibbs_reference_announces_only_its_columns(case):
    model, x = case
    chains = gibbs(model, x, num_samples=20, warmup_steps=5, num_chains=2, seed=0, progress_bar=False)
    iid = ClusteringPosterior(exact_posterior(model, x).sample(50, seed=1), method="iid")
    table = compare({"gibbs": chains, "iid": iid}, reference="gibbs")
    assert "tv" not in table.columns
    text = str(table)
    assert "tv" not in text.split()  # neither a column nor in the closing note
    assert "tv and" not in text
    assert "(coclustering_error against gibbs)" in text


def test_compare_with_an_exact_reference_still_announces_tv(case):
    model, x = case
    exact = exact_posterior(model, x)
    iid = ClusteringPosterior(exact.sample(50, seed=1), method="iid")
    text = str(compare({"iid": iid}, reference=exact))
    assert "(tv and coclustering_error against reference (exact))" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_infer_on_a_missing_cuda_device_says_so_before_any_work():
    """Item 8: infer(device="cuda") without CUDA used to fail loading the guide ("corrupt checkpoint")."""
    model = CRPGaussianMixture()
    with pytest.raises(ValueError, match="no CUDA device"):
        pyro_acp.infer(model, torch.randn(6, 2), device="cuda", train=False, progress_bar=False)
