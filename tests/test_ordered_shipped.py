"""The shipped NOC guide for OrderedGaussianCatalog(): found by the registry from its card, the card carries its
measured figures, and it orders a tiny catalog close to the exact ordered posterior."""


import pytest
import torch

import pyro_acp
from pyro_acp.diagnostics.ordered_metrics import ordered_total_variation
from pyro_acp.models import OrderedGaussianCatalog
from pyro_acp.posteriors import OrderedClusteringPosterior
from pyro_acp.pretrained.registry import find_guide
from tests.helpers import shipped_guide

SHIPPED = "ordered_gaussian_catalog_2d"


def test_the_registry_finds_the_shipped_guide_by_its_card():
    path, card = shipped_guide(SHIPPED)
    assert find_guide(OrderedGaussianCatalog()) == path
    assert find_guide(OrderedGaussianCatalog(max_cluster_size=10)) != path  # another model: not served
    assert card["guide"]["type"] == "NOCS" and card["model"]["type"] == "OrderedGaussianCatalog"
    table = card["evaluation"]["table"]
    assert {"NOC", "ACP + pointer", "DP-GMM two-stage"} <= set(table)
    assert all(0 <= row["v_measure"] <= 1 for row in table.values())
    assert {"over_cap_clusters", "best_achievable_v_measure"} <= set(card["statements"])


@pytest.mark.slow
def test_shipped_guide_against_the_exact_ordered_posterior():
    model = OrderedGaussianCatalog()
    x, _ = model.simulate(1, num_points=5, seed=7501).unpadded(0)
    with torch.random.fork_rng():
        post = pyro_acp.infer(model, x, num_samples=1000, seed=0, progress_bar=False,
                              estimate_log_prob=False)  # the shipped guide; TV needs the samples only
    assert isinstance(post, OrderedClusteringPosterior)
    tv = ordered_total_variation(post, pyro_acp.exact_ordered_posterior(model, x))
    assert tv < 0.2, tv


def test_reweighting_by_the_exact_ordered_joint_repairs_the_shipped_guide_at_small_n():
    model = OrderedGaussianCatalog()
    x, _ = model.simulate(1, num_points=4, seed=7401).unpadded(0)  # a set where the raw guide is off
    exact = pyro_acp.exact_ordered_posterior(model, x)
    post = pyro_acp.infer(model, x, num_samples=2000, seed=0, progress_bar=False, check_prior=False, reweight=True)
    assert post.log_joint is not None and post.weights is not None and not post.log_prob_pending
    assert post.map_index == int(post.log_joint.argmax())  # ranked exactly, not by the guide's estimate
    raw = ordered_total_variation(OrderedClusteringPosterior(post.samples), exact)
    weighted = ordered_total_variation(post, exact)
    # 2,000 draws of 75 ordered partitions: the weighted samples' Monte-Carlo TV is about 0.01 (measured over
    # 4 such sets: 0.010 +- 0.007 against the raw 0.090 +- 0.038, benchmarks/bench_ordered_baselines.py --tv-only)
    assert weighted < 0.05 and weighted < raw, (weighted, raw)
    with pytest.raises(ValueError, match="does not give for a data set of 40 points"):
        pyro_acp.infer(model, model.simulate(1, num_points=40, seed=1).unpadded(0)[0], reweight=True,
                       progress_bar=False, check_prior=False)


def test_infer_many_refuses_reweighting_above_the_cap_before_any_work(tmp_path):
    model = OrderedGaussianCatalog()
    small = model.simulate(1, num_points=5, seed=1).unpadded(0)[0]
    large = model.simulate(1, num_points=40, seed=2).unpadded(0)[0]
    with pytest.raises(ValueError, match="'big'.*does not give for a data set of 40 points"):
        pyro_acp.infer_many(model, {"small": small, "big": large}, reweight=True, output=tmp_path / "out",
                            progress_bar=False, check_prior=False)
    assert not (tmp_path / "out" / "small" / "posterior.npz").exists()  # nothing was run, nothing written
