"""Collapsed Gibbs (with and without split-merge) and NUTS against exact posteriors on small data sets.

Agreement is judged against Monte-Carlo error measured in the test itself: the total variation distance
of an i.i.d. sample of the same size drawn from the exact posterior. A correct sampler with modest
autocorrelation lands within a small multiple of it; a wrong one (checked below with a deliberately
mis-specified model) lands far outside.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import MCMC

from pyro_acp.mcmc import CollapsedGibbs, gibbs, nuts
from pyro_acp.models import (
    SBM,
    CRPGaussianMixture,
    LogDegreeSBM,
    MFMGaussianMixture,
    PitmanYorGaussianMixture,
)
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.reference.exact import exact_posterior

TOLERANCE = 2.5  # allowed multiple of the i.i.d. Monte-Carlo total variation


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These samplers run many tiny tensor ops: one intra-op thread is faster and steadier on small machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def total_variation(samples: torch.Tensor, exact) -> float:
    """TV between the empirical distribution of canonical ``samples`` (S, N) and an exact posterior."""
    index = {tuple(p.tolist()): i for i, p in enumerate(exact.partitions)}
    counts = torch.zeros_like(exact.probs)
    for row in samples.tolist():
        counts[index[tuple(row)]] += 1
    return 0.5 * float((counts / counts.sum() - exact.probs).abs().sum())


def iid_total_variation(exact, num_samples: int) -> float:
    return total_variation(exact.sample(num_samples, seed=12345), exact)


def assert_matches_exact(post: ClusteringPosterior, exact, cc_tol: float = 0.05) -> None:
    tv = total_variation(post.samples, exact)
    baseline = iid_total_variation(exact, post.num_samples)
    assert tv < TOLERANCE * baseline, f"TV {tv:.4f} vs i.i.d. Monte-Carlo TV {baseline:.4f}"
    cc_error = float((post.coclustering() - exact.coclustering()).abs().max())
    assert cc_error < cc_tol, f"co-clustering error {cc_error:.4f}"


@pytest.fixture(scope="module")
def crp_case():
    model = CRPGaussianMixture(mean_scale=3.0)
    x, _ = model.simulate(1, num_points=7, seed=3).unpadded(0)
    return model, x, exact_posterior(model, x)


# ---------------------------------------------------------------------------------------------- Gibbs
def test_gibbs_matches_exact_crp_mixture(crp_case):
    model, x, exact = crp_case
    post = gibbs(model, x, num_samples=300, warmup_steps=30, num_chains=32, seed=0, progress_bar=False)
    assert post.method == "gibbs"
    assert post.samples.shape == (32 * 300, 7)
    assert torch.equal(post.chain, torch.arange(32).repeat_interleave(300))
    assert post.wall_time > 0
    assert_matches_exact(post, exact)


def test_gibbs_power_against_a_wrong_model(crp_case):
    """The check above would catch a sampler targeting the wrong posterior."""
    model, x, exact = crp_case
    wrong = CRPGaussianMixture(alpha=5.0, mean_scale=3.0)
    post = gibbs(wrong, x, num_samples=100, warmup_steps=10, num_chains=32, seed=0, progress_bar=False)
    assert total_variation(post.samples, exact) > TOLERANCE * iid_total_variation(exact, post.num_samples)


def test_gibbs_matches_exact_pitman_yor_mixture():
    model = PitmanYorGaussianMixture(dim=3, alpha=0.5, discount=0.3, mean_scale=3.0)
    x, _ = model.simulate(1, num_points=6, seed=5).unpadded(0)
    post = gibbs(model, x, num_samples=200, warmup_steps=20, num_chains=32, seed=1, progress_bar=False)
    assert_matches_exact(post, exact_posterior(model, x))


def test_gibbs_matches_exact_sbm():
    model = SBM(alpha=1.0)
    adjacency = model.simulate(1, num_points=7, seed=1).adjacency[0]
    post = gibbs(model, adjacency, num_samples=150, warmup_steps=20, num_chains=32, seed=2, progress_bar=False)
    assert_matches_exact(post, exact_posterior(model, adjacency))


def test_split_merge_alone_keeps_the_exact_posterior():
    """Split-merge moves without Gibbs sweeps: any error in the acceptance ratio shows up directly."""
    model = PitmanYorGaussianMixture(alpha=0.5, discount=0.3, mean_scale=3.0)
    x, _ = model.simulate(1, num_points=6, seed=3).unpadded(0)
    kernel = CollapsedGibbs(model, num_chains=32, split_merge=True, sweeps=0, restricted_scans=2, seed=0)
    mcmc = MCMC(kernel, num_samples=200, warmup_steps=20, disable_progbar=True)
    mcmc.run(x)
    samples = mcmc.get_samples()["labels"].reshape(-1, 6).round().long()
    accept = kernel.diagnostics()["split_merge_acceptance"]
    assert 0.05 < accept < 0.95
    assert_matches_exact(ClusteringPosterior(samples), exact_posterior(model, x))


def test_gibbs_with_split_merge_matches_exact(crp_case):
    model, x, exact = crp_case
    post = gibbs(model, x, num_samples=100, warmup_steps=10, num_chains=32, seed=4, split_merge=True,
                 progress_bar=False)
    assert_matches_exact(post, exact, cc_tol=0.06)


def test_kernel_runs_under_pyro_mcmc_with_vectorised_chains(crp_case):
    model, x, _ = crp_case
    kernel = CollapsedGibbs(model, num_chains=3, seed=0)
    mcmc = MCMC(kernel, num_samples=20, warmup_steps=5, disable_progbar=True)
    mcmc.run(x)
    draws = mcmc.get_samples(group_by_chain=True)
    assert draws["labels"].shape == (1, 20, 3, 7)
    assert draws["log_joint"].shape == (1, 20, 3)
    labels = draws["labels"].round().long()
    assert torch.equal(labels.double(), draws["labels"].double())
    assert (labels >= 0).all() and (labels < 7).all()
    assert "log_joint" in mcmc.diagnostics()
    # initial params can be given, one labelling per chain
    start = torch.zeros(3, 7)
    mcmc = MCMC(CollapsedGibbs(model, num_chains=3, seed=0), num_samples=2, warmup_steps=0,
                initial_params={"labels": start}, disable_progbar=True)
    mcmc.run(x)


def test_recorded_log_joint_matches_the_model():
    """Incrementally maintained statistics must agree with a fresh computation, also when slots grow."""
    model = CRPGaussianMixture(alpha=20.0, sigma=0.1, mean_scale=10.0)  # ~30 clusters: the slot arrays grow
    x, _ = model.simulate(1, num_points=60, seed=0).unpadded(0)
    post = gibbs(model, x, num_samples=5, warmup_steps=2, num_chains=3, seed=0, progress_bar=False,
                 split_merge=True)
    assert int(post.num_clusters.min()) > 20
    expected = model.log_joint(x.double(), post.samples).double()
    assert torch.allclose(post.log_joint, expected, rtol=1e-9, atol=1e-6)
    assert torch.allclose(post.log_likelihood, model.log_marginal_likelihood(x.double(), post.samples).double(),
                          rtol=1e-9, atol=1e-6)
    sbm = SBM()
    adjacency = sbm.simulate(1, num_points=30, seed=0).adjacency[0]
    post = gibbs(sbm, adjacency, num_samples=3, warmup_steps=1, num_chains=2, seed=0, progress_bar=False)
    assert torch.allclose(post.log_joint, sbm.log_joint(adjacency.double(), post.samples).double(), atol=1e-6)


def test_gibbs_is_reproducible(crp_case):
    model, x, _ = crp_case
    a = gibbs(model, x, num_samples=20, warmup_steps=2, num_chains=2, seed=7, progress_bar=False)
    b = gibbs(model, x, num_samples=20, warmup_steps=2, num_chains=2, seed=7, progress_bar=False)
    c = gibbs(model, x, num_samples=20, warmup_steps=2, num_chains=2, seed=8, progress_bar=False)
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)
    pyro.set_rng_seed(3)
    d = gibbs(model, x, num_samples=20, warmup_steps=2, num_chains=2, progress_bar=False)
    pyro.set_rng_seed(3)
    e = gibbs(model, x, num_samples=20, warmup_steps=2, num_chains=2, progress_bar=False)
    assert torch.equal(d.samples, e.samples)


def test_gibbs_bad_input():
    model = CRPGaussianMixture()
    with pytest.raises(ValueError, match="NaN"):
        gibbs(model, torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), num_samples=2, progress_bar=False)
    with pytest.raises(ValueError, match="shape"):
        gibbs(model, torch.randn(5, 3), num_samples=2, progress_bar=False)
    with pytest.raises(ValueError, match="num_samples"):
        gibbs(model, torch.randn(5, 2), num_samples=0, progress_bar=False)
    with pytest.raises(ValueError, match="num_chains"):
        gibbs(model, torch.randn(5, 2), num_chains=0, progress_bar=False)
    with pytest.raises(TypeError, match="seating_log_weights|SBM"):
        gibbs(LogDegreeSBM(), torch.zeros(40, 40), num_samples=2, progress_bar=False)
    with pytest.raises(TypeError, match="conjugate"):
        gibbs(object(), torch.randn(5, 2), progress_bar=False)
    with pytest.raises(ValueError, match="sweeps"):
        CollapsedGibbs(model, sweeps=0)


# ---------------------------------------------------------------------------------------------- NUTS
def test_nuts_matches_exact():
    model = CRPGaussianMixture(mean_scale=3.0)
    x = torch.tensor([[-2.0, 0.0], [-2.5, 0.3], [-1.8, -0.4], [2.0, 0.2], [2.4, -0.1], [0.3, 0.1]])
    exact = exact_posterior(model, x)
    post = nuts(model, x, num_samples=120, warmup_steps=60, truncation=6, seed=0, progress_bar=False)
    assert post.method == "nuts" and post.samples.shape == (120, 6)
    assert torch.allclose(post.log_joint, model.log_joint(x.double(), post.samples).double(), atol=1e-6)
    assert_matches_exact(post, exact, cc_tol=0.12)


def test_nuts_bad_input():
    with pytest.raises(TypeError, match="stick-breaking"):
        nuts(MFMGaussianMixture(), torch.randn(5, 2))
    with pytest.raises(TypeError, match="stick-breaking"):
        nuts(SBM(), torch.zeros(5, 5))
    with pytest.raises(ValueError, match="truncation"):
        nuts(CRPGaussianMixture(), torch.randn(5, 2), truncation=1)
    with pytest.raises(ValueError, match="NaN"):
        nuts(CRPGaussianMixture(), torch.tensor([[0.0, float("nan")]]))


def test_seating_table_reproduces_the_prior_and_gibbs_works_without_it(monkeypatch):
    """The lookup tables equal seating_log_weights; with them disabled Gibbs calls the prior directly."""
    from pyro_acp.reference.gibbs import _SeatingTable

    for model in (CRPGaussianMixture(), PitmanYorGaussianMixture(), MFMGaussianMixture(), SBM()):
        for n in (1, 2, 5, 40):
            assert _SeatingTable(model.partition_prior(n + 1), n, torch.float64, torch.device("cpu")).matches()

    class NotGibbsType:
        """Join weights that depend on the other blocks' sizes: the table check must reject it."""

        def seating_log_weights(self, counts, num_seated):
            join = torch.where(counts > 0, torch.log(counts.clamp(min=1)) + counts.max(-1, keepdim=True).values,
                               -float("inf"))
            return torch.cat([join, torch.zeros_like(counts[..., :1])], -1)

    assert not _SeatingTable(NotGibbsType(), 9, torch.float64, torch.device("cpu")).matches()
    monkeypatch.setattr(_SeatingTable, "matches", lambda self, *args, **kwargs: False)
    model = PitmanYorGaussianMixture(alpha=0.5, discount=0.3, mean_scale=3.0)
    x, _ = model.simulate(1, num_points=6, seed=3).unpadded(0)
    post = gibbs(model, x, num_samples=150, warmup_steps=10, num_chains=32, seed=5, progress_bar=False)
    assert_matches_exact(post, exact_posterior(model, x))


