"""Set-Transformer attention blocks with key-padding masks (MAB, PMA, ISAB).

Masks follow one convention everywhere: ``True`` means *keep* (a real key). A query whose keys are all
masked attends to nothing and its attention output is exactly zero (never NaN). Logits are scaled by the
per-head width, and every block owns its weights (stacking creates new modules, never repeats one).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def masked_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
    """Softmax attention (..., h, n, d) with a (..., m) key mask; fully masked rows give zeros."""
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if key_mask is None:
        return torch.softmax(logits, dim=-1) @ v
    keep = key_mask[..., None, None, :]  # broadcast over heads and queries
    logits = logits.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(logits, dim=-1)
    weights = torch.where(keep.any(-1, keepdim=True), weights, torch.zeros_like(weights))
    return weights @ v


class MAB(nn.Module):
    """Multihead attention block ``H = X W_q + MHA(X, Y, Y)``, ``MAB(X, Y) = H + FF(H)``."""

    def __init__(self, dim_q: int, dim_kv: int, dim: int, num_heads: int = 4, layer_norm: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.fc_q = nn.Linear(dim_q, dim)
        self.fc_k = nn.Linear(dim_kv, dim)
        self.fc_v = nn.Linear(dim_kv, dim)
        self.fc_o = nn.Linear(dim, dim)
        self.ln_attention = nn.LayerNorm(dim) if layer_norm else nn.Identity()
        self.ln_output = nn.LayerNorm(dim) if layer_norm else nn.Identity()

    def _heads(self, t: Tensor) -> Tensor:
        return t.unflatten(-1, (self.num_heads, -1)).transpose(-2, -3)  # (..., h, n, d/h)

    def forward(self, x: Tensor, y: Tensor, key_mask: Tensor | None = None) -> Tensor:
        q = self.fc_q(x)
        attended = masked_attention(self._heads(q), self._heads(self.fc_k(y)), self._heads(self.fc_v(y)), key_mask)
        h = self.ln_attention(q + attended.transpose(-2, -3).flatten(-2))
        return self.ln_output(h + torch.relu(self.fc_o(h)))


class PMA(nn.Module):
    """Pooling by multihead attention: ``num_seeds`` learned queries attend to a (masked) set."""

    def __init__(self, dim_in: int, dim: int, num_seeds: int = 1, num_heads: int = 4, layer_norm: bool = False):
        super().__init__()
        self.seeds = nn.Parameter(torch.empty(num_seeds, dim))
        nn.init.xavier_uniform_(self.seeds)
        self.mab = MAB(dim, dim_in, dim, num_heads, layer_norm)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        seeds = self.seeds.expand(*x.shape[:-2], *self.seeds.shape)
        return self.mab(seeds, x, key_mask)


class ISAB(nn.Module):
    """Induced set attention ``ISAB(X) = MAB(X, PMA_m(X))``: O(N m) instead of O(N^2)."""

    def __init__(
        self, dim_in: int, dim: int, num_inducing: int = 32, num_heads: int = 4, layer_norm: bool = False
    ):
        super().__init__()
        self.pool = PMA(dim_in, dim, num_inducing, num_heads, layer_norm)
        self.mab = MAB(dim_in, dim, dim, num_heads, layer_norm)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        return self.mab(x, self.pool(x, key_mask))


def pooled(pma: PMA, x: Tensor, mask: Tensor) -> Tensor:
    """One-seed PMA summary (..., dim) of the masked set; exactly zero when the set is empty."""
    summary = pma(x, mask).squeeze(-2)
    return summary * mask.any(-1, keepdim=True).to(summary.dtype)


def _attend_by_dataset(weights: Tensor, values: Tensor, dataset: Tensor) -> Tensor:
    """``einsum("rhn,rhnd->rhd", weights, values[dataset])`` (R, h, d) without the (R, h, N, d) gather.

    Rows are grouped by data set into a padded (B, M, h, N) block (M: the most rows of any data set) and
    multiplied with each data set's values at once; under torch.compile (shapes must not depend on the
    data) the plain gather is kept.
    """
    if values.shape[0] == 1:
        return torch.einsum("rhn,hnd->rhd", weights, values[0])
    if torch.compiler.is_compiling():
        return torch.einsum("rhn,rhnd->rhd", weights, values[dataset])
    order = dataset.argsort(stable=True)
    counts = torch.bincount(dataset, minlength=values.shape[0])
    starts = counts.cumsum(0) - counts
    grouped = dataset[order]
    slot = torch.arange(order.shape[0], device=dataset.device) - starts[grouped]
    padded = weights.new_zeros(values.shape[0], int(counts.max()), *weights.shape[1:])
    padded[grouped, slot] = weights[order]
    attended = torch.empty(weights.shape[:-1] + values.shape[-1:], dtype=values.dtype, device=values.device)
    attended[order] = torch.einsum("bmhn,bhnd->bmhd", padded, values)[grouped, slot]
    return attended


def pooled_by_dataset(pma: PMA, x: Tensor, dataset: Tensor, mask: Tensor) -> Tensor:
    """``pooled(pma, x[dataset], mask)`` without materialising ``x[dataset]``.

    Many rows (cluster steps, sampler threads) pool different subsets of the same data set; the key and
    value projections of its points are computed once per data set (B, N, D) and only the softmax weights
    are per row. One-seed PMAs only.
    """
    mab = pma.mab
    if pma.seeds.shape[0] != 1:
        raise ValueError("pooled_by_dataset needs a one-seed PMA")
    query = mab.fc_q(pma.seeds)  # (1, dim)
    query_heads = mab._heads(query)  # (h, 1, d)
    keys, values = mab._heads(mab.fc_k(x)), mab._heads(mab.fc_v(x))  # (B, h, N, d)
    logits = (keys @ query_heads.transpose(-1, -2)).squeeze(-1) / math.sqrt(keys.shape[-1])  # (B, h, N)
    logits = logits[dataset].masked_fill(~mask.unsqueeze(1), float("-inf"))
    nonempty = mask.any(-1)
    weights = torch.softmax(logits, -1).masked_fill(~nonempty.view(-1, 1, 1), 0.0)
    attended = _attend_by_dataset(weights, values, dataset)
    h = mab.ln_attention(query + attended.flatten(-2))
    out = mab.ln_output(h + torch.relu(mab.fc_o(h)))
    return out * nonempty.unsqueeze(-1).to(out.dtype)
