"""Collapsed Gibbs (with and without split-merge) and NUTS against exact posteriors on small data sets.

Agreement is judged against Monte-Carlo error measured in the test itself (see tests/mcmc_checks.py); the
power of that check is shown with a deliberately mis-specified model.
"""

from __future__ import annotations

import contextlib
import io

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
from pyro_acp.reference import gibbs_kernel, seating
from pyro_acp.reference.exact import exact_posterior
from tests.mcmc_checks import (  # one_thread: an autouse fixture
    TOLERANCE,
    assert_matches_exact,
    iid_total_variation,
    one_thread,  # noqa: F401
    total_variation,
)


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
    samples = kernel.get_labels()
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
    draws = mcmc.get_samples(group_by_chain=True)  # the kernel's chains are MCMC's chains
    assert sorted(draws) == ["largest_share", "log_joint", "log_likelihood", "num_clusters"]
    assert all(value.shape == (3, 20) for value in draws.values())
    labels = kernel.get_labels(group_by_chain=True)
    assert labels.shape == (3, 20, 7) and labels.dtype == torch.long
    assert (labels >= 0).all() and (labels < 7).all()
    assert torch.equal(kernel.get_labels(), labels.reshape(60, 7))
    assert torch.equal(draws["num_clusters"], (labels.max(-1).values + 1).double())
    sizes = torch.nn.functional.one_hot(labels, 7).sum(-2)
    assert torch.allclose(draws["largest_share"], sizes.max(-1).values.double() / 7)
    assert torch.allclose(draws["log_joint"], model.log_joint(x.double(), labels).double(), atol=1e-6)
    assert "log_joint" in mcmc.diagnostics()
    # initial params can be given, one labelling per chain; labels can be stored by MCMC too, in any order
    start = torch.zeros(3, 7)
    kernel = CollapsedGibbs(model, num_chains=3, seed=0)
    mcmc = MCMC(kernel, num_samples=4, warmup_steps=0, initial_params={"labels": start}, disable_progbar=True,
                save_params=["num_clusters", "labels", "log_joint"])
    mcmc.run(x)
    draws = mcmc.get_samples(group_by_chain=True)
    assert torch.equal(draws["labels"].long(), kernel.get_labels(group_by_chain=True))
    assert torch.equal(draws["num_clusters"], (draws["labels"].max(-1).values + 1).double())
    with pytest.raises(ValueError, match="no site 'means'"):
        CollapsedGibbs(model).save_params = ["means"]


def test_mcmc_summary_is_a_short_table_of_scalar_sites(crp_case):
    model, x, _ = crp_case
    mcmc = MCMC(CollapsedGibbs(model, num_chains=3, seed=0), num_samples=30, warmup_steps=5, disable_progbar=True)
    mcmc.run(x)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        mcmc.summary()
    rows = [line.split()[0] for line in out.getvalue().splitlines() if line.strip()]
    assert rows[1:5] == ["largest_share", "log_joint", "log_likelihood", "num_clusters"]  # one row each
    assert len(rows) <= 6  # header, four sites, the divergence count
    assert "labels" not in out.getvalue()


def test_arviz_from_pyro_reads_the_gibbs_run(crp_case):
    arviz = pytest.importorskip("arviz")
    if not hasattr(arviz, "from_pyro"):
        pytest.skip("this ArviZ has no from_pyro")
    model, x, _ = crp_case
    mcmc = MCMC(CollapsedGibbs(model, num_chains=3, seed=0), num_samples=25, warmup_steps=5, disable_progbar=True)
    mcmc.run(x)
    idata = arviz.from_pyro(mcmc)
    posterior = idata.posterior
    assert set(posterior.data_vars) == {"largest_share", "log_joint", "log_likelihood", "num_clusters"}
    assert posterior.sizes["chain"] == 3 and posterior.sizes["draw"] == 25
    assert not idata.sample_stats.diverging.values.any()
    table = arviz.summary(idata)
    assert list(table.index) == ["largest_share", "log_joint", "log_likelihood", "num_clusters"]


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

    class NoStatistics(CRPGaussianMixture):
        gibbs_statistics = None

    with pytest.raises(TypeError, match="NoStatistics lacks gibbs_statistics"):
        gibbs(NoStatistics(), torch.randn(5, 2), progress_bar=False)
    with pytest.raises(TypeError, match="conjugate"):
        gibbs(object(), torch.randn(5, 2), progress_bar=False)
    with pytest.raises(ValueError, match="sweeps"):
        CollapsedGibbs(model, sweeps=0)


