"""Posterior sampling with a trained clusterwise guide, and log-probability estimates of the samples.

Sampling runs S "threads" per data set, for many data sets at once: each round draws, for every thread
still running, an anchor uniformly among its unassigned points, a z from the learned prior (or its mean),
and the joins by Bernoulli draw (or threshold). A full sample costs O(K) rounds; finished threads drop out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_acp.data.partitions import PAD_LABEL
from pyro_acp.guides.clusterwise import ClusterwiseGuide, DataEncoding, StepEncoding
from pyro_acp.inference.frames import framed
from pyro_acp.inference.frames import (
    sample_frames as frames_of_samples,  # estimate_log_prob has a sample_frames argument
)


def padded_inputs(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"x must have shape (N, D) or (B, N, D), got {tuple(x.shape)}")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    elif mask.dim() == 1:
        mask = mask.unsqueeze(0)
    return x, mask.bool()


def encode_step(
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
    x, mask = padded_inputs(x, mask)
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
        enc, prior = encode_step(guide, data, dataset[active], anchor, available, cluster_code[active])
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
