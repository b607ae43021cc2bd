"""Posterior sampling with a trained clusterwise guide, and log-probability estimates of the samples.

Sampling runs S "threads" per data set, for many data sets at once: each round draws, for every thread
still running, an anchor uniformly among its unassigned points, a z from the learned prior (or its mean),
and the joins by Bernoulli draw (or threshold). A full sample costs O(K) rounds; finished threads drop out.

The probability of a sample. The sampler generates *ordered* cluster sequences, and a partition's
probability is the sum over the orders of its clusters. Visiting the clusters in a size-biased random
order sigma (the order the sampler itself favours, r(sigma) = prod_k |s_k| / |I_k|) gives the unbiased
importance-sampling estimate p_gen(sigma) / r(sigma), which is, per step, paper eq. (33) with the 1/|I_k|
anchor probability replaced by the mean over the cluster's members:
    log p(s) ~= sum_k [ logsumexp_{d in anchors, j<M} log p(b_k | d, z_j) - log A_k - log M ]
with anchors d drawn from s_k (all, or a random subset of A_k) and z_j ~ p(z | d, s_<k, x); several
orders are averaged in probability space (logmeanexp).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import PAD_LABEL
from pyro_acp.guides.clusterwise import ClusterwiseGuide, DataEncoding, StepEncoding
from pyro_acp.inference.frames import framed
from pyro_acp.inference.frames import (
    sample_frames as frames_of_samples,  # estimate_log_prob has a sample_frames argument
)


def _padded_inputs(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"x must have shape (N, D) or (B, N, D), got {tuple(x.shape)}")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    elif mask.dim() == 1:
        mask = mask.unsqueeze(0)
    return x, mask.bool()


def _step(
    guide: ClusterwiseGuide,
    data: DataEncoding,
    dataset: Tensor,
    anchor: Tensor,
    available: Tensor,
    cluster_code: Tensor,
    targets: Tensor | None = None,
) -> tuple[StepEncoding, object]:
    """Encodings and learned prior of one step for a set of threads (``targets``: the joins, when known)."""
    points, anchor_code, unassigned_code = guide.step_encodings(data.enc, data.feats, dataset, anchor, available)
    context = torch.cat([anchor_code, unassigned_code, cluster_code], -1)
    enc = StepEncoding(dataset, available, points, context, anchor_code, cluster_code, targets=targets,
                       shared_points=guide.shares_points)
    return enc, guide.prior(context)


@torch.no_grad()
def sample_partitions(
    guide: ClusterwiseGuide,
    x: Tensor,
    num_samples: int,
    mask: Tensor | None = None,
    sample_z: bool = True,
    sample_joins: bool = True,
    generator: torch.Generator | None = None,
    frames: Tensor | None = None,
) -> Tensor:
    """Draw ``num_samples`` partitions of each data set: labels (B, S, N), -1 on padding.

    Labels number clusters in the order they were created (anchors are random, so this is not the
    canonical numbering: canonicalise with :func:`pyro_acp.data.partitions.canonicalize` when needed).
    ``frames`` (F, D, D) orthogonal matrices: sample s sees the data rotated by frame s % F
    (:mod:`pyro_acp.inference.frames`; for models whose posterior is rotation invariant).
    """
    x, mask = _padded_inputs(x, mask)
    num_sets, num_points = mask.shape
    dataset = torch.arange(num_sets, device=x.device).repeat_interleave(num_samples)
    frame = frames_of_samples(num_samples, frames, x.device).repeat(num_sets)
    x, mask, dataset = framed(x, mask, frames, dataset, frame)
    data = guide.encode_data(x, mask)
    labels = torch.full((dataset.shape[0], num_points), -1, dtype=torch.long, device=x.device)
    labels[~mask[dataset]] = PAD_LABEL - 1  # padding, restored at the end
    cluster_code = x.new_zeros(dataset.shape[0], guide.hidden_dim)
    active = torch.arange(dataset.shape[0], device=x.device)
    step = 0
    while active.numel():
        unassigned = labels[active] == -1
        anchor_index = torch.multinomial(unassigned.to(x.dtype), 1, generator=generator)
        anchor = torch.zeros_like(unassigned).scatter_(1, anchor_index, True)
        available = unassigned & ~anchor
        enc, prior = _step(guide, data, dataset[active], anchor, available, cluster_code[active])
        z = prior.loc + prior.scale * torch.randn(prior.loc.shape, generator=generator, device=x.device) \
            if sample_z else prior.loc
        logits = guide.join_logits(z, enc)
        if sample_joins:
            joins = torch.rand(logits.shape, generator=generator, device=x.device) < torch.sigmoid(logits)
        else:
            joins = logits > 0
        members = anchor | (joins & available)
        labels[active] = torch.where(members, torch.full_like(labels[active], step), labels[active])
        cluster_code[active] += guide.cluster_summaries(data.cluster_points, dataset[active], members)
        active = active[(labels[active] == -1).any(-1)]
        step += 1
    labels[labels < -1] = PAD_LABEL
    return labels.view(num_sets, num_samples, num_points)


@torch.no_grad()
def estimate_log_prob(
    guide: ClusterwiseGuide,
    x: Tensor,
    labels: Tensor,
    mask: Tensor | None = None,
    num_anchors: int | None = 10,
    num_z: int = 1,
    num_orders: int = 1,
    generator: torch.Generator | None = None,
    chunk_size: int = 4096,
    z_proposal: str = "prior",
    frames: Tensor | None = None,
    sample_frames: Tensor | None = None,
) -> Tensor:
    """log p(partition | x) estimates (B, S) for partitions (B, S, N) of data sets (B, N, D).

    ``num_anchors=None`` uses every member as anchor (exact anchor marginalisation), otherwise a random
    subset of at most ``num_anchors`` members per cluster; ``num_z`` draws of z per anchor and
    ``num_orders`` size-biased cluster orders per partition are averaged (see the module docstring).
    ``z_proposal="encoder"`` draws z from the encoder q(z | joins) that training fitted, weighted by
    p(z) / q(z | joins): the same unbiased estimate with far less variance than prior draws (whose
    logarithm underestimates the probability of partitions that need an unusual z).
    ``frames`` (F, D, D) with ``sample_frames`` (S,) or (B, S): estimate each partition in the frame it was
    drawn in, q(c | Q x): with the frame as an auxiliary variable, p(c, x) / q(c | Q x) is a valid importance
    weight for samples of the frame-averaged guide (:mod:`pyro_acp.inference.frames`), and a less noisy one than an
    estimate of the average over frames.
    """
    if z_proposal not in ("prior", "encoder"):
        raise ValueError(f"z_proposal must be 'prior' or 'encoder', got {z_proposal!r}")
    x, mask = _padded_inputs(x, mask)
    if labels.dim() == 2:
        labels = labels.unsqueeze(0)
    num_sets, num_samples, num_points = labels.shape
    flat = size_biased_relabel(labels.repeat_interleave(num_orders, 1).reshape(-1, num_points), generator)
    threads = num_samples * num_orders
    dataset = torch.arange(num_sets, device=x.device).repeat_interleave(threads)
    if frames is not None:
        if sample_frames is None:
            raise ValueError("frames need sample_frames: the frame each partition was drawn in")
        thread_frames = sample_frames.to(x.device).expand(num_sets, num_samples).repeat_interleave(num_orders, 1)
        x, mask, dataset = framed(x, mask, frames, dataset, thread_frames.reshape(-1))
    data = guide.encode_data(x, mask)
    num_clusters = int(flat.max()) + 1
    steps = torch.arange(num_clusters, device=x.device)
    members = flat.unsqueeze(1) == steps.view(1, -1, 1)  # (T, K, N)
    counts = members.long()
    assigned = (counts.cumsum(1) - counts).bool()
    unassigned = mask[dataset].unsqueeze(1) & ~assigned  # I_k
    valid = members.any(-1)  # (T, K)
    # G_k from the true earlier clusters, all steps at once
    thread, step = valid.nonzero(as_tuple=True)
    summaries = guide.cluster_summaries(data.cluster_points, dataset[thread], members[thread, step])
    per_step = summaries.new_zeros(*valid.shape, guide.hidden_dim).index_put((thread, step), summaries)
    cluster_code = (per_step.cumsum(1) - per_step)[thread, step]
    # anchors: every member, or a random subset of each cluster
    scores = torch.rand(members[thread, step].shape, generator=generator, device=x.device)
    scores = scores.masked_fill(~members[thread, step], -1.0)
    cluster_size = members[thread, step].sum(-1)
    used = cluster_size if num_anchors is None else cluster_size.clamp(max=num_anchors)
    order = scores.argsort(-1, descending=True)
    rank = order.argsort(-1)
    chosen = members[thread, step] & (rank < used.unsqueeze(-1))
    row, anchor_point = chosen.nonzero(as_tuple=True)  # one row per (thread, step, anchor)
    log_terms = torch.empty(row.shape[0], num_z, dtype=x.dtype, device=x.device)
    for start in range(0, row.shape[0], chunk_size):
        r = row[start : start + chunk_size]
        t, k = thread[r], step[r]
        anchor = torch.zeros(r.shape[0], num_points, dtype=torch.bool, device=x.device)
        anchor[torch.arange(r.shape[0], device=x.device), anchor_point[start : start + chunk_size]] = True
        available = unassigned[t, k] & ~anchor
        enc, prior = _step(guide, data, dataset[t], anchor, available, cluster_code[r], members[t, k] & available)
        proposal = guide.posterior(enc) if z_proposal == "encoder" else prior
        z = proposal.loc + proposal.scale * torch.randn(
            (num_z, *proposal.loc.shape), generator=generator, device=x.device
        )
        logits = guide.join_logits(z, enc)  # (M, R, N)
        log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, enc.targets.to(x.dtype).expand_as(logits), reduction="none"
        )
        log_term = (log_lik * available).sum(-1)
        if z_proposal == "encoder":
            log_term = log_term + prior.log_prob(z).sum(-1) - proposal.log_prob(z).sum(-1)
        log_terms[start : start + chunk_size] = log_term.T
    # logsumexp over anchors and z draws, per (thread, step)
    per_row = log_terms.logsumexp(-1)
    lse = per_row.new_full((thread.shape[0],), float("-inf")).scatter_reduce(
        0, row, per_row, "amax", include_self=True
    )
    shifted = (per_row - lse[row]).exp()
    lse = lse + torch.zeros_like(lse).index_add(0, row, shifted).log()
    log_step = lse - math.log(num_z) - used.to(x.dtype).log()
    total = log_step.new_zeros(flat.shape[0]).index_add(0, thread, log_step)
    per_order = total.view(num_sets, num_samples, num_orders)
    return per_order.logsumexp(-1) - math.log(num_orders)


def has_exact_log_joint(model: Any) -> bool:
    """Whether ``model`` has an exact (collapsed) log p(partition, x), e.g. the conjugate mixtures."""
    return callable(getattr(model, "log_joint", None))


def exact_log_joint(model: Any, x: Tensor, labels: Tensor) -> Tensor | None:
    """log p(partition, x) of partitions (S, N) of one data set (N, D), or None without an exact likelihood.

    It ranks samples exactly (up to a constant), where the guide's own estimates are noisy.
    """
    return model.log_joint(x, labels) if has_exact_log_joint(model) else None


def size_biased_relabel(labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Renumber clusters (T, N) by first appearance in a uniformly random point order, per row.

    The resulting cluster order is size-biased: cluster s comes first with probability |s| / N.
    """
    keys = torch.rand(labels.shape, generator=generator, device=labels.device)
    valid = labels >= 0
    safe = labels.clamp(min=0)
    num_labels = int(safe.max()) + 1
    first = keys.new_full((labels.shape[0], num_labels), 2.0)
    first.scatter_reduce_(1, safe, keys.masked_fill(~valid, 2.0), "amin")
    rank = first.argsort(1).argsort(1)
    return rank.gather(1, safe).masked_fill(~valid, PAD_LABEL)