# ---------------------------------------------------------------------------------------------- NUTS
@pytest.mark.slow
def test_nuts_matches_exact():
    model = CRPGaussianMixture(mean_scale=3.0)
    x = torch.tensor([[-2.0, 0.0], [-2.5, 0.3], [-1.8, -0.4], [2.0, 0.2], [2.4, -0.1], [0.3, 0.1]])
    exact = exact_posterior(model, x)
    post = nuts(model, x, num_samples=120, warmup_steps=60, truncation=6, seed=0, progress_bar=False)
    assert post.method == "nuts" and post.samples.shape == (120, 6)
    assert torch.allclose(post.log_joint, model.log_joint(x.double(), post.samples).double(), atol=1e-6)
    assert_matches_exact(post, exact, cc_tol=0.12)


def test_nuts_bad_input():
    with pytest.raises(TypeError, match="stick-breaking.*MixtureOfFiniteMixtures has no alpha and discount"):
        nuts(MFMGaussianMixture(), torch.randn(5, 2))
    with pytest.raises(TypeError, match="stick-breaking.*SBM lacks stick_breaking_form"):
        nuts(SBM(), torch.zeros(5, 5))
    with pytest.raises(ValueError, match="truncation"):
        nuts(CRPGaussianMixture(), torch.randn(5, 2), truncation=1)
    with pytest.raises(ValueError, match="NaN"):
        nuts(CRPGaussianMixture(), torch.tensor([[0.0, float("nan")]]))


def _random_counts(num_seated: int, num_checks: int = 64, width: int = 8, seed: int = 0) -> torch.Tensor:
    """(num_checks, width) block sizes summing to ``num_seated``, 1..width blocks in random slots."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(1, min(num_seated, width) + 1, (num_checks,), generator=generator)
    slots = torch.rand(num_checks, width, generator=generator).argsort(-1)
    labels = torch.randint(0, width, (num_checks, num_seated), generator=generator)
    labels = slots.gather(1, labels % blocks.unsqueeze(-1))
    return torch.zeros(num_checks, width, dtype=torch.float64).scatter_add_(
        1, labels, torch.ones_like(labels, dtype=torch.float64))


def test_seating_tables_are_the_priors_closed_form_and_gibbs_works_without_them(monkeypatch):
    """Tables filled from V(n, K) and c equal seating_log_weights at every number seated; a prior without the
    Gibbs-type form is served by calls to its seating_log_weights, and Gibbs still targets the posterior."""
    for model in (CRPGaussianMixture(), PitmanYorGaussianMixture(), MFMGaussianMixture(), SBM()):
        prior = model.partition_prior(41)
        tables = seating.seating_tables_for(prior, 41, 0, torch.device("cpu"))
        for m in (1, 2, 5, 17, 40):
            counts = _random_counts(m)
            expected = prior.seating_log_weights(counts, m).double()
            got = tables(counts, m)
            assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
            assert torch.allclose(got[torch.isfinite(got)], expected[torch.isfinite(expected)], atol=1e-9)

    class NotGibbsType:
        """Join weights that depend on the other blocks' sizes: no tables, its own method is called."""

        def seating_log_weights(self, counts, num_seated):
            join = torch.where(counts > 0, torch.log(counts.clamp(min=1)) + counts.max(-1, keepdim=True).values,
                               -float("inf"))
            return torch.cat([join, torch.zeros_like(counts[..., :1])], -1)

    assert seating.seating_tables_for(NotGibbsType(), 9, 0, torch.device("cpu")) is None
    monkeypatch.setattr(seating, "gibbs_type_form", lambda prior: None)
    model = PitmanYorGaussianMixture(alpha=0.5, discount=0.3, mean_scale=3.0)
    x, _ = model.simulate(1, num_points=6, seed=3).unpadded(0)
    post = gibbs(model, x, num_samples=150, warmup_steps=10, num_chains=32, seed=5, progress_bar=False)
    assert_matches_exact(post, exact_posterior(model, x))


