"""Ordered clusterings (the catalog problem): clusters that also carry an order.

For both models the labels are positions in the order (0 = first cluster): the canonical form of an ordered
partition, kept as they are by ``Batch.from_labels(ordered=True)``.

Sites. The order is a deterministic function of latent variables, so both programs record it with
``pyro.deterministic("labels", ...)`` (an observed Delta site holding the ordered labels) after the latent
sites it comes from:

- :class:`OrderedGaussianCatalog`: "partition" (the CRP draw, unordered), "means", "labels", "x";
- :class:`ProceduralCatalog`: "catalog" (a :class:`CatalogGrammar` draw, (N, 2) rows of [position,
  colour]), "labels", "x" (a Delta at the one-hot colours).

**OrderedGaussianCatalog**: CRP(alpha) clusters of 2-D points, means N(0, mean_scale^2 I), sigma 1; a
cluster larger than ``max_cluster_size`` is split round-robin into the fewest near-equal parts (sizes differ
by at most one), all sharing its mean; clusters are ordered by the distance of their mean from the origin
(parts of one cluster, at equal distance, keep the order of their part index).

**ProceduralCatalog**: coloured tokens grouped into sections by the rules of a JSON file (default
``procedural_rules.json``, documented inside). A catalog of exactly N tokens is drawn as follows:

1. pick a composition (input-set type) uniformly;
2. structural rule: one random section from each of its order groups;
3. compositional rule: for each of its colours not yet present, a random allowed section containing it;
4. append random allowed sections, keep the shortest prefix with at least N tokens, and accept the catalog
   when it has exactly N tokens and keeps every section of steps 2-3 (vectorised rejection: many candidates
   per catalog at once, so the result is the process conditioned on N tokens);
5. order the sections group by group, uniformly at random within a group.

Token encoding: ``x`` is the one-hot colour of each token, in the order of the rules' "colours" list
(``data_dim`` = number of colours); clustering must rely on the set context, not on the features alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

from pyro_acp.data.partitions import canonicalize, cluster_sizes
from pyro_acp.distributions import CRP
from pyro_acp.seeding import make_generator
from pyro_acp.validation import check_labels, check_positive, check_positive_int, check_vectors

from .base import GenerativeModel
from .catalog_rules import DEFAULT_RULES_PATH, CatalogRules, load_rules, parse_rules  # noqa: F401  (re-exported)
from .conjugate import gaussian_log_marginal, gaussian_stats
from .mixtures import gaussian_cluster_draws, gaussian_cluster_sites

_NO_SHAPE = torch.Size()


# ---------------------------------------------------------------------------------------------- ordered Gaussians


def _is_empty(x: Any) -> bool:
    """Whether x is a tensor, array or sequence with no entries (an empty catalog)."""
    if torch.is_tensor(x):
        return x.numel() == 0
    return isinstance(x, (np.ndarray, list, tuple)) and np.size(x) == 0


def ordered_catalog_labels(labels: Tensor, means: Tensor, max_cluster_size: int | None) -> Tensor:
    """Ordered labels (B, N) from unordered ones (B, N) (-1 = padding) and cluster means (B, K, D).

    Clusters above ``max_cluster_size`` are dealt round-robin (by point index) into ceil(n / cap) parts;
    every part is ranked by the distance of its cluster's mean from the origin (ties: part index).
    """
    batch, _ = labels.shape
    k = means.shape[1]
    valid = labels >= 0
    safe = labels.clamp(min=0)
    onehot = torch.nn.functional.one_hot(safe, k) * valid.unsqueeze(-1)  # (B, N, K)
    rank_in_cluster = (onehot.cumsum(1) * onehot).sum(-1) - 1
    sizes = onehot.sum(1)  # (B, K)
    if max_cluster_size is None:
        parts = (sizes > 0).long()
    else:
        parts = (sizes + max_cluster_size - 1) // max_cluster_size
    num_parts = max(int(parts.max()), 1)
    part = rank_in_cluster % parts.gather(1, safe).clamp(min=1)
    slot = safe * num_parts + part
    used = torch.arange(num_parts, device=labels.device) < parts.unsqueeze(-1)  # (B, K, P)
    key = means.norm(dim=-1).unsqueeze(-1).expand(batch, k, num_parts).masked_fill(~used, math.inf)
    rank = key.reshape(batch, k * num_parts).argsort(dim=1, stable=True).argsort(1)
    return rank.gather(1, slot).masked_fill(~valid, -1)


class OrderedGaussianCatalog(GenerativeModel):
    """2-D CRP Gaussian clusters, size-capped, ordered by the distance of their true mean from the origin."""

    data_kind = "catalog"
    ordered = True
    default_num_points = (5, 100)
    # isotropic clusters, means N(0, mean_scale^2 I), the order by |mean| and the split by point index: p(ordered
    # partition | Q x) = p(ordered partition | x) for every orthogonal Q, so infer averages the guide over frames
    rotation_invariant = True

    def __init__(self, alpha: float = 0.7, max_cluster_size: int | None = 30, sigma: float = 1.0,
                 mean_scale: float = 10.0, dim: int = 2):
        self.alpha = check_positive(alpha, "alpha")
        self.max_cluster_size = (None if max_cluster_size is None
                                 else check_positive_int(max_cluster_size, "max_cluster_size"))
        self.sigma = check_positive(sigma, "sigma")
        self.mean_scale = check_positive(mean_scale, "mean_scale")
        self.dim = check_positive_int(dim, "dim")
        super().__init__(alpha=self.alpha, max_cluster_size=self.max_cluster_size, sigma=self.sigma,
                         mean_scale=self.mean_scale, dim=self.dim)

    @property
    def data_dim(self) -> int:
        return self.dim

    def check_data(self, x: Any) -> Tensor:
        """Points (N, D) as the base class checks them; an empty catalog is named as such."""
        if _is_empty(x):
            raise ValueError(f"the catalog is empty (no points); x must be (N, {self.dim}) with N >= 1")
        return super().check_data(x)

    def partition_prior(self, num_points: int) -> CRP:
        """The CRP of the unordered clusters (before splitting and ordering)."""
        return CRP(self.alpha, check_positive_int(num_points, "num_points"))

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        partition = pyro.sample("partition", self.partition_prior(num_points))
        x, means = gaussian_cluster_sites(partition, self.dim, self.sigma, self.mean_scale, obs)
        ordered = ordered_catalog_labels(partition.to(means.device).unsqueeze(0), means.unsqueeze(0),
                                         self.max_cluster_size)[0]
        pyro.deterministic("labels", ordered, event_dim=1)
        return x

    def _simulate(self, sizes: Tensor, mask: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        labels = self.sample_prior(mask.shape[1], mask.shape[0], generator).masked_fill(~mask, -1)
        x, means = gaussian_cluster_draws(labels, self.dim, self.sigma, self.mean_scale, generator)
        return {"x": x, "labels": ordered_catalog_labels(labels, means, self.max_cluster_size)}

    # ------------------------------------------------------------------ exact terms of the small-N reference
    # (pyro_acp.reference.exact_ordered dispatches on these three methods: the NormOrderedModel protocol)
    def _latent(self, x: Any, partitions: Any) -> tuple[Tensor, Tensor]:
        x = self.check_data(x)
        labels = check_labels(partitions, "partitions").to(x.device)
        if labels.shape[-1] != x.shape[0]:
            raise ValueError(f"partitions have {labels.shape[-1]} points but x has {x.shape[0]}")
        return x, canonicalize(labels)

    def log_partition_joint(self, x: Any, partitions: Any) -> Tensor:
        """log p(pi) + log p(x | pi) (...,) of latent partitions pi (..., N): the CRP draw before splitting
        and ordering, cluster means integrated out (conjugate Gaussian)."""
        x, labels = self._latent(x, partitions)
        stats = gaussian_stats(x, labels, int(labels.max()) + 1)
        prior = self.partition_prior(x.shape[0]).log_prob(labels).to(x.dtype)
        return prior + gaussian_log_marginal(stats, self.sigma, self.mean_scale).sum(-1)

    def mean_posterior(self, x: Any, partitions: Any) -> tuple[Tensor, Tensor]:
        """The posterior N(loc, var I) of each cluster's mean given its points, clusters of the latent
        partitions (..., N) numbered by first appearance: loc (..., K, D), var (..., K), with
        1/var = 1/mean_scale^2 + n/sigma^2 and loc = var * sum(x) / sigma^2 (the prior for an empty slot)."""
        x, labels = self._latent(x, partitions)
        stats = gaussian_stats(x, labels, int(labels.max()) + 1)
        var = 1.0 / (1.0 / self.mean_scale**2 + stats.count / self.sigma**2)
        return var.unsqueeze(-1) * stats.total / self.sigma**2, var

    def ordered_joint_available(self, num_points: int) -> bool:
        """Whether :meth:`log_ordered_joint` is exact at ``num_points``: where no cluster can have been cut
        (N <= ``max_cluster_size``), a position labelling is one latent partition and one order."""
        return self.max_cluster_size is None or num_points <= self.max_cluster_size

    def log_ordered_joint(self, x: Any, positions: Any) -> Tensor:
        """log p(ordered partition, x) (S,) of position labels (S, N) (0 = first cluster; every position
        0..K-1 used): log p(pi, x) of the partition pi (:meth:`log_partition_joint`) plus log P(sigma | pi, x),
        the probability that the clusters' mean norms come in the labels' order, by the grid integral of
        :mod:`pyro_acp.reference.exact_ordered` (Richardson-extrapolated; its error is about 1e-4 on the
        probability scale, so the log of an improbable order is looser). Each distinct labelling is scored
        once and each distinct cluster's CDF once, on the CPU (float64). A ValueError above
        ``max_cluster_size`` points, where a cluster of the labels may be a part of a larger latent one
        (:meth:`ordered_joint_available`), or for labels that are not positions."""
        from pyro_acp.posteriors.ordered import check_ordered_labels  # these import the models
        from pyro_acp.reference.exact_ordered import distinct_clusters, order_log_probabilities

        data = self.check_data(x)
        device, x = data.device, data.detach().to("cpu", torch.float64)
        positions = check_ordered_labels(positions, "positions")
        if positions.dim() != 2 or positions.shape[-1] != x.shape[0]:
            raise ValueError(f"positions must have shape (S, {x.shape[0]}), got {tuple(positions.shape)}")
        if not self.ordered_joint_available(x.shape[0]):
            raise ValueError(f"the exact log joint of an ordered partition is computed for N <= max_cluster_size = "
                             f"{self.max_cluster_size} (no cluster can be cut); this catalog has N = {x.shape[0]}")
        unique, inverse = positions.unique(dim=0, return_inverse=True)
        partitions = canonicalize(unique)  # clusters numbered by first appearance, as mean_posterior numbers them
        loc, var = self.mean_posterior(x, partitions)  # (U, K, D), (U, K)
        num_clusters = partitions.max(-1).values + 1
        rows, k_max = unique.shape[0], loc.shape[1]
        # order[u, p]: the first-appearance cluster at position p (empty slots last)
        position_of = torch.full((rows, k_max), k_max, dtype=torch.long).scatter_reduce(
            1, partitions, unique, "amax", include_self=False)
        order = position_of.argsort(-1)
        set_loc, set_var, set_of = distinct_clusters(partitions, loc, var)  # each distinct cluster once
        by_position = set_of.gather(1, order)
        log_order = order_log_probabilities(set_loc, set_var, by_position, num_clusters)
        log_joint = self.log_partition_joint(x, partitions).to(torch.float64) + log_order
        return log_joint[inverse].to(device)

    def support_violations(self, x: Any, positions: Any, ordered: bool = True) -> dict[str, Tensor]:
        """Which ordered partitions (S, N) the model gives probability zero, by reason: a cluster of more than
        ``max_cluster_size`` points (the generator cuts every such cluster into parts). Any partition whose
        clusters are within the cap, in any order, is possible (the order comes from continuous means), so
        ``ordered=False`` (labels that are not positions) checks the same rule; -1 labels are padding."""
        positions = check_labels(positions, "positions")
        if positions.dim() == 1:
            positions = positions.unsqueeze(0)
        if self.max_cluster_size is None:
            return {}
        return {f"a cluster of more than max_cluster_size = {self.max_cluster_size} points":
                cluster_sizes(positions).max(-1).values > self.max_cluster_size}

    def order_labels(self, partitions: Any, order: Tensor) -> Tensor:
        """Position labels (M, N) of latent partitions (M, N) whose clusters (numbered by first appearance)
        are ordered by ``order`` (M, K), entry p the cluster with the p-th smallest mean norm; a cluster above
        ``max_cluster_size`` becomes consecutive parts, in part order, exactly as in simulation."""
        labels = canonicalize(check_labels(partitions, "partitions"))
        rank = order.argsort(-1).to(torch.get_default_dtype())  # place of each cluster
        return ordered_catalog_labels(labels, (rank + 1).unsqueeze(-1), self.max_cluster_size)


# ---------------------------------------------------------------------------------------------- procedural model


def _pick(allowed: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One uniform choice among the allowed columns of each row, and whether the row had any."""
    has = allowed.any(1)
    weights = allowed.to(torch.float32) + (~has).unsqueeze(1).to(torch.float32)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1), has


