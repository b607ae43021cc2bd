"""Generative models: Pyro sites, simulated batches and masks, the exact Gaussian collapsed likelihood."""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
from torch.distributions import MultivariateNormal

from pyro_acp.data.partitions import canonicalize, enumerate_partitions
from pyro_acp.models import (
    SBM,
    CRPGaussianMixture,
    LogDegreeSBM,
    MFMGaussianMixture,
    OrderedGaussianCatalog,
    PitmanYorGaussianMixture,
    ProceduralCatalog,
    model_from_config,
)

ALL_MODELS = [
    CRPGaussianMixture,
    PitmanYorGaussianMixture,
    MFMGaussianMixture,
    SBM,
    LogDegreeSBM,
    OrderedGaussianCatalog,
    ProceduralCatalog,
]
MIXTURES = [CRPGaussianMixture, PitmanYorGaussianMixture, MFMGaussianMixture]


def _small_range(model) -> tuple[int, int]:
    """A cheap simulation range inside each model's valid sizes."""
    if isinstance(model, ProceduralCatalog):
        return 35, 51
    if isinstance(model, LogDegreeSBM):
        return 40, 70
    return 5, 40


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_trace_shows_labels_and_x(cls):
    model = cls()
    pyro.set_rng_seed(0)
    trace = pyro.poutine.trace(model.model).get_trace(num_points=40)
    assert "labels" in trace.nodes and "x" in trace.nodes
    labels = trace.nodes["labels"]["value"]
    x = trace.nodes["x"]["value"]
    assert labels.shape == (40,)
    assert labels.min() >= 0
    expected = (40, 40) if model.data_kind == "graph" else (40, model.data_dim)
    assert x.shape == expected
    assert model(num_points=40).shape == expected  # __call__ is the same program


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_observed_x_is_conditioned(cls):
    model = cls()
    pyro.set_rng_seed(1)
    x = pyro.poutine.trace(model.model).get_trace(num_points=40).nodes["x"]["value"]
    trace = pyro.poutine.trace(model.model).get_trace(obs=x)
    assert trace.nodes["x"]["is_observed"]
    assert torch.equal(trace.nodes["x"]["value"], x)


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_simulated_batch_shapes_and_teacher_forcing_masks(cls):
    model = cls()
    lo, hi = _small_range(model)
    batch = model.simulate(12, num_points=(lo, hi), seed=3)
    n_real = batch.num_points
    assert batch.x.shape == (12, int(n_real.max()), model.data_dim)
    assert ((n_real >= lo) & (n_real < hi)).all()
    assert len(set(n_real.tolist())) > 1, "N should vary within a batch"
    assert batch.ordered == model.ordered
    assert (batch.x[~batch.mask] == 0).all()
    # Labels are 0..K_b-1 exactly on the real points.
    assert ((batch.labels >= 0) == batch.mask).all()
    k_real = batch.num_clusters
    assert torch.equal(batch.labels.max(1).values + 1, k_real)
    if not isinstance(model, LogDegreeSBM):
        assert len(set(k_real.tolist())) > 1, "K should vary within a batch"
    _check_teacher_forcing(batch)
    if model.data_kind == "graph":
        adj = batch.adjacency
        assert adj.shape == (12, batch.max_points, batch.max_points)
        assert torch.equal(adj, adj.transpose(1, 2))
        assert (adj.diagonal(dim1=1, dim2=2) == 0).all()
        assert (adj[~batch.mask] == 0).all()