def test_sequential_start_reads_the_tables_and_draws_what_the_prior_would(monkeypatch):
    """The start seats point t given t others: the tables hold a row for every number seated (from the closed
    form, for CRP, Pitman-Yor and MFM alike), so it draws the same labels as direct calls to the prior; after
    the start only the row the sweeps read (N - 1 seated) is kept."""

    def start(model, x):
        kernel = CollapsedGibbs(model, num_chains=3, seed=4)
        kernel.setup(0, x)
        return kernel

    for model in (CRPGaussianMixture(), PitmanYorGaussianMixture(discount=0.4), MFMGaussianMixture()):
        x, _ = model.simulate(1, num_points=60, seed=2).unpadded(0)
        fast = start(model, x)
        with monkeypatch.context() as patch:
            patch.setattr(gibbs_kernel, "seating_tables_for", lambda *args: None)
            direct = start(model, x)
        assert fast._tables is not None and direct._tables is None
        assert fast._tables.first == 59 and fast._tables.join.shape[0] == 1  # the sweeps' row only
        assert torch.equal(fast.labels, direct.labels)
        assert fast.labels.max() >= 1  # a non-trivial start: several clusters
        assert torch.equal(fast.sample(fast.initial_params)["labels"], direct.sample(direct.initial_params)["labels"])


def test_fast_gaussian_predictive_equals_the_conjugate_one_up_to_a_constant():
    model = CRPGaussianMixture(dim=3, sigma=0.7, mean_scale=4.0)
    x, _ = model.simulate(1, num_points=30, seed=2).unpadded(0)
    kernel = CollapsedGibbs(model, num_chains=4, seed=0)
    kernel.setup(0, x)
    statistics, one = kernel.statistics, torch.ones(4, dtype=torch.float64)
    for i in (0, 7, 29):
        statistics.move(i, kernel.labels[:, i], -one)
        exact = model.log_predictive(x.double(), kernel.labels, i, num_clusters=kernel.capacity)
        diff = statistics.log_predictive(i) - exact  # (C, W): constant per row
        assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-9)
        statistics.move(i, kernel.labels[:, i], one)


