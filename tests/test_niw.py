"""NIWGaussianMixture: the exact collapsed likelihood against a brute-force Student-t chain, the grid CRP prior,
standardisation, the simulator against the Pyro program, and Gibbs / enumeration against each other."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pyro
import pytest
import torch
from mcmc_checks import assert_matches_exact, one_thread  # noqa: F401
from scipy.stats import ks_2samp, multivariate_t

from pyro_acp import exact_posterior
from pyro_acp.data.partitions import enumerate_partitions
from pyro_acp.distributions import CRP, AmortizedPartition
from pyro_acp.guides import ACPS
from pyro_acp.mcmc import gibbs
from pyro_acp.models import NIWGaussianMixture, model_from_config
from pyro_acp.models.niw import standardize


def _student_t_chain(model: NIWGaussianMixture, z: np.ndarray, labels: list[int], order: list[int]) -> float:
    """log p(z | partition) by the multivariate Student-t predictive chain in ``order``, node by node (scipy)."""
    d = z.shape[1]
    per_node = []
    for kappa0, psi0 in zip(model.kappa.tolist(), model.psi.tolist(), strict=True):
        total, seen = 0.0, {}
        for i in order:
            pts = np.array(seen.get(labels[i], np.zeros((0, d))))
            n = len(pts)
            kappa, nu = kappa0 + n, model.nu0 + n
            mean = pts.sum(0) / kappa if n else np.zeros(d)
            centred = pts - pts.mean(0) if n else pts
            psi = psi0 * np.eye(d) + centred.T @ centred + (kappa0 * n / kappa) * np.outer(pts.mean(0) if n else mean,
                                                                                      pts.mean(0) if n else mean)
            df = nu - d + 1
            total += multivariate_t(mean, psi * (kappa + 1) / (kappa * df), df=df).logpdf(z[i])
            seen[labels[i]] = [*map(list, pts), list(z[i])]
        per_node.append(total)
    return float(torch.logsumexp(torch.tensor(per_node) + model.scale_log_weights, 0))


@pytest.mark.parametrize("dim", [1, 3])
def test_collapsed_likelihood_is_the_student_t_chain_in_another_order(dim):
    model = NIWGaussianMixture(dim=dim, grid_size=3)
    z = model.check_data(torch.randn(5, dim, generator=torch.Generator().manual_seed(dim), dtype=torch.float64))
    labelling = [0, 1, 0, 2, 1]
    exact = float(model.log_marginal_likelihood(z, torch.tensor(labelling)))
    assert exact == pytest.approx(_student_t_chain(model, z.numpy(), labelling, [4, 2, 0, 3, 1]), abs=1e-9)


def test_predictive_and_gibbs_statistics_agree_with_the_joint():
    model = NIWGaussianMixture(dim=2, grid_size=4)
    z = model.check_data(torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    labels = torch.tensor([0, 1, 0, 2, 1, 1])
    index = 3  # alone in its cluster: moving it gives slots 0, 1, (2 empty) and new
    pred = model.log_predictive(z, labels, index, num_clusters=3)
    others = labels.clone()
    others[index] = -1
    candidates = torch.tensor([[0, 1, 0, 0, 1, 1], [0, 1, 0, 1, 1, 1], [0, 1, 0, 2, 1, 1]])
    # label -1 leaves point 3 out (a subset would be standardised again)
    expected = model.log_marginal_likelihood(z, candidates) - model.log_marginal_likelihood(z, others)
    torch.testing.assert_close(pred[[0, 1, 3]], expected)
    assert pred[2] == pred[3]  # an empty slot is a new cluster
    stats = model.gibbs_statistics(z)
    stats.init(others.unsqueeze(0), 4)
    torch.testing.assert_close(stats.log_predictive(index)[0], pred)
    stats.move(index, torch.tensor([1]), torch.tensor([1.0], dtype=torch.float64))
    moved = model.gibbs_statistics(z)
    moved.init(candidates[1:2], 4)
    for name in ("count", "total", "outer"):
        torch.testing.assert_close(getattr(stats, name), getattr(moved, name))
    torch.testing.assert_close(moved.log_likelihood(), model.log_marginal_likelihood(z, candidates[1:2]))


def test_grid_crp_is_the_mixture_of_crps():
    model = NIWGaussianMixture(dim=2, grid_size=5)
    parts = enumerate_partitions(5)
    prior = model.partition_prior(5)
    mixture = torch.logsumexp(torch.stack([CRP(float(a), 5).log_prob(parts).double() + w for a, w in
                                           zip(model.alphas, model.alpha_log_weights, strict=True)]), 0)
    torch.testing.assert_close(prior.log_prob(parts).double(), mixture, atol=1e-5, rtol=1e-5)
    assert float(prior.log_prob(parts).double().exp().sum()) == pytest.approx(1.0, abs=1e-5)


def test_standardisation_makes_the_model_blind_to_units_and_offsets():
    model = NIWGaussianMixture(dim=2)
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = model.check_data(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(model.check_data(1000 * x + 7), z)
    torch.testing.assert_close(model.check_data(z), z)  # idempotent
    labels = torch.tensor([0, 1] * 15)
    torch.testing.assert_close(model.log_joint(1000 * x + 7, labels), model.log_joint(x, labels))
    constant = torch.ones(4, 2)
    assert torch.equal(standardize(constant), torch.zeros(4, 2))


def test_simulated_batches_are_standardised_and_masked():
    batch = NIWGaussianMixture(dim=3).simulate(16, num_points=(2, 40), seed=0)
    for b in range(16):
        x = batch.x[b][batch.mask[b]].double()
        torch.testing.assert_close(x.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
        # a random rotation of standardised data keeps the total variance D
        assert float(x.square().mean(0).sum()) == pytest.approx(3.0, abs=1e-4) or len(x) == 1
    assert torch.equal(batch.x[~batch.mask], torch.zeros_like(batch.x[~batch.mask]))


def _within_share(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of the scatter of standardised points within their clusters (rotation invariant)."""
    z = standardize(x.double())
    within = sum(float((z[labels == k] - z[labels == k].mean(0)).square().sum()) for k in range(int(labels.max()) + 1))
    return within / float(z.square().sum())


