"""Samples outside the support of the posterior (models' ``support_violations``, ``posterior.possible``):
what each catalog model rules out, that its own simulations are never flagged, and that ``infer`` says so."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import pyro_acp
from pyro_acp.diagnostics.stationarity import ZeroProbabilityWarning
from pyro_acp.models import OrderedGaussianCatalog, ProceduralCatalog
from pyro_acp.posteriors.ordered import OrderedClusteringPosterior
from pyro_acp.reference.catalog_heuristic import rule_heuristic_positions

RULES = Path(__file__).resolve().parents[1] / "models" / "procedural_rules.json"

RED, YELLOW, BLUE, PURPLE = 0, 1, 2, 4  # colour indices of the default rules
#: composition red_yellow_blue_purple: groups [blue4, blue6], [red, yellow, purple sections, ...], [blue5]; 36 tokens
SECTIONS = [(BLUE, 4), (RED, 4), (YELLOW, 4), (PURPLE, 4), (RED, 5), (YELLOW, 5), (PURPLE, 5), (BLUE, 5)]
TOKENS = torch.tensor([colour for colour, size in SECTIONS for _ in range(size)])
VALID = torch.tensor([p for p, (_, size) in enumerate(SECTIONS) for _ in range(size)])
SHORT = {"a section the composition does not allow": "section", "sections out of the order of their order groups":
         "order", "an order group without a section": "group", "colours that match no composition of the rules":
         "colours"}


def _broken(model, tokens, positions) -> dict[str, bool]:
    found = model.support_violations(tokens, torch.as_tensor(positions).unsqueeze(0))
    return {SHORT.get(reason, "size"): bool(broken[0]) for reason, broken in found.items()}


def _only(*broken: str) -> dict[str, bool]:
    return {name: name in broken for name in ("colours", "size", "section", "order", "group")}


def test_each_rule_of_a_procedural_catalog_is_checked_on_its_own():
    model = ProceduralCatalog()
    assert _broken(model, TOKENS, VALID) == _only()
    within_group = VALID.clone()
    within_group[VALID == 1], within_group[VALID == 6] = 6, 1  # red4 and purple5 swapped: one group, any order
    assert _broken(model, TOKENS, within_group) == _only()
    assert _broken(model, TOKENS, 7 - VALID) == _only("order")
    merged = torch.where(VALID == 2, 1, VALID)  # red4 + yellow4 as one section of 8 tokens
    assert _broken(model, TOKENS, torch.where(merged > 2, merged - 1, merged)) == _only("section")
    no_last_group = torch.cat([TOKENS[:-5], torch.full((6,), RED)])  # blue5 replaced by red6: the last group empty
    assert _broken(model, no_last_group, torch.cat([VALID[:-5], torch.full((6,), 7)])) == _only("group")
    assert _broken(model, TOKENS[:-5], VALID[:-5]) == _only("size", "group")  # 31 tokens, below 35


def test_no_catalog_the_grammar_draws_and_no_heuristic_catalog_is_flagged():
    model = ProceduralCatalog()
    batch = model.simulate(200, num_points=(35, 51), seed=11)
    for x, labels, mask in zip(batch.x, batch.labels, batch.mask, strict=True):
        n = int(mask.sum())
        assert not any(bool(b[0]) for b in model.support_violations(x[:n], labels[:n].unsqueeze(0)).values())
    for x, mask in zip(batch.x[:10], batch.mask[:10], strict=True):
        heuristic = torch.as_tensor(rule_heuristic_positions(model, x[: int(mask.sum())])).unsqueeze(0)
        assert not any(bool(b[0]) for b in model.support_violations(x[: int(mask.sum())], heuristic).values())


def test_ordered_gaussian_catalogs_rule_out_clusters_above_the_cap_only():
    model = OrderedGaussianCatalog()
    x = torch.zeros(40, 2)
    over = torch.tensor([0] * 31 + [1] * 9)
    at_cap = torch.tensor([1] * 30 + [0] * 10)
    found = model.support_violations(x, torch.stack([over, at_cap]))
    assert [b.tolist() for b in found.values()] == [[True, False]]
    assert OrderedGaussianCatalog(max_cluster_size=None).support_violations(x, over.unsqueeze(0)) == {}
    batch = model.simulate(64, num_points=(2, 100), seed=3)
    for x, labels, mask in zip(batch.x, batch.labels, batch.mask, strict=True):
        n = int(mask.sum())
        assert not model.support_violations(x[:n], labels[:n].unsqueeze(0))[next(iter(found))].any()


def test_infer_warns_when_the_shipped_procedural_guide_breaks_the_rules():
    """The shipped procedural NOC has not learnt the rules well enough: on this catalog every one of 50 samples
    breaks a rule (measured), a posterior of probability zero; infer says so by reason, the posterior marks
    them and its summary counts them."""
    model = ProceduralCatalog()
    batch = model.simulate(1, num_points=40, seed=3)
    with pytest.warns(ZeroProbabilityWarning, match=r"50 of 50 samples have zero probability under ProceduralCatalog"
                      r".*a section the composition does not allow: \d+.*none is possible") as record:
        post = pyro_acp.infer(model, batch.x[0], num_samples=50, seed=0, estimate_log_prob=False,
                              progress_bar=False)
    assert {w.filename for w in record if w.category is ZeroProbabilityWarning} == {__file__}
    assert not post.possible.any()
    assert post.summary().impossible_share == 1.0 and "impossible under the model" in str(post.summary())


def test_infer_on_an_ordered_gaussian_catalog_keeps_to_the_cap_and_says_nothing():
    model = OrderedGaussianCatalog()
    batch = model.simulate(1, num_points=90, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroProbabilityWarning)
        post = pyro_acp.infer(model, batch.x[0], num_samples=20, seed=0, estimate_log_prob=False,
                              progress_bar=False)
    assert bool(post.possible.all()) and post.summary().impossible_share == 0.0
    assert list(post.support_violations) == ["a cluster of more than max_cluster_size = 30 points"]


def test_the_unordered_view_checks_the_order_free_rules_only():
    """An ordered posterior's unordered() holds partitions numbered by first appearance, not positions: valid
    catalogs stay possible there, and a section the composition does not allow is still caught."""
    model = ProceduralCatalog()
    tokens = TOKENS.flip(0)  # the last section's tokens come first: first-appearance numbers reverse the order
    positions = torch.stack([VALID.flip(0), VALID.flip(0)])
    positions[1][positions[1] == 6] = 5  # purple5 and yellow5 as one section, of no allowed kind
    positions[1][positions[1] == 7] = 6
    post = OrderedClusteringPosterior(positions, x=model.check_data(tokens), model=model)
    assert post.possible.tolist() == [True, False]
    unordered = post.unordered()
    assert unordered.possible.tolist() == [True, False]
    assert "sections out of the order of their order groups" not in unordered.support_violations


def test_tokens_no_composition_allows_are_flagged_not_an_error():
    model = ProceduralCatalog()
    tokens = torch.tensor([RED] * 20 + [PURPLE] * 20)  # red and purple alone: no composition
    found = model.support_violations(tokens, torch.zeros(1, 40, dtype=torch.long))
    assert bool(found["colours that match no composition of the rules"][0])
    assert not any(bool(b[0]) for reason, b in found.items() if reason != "colours that match no composition of "
                   "the rules")


def test_section_types_with_the_same_colours_are_told_apart_by_the_composition():
    """A rules file may give two section types the same colour counts (red4 and red4b, 4 red tokens): in a
    composition that allows only red4b, its draws are possible (the metrics and the check pick the type the
    composition allows)."""
    rules = json.loads(RULES.read_text())
    rules["sections"]["red4b"] = {"red": 4}
    rules["compositions"]["red_yellow_blue"]["order"][0] = ["red4b", "red5", "red6"]
    model = ProceduralCatalog(rules=rules)
    batch = model.simulate(100, num_points=(35, 51), seed=2)
    flagged = [any(bool(b[0]) for b in model.support_violations(x[: int(m.sum())], y[: int(m.sum())].unsqueeze(0))
                   .values()) for x, y, m in zip(batch.x, batch.labels, batch.mask, strict=True)]
    assert not any(flagged)


def test_padding_is_not_a_cluster():
    found = OrderedGaussianCatalog(max_cluster_size=3).support_violations(torch.zeros(6, 2),
                                                                           torch.tensor([[0, 0, 0, 1, -1, -1]]))
    assert not any(bool(b[0]) for b in found.values())
