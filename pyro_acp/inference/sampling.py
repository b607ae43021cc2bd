"""Posterior sampling with a trained clusterwise guide.

Sampling runs S "threads" per data set, for many data sets at once, in rounds: each round asks the guide for
the next cluster of every thread still running (:meth:`ClusterwiseGuide.sample_step`: by default an anchor
drawn uniformly among the thread's unassigned points, a z from the learned prior (or its mean), and the joins
by Bernoulli draw (or threshold)), so a full sample costs O(K) rounds; finished threads drop out. A guide
can change a round (e.g. cap a cluster's size) by overriding ``sample_step`` or ``select_members``. For
ordered models, once every thread is finished the guide orders each thread's clusters
(:meth:`ClusterwiseGuide.order_clusters`) and labels become positions in that order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_acp.data.partitions import PAD_LABEL
from pyro_acp.guides.clusterwise import ClusterwiseGuide, DataEncoding, FinishedClusters, SamplingRound
from pyro_acp.inference.frames import framed
from pyro_acp.inference.frames import (
    sample_frames as frames_of_samples,  # estimate_log_prob has a sample_frames argument
)


def padded_inputs(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(B, N, D) data and (B, N) bool mask from one data set (N, D) or a padded batch (B, N, D)."""
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"x must have shape (N, D) or (B, N, D), got {tuple(x.shape)}")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    elif mask.dim() == 1:
        mask = mask.unsqueeze(0)
    return x, mask.bool()


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
    *,
    ordered: bool = False,
) -> Tensor:
    """Draw ``num_samples`` partitions of each data set: labels (B, S, N), -1 on padding.

    Round k gives every running thread its cluster k, ``guide.sample_step(...)`` (members (T, N), at least
    one point, all unassigned), until every point is assigned. ``ordered=False``: labels number clusters in
    the order they were created (anchors are random, so this is not the canonical numbering: canonicalise
    with :func:`pyro_acp.data.partitions.canonicalize` when needed). ``ordered=True``: the guide orders each
    thread's finished clusters (``guide.order_clusters``) and labels are positions in that order (0 = first),
    the canonical form of an ordered partition; the clusters and the random draws are the same either way.
    ``frames`` (F, D, D) orthogonal matrices: sample s sees the data rotated by frame s % F
    (:mod:`pyro_acp.inference.frames`; for models whose posterior is rotation invariant).
    """
    x, mask = padded_inputs(x, mask)
    num_sets, num_points = mask.shape
    dataset = torch.arange(num_sets, device=x.device).repeat_interleave(num_samples)
    frame = frames_of_samples(num_samples, frames, x.device).repeat(num_sets)
    x, mask, dataset = framed(x, mask, frames, dataset, frame)
    data = guide.encode_data(x, mask)
    labels = torch.full((dataset.shape[0], num_points), -1, dtype=torch.long, device=x.device)
    labels[~mask[dataset]] = PAD_LABEL - 1  # padding, restored at the end
    cluster_code = x.new_zeros(dataset.shape[0], guide.hidden_dim)
    rounds: list[tuple[Tensor, Tensor]] = []  # (threads, their new cluster's summary) per round, when ordered
    active = torch.arange(dataset.shape[0], device=x.device)
    step = 0
    while active.numel():
        unassigned = labels[active] == -1
        state = SamplingRound(data, active, dataset[active], unassigned, cluster_code[active], step)
        members = guide.sample_step(state, generator=generator, sample_z=sample_z, sample_joins=sample_joins)
        _check_members(guide, members, unassigned)
        labels[active] = torch.where(members, step, labels[active])
        summary = guide.cluster_summaries(data.cluster_points, dataset[active], members)
        cluster_code[active] += summary
        if ordered:
            rounds.append((active, summary))
        active = active[(labels[active] == -1).any(-1)]
        step += 1
    labels[labels < -1] = PAD_LABEL
    if ordered:
        labels = _ordered_labels(guide, data, dataset, labels, rounds, generator)
    return labels.view(num_sets, num_samples, num_points)


def _check_members(guide: ClusterwiseGuide, members: Tensor, unassigned: Tensor) -> None:
    """A round must give every running thread a non-empty cluster of unassigned points (else no progress)."""
    if members.shape != unassigned.shape or members.dtype != torch.bool:
        raise ValueError(f"{type(guide).__name__}.sample_step must return a bool tensor of shape "
                         f"{tuple(unassigned.shape)}, got {members.dtype} of shape {tuple(members.shape)}")
    if ((members & ~unassigned).any(-1) | ~members.any(-1)).any():
        raise ValueError(f"{type(guide).__name__}.sample_step returned a cluster that is empty or holds "
                         "points already assigned")


def _ordered_labels(
    guide: ClusterwiseGuide,
    data: DataEncoding,
    dataset: Tensor,
    labels: Tensor,
    rounds: list[tuple[Tensor, Tensor]],
    generator: torch.Generator | None,
) -> Tensor:
    """Creation-order labels (T, N) -> positions in the guide's order of each thread's clusters."""
    num_threads, num_clusters = labels.shape[0], len(rounds)
    summaries = data.enc.new_zeros(num_threads, num_clusters, rounds[0][1].shape[-1])
    for k, (threads, summary) in enumerate(rounds):
        summaries[threads, k] = summary
    counts = labels.max(-1).values + 1
    order = guide.order_clusters(FinishedClusters(data, dataset, labels, counts, summaries), generator=generator)
    expected = torch.arange(num_clusters, device=labels.device).expand(num_threads, num_clusters)
    if (order.shape != expected.shape or order.dtype != torch.long
            or not torch.equal(order.sort(-1).values, expected)
            or not torch.equal(order < counts.unsqueeze(-1), expected < counts.unsqueeze(-1))):
        raise ValueError(f"{type(guide).__name__}.order_clusters must return (T, K) = {tuple(expected.shape)} "
                         "long permutations of 0..K-1 listing each thread's own clusters first")
    position = order.argsort(-1)  # position[t, k]: where cluster k (creation order) goes
    return torch.where(labels >= 0, position.gather(1, labels.clamp(min=0)), labels)