class CatalogGrammar(TorchDistribution):
    """The procedural catalog generator as a distribution over (N, 2) rows [position of section, colour].

    Rows are in a uniformly random token order. A simulator only: the grammar's likelihood (a sum over
    section sequences, conditioned on N) is not tractable, so ``log_prob`` raises NotImplementedError.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.nonnegative_integer, 2)

    def __init__(self, catalog: ProceduralCatalog, num_points: int, validate_args: bool | None = None):
        self.catalog = catalog
        self.num_points = check_positive_int(num_points, "num_points")
        super().__init__(torch.Size(), torch.Size((num_points, 2)), validate_args=validate_args)

    def sample(self, sample_shape=_NO_SHAPE) -> Tensor:
        shape = torch.Size(sample_shape)
        count = max(shape.numel(), 1)
        generator = make_generator(None, torch.device("cpu"))
        targets = torch.full((count,), self.num_points)
        labels, colours = self.catalog.sample_catalogs(targets, generator)
        order = torch.rand(labels.shape, generator=generator).argsort(1)
        rows = torch.stack([labels.gather(1, order), colours.gather(1, order)], -1)
        return rows.reshape(shape + self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        raise NotImplementedError("the procedural catalog grammar has no tractable likelihood; it is a simulator "
                                  "for amortised training")


class ProceduralCatalog(GenerativeModel):
    """Coloured tokens grouped into sections and ordered by the rules of a JSON file (module docstring)."""

    data_kind = "catalog"
    ordered = True
    #: the guide trained on demand: NOC with the Catalog Problem paper's loss weights for procedural catalogs
    #: (ordering 15, cardinality 0.1; pyro_acp.protocols.guide_options)
    guide_options = {"type": "NOC", "ordering_weight": 15.0, "cardinality_weight": 0.1}
    max_rounds = 40
    candidates_per_round = 8

    def __init__(self, rules: str | Path | dict | None = None):
        self.rules = load_rules(rules)
        super().__init__(rules=None if rules is None else self.rules.raw)

    @property
    def default_num_points(self) -> tuple[int, int]:  # type: ignore[override]
        lo, hi = self.rules.num_tokens
        return lo, hi + 1

    @property
    def data_dim(self) -> int:
        return len(self.rules.colours)

    def partition_prior(self, num_points: int) -> CatalogGrammar:
        """The grammar at N tokens: its samples carry the ordered partition (column 0) and the colours."""
        return CatalogGrammar(self, num_points)

    def support_violations(self, x: Any, positions: Any, ordered: bool = True) -> dict[str, Tensor]:
        """Which ordered partitions (S, N) of the tokens ``x`` break a rule, so that the grammar never draws
        them, by reason: tokens whose colours match no composition, or a number of tokens outside the rules'
        ``num_tokens`` (no catalog of theirs is possible); a section whose colours the catalog's composition
        does not allow (the compositional rules); sections not in the order of their order groups, or an order
        group of the composition with no section (the structural rules: the generator draws one section from
        every group and orders the sections group by group). Every other catalog is one the grammar can draw.
        ``ordered=False``: the labels only group the tokens (not positions), and the order is not checked."""
        from pyro_acp.diagnostics.ordered_metrics import section_groups  # the metrics import the models

        colours = self.check_data(x).argmax(-1)
        found = section_groups(colours, positions, self.rules, strict=False)
        real, group = found.real, found.group
        low, high = self.rules.num_tokens
        unmatched = found.composition < 0
        violations = {"colours that match no composition of the rules": unmatched,
                      f"{colours.shape[0]} tokens, outside the rules' {low}..{high}":
                      torch.full_like(unmatched, not low <= colours.shape[0] <= high)}
        not_allowed = (real & (group < 0)).any(-1) & ~unmatched
        groups = torch.arange(self.rules.num_groups)
        has = (self.rules.group.unsqueeze(-1) == groups).any(-2)[found.composition.clamp(min=0)]  # (S, G)
        drawn = ((group.unsqueeze(-1) == groups) & real.unsqueeze(-1)).any(-2)  # (S, G) groups with a section
        violations["a section the composition does not allow"] = not_allowed
        if ordered:
            previous = torch.cummax(group.masked_fill(~real, -1), dim=-1).values  # the latest group reached so far
            violations["sections out of the order of their order groups"] = (
                real[:, 1:] & (group[:, 1:] >= 0) & (group[:, 1:] < previous[:, :-1])).any(-1)
        violations["an order group without a section"] = (has & ~drawn).any(-1) & ~unmatched
        return violations

    def check_data(self, x: Any) -> Tensor:
        """Tokens as one-hot colours (N, C), integer colour indices (N,) or colour names (a sequence of
        strings from the rules' ``colours``), returned one-hot (N, C).

        ValueError for an empty catalog, and naming the first token outside the vocabulary (its value and
        position) or the first row that is not a one-hot encoding."""
        c, colours = self.data_dim, list(self.rules.colours)
        if isinstance(x, str):
            raise TypeError(f"a catalog is a sequence of tokens, got the single string {x!r}")
        if isinstance(x, (list, tuple)) and x and all(isinstance(token, str) for token in x):
            unknown = [i for i, token in enumerate(x) if token not in colours]
            if unknown:
                raise ValueError(f"token {x[unknown[0]]!r} at position {unknown[0]} is not in the vocabulary "
                                 f"{colours}")
            x = torch.tensor([colours.index(token) for token in x])
        if _is_empty(x):
            raise ValueError("the catalog is empty (no tokens); a catalog needs at least one token")
        if torch.is_tensor(x) or isinstance(x, np.ndarray):
            arr = torch.as_tensor(x)
            if arr.dim() == 1 and not arr.dtype.is_floating_point:
                outside = ((arr < 0) | (arr >= c)).nonzero().flatten()
                if outside.numel():
                    i = int(outside[0])
                    raise ValueError(f"token {int(arr[i])} at position {i} is outside the vocabulary: colour "
                                     f"indices are 0..{c - 1} ({colours})")
                return torch.nn.functional.one_hot(arr.long(), c).to(torch.get_default_dtype())
        x = check_vectors(x, c)
        bad = (((x != 0) & (x != 1)).any(1) | (x.sum(1) != 1)).nonzero().flatten()
        if bad.numel():
            raise ValueError(f"x row {int(bad[0])} is {x[int(bad[0])].tolist()}, not a one-hot colour encoding "
                             f"(one 1 per row, columns {colours})")
        return x

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        catalog = pyro.sample("catalog", self.partition_prior(num_points))
        pyro.deterministic("labels", catalog[..., 0], event_dim=1)
        x = torch.nn.functional.one_hot(catalog[..., 1], self.data_dim).to(torch.get_default_dtype())
        if obs is not None:
            x = x.to(obs)
        return pyro.sample("x", dist.Delta(x, event_dim=2), obs=obs)

    # ------------------------------------------------------------------ generation
    def _draw(self, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """One candidate per target: (labels (M, L*T) by section position, colours, accepted (M,))."""
        r, device = self.rules, targets.device
        m = targets.shape[0]
        q = torch.randint(r.group.shape[0], (m,), generator=generator, device=device)
        group = r.group.to(device)[q]  # (M, S)
        allowed = group >= 0
        counts = r.section_counts.to(device) > 0  # (S, C)
        picks = [_pick(group == g, generator) for g in range(r.num_groups)]  # structural rules
        covered = torch.zeros(m, counts.shape[1], dtype=torch.bool, device=device)
        for p, has in picks:
            covered |= counts[p] & has.unsqueeze(1)
        wanted = r.composition_colours.to(device)[q]
        for c in range(counts.shape[1]):  # compositional rules: every colour of the input set appears
            p, has = _pick(allowed & counts[:, c], generator)
            has = has & wanted[:, c] & ~covered[:, c]
            covered |= counts[p] & has.unsqueeze(1)
            picks.append((p, has))
        num_fill = int(targets.max()) // r.section_size[0] + 1
        fill = torch.multinomial(allowed.to(torch.float32), num_fill, replacement=True, generator=generator)
        sequence = torch.cat([torch.stack([p for p, _ in picks], 1), fill], 1)  # (M, L)
        present = torch.cat([torch.stack([h for _, h in picks], 1), torch.ones_like(fill, dtype=torch.bool)], 1)
        size = r.section_counts.to(device).sum(1)[sequence] * present
        kept = present & (size.cumsum(1) - size < targets.unsqueeze(1))
        mandatory = (kept | ~present)[:, : len(picks)].all(1)
        accepted = mandatory & ((size * kept).sum(1) == targets)
        key = group.gather(1, sequence) + torch.rand(sequence.shape, generator=generator, device=device)
        position = key.masked_fill(~kept, math.inf).argsort(1).argsort(1)
        tokens = r.section_tokens.to(device)[sequence]  # (M, L, T)
        real = (kept.unsqueeze(-1) & (tokens >= 0)).flatten(1)
        labels = position.unsqueeze(-1).expand_as(tokens).flatten(1).masked_fill(~real, -1)
        return labels, tokens.flatten(1).masked_fill(~real, -1), accepted

    def sample_catalogs(self, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Catalogs with exactly ``targets`` (B,) tokens: (labels (B, N), colours (B, N)), -1 padding at the end.

        Vectorised rejection: each round draws ``candidates_per_round`` candidates for every unfinished
        catalog and keeps the first accepted one.
        """
        batch, width = targets.shape[0], int(targets.max())
        labels = torch.full((batch, width), -1, dtype=torch.long, device=targets.device)
        colours = labels.clone()
        pending = torch.arange(batch, device=targets.device)
        for _ in range(self.max_rounds):
            tries = targets[pending].repeat_interleave(self.candidates_per_round)
            cand_labels, cand_colours, accepted = self._draw(tries, generator)
            accepted = accepted.view(-1, self.candidates_per_round)
            found = accepted.any(1)
            first = accepted.to(torch.int8).argmax(1) + torch.arange(len(pending), device=targets.device) \
                * self.candidates_per_round
            rows = first[found]
            real = cand_labels[rows] >= 0
            order = (~real).to(torch.int8).argsort(dim=1, stable=True)[:, :width]
            labels[pending[found]] = cand_labels[rows].gather(1, order)
            colours[pending[found]] = cand_colours[rows].gather(1, order)
            pending = pending[~found]
            if len(pending) == 0:
                return labels, colours
        bad = sorted(set(targets[pending].tolist()))
        raise ValueError(f"could not generate catalogs with {bad} tokens under the rules "
                         f"(after {self.max_rounds} rounds); rules allow {list(self.rules.num_tokens)} tokens")

    def _simulate(self, sizes: Tensor, mask: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        labels, colours = self.sample_catalogs(sizes, generator)
        x = torch.nn.functional.one_hot(colours.clamp(min=0), self.data_dim).to(torch.get_default_dtype())
        return {"x": x * mask.unsqueeze(-1), "labels": labels}