def _check_teacher_forcing(batch) -> None:
    """Members partition the points; anchor is one member; available/assigned follow the step order."""
    members, anchor = batch.members, batch.anchor
    step = batch.step_mask
    real_members = members & step.unsqueeze(-1)
    assert torch.equal(real_members.sum(1), batch.mask.long()), "every real point in exactly one cluster"
    assert torch.equal(anchor.sum(-1), step.long()), "one anchor per real step"
    assert not (anchor & ~members).any(), "the anchor is a member"
    assigned = torch.cumsum(real_members.long(), 1) - real_members.long() > 0
    assert torch.equal(batch.assigned, assigned & step.unsqueeze(-1))
    available = batch.mask.unsqueeze(1) & ~assigned & ~anchor & step.unsqueeze(-1)
    assert torch.equal(batch.available, available)
    for b in range(batch.batch_size):  # step k's members are the points labelled k
        for k in range(int(batch.num_clusters[b])):
            assert torch.equal(members[b, k], batch.labels[b] == k)


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_simulate_is_seeded_and_leaves_global_rng_alone(cls):
    model = cls()
    lo, hi = _small_range(model)
    state = torch.get_rng_state()
    a = model.simulate(4, num_points=(lo, hi), seed=11)
    b = model.simulate(4, num_points=(lo, hi), seed=11)
    c = model.simulate(4, num_points=(lo, hi), seed=12)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels) and torch.equal(a.anchor, b.anchor)
    assert a.x.shape != c.x.shape or not torch.equal(a.x, c.x)


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_config_round_trip(cls):
    model = cls()
    config = json.loads(json.dumps(model.config()))
    assert config["type"] == cls.__name__
    rebuilt = model_from_config(config)
    assert type(rebuilt) is cls and rebuilt == model


def test_config_carries_hyperparameters():
    model = CRPGaussianMixture(dim=3, alpha=1.5, sigma=0.5, mean_scale=4.0)
    assert model.config() == {"type": "CRPGaussianMixture", "dim": 3, "alpha": 1.5, "sigma": 0.5, "mean_scale": 4.0}
    assert model.data_dim == 3 and model.data_kind == "vector" and not model.ordered
    assert model != CRPGaussianMixture()
    with pytest.raises(ValueError, match="unknown model type"):
        model_from_config({"type": "Nope"})


def test_fixed_num_points_and_default_range():
    model = CRPGaussianMixture()
    assert model.simulate(3, num_points=17, seed=0).num_points.tolist() == [17, 17, 17]
    n = model.simulate(32, seed=0).num_points
    assert n.min() >= 50 and n.max() < 200


# ---------------------------------------------------------------------------------------------- exact likelihood


def _mvn_log_marginal(x: torch.Tensor, labels: torch.Tensor, sigma: float, scale: float) -> float:
    """Independent reference: each cluster, each dimension, is N(0, sigma^2 I + scale^2 11^T)."""
    total = 0.0
    for k in labels.unique().tolist():
        pts = x[labels == k].double()
        n = pts.shape[0]
        cov = sigma**2 * torch.eye(n, dtype=torch.float64) + scale**2 * torch.ones(n, n, dtype=torch.float64)
        mvn = MultivariateNormal(torch.zeros(n, dtype=torch.float64), covariance_matrix=cov)
        total += float(mvn.log_prob(pts.T).sum())
    return total


@pytest.mark.parametrize("sigma,scale", [(1.0, 10.0), (0.7, 2.0)])
def test_gaussian_log_marginal_matches_multivariate_normal(sigma, scale):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 3, generator=gen) * 3).double()
    model = CRPGaussianMixture(dim=3, sigma=sigma, mean_scale=scale)
    partitions = enumerate_partitions(6)
    ours = model.log_marginal_likelihood(x, partitions)
    assert ours.shape == (len(partitions),)
    picks = torch.randperm(len(partitions), generator=gen)[:25]
    for i in picks.tolist():
        assert ours[i].item() == pytest.approx(_mvn_log_marginal(x, partitions[i], sigma, scale), abs=1e-8)


def test_log_marginal_is_relabelling_invariant_and_broadcasts():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 2, generator=gen).double()
    model = PitmanYorGaussianMixture()
    partitions = enumerate_partitions(7)[::17]
    relabelled = torch.tensor([5, 2, 9, 0, 7, 3, 1])[partitions]  # injective map of cluster ids
    assert torch.allclose(model.log_marginal_likelihood(x, partitions),
                          model.log_marginal_likelihood(x, relabelled))
    batched = model.log_marginal_likelihood(x, partitions.view(-1, 1, 7))
    assert batched.shape == (len(partitions), 1)
    assert torch.allclose(batched.squeeze(1), model.log_marginal_likelihood(x, partitions))


