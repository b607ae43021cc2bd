"""Per-point data encoders and the small MLP builder the guides share."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp(dim_in: int, dim_hidden: int, dim_out: int, num_layers: int, bias_out: bool = True) -> nn.Sequential:
    """``num_layers`` Linear layers with PReLU in between (num_layers >= 1)."""
    if num_layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got num_layers={num_layers}")
    dims = [dim_in] + [dim_hidden] * (num_layers - 1)
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.PReLU()]
    layers.append(nn.Linear(dims[-1], dim_out, bias=bias_out))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Encodes vector data point by point; optional per-data-set centring (data preprocessing is the guide's).

    Centring subtracts each data set's coordinate-wise median of its real points, which makes the guide
    invariant to translations of the whole data set (as the training data are centred the same way).
    """

    def __init__(self, data_dim: int, hidden_dim: int, num_layers: int = 4, center: bool = True):
        super().__init__()
        self.data_dim = data_dim
        self.center = center
        self.net = mlp(data_dim, hidden_dim, hidden_dim, num_layers)

    def preprocess(self, x: Tensor, mask: Tensor) -> Tensor:
        """Centre every data set (B, N, D) on the median of its real points (padding ignored)."""
        if not self.center:
            return x
        filled = x.masked_fill(~mask.unsqueeze(-1), float("nan"))
        median = filled.nanmedian(dim=-2, keepdim=True).values
        return (x - median).masked_fill(~mask.unsqueeze(-1), 0.0)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.net(self.preprocess(x, mask)) * mask.unsqueeze(-1).to(x.dtype)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of (..., N, H) over the masked N; zero for an empty set."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(-2) / weights.sum(-2).clamp(min=1.0)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """Rows ``x[b, index[b]]`` for (B, N, H) x and (B,) index -> (B, H)."""
    return x.gather(-2, index.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(-2)


def anchor_rows(x: Tensor, anchor: Tensor) -> Tensor:
    """Features (S, H) of the one-hot anchors (S, N) in per-step features (S, N, H)."""
    return gather_rows(x, anchor.to(torch.long).argmax(-1))
