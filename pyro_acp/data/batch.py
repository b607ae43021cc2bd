"""Padded, masked batches of data sets with their partitions and teacher-forcing masks.

One :class:`Batch` holds B data sets of different sizes N_b and numbers of clusters K_b, padded to
N = max N_b and K = max K_b. The guide's training pass reads every cluster step of every data set from
the (B, K, N) masks built here, so no Python loop over data sets or clusters is needed.

Cluster order (the paper's): points are put in a uniformly random order, clusters are numbered by first
appearance in that order (so the step order is size-biased, as when anchors are drawn uniformly from the
unassigned points), and each step's anchor is uniform among the cluster's members. For ordered models
(catalogs) the labels already are positions in the order and are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from pyro_acp.data.partitions import PAD_LABEL, canonicalize


@dataclass(frozen=True)
class Batch:
    """B data sets padded to N points and K cluster steps.

    Attributes:
        x: (B, N, D) per-point inputs of the guide (vector data; for graphs, Laplacian positional encodings).
        mask: (B, N) True on real points.
        labels: (B, N) true labels in canonical form (ordered models: position in the order), -1 on padding.
        adjacency: (B, N, N) float adjacency for graphs, else None.
        anchor: (B, K, N) one-hot anchor d_k of step k.
        available: (B, K, N) points still unassigned at step k other than the anchor (the join candidates).
        members: (B, K, N) members of cluster k, the anchor included.
        assigned: (B, K, N) points in clusters 0..k-1.
        step_mask: (B, K) True for real cluster steps (k < K_b).
        ordered: whether labels carry an order (catalogs) rather than an arbitrary numbering.
    """

    x: Tensor
    mask: Tensor
    labels: Tensor
    anchor: Tensor
    available: Tensor
    members: Tensor
    assigned: Tensor
    step_mask: Tensor
    adjacency: Tensor | None = None
    ordered: bool = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_labels(
        cls,
        x: Tensor,
        labels: Tensor,
        mask: Tensor | None = None,
        adjacency: Tensor | None = None,
        ordered: bool = False,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
    ) -> Batch:
        """Build a batch from padded data and labels, drawing point order and anchors.

        Args:
            x: (B, N, D) inputs, padding rows arbitrary (they are zeroed).
            labels: (B, N) any labelling (padding -1 or masked out by ``mask``).
            mask: (B, N) real points; defaults to ``labels >= 0``.
            adjacency: optional (B, N, N) adjacency of graphs.
            ordered: keep labels as order positions instead of canonicalising.
            shuffle: put the real points of every data set in a uniformly random order first.
            generator: torch generator for the permutation and the anchors (reproducibility).
        """
        x, labels, mask = _check_padded(x, labels, mask)
        if shuffle:
            perm = random_point_order(mask, generator)
            x = x.gather(1, perm.unsqueeze(-1).expand_as(x))
            labels = labels.gather(1, perm)
            mask = mask.gather(1, perm)
            if adjacency is not None:
                adjacency = adjacency.gather(1, perm.unsqueeze(-1).expand_as(adjacency))
                adjacency = adjacency.gather(2, perm.unsqueeze(1).expand_as(adjacency))
        labels = labels.masked_fill(~mask, PAD_LABEL)
        if not ordered:
            labels = canonicalize(labels)
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        if adjacency is not None:
            adjacency = adjacency * (mask.unsqueeze(1) & mask.unsqueeze(2))
        steps = teacher_forcing_masks(labels, mask, generator)
        return cls(x=x, mask=mask, labels=labels, adjacency=adjacency, ordered=ordered, **steps)

    # ------------------------------------------------------------------ shapes
    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def max_points(self) -> int:
        return self.x.shape[1]

    @property
    def max_clusters(self) -> int:
        return self.step_mask.shape[1]

    @property
    def data_dim(self) -> int:
        return self.x.shape[2]

    @property
    def num_points(self) -> Tensor:
        """(B,) number of real points of each data set."""
        return self.mask.sum(-1)

    @property
    def num_clusters(self) -> Tensor:
        """(B,) number of clusters of each data set."""
        return self.step_mask.sum(-1)

    @property
    def targets(self) -> Tensor:
        """(B, K, N) join indicators b: available points that belong to cluster k."""
        return self.members & self.available

    @property
    def pos_enc(self) -> Tensor | None:
        """Laplacian positional encodings of graph batches (the guide inputs ``x``), else None."""
        return self.x if self.adjacency is not None else None

    def __len__(self) -> int:
        return self.batch_size

    # ------------------------------------------------------------------ transforms
    def to(self, device: torch.device | str) -> Batch:
        """Copy every tensor to ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)

    def select(self, index: Tensor | slice | list[int]) -> Batch:
        """Sub-batch of the given data sets, trimmed to its own max N and K."""
        picked = {
            f.name: getattr(self, f.name)[index]
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        sub = replace(self, **picked)
        n = int(sub.num_points.max())
        k = int(sub.num_clusters.max())
        return sub.pad_to(n, k)

    def pad_to(self, num_points: int, num_clusters: int | None = None) -> Batch:
        """Pad (or trim padding) to ``num_points`` points and ``num_clusters`` steps; data are unchanged."""
        if num_points < int(self.num_points.max()):
            raise ValueError(f"cannot trim to {num_points} points: a data set has {int(self.num_points.max())}")
        k = self.max_clusters if num_clusters is None else num_clusters
        if k < int(self.num_clusters.max()):
            raise ValueError(f"cannot trim to {k} steps: a data set has {int(self.num_clusters.max())} clusters")
        dn, dk = num_points - self.max_points, k - self.max_clusters

        def resize(t: Tensor, dims: dict[int, int], value) -> Tensor:
            for dim, delta in dims.items():
                if delta > 0:
                    shape = list(t.shape)
                    shape[dim] = delta
                    t = torch.cat([t, t.new_full(shape, value)], dim=dim)
                elif delta < 0:
                    t = t.narrow(dim, 0, t.shape[dim] + delta)
            return t

        step_fields = {name: resize(getattr(self, name), {1: dk, 2: dn}, False)
                       for name in ("anchor", "available", "members", "assigned")}
        return replace(
            self,
            x=resize(self.x, {1: dn}, 0.0),
            mask=resize(self.mask, {1: dn}, False),
            labels=resize(self.labels, {1: dn}, PAD_LABEL),
            step_mask=resize(self.step_mask, {1: dk}, False),
            adjacency=None if self.adjacency is None else resize(self.adjacency, {1: dn, 2: dn}, 0.0),
            **step_fields,
        )

    def unpadded(self, b: int) -> tuple[Tensor, Tensor]:
        """(x, labels) of data set ``b`` without padding."""
        keep = self.mask[b]
        return self.x[b][keep], self.labels[b][keep]


# ---------------------------------------------------------------------- helpers


def _check_padded(x: Tensor, labels: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    x = torch.as_tensor(x, dtype=torch.get_default_dtype()) if not torch.is_tensor(x) else x
    labels = torch.as_tensor(labels).long()
    if x.dim() != 3:
        raise ValueError(f"x must have shape (batch, points, dim), got {tuple(x.shape)}")
    if labels.shape != x.shape[:2]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match x's (batch, points) {tuple(x.shape[:2])}")
    if x.shape[0] == 0:
        raise ValueError("empty batch: no data sets")
    mask = labels >= 0 if mask is None else mask.bool()
    if mask.shape != labels.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match labels {tuple(labels.shape)}")
    if not mask.any(-1).all():
        raise ValueError("every data set in a batch needs at least one point")
    if not torch.isfinite(x[mask]).all():
        raise ValueError("x contains NaN or inf")
    if (labels[mask] < 0).any():
        raise ValueError("labels of real points must be non-negative")
    return x, labels, mask


def random_point_order(mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, N) permutation per data set: real points uniformly shuffled first, padding last."""
    keys = torch.rand(mask.shape, generator=generator, device=mask.device)
    keys = keys.masked_fill(~mask, 2.0)
    return keys.argsort(dim=1)


def teacher_forcing_masks(
    labels: Tensor, mask: Tensor, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """The clusterwise factorisation of known partitions: masks for every (data set, step k).

    ``labels`` (B, N) numbers clusters 0..K_b-1 in step order (padding -1). Returns the (B, K, N) boolean
    masks ``anchor``, ``available``, ``members``, ``assigned`` and the (B, K) ``step_mask``; anchors are
    uniform among each cluster's members.
    """
    num_steps = int(labels.max()) + 1
    steps = torch.arange(num_steps, device=labels.device)
    members = labels.unsqueeze(1) == steps.view(1, -1, 1)  # (B, K, N)
    counts = members.long()
    assigned = (counts.cumsum(1) - counts).bool()
    step_mask = members.any(-1)
    scores = torch.rand(members.shape, generator=generator, device=labels.device)
    scores = scores.masked_fill(~members, -1.0)
    anchor_index = scores.argmax(-1, keepdim=True)
    anchor = torch.zeros_like(members).scatter_(-1, anchor_index, True) & step_mask.unsqueeze(-1)
    available = mask.unsqueeze(1) & ~assigned & ~anchor & step_mask.unsqueeze(-1)
    return {
        "anchor": anchor,
        "available": available,
        "members": members,
        "assigned": assigned & step_mask.unsqueeze(-1),
        "step_mask": step_mask,
    }
