"""``infer`` on an ordered model: labels are cluster positions from the guide's order, never renumbered."""

import pytest
import torch

import pyro_acp
from pyro_acp.guides import ACPS
from pyro_acp.guides.clusterwise import FinishedClusters
from pyro_acp.inference.many import dataset_seed
from pyro_acp.models import CRPGaussianMixture, OrderedGaussianCatalog
from pyro_acp.posteriors import OrderedClusteringPosterior


class LargestFirst(ACPS):
    """An ACP-S whose "pointer network" places clusters by decreasing size (a fixed rule, easy to check)."""

    orders_clusters = True

    def order_clusters(self, clusters: FinishedClusters, generator=None) -> torch.Tensor:
        num_clusters = clusters.summaries.shape[1]
        slots = torch.arange(num_clusters, device=clusters.labels.device)
        sizes = (clusters.labels.unsqueeze(1) == slots.view(1, -1, 1)).sum(-1)  # (T, K); 0 beyond K_t
        return sizes.argsort(dim=-1, descending=True, stable=True)


@pytest.fixture(scope="module")
def data():
    x, _ = OrderedGaussianCatalog().simulate(1, num_points=25, seed=0).unpadded(0)
    return x


def test_ordered_model_gives_positions_in_the_guides_order(data):
    guide = LargestFirst(2, hidden_dim=16)
    post = pyro_acp.infer(OrderedGaussianCatalog(), data, num_samples=30, guide=guide, seed=0, symmetrize=False,
                           progress_bar=False)
    assert isinstance(post, OrderedClusteringPosterior)
    assert post.log_prob is None  # no pointer network (order_log_prob_of): nothing scores the order
    sizes = torch.stack([(post.samples == k).sum(-1) for k in range(int(post.samples.max()) + 1)], -1)
    used = sizes > 0
    assert torch.equal(used, used.cummin(-1).values)  # positions 0..K-1, every one used
    ordered_sizes = sizes.masked_fill(~used, 0)
    assert (ordered_sizes[:, :-1] >= ordered_sizes[:, 1:]).all()  # largest first, as the guide ordered them
    unordered = pyro_acp.infer(CRPGaussianMixture(), data, num_samples=30, guide=guide, seed=0,
                               symmetrize=False, progress_bar=False)
    assert type(unordered) is pyro_acp.ClusteringPosterior  # an unordered model: canonical labels, as before
    assert torch.equal(unordered.samples, pyro_acp.ClusteringPosterior(post.samples).samples)  # the same draws


def test_ordered_model_refuses_a_guide_that_cannot_order_and_finds_the_shipped_one(data, tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_ACP_CACHE", str(tmp_path))
    with pytest.raises(NotImplementedError, match="orders its clusters"):
        pyro_acp.infer(OrderedGaussianCatalog(), data, guide=ACPS(2, hidden_dim=16), progress_bar=False)
    assert not list(tmp_path.iterdir())  # refused before training anything
    shipped = pyro_acp.infer(OrderedGaussianCatalog(), data, num_samples=5, seed=0, progress_bar=False)
    assert isinstance(shipped, OrderedClusteringPosterior)  # the default model: the shipped NOC, found by its card
    assert not list(tmp_path.iterdir())  # nothing trained on demand
    # NOC scores its orders: log q(clustering, order) with its error (checked against enumeration in test_noc.py)
    assert shipped.log_prob is not None and torch.isfinite(shipped.log_prob).all() and (shipped.log_prob < 0).all()
    assert torch.isfinite(shipped.log_prob_error).all()
    many = pyro_acp.infer_many(OrderedGaussianCatalog(), [data], num_samples=5, seed=3, progress_bar=False)[0]
    alone = pyro_acp.infer(OrderedGaussianCatalog(), data, num_samples=5, seed=dataset_seed(3, 0),
                           progress_bar=False)
    assert torch.equal(many.samples, alone.samples)
    assert torch.allclose(many.log_prob, alone.log_prob, atol=1e-4)  # infer_many scores orders as infer does


def test_reweighting_is_refused_before_sampling_when_the_guide_cannot_score_orders(data):
    guide = LargestFirst(2, hidden_dim=16)
    guide.trained_for = OrderedGaussianCatalog().config()
    with pytest.raises(ValueError, match="does not score orders"):
        pyro_acp.infer(OrderedGaussianCatalog(), data, guide=guide, reweight=True, progress_bar=False)
    with pytest.raises(ValueError, match="does not score orders"):
        pyro_acp.infer_many(OrderedGaussianCatalog(), [data], guide=guide, reweight=True, progress_bar=False)
