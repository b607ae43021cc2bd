"""Scoring the cluster steps of log q estimates: each step's probability under the guide (anchors and z drawn
by importance), and the exact sum over every order of a partition's clusters from those steps.

Step k of the sampler builds cluster s_k from an anchor d among the |I_k| unassigned points and a latent z,
so a step contributes (1 / |I_k|) sum_{d in s_k} integral p(s_k | d, z, s_<k, x) p(z | d, s_<k, x) dz
(:func:`log_steps`); :func:`step_rows` lists the steps each unit needs, :func:`sum_over_orders` combines them
(:mod:`pyro_acp.inference.log_prob` assembles the estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pyro_acp.data.partitions import size_biased_relabel
from pyro_acp.guides.clusterwise import ClusterwiseGuide
from pyro_acp.inference.log_space import scatter_logsumexp
from pyro_acp.inference.replicates import Units
from pyro_acp.inference.streams import EstimatorDraws

if TYPE_CHECKING:
    from pyro_acp.inference.log_prob import DataRows

#: the join network runs on at most this many (z draw, candidate point) pairs at a time, which bounds its
#: (pairs, H) activations whatever N is (speed is level from 2^14 pairs up on a 2-core CPU)
JOIN_CHUNK = 2**16


@dataclass(frozen=True)
class StepRows:
    """Cluster steps to score: in unit ``unit``, cluster ``cluster`` built after the clusters in ``earlier``
    (R, K_max) bool. An enumerated unit has a row for every (earlier set S, cluster c not in S), ``subset``
    being the bit mask of S; a sampled one has the K steps of one size-biased order (``subset`` -1)."""

    unit: Tensor
    cluster: Tensor
    earlier: Tensor
    subset: Tensor


def step_rows(units: Units, unit_labels: Tensor, draws: EstimatorDraws, unit_owner: Tensor) -> StepRows:
    device = unit_labels.device
    max_clusters = int(units.num_clusters.max())
    pieces = []
    for k in units.num_clusters[units.enumerated].unique().tolist():
        unit = (units.enumerated & (units.num_clusters == k)).nonzero(as_tuple=True)[0]
        subset = torch.arange(2**k, device=device)
        members = (subset.unsqueeze(-1) & 2 ** torch.arange(k, device=device)) > 0  # (2^k, k)
        pair_subset, pair_cluster = (~members).nonzero(as_tuple=True)  # every c not in S
        earlier = torch.zeros(pair_subset.shape[0], max_clusters, dtype=torch.bool, device=device)
        earlier[:, :k] = members[pair_subset]
        pieces.append((unit.repeat_interleave(pair_subset.shape[0]), pair_cluster.repeat(unit.shape[0]),
                       earlier.repeat(unit.shape[0], 1), pair_subset.repeat(unit.shape[0])))
    sampled = (~units.enumerated).nonzero(as_tuple=True)[0]
    if sampled.numel():
        labels = unit_labels[sampled]
        keys = draws.uniform(unit_owner[sampled], tuple(labels.shape), 2.0, device)
        position = size_biased_relabel(labels, keys=keys)  # (T, N): the step at which each point's cluster is built
        cluster_step = torch.full((sampled.shape[0], max_clusters), max_clusters, dtype=torch.long, device=device)
        # amin, not a plain scatter: padding (label -1, clamped to 0) must not overwrite cluster 0's step
        cluster_step.scatter_reduce_(1, labels.clamp(min=0), torch.where(labels >= 0, position, max_clusters), "amin")
        thread, cluster = (cluster_step < max_clusters).nonzero(as_tuple=True)
        earlier = cluster_step[thread] < cluster_step[thread, cluster].unsqueeze(-1)
        pieces.append((sampled[thread], cluster, earlier, torch.full_like(cluster, -1)))
    unit, cluster, earlier, subset = (torch.cat(parts) for parts in zip(*pieces, strict=True))
    return StepRows(unit, cluster, earlier, subset)


def log_steps(guide: ClusterwiseGuide, data: DataRows, unit_row: Tensor, unit_labels: Tensor, rows: StepRows,
              row_owner: Tensor, num_anchors: int | None, num_z: int, z_proposal: str, draws: EstimatorDraws,
              chunk_size: int) -> tuple[Tensor, Tensor]:
    """Per step row: the estimate of log[(1 / |I|) sum_{d in s_c} p(b_c | d, earlier clusters, x)], the
    probability that the step picks an anchor in s_c and builds exactly s_c, and log(|s_c| / |I|), the
    size-biased probability of visiting s_c next (|I|: points outside the earlier clusters)."""
    x, device = data.x, data.x.device
    num_points = unit_labels.shape[-1]
    encoded = guide.encode_data(x, data.mask)
    labels = unit_labels[rows.unit]
    valid = labels >= 0
    cluster = (labels == rows.cluster.unsqueeze(-1))  # (R, N) s_c
    assigned = rows.earlier.gather(1, labels.clamp(min=0)) & valid
    dataset = unit_row[rows.unit]
    unassigned = data.mask[dataset] & ~assigned  # I
    # G: the summed summaries of the earlier clusters, from one summary per (unit, cluster)
    max_clusters = rows.earlier.shape[1]
    steps = torch.arange(max_clusters, device=device)
    unit_members = unit_labels.unsqueeze(1) == steps.view(1, -1, 1)  # (U, K, N)
    unit_index, cluster_index = unit_members.any(-1).nonzero(as_tuple=True)
    summaries = guide.cluster_summaries(encoded.cluster_points, unit_row[unit_index],
                                        unit_members[unit_index, cluster_index])
    table = summaries.new_zeros(*unit_members.shape[:2], guide.hidden_dim).index_put(
        (unit_index, cluster_index), summaries)
    cluster_code = summaries.new_zeros(rows.unit.shape[0], guide.hidden_dim)
    for k in range(max_clusters):  # sum over the earlier clusters, one (R, H) slice at a time
        cluster_code += rows.earlier[:, k : k + 1].to(table.dtype) * table[rows.unit, k]
    cluster_size = cluster.sum(-1)
    used = cluster_size if num_anchors is None else cluster_size.clamp(max=num_anchors)
    scores = draws.uniform(row_owner, tuple(cluster.shape), -1.0, device).masked_fill(~cluster, -1.0)
    rank = scores.argsort(-1, descending=True).argsort(-1)
    row, anchor_point = (cluster & (rank < used.unsqueeze(-1))).nonzero(as_tuple=True)  # (step row, anchor)
    log_terms = torch.empty(row.shape[0], num_z, dtype=x.dtype, device=device)
    piece = max(1, chunk_size * 4 // num_z)  # rows x z draws per noise piece bounded: memory
    noise = draws.normal_stream(row_owner[row], num_z, guide.z_dim, piece, device)
    candidates = (unassigned.sum(-1) - 1).clamp(min=1)[row] * num_z  # (z draw, candidate) pairs per anchor row
    for start, stop in chunk_bounds(candidates, JOIN_CHUNK, piece):
        r = row[start:stop]
        anchor = torch.zeros(r.shape[0], num_points, dtype=torch.bool, device=device)
        anchor[torch.arange(r.shape[0], device=device), anchor_point[start:stop]] = True
        available = unassigned[r] & ~anchor
        enc, prior = guide.encode_step(encoded, dataset[r], anchor, available, cluster_code[r], cluster[r] & available)
        z, log_weight = draw_z(guide, enc, prior, noise.take(r.shape[0]), z_proposal)
        logits = guide.join_logits(z, enc)  # (M, R, N)
        log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, enc.targets.to(x.dtype).expand_as(logits), reduction="none"
        )
        log_terms[start:stop] = ((log_lik * available).sum(-1) + log_weight).T
    # mean over z draws and anchors, times |s_c| / |I|
    log_anchor_mean = scatter_logsumexp(log_terms.logsumexp(-1), row, cluster.shape[0]) - math.log(num_z)
    log_share = cluster_size.to(x.dtype).log() - unassigned.sum(-1).to(x.dtype).log()
    return log_anchor_mean - used.to(x.dtype).log() + log_share, log_share


def chunk_bounds(work: Tensor, budget: int, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) row ranges of at most ``max_rows`` rows whose summed ``work`` stays within
    ``budget`` (a row over the budget alone in its range)."""
    before = work.cumsum(0) - work  # a range holds the rows that start within one budget's span
    counts = torch.unique_consecutive(torch.div(before, budget, rounding_mode="floor"), return_counts=True)[1]
    bounds, start = [], 0
    for count in counts.tolist():
        for first in range(start, start + count, max_rows):
            bounds.append((first, min(first + max_rows, start + count)))
        start += count
    return bounds