def test_log_joint_is_prior_plus_likelihood_and_normalises_to_a_posterior():
    gen = torch.Generator().manual_seed(2)
    truth = torch.tensor([0, 0, 0, 1, 1, 2])
    centres = torch.tensor([[0.0, 0.0], [30.0, 0.0], [0.0, -30.0]])
    x = (centres[truth] + 0.3 * torch.randn(6, 2, generator=gen)).double()
    model = CRPGaussianMixture()
    partitions = enumerate_partitions(6)
    joint = model.log_joint(x, partitions)
    prior = model.partition_prior(6).log_prob(partitions)
    assert torch.allclose(joint, prior.double() + model.log_marginal_likelihood(x, partitions), atol=1e-6)
    post = torch.softmax(joint, 0)
    assert torch.equal(partitions[post.argmax()], canonicalize(truth))
    assert post.max() > 0.9


def test_gaussian_log_predictive_equals_ratio_of_marginals():
    gen = torch.Generator().manual_seed(3)
    x = (4 * torch.randn(8, 2, generator=gen)).double()
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2])
    model = CRPGaussianMixture(sigma=0.8, mean_scale=5.0)
    i = 5
    pred = model.log_predictive(x, labels, i)
    assert pred.shape == (4,)  # 3 clusters + a new one
    others = torch.arange(8) != i
    for k in range(4):
        with_i = labels.clone()
        with_i[i] = k
        rest = labels[others]
        joined = _mvn_log_marginal(x, with_i, 0.8, 5.0) - _mvn_log_marginal(x[others], rest, 0.8, 5.0)
        assert pred[k].item() == pytest.approx(joined, abs=1e-8)
    batched = model.log_predictive(x, torch.stack([labels, labels]), i)
    assert torch.allclose(batched, pred.expand(2, 4))
    spare = model.log_predictive(x, labels, i, num_clusters=5)  # empty slots 3, 4 act as "new"
    assert torch.allclose(spare[:3], pred[:3]) and torch.allclose(spare[3:], pred[3].expand(3))
    with pytest.raises(ValueError, match="index"):
        model.log_predictive(x, labels, 8)
    with pytest.raises(ValueError, match="num_clusters"):
        model.log_predictive(x, labels, 0, num_clusters=2)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_num_points_raises(bad):
    model = CRPGaussianMixture()
    with pytest.raises(ValueError, match="num_points"):
        model.model(num_points=bad)
    with pytest.raises(ValueError, match="num_points"):
        model.simulate(2, num_points=bad)


def test_bad_simulate_arguments_raise():
    model = CRPGaussianMixture()
    with pytest.raises(ValueError, match="batch_size"):
        model.simulate(0)
    with pytest.raises(ValueError, match="hi > lo"):
        model.simulate(2, num_points=(20, 20))
    with pytest.raises(ValueError, match="seed"):
        model.simulate(2, seed=1.5)
    with pytest.raises(ValueError, match="give num_points or obs"):
        model.model()


@pytest.mark.parametrize("cls", MIXTURES)
def test_bad_obs_raises(cls):
    model = cls()
    good = torch.randn(10, 2)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        model.model(obs=torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        model.model(obs=torch.randn(10))
    for value in (math.nan, math.inf):
        bad = good.clone()
        bad[3, 1] = value
        with pytest.raises(ValueError, match="NaN or inf"):
            model.model(obs=bad)
    with pytest.raises(ValueError, match="num_points=9 but obs has 10"):
        model.model(num_points=9, obs=good)
    with pytest.raises(ValueError, match="at least 1"):
        model.check_data(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="labels have 5 points"):
        model.log_marginal_likelihood(good, torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("kwargs,name", [
    ({"alpha": 0.0}, "alpha"), ({"alpha": -1.0}, "alpha"), ({"sigma": 0.0}, "sigma"),
    ({"mean_scale": math.inf}, "mean_scale"), ({"dim": 0}, "dim"),
])
def test_bad_hyperparameters_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CRPGaussianMixture(**kwargs)


def test_bad_pitman_yor_discount_raises():
    with pytest.raises(ValueError, match="discount"):
        PitmanYorGaussianMixture(discount=1.0)
    with pytest.raises(ValueError, match="discount"):
        PitmanYorGaussianMixture(discount=-0.1)
