"""Samples outside the support of the posterior (models' ``support_violations``, ``posterior.possible``):
what each catalog model rules out, that its own simulations are never flagged, and that ``infer`` says so."""

from __future__ import annotations

import warnings

import pytest
import torch

import pyro_acp
from pyro_acp.diagnostics.stationarity import ZeroProbabilityWarning
from pyro_acp.models import OrderedGaussianCatalog, ProceduralCatalog
from pyro_acp.reference.catalog_heuristic import rule_heuristic_positions

RED, YELLOW, BLUE, PURPLE = 0, 1, 2, 4  # colour indices of the default rules
#: composition red_yellow_blue_purple: groups [blue4, blue6], [red, yellow, purple sections, ...], [blue5]
TOKENS = torch.tensor([BLUE] * 4 + [RED] * 4 + [YELLOW] * 4 + [PURPLE] * 4 + [BLUE] * 5)
VALID = torch.tensor([0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 5)  # blue4 | red4 yellow4 purple4 | blue5


SHORT = {"a section the composition does not allow": "section", "sections out of the order of their order groups":
         "order", "an order group without a section": "group"}


def _broken(model, tokens, positions) -> dict[str, bool]:
    found = model.support_violations(tokens, torch.as_tensor(positions).unsqueeze(0))
    return {SHORT[reason]: bool(broken[0]) for reason, broken in found.items()}


def test_each_rule_of_a_procedural_catalog_is_checked_on_its_own():
    model = ProceduralCatalog()
    assert _broken(model, TOKENS, VALID) == {"section": False, "order": False, "group": False}
    within_group = VALID.clone()
    within_group[4:8], within_group[8:12] = 2, 1  # red4 and yellow4 swapped: the same group, any order
    assert not any(_broken(model, TOKENS, within_group).values())
    assert _broken(model, TOKENS, 4 - VALID) == {"section": False, "order": True, "group": False}
    merged = torch.where(VALID == 2, 1, VALID)  # red4 + yellow4 as one section of 8 tokens
    merged = torch.where(merged > 2, merged - 1, merged)
    assert _broken(model, TOKENS, merged) == {"section": True, "order": False, "group": False}
    assert _broken(model, TOKENS[:16], VALID[:16]) == {"section": False, "order": False, "group": True}


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
