"""The stationarity check of a posterior's samples by a symmetric collapsed Gibbs sweep
(diagnostics/stationarity.py): posterior draws stay put on average and move symmetrically, wrong draws do not,
and infer / infer_many warn about the latter."""

import warnings

import pytest
import torch
from sklearn.datasets import load_iris

import pyro_acp
from pyro_acp.data.partitions import canonicalize
from pyro_acp.diagnostics.stationarity import (
    STATIONARITY_P,
    StationarityWarning,
    check_stationarity,
)
from pyro_acp.distributions import CRP
from pyro_acp.models import CRPGaussianMixture, NIWGaussianMixture
from pyro_acp.reference.gibbs_kernel import started_kernel
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
        assert wrong.z > 8 and abs(wrong.z) > wrong.z_bound and not wrong.passes, (seed, wrong)
        assert abs(check.median_change) < 1.0 < wrong.median_change, (check, wrong)  # symmetric about 0 / not
        assert check.rank_p_value > 100 * STATIONARITY_P > wrong.rank_p_value * 100, (check, wrong)
        assert abs(check.z) < check.z_bound, check


def _pair_asymmetry(symmetric_scan: bool) -> tuple[float, int]:
    """Chi-square of the asymmetry of the (start, end) table of one sweep from 20,000 exact draws at N = 4 (15
    partitions), over the pairs seen at least 20 times both ways together, and its degrees of freedom: for a
    reversible kernel the table is symmetric, (c, c') and (c', c) equally likely."""
    x = torch.tensor([[0.0, 0.0], [1.5, 0.0], [0.0, 1.8], [2.5, 2.0]])
    exact = pyro_acp.exact_posterior(MODEL, x)
    index = torch.multinomial(exact.probs.double(), 20000, replacement=True,
                              generator=torch.Generator().manual_seed(0))
    kernel, start = started_kernel(MODEL, x.double(), exact.partitions[index].long(), seed=5,
                                   symmetric_scan=symmetric_scan)
    ends = canonicalize(kernel.sample(start)["labels"].long())
    end_index = (ends[:, None, :] == exact.partitions[None].long()).all(-1).long().argmax(-1)
    counts = torch.zeros(len(exact.probs), len(exact.probs))
    counts.index_put_((index, end_index), torch.ones(len(index)), accumulate=True)
    both_ways = (counts + counts.T).triu(1)
    seen = both_ways >= 20
    chi_square = ((counts - counts.T).triu(1)[seen] ** 2 / both_ways[seen]).sum()
    return float(chi_square), int(seen.sum())


def test_the_symmetric_sweep_is_reversible_where_a_sweep_in_one_fixed_order_is_not():
    """All chains share one order per sweep. In that fixed order a sweep is not reversible (measured chi-square
    620 on 105 pairs in a first probe), so the change of log p would not be symmetric about 0 for posterior draws;
    forward then backward it is (chi-square within 4 sd of its degrees of freedom)."""
    chi_square, dof = _pair_asymmetry(symmetric_scan=True)
    assert chi_square < dof + 4 * (2 * dof) ** 0.5, (chi_square, dof)
    chi_square, dof = _pair_asymmetry(symmetric_scan=False)
    assert chi_square > dof + 8 * (2 * dof) ** 0.5, (chi_square, dof)


def test_the_rank_test_catches_heavy_tailed_gains_the_mean_lets_pass():
    """The shipped CRP guide at N = 50 (benchmarks/stationarity_check.py's set): a few samples gain hundreds of
    nats, which widens the mean's standard error below the bound (z about 2.7), while the typical sample gains
    about +8 nats; the signed-rank test rejects symmetry (p about 1e-7) and the check fails. Gibbs chains
    started at those samples and run 11 sweeps (10 warm-up, 1 kept) pass."""
    x = MODEL.simulate(1, num_points=50, seed=81).unpadded(0)[0]
    with pytest.warns(StationarityWarning, match="signed-rank p"):
        post = pyro_acp.infer(MODEL, x, num_samples=100, seed=0, progress_bar=False, estimate_log_prob=False)
    check = post.stationarity
    assert abs(check.z) < check.z_bound and check.rank_p_value < STATIONARITY_P and not check.passes, check
    assert check.median_change > 1.0, check
    started = pyro_acp.mcmc.gibbs(MODEL, x, init=post, warmup_steps=10, num_samples=1, seed=0, progress_bar=False)
    assert check_stationarity(MODEL, x, started.samples).passes

def test_infer_checks_its_samples_and_reports_it():
    x, _ = MODEL.simulate(1, num_points=60, seed=4).unpadded(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StationarityWarning)
        post = pyro_acp.infer(MODEL, x, num_samples=40, seed=0, progress_bar=False)
    assert post.stationarity is not None and post.stationarity.passes and post.stationarity.num_samples == 32
    assert "a Gibbs sweep moves log p(c, x)" in str(post.summary()) and "signed-rank p" in str(post.summary())
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


def test_the_hand_written_tests_match_scipy():
    """The t-test's critical values are scipy's; the exact signed-rank p-value equals scipy's exact one without
    ties and a brute-force count over all sign patterns with ties and round-off zeros."""
    import itertools

    from scipy.stats import t, wilcoxon

    from pyro_acp.diagnostics.stationarity import T_CRITICAL, symmetry_p_value

    assert all(abs(value - t.isf(5e-5, df)) < 1e-3 * value for df, value in enumerate(T_CRITICAL, start=1))
    generator = torch.Generator().manual_seed(0)
    for n in (1, 5, 16, 32, 300):  # 300: beyond float64's exact counts had they been counts (2^n overflows at 1,024)
        changes = torch.randn(n, generator=generator, dtype=torch.float64) + 0.4
        expected = wilcoxon(changes.numpy(), method="exact").pvalue
        assert abs(symmetry_p_value(changes) - expected) < 1e-9, n
    tied = torch.tensor([1.0, -1.0, 2.0, 2.0, 2.0, -3.0, 5.0, 1e-15, 0.0, 4.0], dtype=torch.float64)
    kept = tied[tied.abs() > 1e-9]
    ranks = torch.tensor([1.5, 1.5, 4.0, 4.0, 4.0, 6.0, 8.0, 7.0], dtype=torch.float64)  # |kept|'s mean ranks
    observed = float(ranks[kept > 0].sum())
    patterns = torch.tensor(list(itertools.product((0.0, 1.0), repeat=8)), dtype=torch.float64)
    sums = patterns @ ranks
    brute = min(1.0, 2 * min(float((sums <= observed).double().mean()), float((sums >= observed).double().mean())))
    assert abs(symmetry_p_value(tied) - brute) < 1e-12
