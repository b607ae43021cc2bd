"""A rule-aware heuristic for procedural catalogs: solve the rules for the section multiset, then sort by group.

The baseline that reads the rules file instead of learning it (:class:`~pyro_acp.models.ProceduralCatalog`'s
rules, :func:`~pyro_acp.models.catalogs.load_rules`). Tokens carry nothing but their colour, so a catalog is
seen only through its colour counts c (C,); which of several same-coloured tokens goes to which section is
unidentifiable for any method. For one catalog:

1. **Composition.** The composition q whose colour set is the set of colours present (the rules make it
   unique; none is a ValueError naming the colours).
2. **Section multiset.** Every multiset n = (n_s) of the sections q allows (order group g_s >= 0) with
   sum_s n_s v_s = c exactly (v_s the colour counts of section s) is enumerated by a depth-first search over
   the allowed sections, pruned by a memoised feasibility test of the remaining counts. Among the multisets
   with at least one section in every order group (the generator's structural step always draws one), the
   heuristic keeps the one of highest

       log P(n) = log L! - sum_s log n_s! - L log |A_q|,    L = sum_s n_s,

   the probability that L uniform draws from the |A_q| allowed sections form n: exactly the generator's
   fill step conditioned on the catalog's size (every section sequence with exactly N tokens is accepted
   once, with probability |A_q|^-L), with its mandatory structural and colour-coverage picks treated as
   uniform draws too. It favours few, large sections and mixed multisets (more orderings). Ties go to the
   first multiset found (sections in rules order, larger counts first). If no multiset covers every group,
   the best one that does not is used (its order then breaks the structural rule); if no multiset fits the
   counts at all (not a catalog of these rules), ValueError. The search stops after ``max_solutions``
   complete multisets and keeps the best so far (never reached on the default rules: at most a few hundred).
3. **Tokens to sections.** Sections are filled in their output order, each taking the first still-unassigned
   tokens (by index) of each of its colours.
4. **Order.** Sections sorted by (order group, position of the section in the rules file); the structural
   rule leaves the order inside a group free, and the generator draws it uniformly, so no order inside a
   group is better than another in expectation.

On any catalog the default rules generate, the result is therefore a valid catalog: compositional and
structural score 1 (:func:`pyro_acp.diagnostics.ordered_metrics.catalog_scores`). What it cannot know is
which valid decomposition the generator drew, so its V-measure and Kendall tau fall short of one.

    from pyro_acp.reference.catalog_heuristic import rule_heuristic_positions
    positions = rule_heuristic_positions(ProceduralCatalog(), tokens)   # (N,) section positions, 0 = first
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import torch
from torch import Tensor

from pyro_acp.diagnostics.ordered_metrics import colour_indices
from pyro_acp.models.catalogs import CatalogRules, ProceduralCatalog
from pyro_acp.validation import check_positive_int

__all__ = ["SectionPlan", "rule_heuristic_positions", "section_plan"]

DEFAULT_MAX_SOLUTIONS = 100_000


class SectionPlan:
    """The heuristic's decision for one catalog: composition, chosen sections in output order, their score.

    ``sections``: rules indices of the sections, in catalog order (group, then rules order);
    ``log_prob``: log P(n) of the multiset (module docstring); ``covers_groups``: whether every order group of
    the composition has a section; ``num_solutions``: multisets enumerated.
    """

    def __init__(self, composition: int, sections: list[int], log_prob: float, covers_groups: bool,
                 num_solutions: int):
        self.composition = composition
        self.sections = sections
        self.log_prob = log_prob
        self.covers_groups = covers_groups
        self.num_solutions = num_solutions

    def __repr__(self) -> str:
        return (f"SectionPlan(composition={self.composition}, sections={self.sections}, "
                f"log_prob={self.log_prob:.3f}, covers_groups={self.covers_groups})")


def _rules_and_colours(model: ProceduralCatalog | CatalogRules, x: Any) -> tuple[CatalogRules, Tensor]:
    """(rules, colour index of each token (N,)): tokens checked by the model (indices, names or one-hot rows)."""
    if isinstance(model, ProceduralCatalog):
        return model.rules, model.check_data(x).argmax(-1)
    if isinstance(model, CatalogRules):
        colours = colour_indices(x, len(model.colours))  # the metrics' parsing: indices or one-hot rows
        if colours.dim() != 1 or colours.numel() == 0 or (colours < 0).any():
            raise ValueError(f"tokens must be a non-empty (N,) of colour indices or (N, C) one-hot rows (no "
                             f"padding), got shape {tuple(colours.shape)}")
        return model, colours.long()
    raise TypeError(f"expected a ProceduralCatalog or CatalogRules, got {type(model).__name__}")


def section_plan(model: ProceduralCatalog | CatalogRules, x: Any, *,
                 max_solutions: int = DEFAULT_MAX_SOLUTIONS) -> SectionPlan:
    """The section multiset of steps 1-2 (module docstring) for tokens ``x``, in output order (step 4)."""
    rules, colours = _rules_and_colours(model, x)
    max_solutions = check_positive_int(max_solutions, "max_solutions")
    num_colours = len(rules.colours)
    counts = torch.bincount(colours, minlength=num_colours)
    present = counts > 0
    same = (rules.composition_colours == present).all(-1).nonzero().flatten()
    if same.numel() == 0:
        used = [rules.colours[c] for c in present.nonzero().flatten().tolist()]
        raise ValueError(f"the catalog uses the colours {used}, which match no composition of the rules "
                         f"({', '.join(rules.composition_names)})")
    q = int(same[0])
    allowed = (rules.group[q] >= 0).nonzero().flatten().tolist()
    vectors = [tuple(rules.section_counts[s].tolist()) for s in allowed]
    groups = [int(rules.group[q, s]) for s in allowed]
    num_groups = int(rules.group[q].max()) + 1
    log_choices = math.log(len(allowed))

    @cache
    def feasible(i: int, remaining: tuple[int, ...]) -> bool:
        """Whether sections allowed[i:] can make up exactly ``remaining``."""
        if not any(remaining):
            return True
        if i == len(allowed):
            return False
        vector = vectors[i]
        rest = list(remaining)
        while True:
            if feasible(i + 1, tuple(rest)):
                return True
            rest = [r - v for r, v in zip(rest, vector, strict=True)]
            if min(rest) < 0:
                return False

    best: dict[bool, tuple[float, list[int]]] = {}
    found = 0
    chosen = [0] * len(allowed)

    def score() -> None:
        size = sum(chosen)
        log_prob = math.lgamma(size + 1) - sum(math.lgamma(n + 1) for n in chosen) - size * log_choices
        covers = len({groups[i] for i, n in enumerate(chosen) if n}) == num_groups
        if covers not in best or log_prob > best[covers][0]:
            best[covers] = (log_prob, list(chosen))

    def search(i: int, remaining: list[int]) -> None:
        nonlocal found
        if found >= max_solutions:
            return
        if not any(remaining):
            found += 1
            score()
            return
        if i == len(allowed) or not feasible(i, tuple(remaining)):
            return
        vector = vectors[i]
        most = min(r // v for r, v in zip(remaining, vector, strict=True) if v)  # larger counts first
        for n in range(most, -1, -1):
            chosen[i] = n
            search(i + 1, [r - n * v for r, v in zip(remaining, vector, strict=True)])
        chosen[i] = 0

    search(0, counts.tolist())
    if not best:
        have = dict(zip(rules.colours, counts.tolist(), strict=True))
        raise ValueError(f"no multiset of the sections that composition '{rules.composition_names[q]}' allows has "
                         f"exactly the catalog's colour counts {have}")
    covers = True in best
    log_prob, multiset = best[covers]
    ordered = sorted((groups[i], allowed[i]) for i, n in enumerate(multiset) for _ in range(n))
    return SectionPlan(q, [s for _, s in ordered], log_prob, covers, found)


def rule_heuristic_positions(model: ProceduralCatalog | CatalogRules, x: Any, *,
                             max_solutions: int = DEFAULT_MAX_SOLUTIONS) -> Tensor:
    """The heuristic's ordered partition of tokens ``x`` (module docstring): (N,) long, the position of each
    token's section (0 = first). ``model``: a :class:`~pyro_acp.models.ProceduralCatalog` (tokens as indices,
    colour names or one-hot rows, checked by it) or parsed rules (indices or one-hot rows)."""
    rules, colours = _rules_and_colours(model, x)
    plan = section_plan(rules, colours, max_solutions=max_solutions)
    positions = torch.full_like(colours, -1)
    for position, s in enumerate(plan.sections):
        for colour, count in enumerate(rules.section_counts[s].tolist()):
            if count:
                free = ((colours == colour) & (positions < 0)).nonzero().flatten()[:count]
                positions[free] = position
    return positions
