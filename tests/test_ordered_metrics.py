"""Scores of ordered clusterings, on cases computed by hand (pyro_acp.diagnostics.ordered_metrics)."""

import math

import pytest
import torch

from pyro_acp.diagnostics import ordered_metrics as om
from pyro_acp.diagnostics.metrics import total_variation
from pyro_acp.models import ProceduralCatalog

# three colours; composition "rbg" orders its groups [r2], [b2, rb2], [g2]; "rb" allows only r2 and b2
RULES = {
    "colours": ["red", "blue", "green"],
    "section_size": [2, 2],
    "num_tokens": [2, 20],
    "sections": {"r2": {"red": 2}, "b2": {"blue": 2}, "g2": {"green": 2}, "rb2": {"red": 1, "blue": 1}},
    "compositions": {
        "rbg": {"colours": ["red", "blue", "green"], "order": [["r2"], ["b2", "rb2"], ["g2"]]},
        "rb": {"colours": ["red", "blue"], "order": [["r2"], ["b2"]]},
    },
}
R, B, G = 0, 1, 2


def test_v_measure_and_element_tau_by_hand():
    assert om.v_measure([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)  # order-free
    assert om.v_measure([0, 0, 1, 1], [0, 0, 0, 0]) == pytest.approx(0.0)  # homogeneity 0
    assert om.element_kendall_tau([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(-1.0)
    # pairs (0,1), (0,2) concordant, (1,2) discordant: (2 - 1) / 3
    assert om.element_kendall_tau([0, 1, 2], [0, 2, 1]) == pytest.approx(1 / 3)


def test_cluster_order_tau_matches_clusters_then_compares_their_positions():
    # clusters matched 0->2, 1->0, 2->1: positions [0, 1, 2] vs [2, 0, 1]: pairs D, D, C -> (1 - 2) / 3
    assert om.cluster_order_kendall_tau([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1]) == pytest.approx(-1 / 3)
    # one point misassigned, order right: the matching pairs each true cluster with its majority, tau = 1,
    # while the per-point tau is below 1
    true, pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 2]
    assert om.cluster_order_kendall_tau(true, pred) == pytest.approx(1.0)
    assert om.element_kendall_tau(true, pred) < 1.0
    # a single predicted cluster: one matched pair, no order to compare
    assert math.isnan(om.cluster_order_kendall_tau([0, 0, 1, 1], [0, 0, 0, 0]))
    batch = om.cluster_order_kendall_tau([[0, 1, 1, -1], [0, 1, 2, 2]], [[1, 0, 0, -1], [0, 1, 2, 2]])
    assert torch.allclose(batch, torch.tensor([-1.0, 1.0], dtype=torch.float64))


def test_cap_adherence():
    assert om.cap_adherence([0, 0, 0, 1], 2) == 0.0
    assert om.cap_adherence([0, 0, 0, 1], 3) == 1.0
    batch = om.cap_adherence([[0, 0, 1, -1], [0, 0, 0, 0]], 2)
    assert torch.equal(batch, torch.tensor([1.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="max_cluster_size"):
        om.cap_adherence([0, 1], 0)


def _catalog(*sections):
    """Colours and positions of a catalog whose predicted sections, in order, have these colours."""
    colours = [c for section in sections for c in section]
    positions = [p for p, section in enumerate(sections) for _ in section]
    return colours, positions


def test_structure_counts_a_section_in_neither_group_as_a_violation_where_the_published_skip_over_scores():
    colours, positions = _catalog([R, R], [G, G], [G, G], [B, B])  # order groups 1, 3, 3, 2
    scores = om.catalog_scores(colours, positions, RULES)
    assert float(scores.compositional[0]) == 1.0  # every section is allowed
    assert om.structural_score(colours, positions, RULES) == 0.5  # r2 follows, g2 g2 jump ahead, b2 is next
    assert float(scores.valid_order[0]) == 0.0
    assert om.structural_score(colours, positions, RULES, skip_unmatched=True) == 1.0  # the published score
    good = _catalog([R, R], [R, B], [B, B], [G, G])  # groups 1, 2, 2, 3
    assert om.structural_score(*good, RULES) == 1.0
    assert float(om.catalog_scores(*good, RULES).valid_order[0]) == 1.0


def test_invalid_sections_fail_both_scores():
    colours, positions = _catalog([R, R], [B, G], [B, G])  # {blue, green} is no section
    assert om.compositional_score(colours, positions, RULES) == pytest.approx(1 / 3)
    assert om.structural_score(colours, positions, RULES) == pytest.approx(1 / 3)
    assert om.structural_score(colours, positions, RULES, skip_unmatched=True) == 1.0
    # rb2 is a section, but composition "rb" (a catalog of red and blue only) does not allow it
    assert om.compositional_score(*_catalog([R, B], [R, B]), RULES) == 0.0
    assert om.compositional_score(*_catalog([R, R], [B, B]), RULES) == 1.0
    with pytest.raises(ValueError, match=r"\['green'\], which match no composition"):
        om.compositional_score(*_catalog([G, G]), RULES)
    with pytest.raises(ValueError, match="outside the rules' 3 colours"):
        om.compositional_score([0, 5], [0, 0], RULES)


def test_batched_and_one_hot_inputs():
    first, second = _catalog([R, R], [G, G], [G, G], [B, B]), _catalog([R, R], [B, B])
    colours = torch.tensor([first[0], second[0] + [-1, -1, -1, -1]])
    positions = torch.tensor([first[1], second[1] + [-1, -1, -1, -1]])
    scores = om.catalog_scores(colours, positions, RULES)
    assert torch.equal(scores.structural, torch.tensor([0.5, 1.0], dtype=torch.float64))
    assert scores.mean() == {"compositional": 1.0, "structural": 0.75, "valid_order": 0.5}
    one_hot = torch.nn.functional.one_hot(torch.tensor(first[0]), 3).float()
    assert om.structural_score(one_hot, first[1], RULES) == 0.5
    samples = torch.tensor([first[1], [3, 3, 2, 2, 1, 1, 0, 0]])  # two predictions of one catalog; the second
    # walks groups 2, 3, 3, 1: three sections follow, the last (back to group 1) is a violation
    assert torch.equal(om.structural_score(one_hot, samples, RULES), torch.tensor([0.5, 0.75], dtype=torch.float64))


def test_simulated_catalogs_follow_their_rules_and_a_reversed_order_does_not():
    model = ProceduralCatalog()
    batch = model.simulate(16, seed=0)
    scores = om.catalog_scores(batch.x, batch.labels, model)  # one-hot x, zero rows on padding
    assert torch.equal(scores.compositional, torch.ones(16, dtype=torch.float64))
    assert torch.equal(scores.valid_order, torch.ones(16, dtype=torch.float64))
    reversed_positions = (batch.labels.max(-1, keepdim=True).values - batch.labels).masked_fill(~batch.mask, -1)
    reversed_scores = om.catalog_scores(batch.x, reversed_positions, model)
    assert torch.equal(reversed_scores.compositional, scores.compositional)  # the same sections
    assert (reversed_scores.structural < 1).all()


def test_ordered_total_variation_counts_the_order():
    both_orders = torch.tensor([[0, 1], [1, 0]])
    assert om.ordered_total_variation(both_orders, torch.tensor([[0, 1]])) == pytest.approx(0.5)
    assert total_variation(both_orders, torch.tensor([[0, 1]])) == pytest.approx(0.0)  # one partition
    p = (torch.tensor([[0, 0, 1], [1, 1, 0], [0, 1, 2]]), torch.tensor([0.5, 0.3, 0.2]))
    q = (torch.tensor([[1, 1, 0], [0, 0, 1]]), torch.tensor([0.5, 0.5]))
    assert om.ordered_total_variation(p, q) == pytest.approx(0.5 * (0.0 + 0.2 + 0.2))
    with pytest.raises(ValueError, match="over 3 points but q is over 2"):
        om.ordered_total_variation(p, both_orders)


def _oracle(batch, transform=lambda labels: labels):
    """A predictor that returns (a transform of) the true positions of the simulated data sets, in turn."""
    truths = iter([transform(batch.unpadded(b)[1]) for b in range(batch.batch_size)])
    return lambda x: next(truths)


def test_ordered_scores_of_oracles_on_fresh_simulations():
    from pyro_acp.models import OrderedGaussianCatalog

    model = OrderedGaussianCatalog(max_cluster_size=5)
    settings = {"num_datasets": 6, "num_points": (8, 15), "seed": 4}
    batch = model.simulate(6, num_points=(8, 15), seed=4)
    assert (batch.num_clusters >= 2).all()
    truth = om.ordered_scores(model, _oracle(batch), **settings)
    assert truth == {"v_measure": 1.0, "element_tau": 1.0, "cluster_order_tau": 1.0, "cap_adherence": 1.0}
    backwards = om.ordered_scores(model, _oracle(batch, lambda labels: labels.max() - labels), **settings)
    assert backwards["v_measure"] == pytest.approx(1.0) and backwards["cap_adherence"] == 1.0
    assert backwards["element_tau"] == pytest.approx(-1.0) and backwards["cluster_order_tau"] == pytest.approx(-1.0)
    lumped = om.ordered_scores(model, lambda x: torch.zeros(x.shape[0], dtype=torch.long), **settings)
    assert lumped["v_measure"] == pytest.approx(0.0) and lumped["cap_adherence"] == 0.0  # N >= 8 > cap 5
    assert math.isnan(lumped["cluster_order_tau"])  # one predicted cluster: no order to compare anywhere
    catalogs = ProceduralCatalog(RULES)
    batch = catalogs.simulate(5, num_points=(8, 9), seed=1)  # sections of two: an even N
    scores = om.ordered_scores(catalogs, _oracle(batch), num_datasets=5, num_points=(8, 9), seed=1)
    assert {scores[k] for k in ("compositional", "structural", "valid_order", "v_measure")} == {1.0}
    with pytest.raises(ValueError, match="returned 1 labels"):
        om.ordered_scores(model, lambda x: torch.zeros(1, dtype=torch.long), **settings)


def test_score_rows_and_paired_difference_on_the_same_sets():
    from pyro_acp.models import OrderedGaussianCatalog

    model = OrderedGaussianCatalog(max_cluster_size=5)
    settings = {"num_datasets": 6, "num_points": (8, 15), "seed": 4}
    batch = model.simulate(6, num_points=(8, 15), seed=4)
    truth = om.ordered_score_rows(model, _oracle(batch), **settings)
    assert set(truth) == {"v_measure", "element_tau", "cluster_order_tau", "cap_adherence"}
    assert all(values.shape == (6,) and values.dtype == torch.float64 for values in truth.values())
    assert om.ordered_scores(model, _oracle(batch), **settings) == {k: float(v.mean()) for k, v in truth.items()}
    backwards = om.ordered_score_rows(model, _oracle(batch, lambda labels: labels.max() - labels), **settings)
    diff = om.paired_difference(truth, backwards)
    assert diff["element_tau"] == pytest.approx((2.0, 0.0))  # +1 against -1 on every set: no spread
    assert diff["v_measure"] == pytest.approx((0.0, 0.0), abs=1e-12)
    lumped = om.ordered_score_rows(model, lambda x: torch.zeros(x.shape[0], dtype=torch.long), **settings)
    mean, se = om.paired_difference(truth, lumped)["v_measure"]
    expected = 1.0 - lumped["v_measure"]  # lumped V is 0 on each set here
    assert mean == pytest.approx(float(expected.mean()))
    assert se == pytest.approx(float(expected.std() / math.sqrt(6)))
    assert math.isnan(om.paired_difference(truth, lumped)["cluster_order_tau"][0])  # undefined on every set
