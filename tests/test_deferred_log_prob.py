"""``infer`` defers the guide's log q to its first read: the same numbers whenever read, made once, refused when
the guide has changed, carried through graph posteriors, and made at once when reweighting needs them."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

import pyro_acp
from pyro_acp.diagnostics.importance import ImportanceWeightWarning
from pyro_acp.guides import ACPS, NOC
from pyro_acp.models import SBM, CRPGaussianMixture, OrderedGaussianCatalog
from pyro_acp.posteriors import GraphClusteringPosterior
from pyro_acp.posteriors.deferred import GuideChangedError, defer_estimate


def _guide(model, **kwargs) -> ACPS:
    torch.manual_seed(0)
    guide = ACPS(model.data_dim, hidden_dim=16, **kwargs).eval()
    guide.trained_for = model.config()  # untrained, but recorded for the model: infer does not warn
    return guide


@pytest.fixture(scope="module")
def mixture_data() -> torch.Tensor:
    return CRPGaussianMixture().simulate(1, num_points=12, seed=1).unpadded(0)[0]


def _infer(model, x, guide, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportanceWeightWarning)  # an untrained guide is a poor proposal
        return pyro_acp.infer(model, x, guide=guide, num_samples=20, seed=kwargs.pop("seed", 0), progress_bar=False,
                              check_prior=False, **kwargs)


def test_defer_estimate_replays_the_stream_it_was_given_and_runs_once():
    generator = torch.Generator().manual_seed(3)
    twin = torch.Generator()
    twin.set_state(generator.get_state())
    eager = torch.rand(5, generator=twin)
    calls = []

    def estimate(stream):
        calls.append(1)
        return torch.rand(5, generator=stream), torch.full((5,), 0.1)

    deferred = defer_estimate(torch.nn.Linear(2, 2), estimate, generator)
    torch.rand(100, generator=generator)  # the caller's stream moves on
    assert deferred.pending and deferred.seconds is None and not calls
    log_prob, error = deferred.value()
    assert torch.equal(log_prob, eager) and torch.equal(error, torch.full((5,), 0.1))
    assert deferred.value()[0] is log_prob and len(calls) == 1 and not deferred.pending and deferred.seconds >= 0


def test_infer_defers_log_q_and_its_numbers_do_not_depend_on_when_it_is_read(mixture_data):
    model = CRPGaussianMixture()
    guide = _guide(model)
    first = _infer(model, mixture_data, guide)
    assert first.log_prob_pending and first.log_prob_seconds is None
    log_prob, error = first.log_prob, first.log_prob_error
    assert not first.log_prob_pending and first.log_prob_seconds > 0
    assert log_prob.shape == (20,) and torch.isfinite(log_prob).all() and (error >= 0).all()
    later = _infer(model, mixture_data, guide)
    torch.rand(1000)  # other work on torch's global stream and another call, before the first read
    _infer(model, mixture_data, guide, seed=1).log_prob  # noqa: B018
    assert torch.equal(later.samples, first.samples)
    assert torch.equal(later.log_prob, log_prob) and torch.equal(later.log_prob_error, error)
    summary = _infer(model, mixture_data, guide).summary()  # the summary reads the estimate of the MAP
    assert summary.map_probability == pytest.approx(float(log_prob[first.map_index].exp()))
    assert summary.map_probability_error == pytest.approx(float(error[first.map_index]))


def test_deferred_numbers_equal_those_made_in_the_call(mixture_data):
    model = CRPGaussianMixture()
    guide = _guide(model)
    now = _infer(model, mixture_data, guide, estimate_log_prob="now")
    assert not now.log_prob_pending and now.log_prob_seconds is None
    deferred = _infer(model, mixture_data, guide)
    assert torch.equal(deferred.samples, now.samples)
    assert torch.equal(deferred.log_prob, now.log_prob) and torch.equal(deferred.log_prob_error, now.log_prob_error)
    with pytest.raises(ValueError, match="estimate_log_prob must be True"):
        _infer(model, mixture_data, guide, estimate_log_prob="later")


def test_the_estimate_scores_the_data_as_they_were_sampled(mixture_data):
    model = CRPGaussianMixture()
    guide = _guide(model)
    x = mixture_data.clone()
    expected = _infer(model, x, guide, estimate_log_prob="now").log_prob
    post = _infer(model, x, guide)
    x.mul_(3.0)  # the caller reuses its tensor before reading
    assert torch.equal(post.log_prob, expected)


def test_reading_the_guide_is_no_change_but_buffers_and_fused_steps_are(mixture_data):
    model = CRPGaussianMixture()
    guide = _guide(model)
    expected = _infer(model, mixture_data, guide).log_prob
    post = _infer(model, mixture_data, guide)
    guide.train()
    with torch.no_grad():
        guide.encode_data(mixture_data.unsqueeze(0), torch.ones(1, 12, dtype=torch.bool))
    guide.to("cpu")
    assert torch.equal(post.log_prob, expected) and guide.training  # scored in the eval mode it sampled in
    guide.eval()
    post = _infer(model, mixture_data, guide)
    for p in guide.parameters():
        p.grad = torch.ones_like(p)
    torch.optim.Adam(guide.parameters(), lr=1e-3, fused=True).step()  # in place, without a version bump
    with pytest.raises(GuideChangedError):
        post.log_prob  # noqa: B018
    graph_guide = _guide(SBM(), encoder="gatedgcn")
    adjacency = SBM().simulate(1, num_points=10, seed=3).adjacency[0]
    post = _infer(SBM(), adjacency, graph_guide)
    buffers = [b for b in graph_guide.buffers() if b.is_floating_point()]
    assert buffers  # the graph encoder's batch-norm statistics
    buffers[0].add_(0.5)
    with pytest.raises(GuideChangedError):
        post.log_prob  # noqa: B018


def test_reweighting_estimates_at_once_and_no_estimate_is_none(mixture_data):
    model = CRPGaussianMixture()
    guide = _guide(model)
    weighted = _infer(model, mixture_data, guide, reweight=True)
    assert not weighted.log_prob_pending and weighted.log_prob_seconds is None and weighted.weights is not None
    plain = _infer(model, mixture_data, guide, estimate_log_prob=False)
    assert not plain.log_prob_pending and plain.log_prob is None and plain.log_prob_error is None


def test_a_guide_changed_after_sampling_refuses_to_score_the_samples(mixture_data):
    model = CRPGaussianMixture()
    guide = _guide(model)
    post = _infer(model, mixture_data, guide)
    with torch.no_grad():
        next(guide.parameters()).add_(0.01)  # as an optimiser step would
    with pytest.raises(GuideChangedError, match="changed after these samples were drawn"):
        post.log_prob  # noqa: B018
    reloaded = _guide(model)
    post = _infer(model, mixture_data, reloaded)
    reloaded.load_state_dict(guide.state_dict())
    with pytest.raises(GuideChangedError):
        post.log_prob_error  # noqa: B018
    with pytest.warns(UserWarning, match="summary without the MAP's probability"):
        assert post.summary().map_probability is None  # the rest of the summary is still there
    restored = pickle.loads(pickle.dumps(post))  # a posterior can still be saved; its copy keeps the refusal
    assert torch.equal(restored.samples, post.samples)
    with pytest.raises(GuideChangedError):
        restored.log_prob  # noqa: B018


def test_an_ordered_map_without_a_log_joint_reads_the_deferred_estimate_and_the_point_estimate_does_not():
    model = OrderedGaussianCatalog(max_cluster_size=5)  # 10 points: above the cap, so no exact log joint
    torch.manual_seed(0)
    guide = NOC(2, hidden_dim=16).eval()
    guide.trained_for = model.config()
    x = model.simulate(1, num_points=10, seed=2).unpadded(0)[0]
    post = _infer(model, x, guide)
    assert post.log_prob_pending and post.log_joint is None
    estimate = post.point_estimate()  # its search starts from the most frequent partition, not from log q
    assert post.log_prob_pending and estimate.shape == (10,)
    index = post.map_index  # ranked by log q: runs the estimate
    assert not post.log_prob_pending and index == int(post.log_prob.argmax())


def test_graph_posteriors_keep_the_deferred_estimate_its_errors_and_the_weight_diagnostics():
    model = SBM()
    guide = _guide(model, encoder="gatedgcn")
    adjacency = model.simulate(1, num_points=10, seed=3).adjacency[0]
    post = _infer(model, adjacency, guide)
    assert post.log_prob_pending  # handing the samples to the graph posterior ran nothing
    assert post.log_prob.shape == (20,) and post.log_prob_error is not None and not post.log_prob_pending
    first = _infer(model, adjacency, guide)
    one = GraphClusteringPosterior.from_posterior(first)
    one.log_prob  # noqa: B018  (runs the estimate the two share)
    other = GraphClusteringPosterior.from_posterior(first)  # handed over after it ran
    assert torch.equal(other.log_prob, post.log_prob) and torch.equal(first.log_prob, post.log_prob)
    assert torch.equal(other.log_prob_error, post.log_prob_error)
    weighted = _infer(model, adjacency, guide, reweight=True)
    assert weighted.weight_diagnostics is not None and weighted.log_prob_error is not None


def test_pickling_a_posterior_keeps_the_estimate_not_the_guide(mixture_data):
    model = CRPGaussianMixture()
    guide = _guide(model)
    expected = _infer(model, mixture_data, guide).log_prob
    post = _infer(model, mixture_data, guide)
    restored = pickle.loads(pickle.dumps(post))  # runs the pending estimate first
    assert not post.log_prob_pending and not restored.log_prob_pending
    assert torch.equal(restored.log_prob, expected) and torch.equal(restored.samples, post.samples)
    assert torch.equal(copy.deepcopy(_infer(model, mixture_data, guide)).log_prob_error, post.log_prob_error)
