"""The exact ordered posterior of tiny catalogs (pyro_acp.reference.exact_ordered) against closed forms, the
unordered exact posterior and brute-force simulation of the model's own ordering rule."""

import math

import pytest
import torch

import pyro_acp
from pyro_acp.diagnostics.metrics import total_variation
from pyro_acp.diagnostics.ordered_metrics import ordered_total_variation
from pyro_acp.models import CRPGaussianMixture, OrderedGaussianCatalog
from pyro_acp.models.catalogs import ordered_catalog_labels
from pyro_acp.posteriors import OrderedExactPosterior
from pyro_acp.protocols import exact_log_joint, has_exact_log_joint
from pyro_acp.reference.exact_ordered import exact_ordered_posterior, order_probabilities


def _prob(posterior, labels):
    same = (posterior.partitions == torch.tensor(labels)).all(-1)
    return float(posterior.probs[same].sum())


def test_two_clusters_match_the_closed_form():
    """B's points sum to zero, so its mean's posterior is centred: P(||mu_B||^2 > t) = exp(-t / (2 v_B)), and
    P(A first) = E exp(-||mu_A||^2 / (2 v_B)) = exp(lam s / (1 - 2s)) / (1 - 2s)^(D/2) (the noncentral
    chi-square MGF of ||mu_A||^2 / v_A at s = -v_A / (2 v_B), lam = ||m_A||^2 / v_A)."""
    model = OrderedGaussianCatalog(mean_scale=3.0)
    x = torch.tensor([[1.2, 0.9], [0.8, 0.0], [-0.8, 0.0]], dtype=torch.float64)
    post = exact_ordered_posterior(model, x)
    assert isinstance(post, OrderedExactPosterior)
    a_first, b_first = _prob(post, [0, 1, 1]), _prob(post, [1, 0, 0])
    prior_var = 9.0
    v_a, v_b = 1 / (1 / prior_var + 1), 1 / (1 / prior_var + 2)
    lam = (v_a**2 * (1.2**2 + 0.9**2)) / v_a
    s = -v_a / (2 * v_b)
    closed = math.exp(lam * s / (1 - 2 * s)) / (1 - 2 * s)
    assert a_first / (a_first + b_first) == pytest.approx(closed, abs=1e-7)  # measured 2e-9
    assert 0 < post.integration_error < 1e-4


def test_orders_add_up_to_the_unordered_exact_posterior():
    model = OrderedGaussianCatalog(alpha=1.3, mean_scale=4.0)
    x, _ = model.simulate(1, num_points=5, seed=3).unpadded(0)
    ordered = exact_ordered_posterior(model, x)
    unordered = pyro_acp.exact_posterior(CRPGaussianMixture(alpha=1.3, mean_scale=4.0), x)
    assert total_variation(ordered, unordered) < 1e-9  # total_variation forgets the order
    assert ordered.partitions.shape[0] == 541  # Fubini(5): every order of every partition (no cap at N = 5)
    assert ordered.log_joint is not None and float(ordered.probs.sum()) == pytest.approx(1.0)


def test_order_probabilities_against_monte_carlo():
    loc = torch.tensor([[1.0, 0.5], [1.5, -0.2], [0.3, 1.4]], dtype=torch.float64)
    var = torch.tensor([0.4, 0.3, 0.6], dtype=torch.float64)
    orders = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    probs, error = order_probabilities(loc, var, orders)
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(error.max()) < 1e-4
    generator = torch.Generator().manual_seed(0)
    draws = 400_000
    norms = (loc + var.sqrt().unsqueeze(-1) * torch.randn(draws, 3, 2, generator=generator,
                                                          dtype=torch.float64)).norm(dim=-1)
    observed = (norms.argsort(-1).unsqueeze(1) == orders.unsqueeze(0)).all(-1).double().mean(0)
    sd = (probs * (1 - probs) / draws).sqrt()
    assert ((observed - probs).abs() < 4 * sd).all(), (observed, probs)
    two, _ = order_probabilities(loc[:2], var[:2], torch.tensor([[0, 1], [1, 0]]))
    assert float(two.sum()) == pytest.approx(1.0, abs=1e-12)  # the K = 2 rule telescopes


