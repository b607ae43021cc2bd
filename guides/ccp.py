"""CCP: the clusterwise clustering process with sum/mean encodings instead of attention."""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_acp.guides.clusterwise import ClusterwiseGuide
from pyro_acp.nn.attention import PMA
from pyro_acp.nn.encoders import anchor_rows, masked_mean, mlp


class CCP(ClusterwiseGuide):
    """Mean-pooled encodings throughout (the attention-free baseline of the paper)."""

    variant = "ccp"

    def __init__(self, data_dim: int, hidden_dim: int = 128, **kwargs):
        super().__init__(data_dim, hidden_dim, **kwargs)
        self.unassigned_net = mlp(hidden_dim, hidden_dim, hidden_dim, 2)

    def summarize(self, pool: PMA, x: Tensor, mask: Tensor) -> Tensor:
        return masked_mean(x, mask)

    def summarize_by_dataset(self, pool: PMA, x: Tensor, dataset: Tensor, mask: Tensor) -> Tensor:
        return masked_mean(x[dataset], mask)

    def dataset_features(self, enc: Tensor, mask: Tensor) -> Tensor:
        return torch.cat([enc, self.unassigned_net(enc)], -1)

    def step_encodings(self, enc, feats, dataset, anchor, available) -> tuple[Tensor, Tensor, Tensor]:
        points, codes = feats[dataset].chunk(2, -1)
        return points, anchor_rows(points, anchor), masked_mean(codes, available)
