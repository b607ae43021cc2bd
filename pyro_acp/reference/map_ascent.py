"""Greedy ascent of the exact posterior over partitions: from a MAP sample to a local mode.

A guide's (or a chain's) best sample is the most probable partition *seen*, which for hundreds of points can
lie tens of nats below a nearby mode: a few points on the wrong side of a boundary, or one cluster cut in two.
For a conjugate model the exact log p(partition, x) is cheap to evaluate, so the MAP can be improved by
coordinate ascent on it, alternating two moves that never lower it:

- **point moves** (iterated conditional modes): each point in turn goes to the cluster, or the new cluster, of
  highest full conditional p(c_i = k | c_-i, x), which is log p(partition, x) up to a constant in k. This is
  collapsed Gibbs at zero temperature (:class:`~pyro_acp.reference.gibbs_kernel.CollapsedGibbs`,
  ``greedy=True``), vectorised over the starts;
- **merges**: of all pairs of clusters, the merge that raises log p(partition, x) most, if any does (a move
  point moves cannot make: emptying a cluster one point at a time passes through worse partitions).

until a round changes nothing. The result is a local mode for both moves (no single point move and no merge
improves it), reached from each start independently; the best of them is returned. It is a search, not a
sampler: the samples and their weights are left as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.protocols import require_collapsed, require_gibbs_statistics
from pyro_acp.reference.gibbs_kernel import started_kernel
from pyro_acp.validation import check_int, check_partition_rows

__all__ = ["ascend_to_mode", "best_merges"]


def best_merges(model: Any, data: Tensor, labels: Tensor, log_joint: Tensor, frozen: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
    """For each partition (S, N) of ``data``, the merge of two clusters with the highest log p(partition, x),
    when it is above ``log_joint`` (S,): returns the (canonical) partitions and their log joints, unchanged
    where no merge improves. All pairs of all rows are scored in one batched call. ``frozen`` (N,) bool:
    points of known, distinct labels; two clusters that both hold one are never merged."""
    num_clusters = labels.max(-1).values + 1  # (S,)
    largest = int(num_clusters.max())
    if largest < 2:
        return labels, log_joint
    a, b = torch.triu_indices(largest, largest, offset=1, device=labels.device)  # pairs a < b, (P,)
    merged = torch.where(labels.unsqueeze(1) == b.view(1, -1, 1), a.view(1, -1, 1), labels.unsqueeze(1))
    valid = b.unsqueeze(0) < num_clusters.unsqueeze(1)  # (S, P): both clusters exist in that row
    if frozen is not None:  # (S, K): whether cluster k of row s holds a frozen point
        anchored = torch.zeros(labels.shape[0], largest, dtype=torch.bool, device=labels.device)
        anchored.scatter_(1, labels[:, frozen], True)
        valid &= ~(anchored[:, a] & anchored[:, b])
    flat = canonicalize(merged.reshape(-1, labels.shape[-1]))
    scores = model.log_joint(data, flat).reshape(valid.shape).to(log_joint.dtype).masked_fill(~valid, -torch.inf)
    best, pick = scores.max(-1)
    better = best > log_joint + 1e-9
    chosen = flat.reshape(*valid.shape, -1)[torch.arange(labels.shape[0], device=labels.device), pick]
    return torch.where(better.unsqueeze(-1), chosen, labels), torch.where(better, best, log_joint)


def ascend_to_mode(model: Any, x: Any, starts: Any, *, max_rounds: int = 100, seed: int = 0,
                   frozen: Any = None, new_clusters: bool = True) -> tuple[Tensor, Tensor]:
    """Local modes of log p(partition, x) reached by greedy ascent from each start (module docstring).

    Args:
        model: a conjugate model with ``gibbs_statistics`` (what collapsed Gibbs needs).
        x: one data set, as the model takes it.
        starts: (S, N) or (N,) partitions to start from (any labels; canonicalised).
        max_rounds: at most this many rounds of (one sweep of point moves, one merge) per start.
        seed: the order of the points in each sweep.
        frozen: (N,) bool, points of known labels (semi-supervised anchors): they keep their clusters, and
            two clusters that both hold one are not merged, so the starts' labelled classes stay apart.
        new_clusters: whether point moves may open a new cluster (False: one cluster per known label).

    Returns:
        (S, N) canonical partitions and (S,) their log p(partition, x), float64; the start itself where
        nothing improves it.
    """
    require_collapsed(model, "ascend_to_mode")
    require_gibbs_statistics(model, "ascend_to_mode")
    max_rounds = check_int(max_rounds, "max_rounds", 1)
    data = model.check_data(x).to(torch.float64)
    labels = torch.as_tensor(starts)
    labels = canonicalize(check_partition_rows(labels.unsqueeze(0) if labels.dim() == 1 else labels, "starts"))
    if frozen is not None:
        frozen = torch.as_tensor(frozen, dtype=torch.bool, device=labels.device)
        if frozen.shape != labels.shape[-1:]:
            raise ValueError(f"frozen must be a (N,) = ({labels.shape[-1]},) mask, got {tuple(frozen.shape)}")
    kernel, params = started_kernel(model, data, labels, greedy=True, seed=seed, frozen=frozen,
                                    new_clusters=new_clusters)
    for _ in range(max_rounds):
        before = params["labels"].long()
        params = kernel.sample(params)
        moved, log_joint = best_merges(model, data, params["labels"].long(), params["log_joint"], frozen)
        if not torch.equal(moved, params["labels"].long()):  # the next sweep restarts from the merged labels
            params = {"labels": moved.to(torch.float64), "log_joint": log_joint}
        if torch.equal(params["labels"].long(), before):
            break
    return params["labels"].long(), params["log_joint"].to(torch.float64)