def test_sequential_start_reads_the_tables_where_the_prior_allows_it(monkeypatch):
    """With fewer points seated, CRP / Pitman-Yor weights differ from the tables' only by a constant per row, so
    the start reads the tables and draws the same labels as with direct calls to the prior; MFM's new-block
    weight depends on the number seated, so its start calls the prior."""
    from pyro_acp.reference.gibbs import _SeatingTable

    def start(model, x):
        kernel = CollapsedGibbs(model, num_chains=3, seed=4)
        kernel.setup(0, x)
        return kernel

    for model, uses_tables in ((CRPGaussianMixture(), True), (PitmanYorGaussianMixture(discount=0.4), True),
                               (MFMGaussianMixture(), False)):
        table = _SeatingTable(model.partition_prior(41), 40, torch.float64, torch.device("cpu"))
        shifts = [table.matches(num_seated=m, up_to_shift=True) for m in range(1, 40)]
        assert all(shifts) if uses_tables else not any(shifts[1:])
        assert not any(table.matches(num_seated=m) for m in range(2, 40))  # never equal: only up to a constant
        x, _ = model.simulate(1, num_points=60, seed=2).unpadded(0)
        with monkeypatch.context() as patch:
            fast = start(model, x)
            patch.setattr(_SeatingTable, "serves_every_count", lambda self: False)
            direct = start(model, x)
        assert fast._table_from_seated == (1 if uses_tables else 59)
        assert direct._table_from_seated == 59  # N - 1: the tables serve the sweeps only
        assert torch.equal(fast.labels, direct.labels)
        assert fast.labels.max() >= 1  # a non-trivial start: several clusters


def test_fast_gaussian_predictive_equals_the_conjugate_one_up_to_a_constant():
    model = CRPGaussianMixture(dim=3, sigma=0.7, mean_scale=4.0)
    x, _ = model.simulate(1, num_points=30, seed=2).unpadded(0)
    kernel = CollapsedGibbs(model, num_chains=4, seed=0)
    kernel.setup(0, x)
    likelihood = kernel.likelihood
    for i in (0, 7, 29):
        likelihood.move(i, kernel.labels[:, i], -torch.ones(4, dtype=torch.float64))
        diff = likelihood.log_predictive(i) - likelihood.exact_log_predictive(i)  # (C, W): constant per row
        assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-9)
        likelihood.move(i, kernel.labels[:, i], torch.ones(4, dtype=torch.float64))