def sum_over_orders(log_step: Tensor, rows: StepRows, units: Units) -> Tensor:
    """log sum over all K! orders sigma of prod_k step(sigma_<k, sigma_k), per enumerated unit (-inf for the
    others), by dynamic programming over subsets: f(empty) = 1, f(T) = sum_{c in T} f(T - c) step(T - c, c),
    q = f(all clusters) (Held-Karp style: K 2^(K-1) step estimates instead of K K!). Every order's product uses
    distinct rows, whose estimates are independent, so the sum stays unbiased."""
    device = log_step.device
    chosen = units.enumerated.nonzero(as_tuple=True)[0]
    slot = torch.full_like(units.partition, -1).index_copy(0, chosen, torch.arange(chosen.shape[0], device=device))
    k_max = int(units.num_clusters[chosen].max())
    on = rows.subset >= 0
    table = log_step.new_full((chosen.shape[0], 2**k_max, k_max), float("-inf"))
    table[slot[rows.unit[on]], rows.subset[on], rows.cluster[on]] = log_step[on]
    subsets = torch.arange(2**k_max, device=device)
    bits = 2 ** torch.arange(k_max, device=device)
    popcount = ((subsets.unsqueeze(-1) & bits) > 0).sum(-1)
    f = log_step.new_full((chosen.shape[0], 2**k_max), float("-inf"))
    f[:, 0] = 0.0
    for level in range(1, k_max + 1):
        target = subsets[popcount == level]  # (M,)
        inside = (target.unsqueeze(-1) & bits) > 0  # (M, K): c in T
        before = (target.unsqueeze(-1) - bits).clamp(min=0)  # T - c, meaningful where c in T
        terms = f[:, before] + table[:, before, torch.arange(k_max, device=device)]
        f[:, target] = terms.masked_fill(~inside, float("-inf")).logsumexp(-1)
    out = log_step.new_full((units.partition.shape[0],), float("-inf"))
    out[chosen] = f[torch.arange(chosen.shape[0], device=device), 2 ** units.num_clusters[chosen] - 1]
    return out


