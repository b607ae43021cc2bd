"""The rule-aware heuristic for procedural catalogs: valid catalogs on generated data, the most probable
multiset by brute force, clear errors."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import gammaln

from pyro_acp.diagnostics.ordered_metrics import catalog_scores
from pyro_acp.models import ProceduralCatalog
from pyro_acp.reference.catalog_heuristic import rule_heuristic_positions, section_plan

MODEL = ProceduralCatalog()


def _tokens(**counts: int) -> list[str]:
    return [colour for colour, n in counts.items() for _ in range(n)]


def test_generated_catalogs_become_valid_catalogs():
    batch = MODEL.simulate(12, seed=123)
    predicted = torch.full_like(batch.labels, -1)
    for b in range(batch.batch_size):
        x, _ = batch.unpadded(b)
        positions = rule_heuristic_positions(MODEL, x)
        assert sorted(set(positions.tolist())) == list(range(int(positions.max()) + 1))  # canonical positions
        predicted[b, batch.mask[b]] = positions
    scores = catalog_scores(batch.x, predicted, MODEL).mean()
    assert scores == {"compositional": 1.0, "structural": 1.0, "valid_order": 1.0}


def test_the_chosen_multiset_is_the_most_probable_by_brute_force():
    tokens = _tokens(red=14, yellow=10, blue=9)  # composition red_yellow_blue: 11 allowed sections
    plan = section_plan(MODEL, tokens)
    rules = MODEL.rules
    allowed = (rules.group[plan.composition] >= 0).nonzero().flatten().tolist()
    vectors = [rules.section_counts[s].tolist() for s in allowed]
    groups = [int(rules.group[plan.composition, s]) for s in allowed]
    target = [14, 10, 9, 0, 0]
    bounds = [min(t // n for t, n in zip(target, v, strict=True) if n) for v in vectors]  # times each fits
    counts = np.array(list(itertools.product(*(range(b + 1) for b in bounds))))
    fits = (counts @ np.array(vectors) == target).all(1)
    covers = np.stack([(counts[:, np.array(groups) == g] > 0).any(1) for g in range(3)], 1).all(1)
    counts = counts[fits & covers]
    assert len(counts) > 10  # many valid multisets: the choice among them is what is tested
    size = counts.sum(1)
    log_prob = gammaln(size + 1) - gammaln(counts + 1).sum(1) - size * math.log(len(allowed))
    best = log_prob.max()
    assert plan.covers_groups and plan.log_prob == pytest.approx(best)
    assert sum(rules.section_counts[s] for s in plan.sections).tolist() == target
    order = [int(rules.group[plan.composition, s]) for s in plan.sections]
    assert order == sorted(order)  # sections in structural order


def test_few_large_sections_are_preferred():
    plan = section_plan(MODEL, _tokens(red=12, yellow=4, blue=4))
    names = sorted(MODEL.rules.section_names[s] for s in plan.sections)
    assert names == ["blue4", "red6", "red6", "yellow4"]  # not red4 x 3 (one more uniform draw)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="match no composition"):
        section_plan(MODEL, _tokens(green=4))
    with pytest.raises(ValueError, match="no multiset of the sections.*'red': 3"):
        section_plan(MODEL, _tokens(red=3, yellow=4, blue=4))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        rule_heuristic_positions(MODEL, ["red", "pink"])
