"""Scores of *ordered* clusterings (the catalog problem): clusters, their order, size caps, catalog rules.

Labels are ordered partitions in their canonical form: the position of each point's cluster in the order
(0 = first), one partition (N,) or a batch (B, N) with -1 padding, as tensors, arrays or lists. Every score
returns a float for one partition and a float64 tensor (B,) for a batch.

- ``v_measure(true, pred)``: scikit-learn's V-measure (the harmonic mean of homogeneity and completeness),
  order-free.
- ``element_kendall_tau(true, pred)``: Kendall tau-b (SciPy) between the points' true and predicted cluster
  positions; it mixes clustering and ordering quality (points of one cluster are tied on both sides).
- ``cluster_order_kendall_tau(true, pred)``: tau between the orders of the *clusters*: each predicted cluster
  is matched to a true one by maximum total overlap (SciPy's Hungarian ``linear_sum_assignment``, a one-to-one
  matching; surplus clusters stay unmatched) and tau compares the true and predicted positions of the matched
  pairs, so a correct order of slightly wrong clusters still scores 1. NaN with fewer than two pairs.
- ``cap_adherence(pred, max_cluster_size)``: 1 when no predicted cluster has more than the cap, else 0.
- Procedural catalogs (:class:`~pyro_acp.models.ProceduralCatalog`), from the tokens' colours and the rules:
  ``compositional_score`` = share of the predicted sections whose colour multiset is a section allowed by
  the catalog's composition (identified by the set of colours in the catalog); ``structural_score`` = share
  of the predicted sections, walked in the predicted order, that follow the structural rule. The walk keeps
  a current order group g (starting at the first): a section of group g follows; one of group g + 1 follows
  and moves the walk to g + 1; any other section (an earlier group, a group further ahead, or not an allowed
  section at all) is a violation. ``skip_unmatched=True`` reproduces the published scoring instead, which
  leaves such a section out of the count while the walk is not at the last group, and so over-scores
  (order groups 1, 3, 3, 2 score 1.0 there, 0.5 here). ``catalog_scores`` gives both shares and whether
  the whole order is valid.
- ``ordered_scores(model, predict)``: the means of these scores over fresh simulations of an ordered model,
  for any predictor x -> positions (a trained guide through ``guide_predictor``, or a baseline), with cap
  adherence when the model declares ``max_cluster_size`` and the catalog scores when it has ``rules``.
- ``ordered_total_variation(p, q)``: 1/2 sum |p - q| over ordered partitions, matched by their position
  labels (two orders of one clustering are different outcomes), for checking samples against
  :func:`pyro_acp.reference.exact_ordered.exact_ordered_posterior`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.partitions import cluster_sizes
from pyro_acp.diagnostics.metrics import _as_labels, _pair, _rowwise, kendall_tau, total_variation, v_measure
from pyro_acp.validation import PAD_LABEL, check_int, check_positive_int

__all__ = [
    "CatalogScores",
    "SectionGroups",
    "section_groups",
    "guide_predictor",
    "ordered_score_rows",
    "ordered_scores",
    "paired_difference",
    "cap_adherence",
    "catalog_scores",
    "cluster_order_kendall_tau",
    "compositional_score",
    "element_kendall_tau",
    "ordered_total_variation",
    "structural_score",
    "v_measure",
]

_TRUE_PRED = ("positions_true", "positions_pred")


def element_kendall_tau(positions_true: Any, positions_pred: Any, degenerate: str = "dummy") -> float | Tensor:
    """Kendall tau-b between the points' true and predicted cluster positions (SciPy; see
    :func:`pyro_acp.diagnostics.metrics.kendall_tau` for ``degenerate``, the single-cluster case)."""
    return kendall_tau(positions_true, positions_pred, degenerate=degenerate)


def _matched_order_tau(true: np.ndarray, pred: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment  # imported on use (SciPy is slow to import)
    from scipy.stats import kendalltau

    overlap = np.zeros((true.max() + 1, pred.max() + 1))
    np.add.at(overlap, (true, pred), 1)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    keep = overlap[rows, cols] > 0  # a cluster matched to one it shares no point with is not a pair
    if keep.sum() < 2:
        return float("nan")
    return float(kendalltau(rows[keep], cols[keep]).statistic)


def cluster_order_kendall_tau(positions_true: Any, positions_pred: Any) -> float | Tensor:
    """Kendall tau between the true and predicted positions of matched clusters (module docstring)."""
    return _rowwise(_matched_order_tau, positions_true, positions_pred, _TRUE_PRED)


def cap_adherence(labels_pred: Any, max_cluster_size: int) -> float | Tensor:
    """1.0 when every predicted cluster has at most ``max_cluster_size`` points, else 0.0 (per partition)."""
    cap = check_positive_int(max_cluster_size, "max_cluster_size")
    labels = _as_labels(labels_pred, "labels_pred")
    single = labels.dim() == 1
    within = (cluster_sizes(labels.reshape(-1, labels.shape[-1])) <= cap).all(-1).to(torch.float64)
    return float(within[0]) if single else within


# ---------------------------------------------------------------------------------------------- catalogs


@dataclass(frozen=True)
class CatalogScores:
    """Per catalog (B,): share of valid sections, share following the order, and a wholly valid order."""

    compositional: Tensor
    structural: Tensor
    valid_order: Tensor

    def mean(self) -> dict[str, float]:
        """Averages over the catalogs."""
        return {name: float(getattr(self, name).to(torch.float64).mean())
                for name in ("compositional", "structural", "valid_order")}


def _rules_of(rules: Any) -> Any:
    """CatalogRules from a model that has ``.rules``, parsed rules, a rules dict or a JSON path."""
    from pyro_acp.models.catalogs import CatalogRules, load_rules

    if isinstance(rules, CatalogRules):
        return rules
    if isinstance(getattr(rules, "rules", None), CatalogRules):
        return rules.rules
    return load_rules(rules)


def colour_indices(colours: Any, num_colours: int) -> Tensor:
    """Colour indices (N,) / (B, N) from indices, or from one-hot rows (N, C) / (B, N, C) of floats."""
    if isinstance(colours, (list, tuple)):
        colours = np.asarray(colours)
    tensor = torch.as_tensor(colours).detach().cpu()
    if tensor.dtype.is_floating_point:
        if tensor.dim() not in (2, 3) or tensor.shape[-1] != num_colours:
            raise ValueError(f"one-hot colours must have shape (N, {num_colours}) or (B, N, {num_colours}), "
                             f"got {tuple(tensor.shape)}")
        real = tensor.sum(-1) > 0
        return tensor.argmax(-1).masked_fill(~real, PAD_LABEL)
    tensor = _as_labels(tensor, "colours")
    if (tensor >= num_colours).any():
        raise ValueError(f"colour index {int(tensor.max())} is outside the rules' {num_colours} colours")
    return tensor


class SectionGroups(NamedTuple):
    """The sections of predicted catalogs, by position: each one's order group (B, K), -1 where the catalog's
    composition does not allow it; which positions hold a section (B, K); each catalog's composition (B,)
    (its index in the rules, found from the colours present); whether one catalog was given."""

    group: Tensor
    real: Tensor
    composition: Tensor
    single: bool


def section_groups(colours: Any, positions_pred: Any, rules: Any, *, strict: bool = True) -> SectionGroups:
    """The order group of each predicted section (:class:`SectionGroups`). A section is the composition's when
    its colour counts are those of a section the composition allows (two section types may share counts). A
    catalog whose colours match no composition of the rules is a ValueError naming them (``strict``), or has
    composition -1 and every group -1 (``strict=False``)."""
    r = _rules_of(rules)
    num_colours = len(r.colours)
    colour, position = colour_indices(colours, num_colours), _as_labels(positions_pred, "positions_pred")
    if colour.dim() == 1 and position.dim() == 2:  # one catalog, many predictions (posterior samples)
        colour = colour.expand_as(position)
    colour, position, single = _pair(colour, position, ("colours", "positions_pred"))
    valid = colour != PAD_LABEL
    k = int(position.max()) + 1
    slot = position.masked_fill(~valid, k) * num_colours + colour.clamp(min=0)
    counts = torch.zeros(colour.shape[0], (k + 1) * num_colours, dtype=torch.long).scatter_add_(
        1, slot, valid.long()).view(-1, k + 1, num_colours)[:, :k]  # (B, K, C) colour counts of each section
    real = counts.sum(-1) > 0
    present = counts.sum(1) > 0  # (B, C) colours of the catalog
    same = (present.unsqueeze(1) == r.composition_colours.unsqueeze(0)).all(-1)  # (B, Q)
    matched = same.any(-1)
    if strict and not matched.all():
        row = int((~matched).nonzero()[0])
        used = [r.colours[c] for c in present[row].nonzero().flatten().tolist()]
        raise ValueError(f"catalog {row} uses the colours {used}, which match no composition of the rules "
                         f"({', '.join(r.composition_names)})")
    composition = same.to(torch.int8).argmax(-1)  # (B,)
    allowed = (r.group[composition] >= 0) & matched.unsqueeze(-1)  # (B, S) the composition's sections
    match = (counts.unsqueeze(2) == r.section_counts.view(1, 1, *r.section_counts.shape)).all(-1)  # (B, K, S)
    match &= allowed.unsqueeze(1)
    known = match.any(-1)
    section = match.to(torch.int8).argmax(-1)
    group = r.group[composition].gather(1, section)  # (B, K): -1 where the composition does not allow it
    group = group.masked_fill(~known | ~real, -1)
    return SectionGroups(group, real, composition.masked_fill(~matched, -1), single)


def _shares(colours: Any, positions_pred: Any, rules: Any, skip_unmatched: bool) -> tuple[Tensor, Tensor, Tensor, bool]:
    group, real, _, single = section_groups(colours, positions_pred, rules)
    num_groups = _rules_of(rules).num_groups
    current = torch.zeros(group.shape[0], dtype=torch.long)
    follows = torch.zeros_like(real)
    counted = real.clone()
    for p in range(group.shape[1]):  # the walk is sequential in the position; every catalog at once
        g = group[:, p]
        stay, advance = g == current, (g == current + 1) & (g >= 0)
        follows[:, p] = real[:, p] & (stay | advance)
        current = torch.where(real[:, p] & advance, current + 1, current)
        if skip_unmatched:
            counted[:, p] &= follows[:, p] | (current == num_groups - 1)
    sections = real.sum(-1).to(torch.float64)
    compositional = (real & (group >= 0)).sum(-1) / sections
    structural = follows.sum(-1) / counted.sum(-1).clamp(min=1).to(torch.float64)
    valid_order = (follows | ~real).all(-1).to(torch.float64)
    return compositional, structural, valid_order, single


def catalog_scores(colours: Any, positions_pred: Any, rules: Any, *, skip_unmatched: bool = False) -> CatalogScores:
    """Compositional and structural shares and order validity of predicted catalogs (module docstring).

    ``colours``: the tokens' colours (indices (N,) / (B, N), -1 padding, or one-hot rows as ``x`` of a
    :class:`~pyro_acp.models.ProceduralCatalog`); ``positions_pred``: predicted ordered partitions, the
    position of each token's section, (N,) or (B, N) (with colours (N,): B predictions of one catalog);
    ``rules``: the model (its ``.rules``), parsed rules, a dict or a path.
    """
    compositional, structural, valid_order, _ = _shares(colours, positions_pred, rules, skip_unmatched)
    return CatalogScores(compositional, structural, valid_order)


def compositional_score(colours: Any, positions_pred: Any, rules: Any) -> float | Tensor:
    """Share of the predicted sections that are sections the catalog's composition allows."""
    value, _, _, single = _shares(colours, positions_pred, rules, False)
    return float(value[0]) if single else value