@pytest.mark.slow
def test_simulator_draws_what_the_pyro_program_draws():
    model = NIWGaussianMixture(dim=2, grid_size=4)
    n, reps = 12, 300
    pyro.set_rng_seed(0)
    program = []
    for _ in range(reps):
        trace = pyro.poutine.trace(model.model).get_trace(num_points=n)
        labels = trace.nodes["labels"]["value"]
        program.append((_within_share(trace.nodes["x"]["value"], labels), int(labels.max()) + 1))
    batch = model.simulate(reps, num_points=n, seed=1)
    simulated = [(_within_share(batch.x[b], batch.labels[b]), int(batch.labels[b].max()) + 1) for b in range(reps)]
    for column in range(2):
        assert ks_2samp([p[column] for p in program], [s[column] for s in simulated]).pvalue > 1e-3


@pytest.mark.slow
def test_exact_posterior_sums_to_one_and_gibbs_agrees():
    model = NIWGaussianMixture(dim=2)
    x = model.simulate(1, num_points=5, seed=3).unpadded(0)[0]
    exact = exact_posterior(model, x)
    assert float(exact.probs.sum()) == pytest.approx(1.0, abs=1e-12)
    assert exact.partitions.shape == (52, 5)
    post = gibbs(model, x, num_samples=150, warmup_steps=20, num_chains=32, seed=0, progress_bar=False)
    assert_matches_exact(post, exact)


def test_config_round_trip_and_bad_input():
    model = NIWGaussianMixture(dim=4, scale_range=(0.1, 0.8))
    assert model_from_config(model.config()) == model
    with pytest.raises(ValueError, match="shape \\(N, 4\\)"):
        model.check_data(torch.randn(5, 2))
    with pytest.raises(ValueError, match="scale_range"):
        NIWGaussianMixture(scale_range=(0.1, 1.5))
    with pytest.raises(ValueError, match="0 < lo < hi"):
        NIWGaussianMixture(alpha_range=(0.0, 1.0))
    assert math.isclose(float(model.scale_log_weights.exp().sum()), 1.0)


def _small_table_warnings(run) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return sum("over-counts clusters on small tables" in str(w.message) for w in caught)


def test_small_tables_warn_once_per_call_that_standardising_biases_the_number_of_clusters(tmp_path):
    import pyro_acp

    model = NIWGaussianMixture(dim=2)
    small = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    assert len(model.data_warnings(model.check_data(small))) == 1
    # once per entry point, although the data are re-checked inside (log joints, MAP ranking, enumeration)
    assert _small_table_warnings(lambda: pyro_acp.infer(model, small, num_samples=8, seed=0).refined_map()) == 1
    assert _small_table_warnings(lambda: exact_posterior(model, small)) == 1
    assert _small_table_warnings(lambda: gibbs(model, small, num_samples=5, warmup_steps=2, num_chains=2, seed=0,
                                               progress_bar=False)) == 1
    assert _small_table_warnings(lambda: AmortizedPartition(ACPS(2, hidden_dim=16), small, model=model)) == 1
    assert _small_table_warnings(lambda: model.log_joint(small, torch.zeros(7, dtype=torch.long))) == 0
    large = torch.randn(40, 2, generator=torch.Generator().manual_seed(1))
    assert model.data_warnings(model.check_data(large)) == []
    assert _small_table_warnings(lambda: pyro_acp.infer(model, large, num_samples=8, seed=0)) == 0
    # a batch run keeps it among the small table's own warnings (and names that table in one run warning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pyro_acp.infer_many(model, [small, large], num_samples=8, seed=0, output=tmp_path, progress_bar=False)
    assert [str(w.message).split(" (")[0] for w in caught] == ["UserWarning for 1 of 2 data sets"]
    notes = [json.loads((tmp_path / name / "summary.json").read_text())["warnings"] for name in ("00000", "00001")]
    assert [sum("over-counts clusters on small tables" in note for note in kept) for kept in notes] == [1, 0]