def draw_z(guide: ClusterwiseGuide, enc, prior, noise: Tensor, z_proposal: str) -> tuple[Tensor, Tensor]:
    """z draws per step (M, R, Z) from standard normal ``noise`` (M, R, Z) and their log importance weights
    log p(z) - log proposal(z).

    "mixture" draws the first half from the prior p(z | context) and the rest from the encoder q(z | joins) and
    weights every draw by p / (p/2 + q/2) (the balance heuristic of multiple importance sampling: unbiased,
    with weights at most 2, so neither an overconfident encoder nor a prior that misses unusual z makes the
    estimate heavy-tailed).
    """
    num_z = noise.shape[0]
    if z_proposal == "prior":
        return prior.loc + prior.scale * noise, noise.new_zeros(noise.shape[:2])
    posterior = guide.posterior(enc)
    if z_proposal == "encoder":
        z = posterior.loc + posterior.scale * noise
        return z, prior.log_prob(z).sum(-1) - posterior.log_prob(z).sum(-1)
    from_prior = torch.arange(num_z, device=noise.device) < (num_z + 1) // 2
    loc = torch.where(from_prior.view(-1, 1, 1), prior.loc, posterior.loc)
    scale = torch.where(from_prior.view(-1, 1, 1), prior.scale, posterior.scale)
    z = loc + scale * noise
    log_p, log_q = prior.log_prob(z).sum(-1), posterior.log_prob(z).sum(-1)
    return z, log_p - (torch.logaddexp(log_p, log_q) - math.log(2.0))