def structural_score(colours: Any, positions_pred: Any, rules: Any, *, skip_unmatched: bool = False) -> float | Tensor:
    """Share of the predicted sections that follow the structural rule in the predicted order (module docstring)."""
    _, value, _, single = _shares(colours, positions_pred, rules, skip_unmatched)
    return float(value[0]) if single else value


# ---------------------------------------------------------------------------------------------- evaluation


def guide_predictor(model: Any, guide: Any, *, num_samples: int = 100, seed: int = 0,
                    estimate: str = "point") -> Callable[[Tensor], Tensor]:
    """x -> an ordered partition (N,) from ``pyro_acp.infer(model, x, guide=guide, ...)`` (seeded).

    ``estimate="point"`` (default): the posterior's VI point estimate, clusters numbered by their mean
    posterior position (:meth:`~pyro_acp.posteriors.OrderedClusteringPosterior.point_estimate`); ``"map"``:
    the most probable sampled ordered partition, which without scores is the most frequent one, and so on
    large catalogs (where every sample differs) just the first sample."""
    from pyro_acp.inference.infer import infer

    if estimate not in ("point", "map"):
        raise ValueError(f"estimate must be 'point' or 'map', got {estimate!r}")

    def predict(x: Tensor) -> Tensor:
        post = infer(model, x, guide=guide, num_samples=num_samples, seed=seed, progress_bar=False,
                     check_prior=False)
        return post.point_estimate() if estimate == "point" else post.map

    return predict


