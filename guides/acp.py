"""ACP (anchor-dependent attention) and ACP-S (anchor-independent attention) guides."""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_acp.guides.clusterwise import ClusterwiseGuide
from pyro_acp.nn.attention import ISAB, MAB, PMA
from pyro_acp.nn.encoders import anchor_rows, mlp


class ACP(ClusterwiseGuide):
    """Attentive Clustering Process: an ISAB over {anchor} + available points at every step.

    ``U = PMA(MAB(u_a, u_d))`` pairs every available point with the anchor before pooling, so the
    summary of the unassigned points depends on the anchor (paper, appendix A.1).
    """

    variant = "acp"

    def __init__(self, data_dim: int, hidden_dim: int = 128, **kwargs):
        super().__init__(data_dim, hidden_dim, **kwargs)
        h, heads = hidden_dim, self.config["num_heads"]
        self.step_isab = ISAB(h, h, self.config["num_inducing"], heads)
        self.anchor_pair = MAB(h, h, h, heads)
        self.pool_unassigned = PMA(h, h, 1, heads)

    def step_encodings(self, enc, feats, dataset, anchor, available) -> tuple[Tensor, Tensor, Tensor]:
        """Set attention over each step's anchor + available points only.

        Later steps see few points, so the steps are sorted by how many they see and cut into a few
        buckets, each padded to its own largest step (the blocks are permutation equivariant and masked, so
        this is exact); outputs go back to (S, N, H).
        """
        num_steps, num_points = anchor.shape
        points = enc.new_zeros(num_steps, num_points, enc.shape[-1])
        anchor_code = enc.new_zeros(num_steps, enc.shape[-1])
        unassigned = enc.new_zeros(num_steps, enc.shape[-1])
        active = anchor | available
        for steps, index in _active_buckets(active):
            x = enc[dataset[steps].unsqueeze(-1), index]  # (s, W, H)
            seen = self.step_isab(x, active[steps].gather(1, index))
            code = anchor_rows(seen, anchor[steps].gather(1, index))
            paired = self.anchor_pair(seen, code.unsqueeze(-2))
            unassigned = unassigned.index_copy(
                0, steps, self.summarize(self.pool_unassigned, paired, available[steps].gather(1, index))
            )
            anchor_code = anchor_code.index_copy(0, steps, code)
            rows = steps.unsqueeze(-1).expand_as(index)
            points = points.index_put((rows, index), seen)
        return points, anchor_code, unassigned


def _active_buckets(active: Tensor, num_buckets: int = 4) -> list[tuple[Tensor, Tensor]]:
    """Split steps (S, N) into <= num_buckets groups of similar active counts: (step indices, (s, W) point
    indices with the active points first, W the group's largest count)."""
    counts = active.sum(-1)
    by_count = counts.argsort()
    order = active.to(torch.int8).argsort(dim=-1, descending=True, stable=True)
    buckets = []
    for steps in by_count.tensor_split(num_buckets):
        if steps.numel():
            width = max(int(counts[steps].max()), 1)
            buckets.append((steps, order[steps, :width]))
    return buckets


class ACPS(ClusterwiseGuide):
    """ACP-S: one ISAB (with LayerNorm) over all points of a data set, shared by all its steps."""

    variant = "acps"
    shares_points = True

    def __init__(self, data_dim: int, hidden_dim: int = 128, **kwargs):
        super().__init__(data_dim, hidden_dim, **kwargs)
        h, heads = hidden_dim, self.config["num_heads"]
        self.set_isab = ISAB(h, h, self.config["num_inducing"], heads, layer_norm=True)
        self.unassigned_net = mlp(h, h, h, 2)
        self.pool_unassigned = PMA(h, h, 1, heads)

    def dataset_features(self, enc: Tensor, mask: Tensor) -> Tensor:
        """cat(x_bar, u(x_bar)): both anchor-independent, so computed once per data set."""
        points = self.set_isab(enc, mask)
        return torch.cat([points, self.unassigned_net(points)], -1)

    def step_encodings(self, enc, feats, dataset, anchor, available) -> tuple[Tensor, Tensor, Tensor]:
        """Points stay per data set (B, N, H): nothing here depends on the anchor but D."""
        points, codes = feats.chunk(2, -1)
        unassigned = self.summarize_by_dataset(self.pool_unassigned, codes, dataset, available)
        return points, points[dataset, anchor.to(torch.long).argmax(-1)], unassigned
