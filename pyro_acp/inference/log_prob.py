"""Log-probability estimates of sampled partitions under a trained clusterwise guide.

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

import torch
from torch import Tensor

from pyro_acp.data.partitions import PAD_LABEL
from pyro_acp.guides.clusterwise import ClusterwiseGuide
from pyro_acp.inference.frames import framed
from pyro_acp.inference.sampling import padded_inputs


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
    x, mask = padded_inputs(x, mask)
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
        enc, prior = guide.encode_step(data, dataset[t], anchor, available, cluster_code[r], members[t, k] & available)
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
