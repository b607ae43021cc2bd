"""Greedy ascent from a MAP sample to a local mode of the exact posterior (pyro_acp.reference.map_ascent)."""

import pytest
import torch

import pyro_acp
from pyro_acp.data.partitions import canonicalize
from pyro_acp.guides import ACPS
from pyro_acp.models import CRPGaussianMixture, NIWGaussianMixture
from pyro_acp.reference.gibbs_kernel import CollapsedGibbs
from pyro_acp.reference.map_ascent import ascend_to_mode, best_merges


def _neighbours(labels: torch.Tensor) -> torch.Tensor:
    """Every partition one point move (to another or a new cluster) or one merge away from ``labels``."""
    k = int(labels.max()) + 1
    rows = []
    for i in range(labels.shape[0]):
        for slot in range(k + 1):
            if slot != int(labels[i]):
                moved = labels.clone()
                moved[i] = slot
                rows.append(moved)
    for a in range(k):
        for b in range(a + 1, k):
            rows.append(torch.where(labels == b, torch.tensor(a), labels))
    return canonicalize(torch.stack(rows))


def test_the_ascent_ends_at_a_local_mode_no_worse_than_its_start():
    model = CRPGaussianMixture(sigma=2.0)  # overlapping clusters: random starts are far from a mode
    for seed in range(4):
        x, _ = model.simulate(1, num_points=9, seed=seed).unpadded(0)
        data = model.check_data(x).double()
        starts = torch.randint(0, 4, (5, 9), generator=torch.Generator().manual_seed(seed))
        modes, log_joint = ascend_to_mode(model, x, starts)
        start_joint = model.log_joint(data, canonicalize(starts)).double()
        assert (log_joint >= start_joint - 1e-9).all()
        assert torch.allclose(log_joint, model.log_joint(data, modes).double())
        assert (log_joint > start_joint + 1e-6).any()  # it moved: random starts are not modes
        for mode, value in zip(modes, log_joint, strict=True):
            neighbours = model.log_joint(data, _neighbours(mode)).double()
            assert float(neighbours.max()) <= float(value) + 1e-9  # no point move and no merge improves it


def test_the_exact_map_is_a_fixed_point_and_is_reached_from_the_prior():
    model = CRPGaussianMixture()
    reached = 0
    for seed in range(5):
        x, _ = model.simulate(1, num_points=7, seed=100 + seed).unpadded(0)
        exact_map = pyro_acp.exact_posterior(model, x).map
        mode, _ = ascend_to_mode(model, x, exact_map)
        assert torch.equal(mode[0], exact_map)
        singletons, _ = ascend_to_mode(model, x, torch.arange(7))  # every point alone: merges must do the work
        reached += int(torch.equal(singletons[0], exact_map))
    assert reached >= 4, reached


def test_best_merges_picks_the_most_probable_merge_of_each_row():
    model = CRPGaussianMixture()
    x = torch.tensor([[0.0, 0.0], [0.3, 0.1], [10.0, 10.0], [10.2, 9.9], [0.1, -0.2]])
    data = model.check_data(x).double()
    labels = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 2, 3, 4], [0, 0, 1, 1, 1]])
    current = model.log_joint(data, labels).double()
    merged, value = best_merges(model, data, labels, current)
    assert merged[0].tolist() == [0, 0, 1, 1, 0]  # the stray point joins its neighbours
    assert (value >= current).all() and (value[:2] > current[:2]).all()
    assert merged[2].tolist() == [0, 0, 1, 1, 1]  # no merge helps two far-apart groups: kept


def test_refined_map_of_an_infer_posterior_is_at_least_the_map():
    model = NIWGaussianMixture(dim=2)
    x, _ = model.simulate(1, num_points=60, seed=3).unpadded(0)
    guide = ACPS(2, hidden_dim=16)
    guide.trained_for = model.config()
    post = pyro_acp.infer(model, x, guide=guide, num_samples=20, seed=0, progress_bar=False, check_prior=False,
                          estimate_log_prob=False)
    refined = post.refined_map(num_starts=3)
    data = model.check_data(x).double()
    before, after = (float(model.log_joint(data, labels.unsqueeze(0)).double()) for labels in (post.map, refined))
    assert after > before  # an untrained guide's best sample is far from a mode
    assert torch.equal(refined, post.refined_map(num_starts=3))  # cached, deterministic


def test_refined_map_and_greedy_kernel_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="needs the model"):
        pyro_acp.ClusteringPosterior(torch.zeros(3, 4, dtype=torch.long)).refined_map()
    with pytest.raises(ValueError, match="greedy=True"):
        CollapsedGibbs(CRPGaussianMixture(), greedy=True, split_merge=True)
    with pytest.raises(TypeError, match="ascend_to_mode needs"):
        ascend_to_mode(object(), torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