def ordered_score_rows(model: Any, predict: Callable[[Tensor], Any], *, num_datasets: int = 50,
                       num_points: Any = None, seed: int = 0) -> dict[str, Tensor]:
    """Per data set scores (B,) float64 of ``predict(x)`` (positions (N,)) against the truth on ``num_datasets``
    fresh simulations ``model.simulate(num_datasets, num_points=num_points, seed=seed)``: v_measure,
    element_tau, cluster_order_tau (NaN where undefined: fewer than two matched clusters), and, when the model
    declares them, cap_adherence (``max_cluster_size``) and compositional / structural / valid_order
    (``rules``). Two predictors scored with the same arguments are scored on the same data sets, row by row."""
    num_datasets = check_positive_int(num_datasets, "num_datasets")
    batch = model.simulate(num_datasets, num_points=num_points, seed=check_int(seed, "seed", minimum=0))
    truth = batch.labels
    predicted = torch.full_like(truth, PAD_LABEL)
    for b in range(num_datasets):
        x, _ = batch.unpadded(b)
        row = torch.as_tensor(predict(x)).reshape(-1).long().cpu()
        if row.shape[0] != x.shape[0]:
            raise ValueError(f"predict returned {row.shape[0]} labels for a data set of {x.shape[0]} points")
        predicted[b, batch.mask[b]] = row
    rows = {"v_measure": v_measure(truth, predicted), "element_tau": element_kendall_tau(truth, predicted),
            "cluster_order_tau": cluster_order_kendall_tau(truth, predicted)}
    cap = getattr(model, "max_cluster_size", None)
    if cap is not None:
        rows["cap_adherence"] = cap_adherence(predicted, cap)
    if getattr(model, "rules", None) is not None:
        found = catalog_scores(batch.x, predicted, model)
        rows.update({name: getattr(found, name) for name in ("compositional", "structural", "valid_order")})
    return {name: torch.as_tensor(values).to(torch.float64) for name, values in rows.items()}


