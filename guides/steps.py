"""The data structures of a clusterwise pass: teacher-forced step encodings, per-data-set encodings, and what
a sampling round and its finished clusters know (shared by the guides and the sampler), plus the size cap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["DataEncoding", "FinishedClusters", "SamplingRound", "StepEncoding", "cap_cluster_size"]


@dataclass
class StepEncoding:
    """Everything the prior, the join network and the encoder q need for S flattened steps."""

    dataset: Tensor  # (S,) data set of each step
    available: Tensor  # (S, N) join candidates
    points: Tensor  # (S, N, H) per-point features seen by the join network, or (B, N, H) when shared
    context: Tensor  # (S, 3H) cat(D, U, G)
    anchor_code: Tensor  # (S, H) D
    cluster_code: Tensor  # (S, H) G
    targets: Tensor | None = None  # (S, N) joins (training only)
    shared_points: bool = False  # points are per data set (B, N, H), indexed through ``dataset``


class DataEncoding(NamedTuple):
    """Per-data-set tensors (B, N, .): point encodings, variant features, h(enc) for cluster summaries."""

    enc: Tensor
    feats: Tensor
    cluster_points: Tensor


@dataclass
class SamplingRound:
    """What a sampling round knows about the T threads (one posterior sample each) still running.

    Threads are flattened over data sets and samples; ``dataset`` maps each to its data set in ``data``.
    """

    data: DataEncoding  # per-data-set encodings (B, N, .), computed once
    thread: Tensor  # (T,) index of each running thread among all threads
    dataset: Tensor  # (T,) data set of each running thread
    unassigned: Tensor  # (T, N) points not yet in a cluster (False on padding)
    cluster_code: Tensor  # (T, H) G = sum of the finished clusters' summaries
    step: int  # index of the cluster being built (0 for the first)


@dataclass
class FinishedClusters:
    """Every thread's clusters once all points are assigned, numbered in creation order."""

    data: DataEncoding  # per-data-set encodings (B, N, .)
    dataset: Tensor  # (T,) data set of each thread
    labels: Tensor  # (T, N) creation index of each point's cluster (0 = built first), -1 on padding
    num_clusters: Tensor  # (T,) K_t
    summaries: Tensor  # (T, K, H) g(PMA(h(enc), s_k)) per cluster in creation order; 0 for k >= K_t


def cap_cluster_size(anchor: Tensor, joins: Tensor, logits: Tensor, max_size: Tensor | int) -> Tensor:
    """Members (T, N) of clusters capped at ``max_size`` (an int or (T,) sizes, at least 1): the anchor and
    the ``max_size - 1`` most probable joiners, ranked by join logit (ties: the lower point index).

    ``joins`` (T, N) are the candidates that drew b_i = 1; a cluster at or under its cap is unchanged.
    """
    cap = torch.as_tensor(max_size, device=joins.device).clamp(min=1).expand(joins.shape[0])
    scores = logits.masked_fill(~joins, float("-inf"))
    rank = scores.argsort(dim=-1, descending=True, stable=True).argsort(-1)
    return anchor | (joins & (rank < (cap - 1).unsqueeze(-1)))