def test_integer_seeds_leave_the_global_rng_alone(crp_case):
    model, x, _ = crp_case
    state = torch.get_rng_state()
    a = gibbs(model, x, num_samples=5, warmup_steps=1, num_chains=2, seed=3, split_merge=True, progress_bar=False)
    assert torch.equal(torch.get_rng_state(), state)
    post = nuts(model, x, num_samples=3, warmup_steps=2, truncation=3, seed=3, progress_bar=False,
                jit_compile=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert post.samples.shape == (3, 7)
    b = gibbs(model, x, num_samples=5, warmup_steps=1, num_chains=2, seed=3, split_merge=True, progress_bar=False)
    assert torch.equal(a.samples, b.samples)


def test_entry_points_take_x_second_and_keywords_after_it(crp_case):
    model, x, _ = crp_case
    with pytest.raises(TypeError):
        gibbs(model, x, 10)
    with pytest.raises(TypeError):
        nuts(model, x, 10)
    with pytest.raises(TypeError):
        CollapsedGibbs(model, 4)


# ---------------------------------------------------------------------------------------------- started chains
def test_gibbs_started_at_given_partitions_keeps_the_exact_posterior_and_follows_its_starts(crp_case):
    """``init``: one chain per given partition. Started at 4,000 exact draws, one sweep leaves them exact (TV
    within the i.i.d. Monte-Carlo yardstick); started at the prior's draws it does not get there in one sweep
    (the power: the starts are used, not replaced by the kernel's own sequential start)."""
    model, x, exact = crp_case
    draws = exact.sample(4000, seed=7)
    post = gibbs(model, x, init=draws, warmup_steps=0, num_samples=1, seed=0, progress_bar=False)
    assert post.samples.shape == (4000, 7) and torch.equal(post.chain, torch.arange(4000))
    assert_matches_exact(post, exact)
    single = torch.zeros(4000, 7, dtype=torch.long)  # every chain starts with all points in one cluster
    stuck = gibbs(model, x, init=single, warmup_steps=0, num_samples=1, seed=0, progress_bar=False)
    assert total_variation(stuck.samples, exact) > TOLERANCE * iid_total_variation(exact, 4000)


def test_gibbs_started_at_a_posterior_refuses_other_data_and_other_chain_counts(crp_case):
    model, x, exact = crp_case
    starts = ClusteringPosterior(exact.sample(6, seed=1), method="exact-draws", x=x, model=model)
    post = gibbs(model, x, init=starts, warmup_steps=2, num_samples=3, seed=0, progress_bar=False)
    assert post.samples.shape == (18, 7)
    with pytest.raises(ValueError, match="posterior of other data"):
        gibbs(model, x + 1.0, init=starts, progress_bar=False)
    with pytest.raises(ValueError, match="num_chains=4 but init holds 6"):
        gibbs(model, x, init=starts, num_chains=4, progress_bar=False)
    with pytest.raises(ValueError, match=r"shape \(C, 7\)"):
        gibbs(model, x, init=torch.zeros(3, 5, dtype=torch.long), progress_bar=False)
    with pytest.raises(ValueError, match="negative"):
        gibbs(model, x, init=-torch.ones(3, 7, dtype=torch.long), progress_bar=False)


def test_gibbs_started_at_a_weighted_posterior_draws_its_starts_from_the_weights(crp_case):
    """exact_posterior holds every partition once with its probability as weight: chains started at it start
    at draws from those weights (one sweep from them stays exact), not once at every partition (mean K 3.42
    against the exact 3.05 at this data set, measured by the review that found it)."""
    model, x, exact = crp_case
    post = gibbs(model, x, init=exact, warmup_steps=0, num_samples=1, seed=3, progress_bar=False)
    assert post.samples.shape[0] == exact.partitions.shape[0]
    exact_k = float((exact.num_clusters.double() * exact.probs.double()).sum())
    k = post.num_clusters.double()
    assert abs(float(k.mean()) - exact_k) < 4 * float(k.std()) / k.numel() ** 0.5, (float(k.mean()), exact_k)
    uniform_k = float(exact.num_clusters.double().mean())  # the starts taken once each
    assert abs(uniform_k - exact_k) > 8 * float(k.std()) / k.numel() ** 0.5


def test_same_data_check_sees_a_shift_of_some_points_under_a_large_offset(crp_case):
    """A posterior keeps its data in float32: x offset by 1e4 still matches itself, but moving a third of the
    points by 0.9 (about one cluster sd) is refused."""
    model, x, exact = crp_case
    shifted = x.double() + 1e4
    starts = ClusteringPosterior(exact.sample(4, seed=1), method="exact-draws", x=shifted.float(), model=model)
    assert gibbs(model, shifted, init=starts, warmup_steps=0, num_samples=1, progress_bar=False).num_samples == 4
    moved = shifted.clone()
    moved[::3] += 0.9
    with pytest.raises(ValueError, match="posterior of other data"):
        gibbs(model, moved, init=starts, progress_bar=False)
    scaled = x.double() * torch.tensor([1000.0, 1e-3], dtype=torch.float64)  # columns of very different scales
    scaled_starts = ClusteringPosterior(exact.sample(4, seed=1), method="exact-draws", x=scaled.float(), model=model)
    shuffled = scaled.clone()
    shuffled[:, 1] = shuffled[torch.arange(6, -1, -1), 1]  # the small column's values in another order
    with pytest.raises(ValueError, match="posterior of other data"):
        gibbs(model, shuffled, init=scaled_starts, progress_bar=False)