def ordered_scores(model: Any, predict: Callable[[Tensor], Any], *, num_datasets: int = 50,
                   num_points: Any = None, seed: int = 0) -> dict[str, float]:
    """Mean scores of :func:`ordered_score_rows` over the data sets (cluster_order_tau: over those where it
    is defined; NaN if none)."""
    rows = ordered_score_rows(model, predict, num_datasets=num_datasets, num_points=num_points, seed=seed)
    return {name: float(values[~values.isnan()].mean()) if (~values.isnan()).any() else float("nan")
            for name, values in rows.items()}


def paired_difference(rows_a: dict[str, Tensor], rows_b: dict[str, Tensor]) -> dict[str, tuple[float, float]]:
    """score -> (mean of a - b, its standard error) over the data sets both define, for two predictors'
    :func:`ordered_score_rows` on the same data sets: SE = sd(a - b) / sqrt(n) (n - 1 in the sd), the error
    that a comparison of two methods on one test set carries (smaller than either mean's, as the sets'
    difficulty cancels). NaN SE when fewer than two sets define a score."""
    differences = {}
    for name in rows_a.keys() & rows_b.keys():
        diff = rows_a[name] - rows_b[name]
        diff = diff[~diff.isnan()]
        se = float(diff.std() / math.sqrt(diff.numel())) if diff.numel() > 1 else float("nan")
        differences[name] = (float(diff.mean()) if diff.numel() else float("nan"), se)
    return differences


# ---------------------------------------------------------------------------------------------- distributions


def _order_kept(value: Any, name: str) -> tuple[Tensor, Any]:
    """(partitions, probs) of one side, each row prefixed with the positions 0..N-1: labels that are already
    numbered by first appearance, so the canonical renumbering of ``total_variation`` keeps the order."""
    if isinstance(value, tuple) and len(value) == 2:
        parts, probs = value
    else:
        parts = getattr(value, "partitions", getattr(value, "samples", value))
        probs = getattr(value, "probs", getattr(value, "weights", None))
    parts = _as_labels(parts, f"{name} partitions")
    parts = parts.unsqueeze(0) if parts.dim() == 1 else parts
    num_points = parts.shape[-1]
    return torch.cat([torch.arange(num_points).expand(parts.shape[0], num_points), parts], 1), probs


def ordered_total_variation(p: Any, q: Any) -> float:
    """1/2 sum |p(s) - q(s)| over ordered partitions s, matched exactly by their position labels.

    Each side is ``(partitions (M, N), probs (M,))``, samples (S, N) or a posterior object; unlike
    :func:`pyro_acp.diagnostics.metrics.total_variation` the labels are not renumbered, so the order counts.
    """
    parts_p, probs_p = _order_kept(p, "p")
    parts_q, probs_q = _order_kept(q, "q")
    if parts_p.shape[-1] != parts_q.shape[-1]:
        raise ValueError(f"p is over {parts_p.shape[-1] // 2} points but q is over {parts_q.shape[-1] // 2}")
    return total_variation((parts_p, probs_p), (parts_q, probs_q))
