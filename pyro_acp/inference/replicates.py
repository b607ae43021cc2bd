"""The independent replicates ("units") of each partition's log q estimate, and the frame each runs in.

A partition gets ``num_orders`` units that each follow one size-biased cluster order, or, where its orders are
summed exactly, max(2, num_orders // 2^(K-1)) units that each sum them all (:func:`replicate_units`). With
sampling frames every unit runs in one frame (:func:`place_in_frames`): in turn through all F frames from a
random start, or, where the units are fewer than F and the frames a partition was drawn in are known, in two
strata, those frames and the others (:mod:`pyro_acp.inference.log_prob` says why this is unbiased for the
frame mixture).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pyro_acp.inference.streams import EstimatorDraws

#: the exact sum over orders is done for at most this many clusters (K 2^(K-1) step rows each)
MAX_ENUMERATED_CLUSTERS = 12


@dataclass(frozen=True)
class Units:
    """The independent replicates of every partition's estimate: unit u estimates q(partition[u]) by the exact
    sum over its orders (``enumerated[u]``) or by one size-biased order; ``replicate[u]`` numbers the units of
    one partition; a partition split into two frame strata puts its units alternately in stratum ``side`` 0
    (its drawn frames) and 1 (the others), ``split[u]`` (else ``side`` 0)."""

    partition: Tensor
    replicate: Tensor
    enumerated: Tensor
    num_clusters: Tensor
    side: Tensor
    split: Tensor


def replicate_units(partitions: Tensor, num_orders: int, orders: str, num_frames: Tensor | int = 1,
                    stratifiable: Tensor | bool = False) -> Units:
    """``num_orders`` sampled-order units per partition, or max(2, num_orders // 2^(K-1)) enumerated ones;
    an enumerated count of at least ``num_frames`` (per partition, or one for all) is rounded up to a multiple
    of it, so that every frame is visited equally often (the frames then contribute no noise: the mean is over
    all of them). A ``stratifiable`` partition whose count is not a multiple of its frames is split into two
    strata of max(2, ceil(count / 2)) units each (a standard error needs two per stratum)."""
    num_clusters = partitions.max(-1).values + 1
    subset_rows = 2 ** (num_clusters - 1)  # (S, c) pairs per cluster and partition in the exact sum, over N
    if orders == "enumerate":
        if int(num_clusters.max()) > MAX_ENUMERATED_CLUSTERS:
            raise ValueError(f"orders='enumerate' sums over all cluster orders of partitions with at most "
                             f"{MAX_ENUMERATED_CLUSTERS} clusters; one has {int(num_clusters.max())}: use "
                             "orders='auto' or 'sample'")
        enumerated = torch.ones_like(num_clusters, dtype=torch.bool)
    elif orders == "auto":
        enumerated = (subset_rows <= num_orders) & (num_clusters <= MAX_ENUMERATED_CLUSTERS)
    else:
        enumerated = torch.zeros_like(num_clusters, dtype=torch.bool)
    exact_count = (num_orders // subset_rows).clamp(min=2)
    stratified = (exact_count + num_frames - 1) // num_frames * num_frames
    exact_count = torch.where(exact_count >= num_frames, stratified, exact_count)  # at most doubles the cost
    count = torch.where(enumerated, exact_count, torch.full_like(num_clusters, num_orders))
    split = torch.as_tensor(stratifiable, device=partitions.device) & (count % num_frames != 0)
    count = torch.where(split, 2 * ((count + 1) // 2).clamp(min=2), count)
    partition = torch.arange(partitions.shape[0], device=partitions.device).repeat_interleave(count)
    first = count.cumsum(0) - count
    replicate = torch.arange(partition.shape[0], device=partitions.device) - first[partition]
    split = split.expand_as(count)[partition]
    side = torch.where(split, replicate % 2, 0)
    return Units(partition, replicate, enumerated[partition], num_clusters[partition], side, split)


def place_in_frames(units: Units, num_frames: Tensor, drawn: Tensor | None, draws: EstimatorDraws,
                    owner: Tensor) -> tuple[Tensor, Tensor]:
    """The frame of every unit and the log share (|stratum| / F) of the frames its stratum stands for.

    A stratum's frames (all F of the partition's data set; or, split, its drawn frames / the others) are taken
    in turn from a uniformly drawn start, so each unit's frame is uniform within the stratum (the stratum's
    mean is unbiased) and a stratum with as many units as frames visits each once. ``num_frames``,
    ``drawn`` (F_max columns) and ``owner`` are per partition, ``units.partition`` indexes them."""
    device = num_frames.device
    width = int(num_frames.max()) if drawn is None else drawn.shape[-1]
    partition = units.partition
    frame_index = torch.arange(width, device=device)
    in_stratum = frame_index < num_frames[partition].unsqueeze(-1)  # (U, F_max)
    if drawn is not None:
        mine = drawn[partition]
        side_mask = torch.where((units.side == 0).unsqueeze(-1), mine, ~mine)
        in_stratum = in_stratum & torch.where(units.split.unsqueeze(-1), side_mask, True)
    size = in_stratum.sum(-1)
    start = torch.zeros(num_frames.shape[0], 2, device=device)
    framed_sets = (num_frames > 1).nonzero(as_tuple=True)[0]  # no draws where there is one frame: as before
    if framed_sets.numel():
        start[framed_sets] = draws.row_uniforms(owner[framed_sets], 2, device)
    first = (start[partition, units.side] * size).long().clamp(max=size - 1)
    within = torch.where(units.split, units.replicate // 2, units.replicate)
    members = ((~in_stratum) * width + frame_index).argsort(-1)  # the stratum's frames first, in order
    frame = members.gather(1, ((first + within) % size).unsqueeze(-1)).squeeze(-1)
    log_weight = torch.where(units.split, size.double().log() - num_frames[partition].double().log(), 0.0)
    return frame, log_weight
