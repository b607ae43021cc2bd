"""The comparison table and simulation-based calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import adjusted_mutual_info_score

from pyro_acp.diagnostics.calibration import SBCResult, plot_sbc, rank_statistic, sbc, uniformity_pvalue
from pyro_acp.diagnostics.compare import ComparisonTable, compare
from pyro_acp.mcmc import gibbs
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.reference.exact import exact_posterior


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The samplers run many tiny tensor ops: one intra-op thread is faster and steadier on small machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def case():
    model = CRPGaussianMixture(mean_scale=3.0)
    x, truth = model.simulate(1, num_points=6, seed=3).unpadded(0)
    exact = exact_posterior(model, x)
    gibbs_post = gibbs(model, x, num_samples=150, warmup_steps=20, num_chains=4, seed=0, progress_bar=False)
    iid = ClusteringPosterior(exact.sample(600, seed=1), method="iid")
    return model, x, truth, exact, gibbs_post, iid


# ---------------------------------------------------------------------------------------------- compare
def test_compare_table_against_exact(case):
    _, _, truth, exact, gibbs_post, iid = case
    table = compare({"gibbs": gibbs_post, "iid": iid}, truth=truth, reference=exact)
    assert isinstance(table, ComparisonTable)
    assert [row["method"] for row in table] == ["reference (exact)", "gibbs", "iid"]
    ref, g, i = table["reference (exact)"], table["gibbs"], table["iid"]
    assert ref["tv"] == pytest.approx(0.0, abs=1e-12) and ref["coclustering_error"] == pytest.approx(0.0, abs=1e-6)
    # TV of an i.i.d. sample from the exact posterior, computed independently
    counts = {}
    for row in iid.samples.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    manual = 0.5 * sum(abs(counts.get(tuple(p.tolist()), 0) / iid.num_samples - float(q))
                       for p, q in zip(exact.partitions, exact.probs, strict=True))
    assert i["tv"] == pytest.approx(manual, rel=1e-9)
    # co-clustering error: mean |difference| over the pairs i < j
    upper = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)
    diff = (gibbs_post.coclustering().double() - exact.coclustering().double()).abs()[upper].mean()
    assert g["coclustering_error"] == pytest.approx(float(diff), rel=1e-5)
    # posterior moments of K
    k = exact.num_clusters.double()
    assert ref["K_mean"] == pytest.approx(float((exact.probs * k).sum()))
    assert g["K_mean"] == pytest.approx(float(gibbs_post.num_clusters.double().mean()))
    assert g["K_sd"] == pytest.approx(float(gibbs_post.num_clusters.double().std(unbiased=False)))
    # AMI (sklearn's definition) of the MAP and of the VI point estimate against the truth; here the exact MAP
    # (most probable of the 203 partitions) merges all six points, which scores 0
    exact_map = exact.partitions[exact.probs.argmax()]
    assert ref["ami_map"] == pytest.approx(adjusted_mutual_info_score(truth, exact_map), abs=1e-12)
    assert g["ami_map"] == pytest.approx(adjusted_mutual_info_score(truth, gibbs_post.map), abs=1e-12)
    near = torch.tensor([0, 1, 1, 1, 0, 0])  # a near miss of the truth [0, 1, 2, 2, 0, 0]
    assert torch.equal(truth, torch.tensor([0, 1, 2, 2, 0, 0]))
    scored = compare({"truth": ClusteringPosterior(torch.stack([truth + 3] * 6 + [near])),
                      "near": ClusteringPosterior(torch.stack([truth] * 2 + [near] * 5))}, truth=truth)
    assert scored["truth"]["ami_map"] == pytest.approx(1.0) and scored["truth"]["ami_point"] == pytest.approx(1.0)
    assert scored["near"]["ami_map"] == pytest.approx(adjusted_mutual_info_score(truth, near), abs=1e-12)
    assert scored["near"]["ami_map"] < 0.9
    # MCMC diagnostics for sample-based runs, none for the weighted exact posterior
    assert g["ess_loglik"] is not None and g["ess_loglik"] > 10
    assert g["rhat_loglik"] == pytest.approx(1.0, abs=0.1)
    assert ref["ess_K"] is None
    assert g["wall_time"] > 0


def test_compare_reference_by_name_and_outputs(case):
    _, _, _, exact, gibbs_post, iid = case
    table = compare({"gibbs": gibbs_post, "iid": iid}, reference="gibbs")
    assert len(table) == 2 and "tv" not in table.columns
    assert table["gibbs"]["coclustering_error"] == pytest.approx(0.0, abs=1e-6)
    text = str(table)
    assert "gibbs" in text and "iid" in text and "coclustering_error" in text
    frame = table.to_pandas()
    assert list(frame.index) == ["gibbs", "iid"] and "K_mean" in frame.columns
    as_dict = table.to_dict()
    assert set(as_dict) == {"gibbs", "iid"} and "samples" in as_dict["iid"]
    with pytest.raises(KeyError):
        table["nope"]


def test_compare_bad_input(case):
    _, _, truth, exact, gibbs_post, _ = case
    with pytest.raises(ValueError, match="non-empty"):
        compare({})
    with pytest.raises(TypeError, match="ClusteringPosterior"):
        compare({"a": torch.zeros(3, 6)})
    with pytest.raises(ValueError, match="truth"):
        compare({"g": gibbs_post}, truth=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="reference"):
        compare({"g": gibbs_post}, reference="missing")
    other = ClusteringPosterior(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="points"):
        compare({"g": gibbs_post, "o": other})


# ---------------------------------------------------------------------------------------------- SBC
def test_rank_statistic_breaks_ties_uniformly():
    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([1.0, 2.0, 2.0, 2.0, 3.0])
    truth = torch.full((20000,), 2.0)
    ranks = rank_statistic(truth, draws.expand(20000, 5), generator)
    counts = torch.bincount(ranks, minlength=6).double() / 20000
    # below = 1, ties = 3: ranks 1..4 equally likely
    assert counts[0] == 0 and counts[5] == 0
    assert torch.allclose(counts[1:5], torch.full((4,), 0.25, dtype=torch.float64), atol=0.015)


def test_uniformity_pvalue_detects_non_uniform_ranks():
    rng = np.random.default_rng(0)
    assert uniformity_pvalue(rng.integers(0, 20, 500), 20) > 0.01
    assert uniformity_pvalue(np.minimum(rng.integers(0, 20, 500), rng.integers(0, 20, 500)), 20) < 1e-6
    # agrees with scipy's chi-square on equal bins
    ranks = rng.integers(0, 10, 200)
    expected = stats.chisquare(np.bincount(ranks, minlength=10)).pvalue
    assert uniformity_pvalue(ranks, 10, num_bins=10) == pytest.approx(expected)


def test_sbc_of_the_exact_posterior_is_uniform_and_a_wrong_one_is_not():
    model = CRPGaussianMixture(mean_scale=2.0)
    result = sbc(model, lambda x, seed: exact_posterior(model, x), num_simulations=150, num_points=4,
                 num_posterior_samples=19, seed=0)
    assert isinstance(result, SBCResult)
    assert set(result.ranks) == {"num_clusters", "largest_share", "log_likelihood"}
    assert all(r.shape == (150,) and r.min() >= 0 and r.max() <= 19 for r in result.ranks.values())
    assert min(result.p_values.values()) > 1e-3, result.p_values
    wrong = CRPGaussianMixture(alpha=5.0, mean_scale=2.0)
    bad = sbc(model, lambda x, seed: exact_posterior(wrong, x), num_simulations=150, num_points=4,
              num_posterior_samples=19, seed=0)
    assert bad.p_values["num_clusters"] < 1e-4
    assert "num_clusters" in str(result)


def test_sbc_with_gibbs_samples_and_plot(tmp_path):
    model = CRPGaussianMixture(mean_scale=2.0)

    seeds = []

    def posterior_fn(x, seed):
        seeds.append(seed)
        return gibbs(model, x, num_samples=10, warmup_steps=5, num_chains=2, seed=seed, progress_bar=False)

    result = sbc(model, posterior_fn, num_simulations=6, num_points=5, num_posterior_samples=9, seed=1)
    assert result.num_simulations == 6 and result.num_posterior_samples == 9
    assert len(set(seeds)) == 6  # every data set gets its own seed
    fig = plot_sbc(result, path=tmp_path / "sbc.png")
    assert len(fig.axes) == 2 * len(result.ranks)
    assert (tmp_path / "sbc.png").stat().st_size > 0
    # 6 simulations: 2 bins of the 10 ranks ({0..4}, {5..9}), 3 expected in each, scipy's chi-square
    for name, ranks in result.ranks.items():
        assert ranks.min() >= 0 and ranks.max() <= 9
        low = int((ranks < 5).sum())
        assert result.p_values[name] == pytest.approx(stats.chisquare([low, 6 - low], [3, 3]).pvalue), name


def test_sbc_bad_input():
    model = CRPGaussianMixture()
    with pytest.raises(ValueError, match="num_simulations"):
        sbc(model, lambda x, seed: None, num_simulations=0)
    with pytest.raises(TypeError, match="ClusteringPosterior"):
        sbc(model, lambda x, seed: torch.zeros(3), num_simulations=1, num_points=3, num_posterior_samples=2)
    with pytest.raises(ValueError, match="samples"):
        sbc(model, lambda x, seed: ClusteringPosterior(torch.zeros(2, 3, dtype=torch.long)), num_simulations=1,
            num_points=3, num_posterior_samples=5)
    with pytest.raises(TypeError, match="callable"):
        sbc(model, "not a function", num_simulations=1)
    with pytest.raises(TypeError, match="seed keyword"):
        sbc(model, lambda x: exact_posterior(model, x), num_simulations=1)
    with pytest.raises(TypeError, match="SBCResult"):
        plot_sbc({"ranks": []})


def test_single_chain_gets_ess_but_no_rhat():
    """200 independent draws have an ESS near 200 (measured 145); the same 20 draws each repeated 10 times in a
    row, near 20 (measured 22): the ESS reads the order of the draws, not their number."""
    samples = torch.randint(0, 3, (200, 6), generator=torch.Generator().manual_seed(0))
    row = compare({"acp": ClusteringPosterior(samples, method="acp")})["acp"]
    assert row["rhat_K"] is None and row["ess_K"] > 100
    sticky = compare({"acp": ClusteringPosterior(samples[:20].repeat_interleave(10, 0), method="acp")})["acp"]
    assert sticky["rhat_K"] is None and 10 < sticky["ess_K"] < 40