@pytest.mark.parametrize("cap", [None, 2])
def test_brute_force_simulation_of_the_ordering_rule(cap):
    """Draw the partition from the exact unordered posterior, the means from their conjugate posterior, and
    label the points with the model's own ordering and splitting rule: the frequencies must match."""
    model = OrderedGaussianCatalog(max_cluster_size=cap, mean_scale=3.0)
    x, _ = model.simulate(1, num_points=4, seed=11).unpadded(0)
    x = x.double()
    exact = exact_ordered_posterior(model, x)
    draws = 50_000
    partitions = pyro_acp.exact_posterior(CRPGaussianMixture(mean_scale=3.0), x).sample(draws, seed=0)
    onehot = torch.nn.functional.one_hot(partitions, 4).double()  # (S, N, K)
    count = onehot.sum(1)
    var = 1 / (1 / 9.0 + count)
    loc = var.unsqueeze(-1) * torch.einsum("snk,nd->skd", onehot, x)
    generator = torch.Generator().manual_seed(1)
    means = loc + var.sqrt().unsqueeze(-1) * torch.randn(loc.shape, generator=generator, dtype=torch.float64)
    simulated = ordered_catalog_labels(partitions, means, cap)
    tv = ordered_total_variation(simulated, exact)
    p = exact.probs
    expected = float(0.5 * (2 * p * (1 - p) / (math.pi * draws)).sqrt().sum())  # mean TV of the sampling noise
    assert tv < 2 * expected + exact.integration_error, (tv, expected)
    if cap is not None:  # the split changes the answer: the uncapped posterior is far from these draws
        assert ordered_total_variation(simulated, exact_ordered_posterior(OrderedGaussianCatalog(
            max_cluster_size=None, mean_scale=3.0), x)) > 0.1


def test_refuses_unordered_models_and_large_data():
    x = torch.randn(4, 2)
    with pytest.raises(TypeError, match="NormOrderedModel"):
        exact_ordered_posterior(CRPGaussianMixture(), x)
    from pyro_acp.models import ProceduralCatalog

    with pytest.raises(TypeError, match="ProceduralCatalog is not one"):  # ordered, but not by Gaussian means
        exact_ordered_posterior(ProceduralCatalog(), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="N <= 7"):
        exact_ordered_posterior(OrderedGaussianCatalog(), torch.randn(8, 2))
    with pytest.raises(ValueError, match="integration_error"):
        OrderedExactPosterior(torch.tensor([[0, 1]]), torch.tensor([1.0]), integration_error=-1.0)


def test_plot_order_draws_points_by_position_and_catalogs_as_sections(tmp_path):
    from pyro_acp.models import ProceduralCatalog
    from pyro_acp.posteriors import OrderedClusteringPosterior

    x = torch.tensor([[1.2, 0.9], [0.8, 0.0], [-0.8, 0.0], [4.0, 4.0]], dtype=torch.float64)
    post = exact_ordered_posterior(OrderedGaussianCatalog(mean_scale=3.0), x)
    fig = post.plot_order(path=tmp_path / "order.png")
    assert (tmp_path / "order.png").stat().st_size > 0
    points, precedence = fig.axes[:2]
    assert len(points.collections[0].get_offsets()) == 4  # one dot per point
    assert precedence.images[0].get_array().shape == (4, 4)
    rules = {"colours": ["red", "blue"], "section_size": [2, 2], "num_tokens": [4, 8],
             "sections": {"r2": {"red": 2}, "b2": {"blue": 2}},
             "compositions": {"rb": {"colours": ["red", "blue"], "order": [["r2"], ["b2"]]}}}
    model = ProceduralCatalog(rules)
    tokens = model.check_data(torch.tensor([0, 1, 0, 1]))
    catalog = OrderedClusteringPosterior(torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0]]), x=tokens, model=model)
    sections = catalog.plot_order().axes[0]
    assert len(sections.patches) == 4  # every token drawn once, in its section's row
    assert {tuple(p.get_facecolor()[:3]) for p in sections.patches} == {(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)}


def test_the_models_ordered_log_joint_is_the_enumerations_and_stops_at_the_cap():
    model = OrderedGaussianCatalog()
    x, _ = model.simulate(1, num_points=5, seed=2).unpadded(0)
    exact = exact_ordered_posterior(model, x)
    scored = model.log_ordered_joint(x, exact.partitions)  # all 541 ordered partitions, in one call
    torch.testing.assert_close(scored, exact.log_joint.to(scored), atol=1e-6, rtol=0)
    pick = torch.randperm(exact.partitions.shape[0], generator=torch.Generator().manual_seed(0))[:7]
    pick = torch.cat([pick, pick[:2]])  # any subset, in any order, with repeats: each scored as on its own
    torch.testing.assert_close(model.log_ordered_joint(x, exact.partitions[pick]),
                               exact.log_joint[pick].to(scored), atol=1e-6, rtol=0)
    assert has_exact_log_joint(model, 30) and not has_exact_log_joint(model, 31) and has_exact_log_joint(model)
    capped = OrderedGaussianCatalog(max_cluster_size=3)
    with pytest.raises(ValueError, match="N <= max_cluster_size = 3"):
        capped.log_ordered_joint(x, exact.partitions[:2])
    assert exact_log_joint(capped, x, exact.partitions[:2]) is None  # a labelling may be parts of one cluster
    with pytest.raises(ValueError, match="shape"):
        model.log_ordered_joint(x, exact.partitions[0])
    with pytest.raises(ValueError, match="position"):  # a gap: position 1 has no cluster
        model.log_ordered_joint(x, torch.tensor([[0, 0, 2, 2, 2]]))
