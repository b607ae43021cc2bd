"""ACP (anchor-dependent attention) and ACP-S (anchor-independent attention) guides."""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_acp.attention import ISAB, MAB, PMA
from pyro_acp.guides.clusterwise import ClusterwiseGuide
from pyro_acp.guides.encoders import anchor_rows, mlp


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
        points = self.step_isab(enc[dataset], anchor | available)
        anchor_code = anchor_rows(points, anchor)
        paired = self.anchor_pair(points, anchor_code.unsqueeze(-2))
        return points, anchor_code, self.summarize(self.pool_unassigned, paired, available)


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
