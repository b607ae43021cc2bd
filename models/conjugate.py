"""Vectorised conjugate marginals: the exact collapsed likelihoods that exact enumeration and Gibbs use.

Two likelihood families, each written on *sufficient statistics* so that a partition's log marginal
likelihood is a sum over clusters, and a point's collapsed predictive only needs the statistics of the
clusters it could join. Every function broadcasts over leading dimensions (partitions, chains, data sets).

**Isotropic Gaussian, known sigma, mean prior N(0, mean_scale^2 I)** (the mixtures):

- ``gaussian_stats(x, labels, num_clusters) -> GaussianStats(count (..., K), total (..., K, D),
  sumsq (..., K))``: per-cluster count, sum of points and sum of squared norms, by scatter-add (labels -1
  are ignored).
- ``gaussian_log_marginal(stats, sigma, mean_scale) -> (..., K)``: log p(x_cluster) with the mean integrated
  out; 0 for an empty cluster, so summing over K gives log p(x | partition).
- ``gaussian_log_predictive(x_i, stats, sigma, mean_scale) -> (..., K)``: log p(x_i | cluster k's points)
  for each slot; an empty slot (count 0) gives the prior predictive N(0, (sigma^2 + mean_scale^2) I), i.e.
  the "new cluster" option of collapsed Gibbs.

**Beta-Bernoulli blocks of a symmetric graph** (the SBM / single-type IRM, no self loops):

- ``block_stats(adjacency, labels, num_clusters) -> BlockStats(edges (..., K, K), pairs (..., K, K))``:
  edges between blocks k and l (within a block: unordered pairs i<j) and the number of node pairs.
- ``block_log_marginal(stats, within, between) -> (...,)``: sum over block pairs k <= l of
  log B(a + e, b + pairs - e) - log B(a, b), with (a, b) = ``within`` on the diagonal and ``between`` off it.
- ``node_block_counts(adjacency, labels, index, num_clusters) -> (node_edges (..., K), node_pairs (..., K))``:
  the edges from node ``index`` to each block and the block sizes, the node itself excluded.
- ``block_log_predictive(node_edges, node_pairs, stats, within, between) -> (..., K)``: log p(node i's
  edges | others, i joins block k) for each slot, with ``stats`` computed WITHOUT node i; an empty slot is
  the "new block" option.

Collapsed Gibbs for a point i: remove i from the statistics, call the predictive on all K slots plus one
empty slot, add the partition prior's ``seating_log_weights`` and sample. The model classes wrap this as
``model.log_predictive(x, labels, index)`` -> (..., K+1) in the same slot layout as ``seating_log_weights``,
and give the Gibbs kernel the same statistics of C chains kept up to date in place
(``model.gibbs_statistics(x)``, the :class:`~pyro_acp.protocols.GibbsStatistics` protocol):
:class:`GaussianGibbsStatistics` and :class:`BlockGibbsStatistics`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


class GaussianStats(NamedTuple):
    """Sufficient statistics of isotropic Gaussian clusters: count (..., K), total (..., K, D), sumsq (..., K)."""

    count: Tensor
    total: Tensor
    sumsq: Tensor


class BlockStats(NamedTuple):
    """Edge counts (..., K, K) and node-pair counts (..., K, K) between blocks of a symmetric graph."""

    edges: Tensor
    pairs: Tensor


# ---------------------------------------------------------------------------------------------- Gaussian


def gaussian_stats(x: Tensor, labels: Tensor, num_clusters: int) -> GaussianStats:
    """Per-cluster statistics of points ``x`` (..., N, D) under ``labels`` (..., N) in 0..K-1 (-1 = skip).

    Leading dimensions of ``x`` and ``labels`` broadcast, so one data set (N, D) can be scored under many
    partitions (M, N) without copying x M times in the caller.
    """
    batch = torch.broadcast_shapes(x.shape[:-2], labels.shape[:-1])
    n, d = x.shape[-2:]
    x = x.expand(*batch, n, d)
    labels = labels.expand(*batch, n)
    valid = labels >= 0
    # Slot K collects the skipped points and is dropped at the end.
    slot = labels.masked_fill(~valid, num_clusters)
    count = x.new_zeros(*batch, num_clusters + 1).scatter_add_(-1, slot, valid.to(x.dtype))
    total = x.new_zeros(*batch, num_clusters + 1, d).scatter_add_(-2, slot.unsqueeze(-1).expand(*batch, n, d), x)
    sumsq = x.new_zeros(*batch, num_clusters + 1).scatter_add_(-1, slot, x.square().sum(-1))
    return GaussianStats(count[..., :-1], total[..., :-1, :], sumsq[..., :-1])


def gaussian_log_marginal(stats: GaussianStats, sigma: float, mean_scale: float) -> Tensor:
    """log ∫ Π_i N(x_i | μ, σ²I) N(μ | 0, s²I) dμ for every cluster, shape (..., K).

    Per dimension the cluster's values are jointly N(0, σ²I + s²11ᵀ), whose determinant and inverse have
    closed forms (matrix determinant lemma, Sherman-Morrison), so only (n, Σx, Σx²) are needed.
    """
    n = stats.count
    dim = stats.total.shape[-1]
    var, prior_var = sigma**2, mean_scale**2
    denom = var + n * prior_var  # σ² + n s²
    log_det = (n - 1) * math.log(var) + torch.log(denom)  # per dimension
    quad = (stats.sumsq - prior_var * stats.total.square().sum(-1) / denom) / var
    return -0.5 * (n * dim * LOG_2PI + dim * log_det + quad)


def gaussian_log_predictive(x_i: Tensor, stats: GaussianStats, sigma: float, mean_scale: float) -> Tensor:
    """log p(x_i | points of cluster k) for every slot k, shape (..., K); x_i is (..., D).

    The mean's posterior given n points is N(m, v I) with 1/v = 1/s² + n/σ², m = v Σx / σ²; the predictive is
    N(m, (v + σ²) I). An empty slot gives the prior predictive, the weight of opening a new cluster.
    """
    var, prior_var = sigma**2, mean_scale**2
    post_var = 1.0 / (1.0 / prior_var + stats.count / var)  # (..., K)
    post_mean = post_var.unsqueeze(-1) * stats.total / var  # (..., K, D)
    pred_var = post_var + var
    dim = stats.total.shape[-1]
    sq = (x_i.unsqueeze(-2) - post_mean).square().sum(-1)
    return -0.5 * (dim * (LOG_2PI + torch.log(pred_var)) + sq / pred_var)


# ---------------------------------------------------------------------------------------------- graphs


def _one_hot(labels: Tensor, num_clusters: int, dtype: torch.dtype) -> Tensor:
    """(..., N, K) float memberships; label -1 gives a zero row."""
    ks = torch.arange(num_clusters, device=labels.device)
    return (labels.unsqueeze(-1) == ks).to(dtype)


def block_stats(adjacency: Tensor, labels: Tensor, num_clusters: int) -> BlockStats:
    """Edge and pair counts between blocks for ``adjacency`` (..., N, N) and ``labels`` (..., N).

    Z is the (N, K) membership matrix: Zᵀ A Z counts ordered pairs, so its diagonal is halved to count
    each undirected within-block edge once; pairs are n_k n_l off the diagonal and n_k (n_k - 1) / 2 on it.
    """
    z = _one_hot(labels, num_clusters, adjacency.dtype)
    eye = torch.eye(num_clusters, dtype=torch.bool, device=adjacency.device)
    return _block_stats_from(z.transpose(-1, -2) @ adjacency @ z, z.sum(-2), eye)


def _block_stats_from(ordered_edges: Tensor, sizes: Tensor, eye: Tensor) -> BlockStats:
    """BlockStats from Zᵀ A Z (ordered pairs: within-block edges counted twice) and the block sizes."""
    pairs = sizes.unsqueeze(-1) * sizes.unsqueeze(-2)
    edges = torch.where(eye, 0.5 * ordered_edges, ordered_edges)
    pairs = torch.where(eye, 0.5 * (pairs - sizes.unsqueeze(-1)), pairs)
    return BlockStats(edges, pairs)


def _log_beta(a: Tensor, b: Tensor) -> Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


def _beta_params(num_clusters: int, within: tuple[float, float], between: tuple[float, float],
                 like: Tensor) -> tuple[Tensor, Tensor]:
    """(K, K) Beta parameters: ``within`` on the diagonal, ``between`` elsewhere."""
    eye = torch.eye(num_clusters, dtype=torch.bool, device=like.device)
    a = torch.where(eye, within[0], between[0]).to(like.dtype)
    b = torch.where(eye, within[1], between[1]).to(like.dtype)
    return a, b


def block_log_marginal(stats: BlockStats, within: tuple[float, float], between: tuple[float, float]) -> Tensor:
    """log p(adjacency | partition) with every block probability integrated out, shape (...,).

    Each unordered block pair k <= l contributes log B(a + e, b + m - e) - log B(a, b); empty blocks have
    e = m = 0 and contribute 0, so padded cluster slots are harmless.
    """
    k = stats.edges.shape[-1]
    a, b = _beta_params(k, within, between, stats.edges)
    terms = _log_beta(a + stats.edges, b + stats.pairs - stats.edges) - _log_beta(a, b)
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=terms.device))
    return (terms * upper).sum((-1, -2))


def node_block_counts(adjacency: Tensor, labels: Tensor, index: int, num_clusters: int) -> tuple[Tensor, Tensor]:
    """Edges from node ``index`` to each block and each block's size, node ``index`` itself excluded.

    ``adjacency`` is (..., N, N), ``labels`` (..., N); returns two (..., K) tensors.
    """
    labels = labels.clone()
    labels[..., index] = -1
    z = _one_hot(labels, num_clusters, adjacency.dtype)
    node_edges = (adjacency[..., index, :].unsqueeze(-2) @ z).squeeze(-2)
    return node_edges, z.sum(-2)


def block_log_predictive(node_edges: Tensor, node_pairs: Tensor, stats: BlockStats,
                         within: tuple[float, float], between: tuple[float, float]) -> Tensor:
    """log p(node i's edges | the other nodes, i in block k) for each slot k, shape (..., K).

    ``stats`` are the block statistics without node i. Joining block k adds node_edges[l] edges and
    node_pairs[l] - node_edges[l] non-edges to block pair (k, l) for every l; the predictive is the ratio of
    Beta functions after and before, summed over l.
    """
    k = stats.edges.shape[-1]
    a, b = _beta_params(k, within, between, stats.edges)
    a = a + stats.edges  # (..., K, L): posterior after the other nodes
    b = b + stats.pairs - stats.edges
    e = node_edges.unsqueeze(-2)  # (..., 1, L)
    non = (node_pairs - node_edges).unsqueeze(-2)
    return (_log_beta(a + e, b + non) - _log_beta(a, b)).sum(-1)


# ---------------------------------------------------------------------------------------------- Gibbs statistics
# Both keep per-slot statistics of C chains, (C, W) with W = cluster slots + 1; the kernel never fills the
# last slot, so its predictive is the "new cluster" one (see pyro_acp.protocols.GibbsStatistics).


class _SlotCounts:
    """``counts``: the sizes (C, W - 1) of the cluster slots, a view of ``count`` (C, W) without the new slot."""

    count: Tensor

    @property
    def counts(self) -> Tensor:
        return self.count[:, :-1]


class GaussianGibbsStatistics(_SlotCounts):
    """Isotropic Gaussian clusters with a conjugate N(0, s²I) mean: per-slot counts, sums, sums of squares.

    Moves update counts and sums only (all the predictive needs); ``init`` recomputes all three from the
    labels, which also clears any round-off drift, and ``log_likelihood`` reads the last ``init``.
    """

    def __init__(self, x: Tensor, sigma: float, mean_scale: float) -> None:
        self.sigma, self.mean_scale = float(sigma), float(mean_scale)
        self.x = x
        self.sq = x.square().sum(-1, keepdim=True)
        self.ratio = (self.sigma / self.mean_scale) ** 2  # sigma² / s²: the prior's weight in points

    def init(self, labels: Tensor, width: int) -> None:
        z = _one_hot(labels, width, self.x.dtype).transpose(-1, -2)  # (C, W, N)
        self.count, self.total, self.sumsq = z.sum(-1), z @ self.x, (z @ self.sq).squeeze(-1)

    def grow(self, extra: int) -> None:
        pad = torch.nn.functional.pad
        self.count, self.sumsq = pad(self.count, (0, extra)), pad(self.sumsq, (0, extra))
        self.total = pad(self.total, (0, 0, 0, extra))

    def move(self, i: int, slot: Tensor, weight: Tensor) -> None:
        index = slot.unsqueeze(-1)
        self.count.scatter_add_(1, index, weight.unsqueeze(-1))
        values = (weight.unsqueeze(-1) * self.x[i]).unsqueeze(1)  # (C, 1, D)
        self.total.scatter_add_(1, index.unsqueeze(-1).expand(values.shape), values)

    def log_predictive(self, i: int) -> Tensor:
        """:func:`gaussian_log_predictive` minus its slot-independent terms, in fewer tensor ops: with
        h = n + σ²/s², the predictive is N(Σx / h, σ² (1 + 1/h) I)."""
        inv = (self.count + self.ratio).reciprocal_()  # 1 / h
        dist2 = (self.total * inv.unsqueeze(-1) - self.x[i]).square_().sum(-1)
        spread = inv.add_(1.0)  # predictive variance / σ²
        out = dist2.div_(spread).mul_(-0.5 / self.sigma**2)
        return out.sub_(spread.log_().mul_(0.5 * self.x.shape[-1]))

    def log_likelihood(self) -> Tensor:
        stats = GaussianStats(self.count, self.total, self.sumsq)
        return gaussian_log_marginal(stats, self.sigma, self.mean_scale).sum(-1)


class BlockCounts(_SlotCounts):
    """Edge counts of the blocks of a symmetric graph, kept for C chains as nodes move (what the block models'
    Gibbs statistics share; they add the likelihood).

    Keeps M = A Z (C, N, W): edges from every node to every block, E = Zᵀ A Z (C, W, W) (ordered pairs, so
    the diagonal counts within-block edges twice) and the block sizes ``count``. Moving node i into block k adds M[i]
    to row and column k of E and A[:, i] to column k of M.
    """

    def __init__(self, adjacency: Tensor) -> None:
        self.adjacency = adjacency

    def init(self, labels: Tensor, width: int) -> None:
        z = _one_hot(labels, width, self.adjacency.dtype)  # (C, N, W)
        self.m = self.adjacency @ z
        self.e = z.transpose(-1, -2) @ self.m
        self.count = z.sum(-2)
        self._eye = torch.eye(width, dtype=self.adjacency.dtype, device=self.adjacency.device)

    def grow(self, extra: int) -> None:
        pad = torch.nn.functional.pad
        self.m, self.count = pad(self.m, (0, extra)), pad(self.count, (0, extra))
        self.e = pad(self.e, (0, extra, 0, extra))
        self._eye = torch.eye(self.count.shape[-1], dtype=self.adjacency.dtype, device=self.adjacency.device)

    def move(self, i: int, slot: Tensor, weight: Tensor) -> None:
        delta = weight.unsqueeze(-1) * self._eye[slot]  # (C, W)
        outer = delta.unsqueeze(-1) * self.m[:, i, :].unsqueeze(-2)  # row k += M[i]
        self.e += outer + outer.transpose(-1, -2)
        self.m += self.adjacency[i].unsqueeze(-1) * delta.unsqueeze(-2)
        self.count += delta

    def _stats(self) -> BlockStats:
        return _block_stats_from(self.e, self.count, self._eye.bool())


class BlockGibbsStatistics(BlockCounts):
    """Beta-Bernoulli blocks of a symmetric graph: :class:`BlockCounts` scored with the block probabilities
    integrated out (Beta ``within`` / ``between``)."""

    def __init__(self, adjacency: Tensor, within: tuple[float, float], between: tuple[float, float]) -> None:
        super().__init__(adjacency)
        self.within, self.between = tuple(within), tuple(between)

    def log_predictive(self, i: int) -> Tensor:
        return block_log_predictive(self.m[:, i, :], self.count, self._stats(), self.within, self.between)

    def log_likelihood(self) -> Tensor:
        return block_log_marginal(self._stats(), self.within, self.between)


def two_probability_log_likelihood_of_counts(within_edges: Tensor, within_pairs: Tensor, between_edges: Tensor,
                                             between_pairs: Tensor, p: Tensor | float, q: Tensor | float) -> Tensor:
    """log p(graph | partition) when every within-block pair is an edge with probability p and every other pair
    with probability q, from the edge and pair counts within and between blocks (Bernoulli edges and non-edges)."""
    dtype = within_edges.dtype
    xlogy, p, q = torch.special.xlogy, torch.as_tensor(p, dtype=dtype), torch.as_tensor(q, dtype=dtype)
    return (xlogy(within_edges, p) + xlogy(within_pairs - within_edges, 1 - p)
            + xlogy(between_edges, q) + xlogy(between_pairs - between_edges, 1 - q))


class TwoProbabilityGibbsStatistics(BlockCounts):
    """Blocks of a symmetric graph with known edge probabilities: p within a block, q between (the planted
    partition / CLUSTER model), scored on :class:`BlockCounts`. Node i joining block k of n_k other nodes,
    m_ik of them its neighbours, changes log p(graph | partition) by

        m_ik log(p / q) + (n_k - m_ik) log((1 - p) / (1 - q))

    against leaving its pairs with block k between blocks, so that is the log predictive up to a term
    constant in k (0 for a new block)."""

    def __init__(self, adjacency: Tensor, p: float, q: float) -> None:
        super().__init__(adjacency)
        self.p, self.q = float(p), float(q)
        self._edge_gain = math.log(self.p / self.q)
        self._non_edge_gain = math.log((1 - self.p) / (1 - self.q))

    def log_predictive(self, i: int) -> Tensor:
        edges = self.m[:, i, :]  # (C, W): node i's neighbours in every slot, the new slot (last) empty
        return edges * self._edge_gain + (self.count - edges) * self._non_edge_gain

    def log_likelihood(self) -> Tensor:
        stats = self._stats()
        return two_probability_log_likelihood_of_counts(
            stats.edges.diagonal(dim1=-2, dim2=-1).sum(-1), stats.pairs.diagonal(dim1=-2, dim2=-1).sum(-1),
            stats.edges.triu(1).sum((-2, -1)), stats.pairs.triu(1).sum((-2, -1)), self.p, self.q)
