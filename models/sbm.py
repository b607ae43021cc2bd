"""Stochastic block models of undirected simple graphs.

- :class:`SBM` — the single-type infinite relational model: a CRP(alpha) partition of the nodes, one edge
  probability per block pair (Beta(within) on the diagonal, Beta(between) off it), y_ij ~ Bernoulli(phi)
  for i < j. The probabilities are conjugate, so p(graph | partition) is exact (Beta-Bernoulli).
- :class:`LogDegreeSBM` — the symmetric SBM with ``num_blocks`` equal blocks and edge probabilities
  p = a log N / N within and q = b log N / N between (the exact-recovery regime); K, a and b may be random
  (a set of block counts, uniform ranges), with the likelihood still exact.
- :class:`PlantedPartition` — the CLUSTER benchmark's recipe: a fixed number of blocks of uniformly random
  sizes, edge probabilities p_in within and p_out between.

The observed site "x" is the (N, N) adjacency (a networkx graph, scipy sparse matrix, array or tensor is
accepted); a simulated :class:`~pyro_acp.data.Batch` holds the graphs in ``Batch.adjacency`` and their 20-D
Laplacian positional encodings (with random sign flips) in ``Batch.x``. Guides with a graph encoder
(``ACPS(20, encoder="gatedgcn")``, :mod:`pyro_acp.nn.graph`) read both in training and the adjacency alone at
inference, computing its encodings themselves.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_acp.data.batch import Batch, random_point_order
from pyro_acp.data.partitions import canonicalize
from pyro_acp.distributions import CRP
from pyro_acp.seeding import generator_rng, make_generator
from pyro_acp.validation import (
    check_beta_pair,
    check_positive,
    check_positive_int,
    check_scalar,
)

from .base import ExactLikelihood, GenerativeModel
from .block_priors import (
    BalancedPartition,
    SizedBlocksPartition,
    check_block_counts,
    check_block_sizes,
    sized_block_labels,
)
from .conjugate import (
    BlockGibbsStatistics,
    TwoProbabilityGibbsStatistics,
    block_log_marginal,
    block_log_predictive,
    block_stats,
    node_block_counts,
    two_probability_log_likelihood_of_counts,
)
from .graphs import (
    POSITIONAL_ENCODING_DIM,
    SymmetricAdjacency,
    check_adjacency,
    from_networkx,
    laplacian_positional_encoding,
    to_networkx,
)


def check_probability(value: Any, name: str) -> float:
    """A probability in (0, 1) as a float (0 and 1 would make the likelihood degenerate)."""
    value = check_scalar(value, name)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a probability strictly between 0 and 1, got {value}")
    return value


class GraphModel(ExactLikelihood, GenerativeModel):
    """Shared parts of graph models: adjacency validation, networkx conversion, positional encodings."""

    data_kind = "graph"
    ordered = False
    default_num_points = (50, 300)

    @property
    def data_dim(self) -> int:
        return POSITIONAL_ENCODING_DIM

    def check_data(self, x: Any) -> Tensor:
        """A validated (N, N) float adjacency from a networkx graph, a scipy sparse matrix or a dense array /
        tensor; :func:`~pyro_acp.models.graphs.as_adjacency` says what is handled and what is refused."""
        return check_adjacency(x, "adjacency")

    to_networkx = staticmethod(to_networkx)
    from_networkx = staticmethod(from_networkx)

    def positional_encoding(self, adjacency: Any) -> Tensor:
        """(N, 20) guide inputs of one graph (no sign flips)."""
        return laplacian_positional_encoding(self.check_data(adjacency), dim=POSITIONAL_ENCODING_DIM)

    def _graph_batch(self, labels: Tensor, probs: Tensor, mask: Tensor, generator: torch.Generator) -> dict:
        """Sample the adjacencies from node-pair probabilities (B, N, N) and encode them.

        ``labels`` must already be in a uniformly random node order (real nodes first), so the batch is built
        without permuting the (B, N, N) adjacency.
        """
        draws = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype) < probs
        upper = draws.triu(1) & (mask.unsqueeze(-1) & mask.unsqueeze(-2))
        adjacency = (upper | upper.transpose(-1, -2)).to(probs.dtype)
        pe = laplacian_positional_encoding(adjacency, mask, POSITIONAL_ENCODING_DIM, sign_flip_generator=generator)
        return {"x": pe, "labels": labels, "adjacency": adjacency, "shuffled": True}



class SBM(GraphModel):
    """Single-type IRM: CRP(alpha) blocks, Beta block probabilities, symmetric, no self loops.

    Default N in [50, 300), within-block Beta(6, 3) (mean 2/3), between-block Beta(1, 5) (mean 1/6).
    """

    def __init__(self, alpha: float = 0.7, within: tuple[float, float] = (6.0, 3.0),
                 between: tuple[float, float] = (1.0, 5.0)):
        self.alpha = check_positive(alpha, "alpha")
        self.within = check_beta_pair(within, "within")
        self.between = check_beta_pair(between, "between")
        super().__init__(alpha=self.alpha, within=self.within, between=self.between)

    def partition_prior(self, num_points: int) -> CRP:
        return CRP(self.alpha, check_positive_int(num_points, "num_points"))

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        device = obs.device if obs is not None else torch.device("cpu")
        labels = pyro.sample("labels", self.partition_prior(num_points)).to(device)
        k = int(labels.max()) + 1
        one = torch.ones((), device=device)
        with pyro.plate("blocks", k):
            within = pyro.sample("within", dist.Beta(self.within[0] * one, self.within[1] * one))
        rows, cols = torch.triu_indices(k, k, 1, device=device)
        probs = torch.diag_embed(within)
        if rows.numel() > 0:
            with pyro.plate("block_pairs", rows.numel()):
                between = pyro.sample("between", dist.Beta(self.between[0] * one, self.between[1] * one))
            probs = probs.index_put((rows, cols), between).index_put((cols, rows), between)
        node_probs = probs[labels][:, labels]
        return pyro.sample("x", SymmetricAdjacency(node_probs), obs=obs)

    def _simulate(self, sizes: Tensor, mask: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        batch, n = mask.shape
        labels = self.sample_prior(n, batch, generator).masked_fill(~mask, -1)
        labels = labels.gather(1, random_point_order(mask, generator))  # exchangeable order, real nodes first
        k = int(labels.max()) + 1
        dtype = torch.get_default_dtype()
        with generator_rng(generator):
            within = torch.distributions.Beta(*(torch.tensor(v, dtype=dtype, device=mask.device)
                                                for v in self.within)).sample((batch, k))
            between = torch.distributions.Beta(*(torch.tensor(v, dtype=dtype, device=mask.device)
                                                 for v in self.between)).sample((batch, k, k))
        upper = between.triu(1)
        probs = upper + upper.transpose(-1, -2) + torch.diag_embed(within)
        z = torch.nn.functional.one_hot(labels.clamp(min=0), k).to(dtype) * mask.unsqueeze(-1)
        return self._graph_batch(labels, z @ probs @ z.transpose(-1, -2), mask, generator)

    def log_marginal_likelihood(self, adjacency: Any, labels: Any) -> Tensor:
        """log p(graph | partition), block probabilities integrated out; labels (..., N) -> (...,)."""
        adjacency, labels = self._check_data_labels(adjacency, labels)
        labels = canonicalize(labels)
        stats = block_stats(adjacency, labels, int(labels.max()) + 1)
        return block_log_marginal(stats, self.within, self.between)

    def log_predictive(self, adjacency: Any, labels: Any, index: int, num_clusters: int | None = None) -> Tensor:
        """log p(node ``index``'s edges | other nodes, it joins block k), k = 0..K-1 and new (slot K).

        ``labels`` (..., N) in 0..K-1, the label at ``index`` ignored; shape (..., K+1) like the prior's
        ``seating_log_weights``.
        """
        adjacency, labels = self._check_data_labels(adjacency, labels)
        others, k = self._without_point(labels, index, num_clusters)
        stats = block_stats(adjacency, others, k + 1)
        node_edges, node_pairs = node_block_counts(adjacency, labels, index, k + 1)
        return block_log_predictive(node_edges, node_pairs, stats, self.within, self.between)

    def gibbs_statistics(self, adjacency: Tensor) -> BlockGibbsStatistics:
        """Edges between blocks, edges from every node to every block and block sizes of C chains."""
        return BlockGibbsStatistics(adjacency, self.within, self.between)


def check_rate(value: Any, name: str) -> float | tuple[float, float]:
    """A positive rate, or a range (low, high) with 0 < low < high of a uniformly random one."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a positive number or a range (low, high), got {value!r}")
        low, high = check_positive(value[0], f"{name} low"), check_positive(value[1], f"{name} high")
        if high <= low:
            raise ValueError(f"{name} range (low, high) needs high > low, got ({low}, {high})")
        return low, high
    return check_positive(value, name)


#: points of the midpoint rule that integrates a uniformly random a or b out of the likelihood
RATE_QUADRATURE_POINTS = 4096


class LogDegreeSBM(GraphModel):
    """Symmetric SBM: K equal blocks (uniformly random), p = a log N / N within, q = b log N / N between.

    Exact recovery is possible when (sqrt(a) - sqrt(b))^2 > K; the defaults (K = 2, a = 10, b = 2) sit just
    above it. N must be large enough that a log N / N <= 1.

    The hyperparameters may also be random, as when one guide is trained over a range of them (the ACP
    paper's: ``LogDegreeSBM(num_blocks=(2, 3, 4), a=(1, 30), b=(1, 10))`` with N in [300, 600)):
    ``num_blocks`` a sequence of block counts (K uniform on them; the "labels" site is then the mixture
    :class:`~pyro_acp.models.block_priors.BalancedPartition`), ``a`` / ``b`` a range (low, high) (uniform
    on it; sites "a" / "b" of the program). The likelihood stays exact: given the partition, the graph's
    within-block edges depend on a only and the others on b only, so
        p(graph | partition) = E_a[p^e_w (1 - p)^(m_w - e_w)] E_b[q^e_b (1 - q)^(m_b - e_b)],
    each expectation a 1-D integral over the uniform range, computed in log space by the midpoint rule on
    ``RATE_QUADRATURE_POINTS`` points (e_w edges among m_w within-block pairs; e_b, m_b between).
    """

    def __init__(self, num_blocks: int | tuple[int, ...] = 2, a: float | tuple[float, float] = 10.0,
                 b: float | tuple[float, float] = 2.0):
        choices = check_block_counts(num_blocks)
        self.num_blocks = choices[0] if len(choices) == 1 and not isinstance(num_blocks, (list, tuple)) \
            else choices
        self.a = check_rate(a, "a")
        self.b = check_rate(b, "b")
        super().__init__(num_blocks=self.num_blocks, a=self.a, b=self.b)

    def partition_prior(self, num_points: int) -> BalancedPartition:
        return BalancedPartition(self.num_blocks, check_positive_int(num_points, "num_points"))

    def edge_probabilities(self, num_points: Tensor | int, a: Tensor | float | None = None,
                           b: Tensor | float | None = None) -> tuple[Tensor, Tensor]:
        """(p, q) at N points for rates ``a``, ``b`` (default the model's: fixed values, or for a range its
        upper end); ValueError if either exceeds 1 (N too small for a or b)."""
        n = torch.as_tensor(num_points, dtype=torch.float64)
        scale = torch.log(n) / n
        a = _upper(self.a) if a is None else a
        b = _upper(self.b) if b is None else b
        p, q = torch.as_tensor(a, dtype=torch.float64) * scale, torch.as_tensor(b, dtype=torch.float64) * scale
        too_big = (p > 1) | (q > 1)
        if too_big.any():
            bad = int(torch.broadcast_to(n, too_big.shape)[too_big].flatten()[0])
            top = max(float(torch.as_tensor(a).max()), float(torch.as_tensor(b).max()))
            raise ValueError(f"edge probability a log N / N = {top * math.log(bad) / bad:.3f} exceeds 1 at "
                             f"N = {bad}; use more points or smaller a, b")
        return p, q

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        like = obs if obs is not None else torch.zeros((), dtype=torch.get_default_dtype())
        labels = pyro.sample("labels", self.partition_prior(num_points)).to(like.device)
        self.edge_probabilities(num_points)  # the whole range must give probabilities <= 1
        rates = [pyro.sample(name, dist.Uniform(*(torch.tensor(v).to(like) for v in value)))
                 if isinstance(value, tuple) else value for name, value in (("a", self.a), ("b", self.b))]
        p, q = (v.to(like) for v in self.edge_probabilities(num_points, *rates))
        same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
        return pyro.sample("x", SymmetricAdjacency(torch.where(same, p, q)), obs=obs)

    def _draw_rate(self, value: float | tuple[float, float], batch: int, generator: torch.Generator) -> Tensor:
        if not isinstance(value, tuple):
            return torch.full((batch,), value, dtype=torch.float64)
        u = torch.rand(batch, generator=generator, device=generator.device, dtype=torch.float64).cpu()
        return value[0] + (value[1] - value[0]) * u

    def _simulate(self, sizes: Tensor, mask: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        # Balanced blocks are not projective, so each graph deals its own N_b points round-robin in a random
        # order (which also leaves the nodes in random order for _graph_batch), into its own K_b blocks.
        batch = mask.shape[0]
        choices = torch.tensor(check_block_counts(self.num_blocks), device=mask.device)
        k = choices[torch.randint(len(choices), (batch, 1), generator=generator, device=mask.device)]
        keys = torch.rand(mask.shape, generator=generator, device=mask.device).masked_fill(~mask, 2.0)
        rank = keys.argsort(-1).argsort(-1)
        labels = (rank % k).masked_fill(~mask, -1)
        a, b = self._draw_rate(self.a, batch, generator), self._draw_rate(self.b, batch, generator)
        dtype = torch.get_default_dtype()
        p, q = (v.to(device=mask.device, dtype=dtype).view(-1, 1, 1)
                for v in self.edge_probabilities(sizes.cpu(), a, b))
        same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
        return self._graph_batch(labels, torch.where(same, p, q), mask, generator)

    def log_marginal_likelihood(self, adjacency: Any, labels: Any) -> Tensor:
        """log p(graph | partition), random a and b integrated out (see the class docstring); with fixed a and
        b nothing is integrated. Labels (..., N) -> (...,)."""
        adjacency, labels = self._check_data_labels(adjacency, labels)
        n = adjacency.shape[0]
        self.edge_probabilities(n)
        grid = (torch.arange(RATE_QUADRATURE_POINTS, dtype=torch.float64) + 0.5) / RATE_QUADRATURE_POINTS
        rates = [v[0] + (v[1] - v[0]) * grid if isinstance(v, tuple) else torch.tensor([v], dtype=torch.float64)
                 for v in (self.a, self.b)]
        p, q = (v.to(adjacency.device) for v in self.edge_probabilities(n, *rates))
        counts = [c.double().unsqueeze(-1) for c in block_pair_counts(adjacency, labels)]
        return (_log_mean_bernoulli(counts[0], counts[1], p) + _log_mean_bernoulli(counts[2], counts[3], q)
                ).to(adjacency.dtype)


def _upper(value: float | tuple[float, float]) -> float:
    return value[1] if isinstance(value, tuple) else value


def _log_mean_bernoulli(edges: Tensor, pairs: Tensor, probs: Tensor) -> Tensor:
    """log of the mean over the grid ``probs`` (G,) of p^edges (1 - p)^(pairs - edges); edges (..., 1)."""
    xlogy = torch.special.xlogy
    terms = xlogy(edges, probs) + xlogy(pairs - edges, 1 - probs)
    return terms.logsumexp(-1) - math.log(probs.shape[-1])


def block_pair_counts(adjacency: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(edges within blocks, pairs within blocks, edges between, pairs between) of partitions (..., N)."""
    n = adjacency.shape[0]
    same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
    upper = torch.ones(n, n, dtype=torch.bool, device=adjacency.device).triu(1)
    within_edges = (adjacency * (same & upper)).sum((-1, -2))
    within_pairs = (same & upper).sum((-1, -2)).to(adjacency.dtype)
    between_edges = adjacency.triu(1).sum() - within_edges
    between_pairs = n * (n - 1) / 2 - within_pairs
    return within_edges, within_pairs, between_edges, between_pairs


def two_probability_log_likelihood(adjacency: Tensor, labels: Tensor, p: Tensor | float, q: Tensor | float) -> Tensor:
    """log p(graph | partition) when every within-block pair is an edge with probability p and every other
    pair with probability q: Bernoulli counts of edges and non-edges within and between blocks."""
    return two_probability_log_likelihood_of_counts(*block_pair_counts(adjacency, labels), p, q)


class PlantedPartition(GraphModel):
    """The CLUSTER benchmark's graphs (Dwivedi et al., "Benchmarking graph neural networks"), simulated by
    their recipe: ``num_blocks`` communities of sizes i.i.d. uniform on ``block_sizes`` = [low, high), the
    nodes in random order, edges with probability ``p_in`` within a community and ``p_out`` between.

    The defaults are the benchmark's: 6 blocks of 5..34 nodes, p_in = 0.55, p_out = 0.25 (about 117 nodes).
    ``simulate`` without ``num_points`` draws the graphs' sizes by the recipe (the sum of the block sizes);
    with ``num_points``, the block sizes are drawn conditioned on that N. The Pyro program's "labels" site
    is :class:`~pyro_acp.models.block_priors.SizedBlocksPartition` (its exact prior given N), and the likelihood
    is exact (p_in, p_out are known).
    """

    def __init__(self, num_blocks: int = 6, p_in: float = 0.55, p_out: float = 0.25,
                 block_sizes: tuple[int, int] = (5, 35)):
        self.num_blocks = check_positive_int(num_blocks, "num_blocks")
        self.p_in = check_probability(p_in, "p_in")
        self.p_out = check_probability(p_out, "p_out")
        self.block_sizes = check_block_sizes(block_sizes)
        super().__init__(num_blocks=self.num_blocks, p_in=self.p_in, p_out=self.p_out,
                         block_sizes=self.block_sizes)

    @property
    def default_num_points(self) -> tuple[int, int]:
        """The range of N the recipe produces: [K low, K (high - 1)] (the half-open range ends one above)."""
        low, high = self.block_sizes
        return self.num_blocks * low, self.num_blocks * (high - 1) + 1

    def partition_prior(self, num_points: int) -> SizedBlocksPartition:
        return SizedBlocksPartition(self.num_blocks, self.block_sizes, check_positive_int(num_points, "num_points"))

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        like = obs if obs is not None else torch.zeros((), dtype=torch.get_default_dtype())
        labels = pyro.sample("labels", self.partition_prior(num_points)).to(like.device)
        same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
        probs = torch.where(same, self.p_in, self.p_out).to(like)
        return pyro.sample("x", SymmetricAdjacency(probs), obs=obs)

    def simulate(self, batch_size: int, num_points: int | tuple[int, int] | None = None, seed: int | None = None,
                 device: str | torch.device | None = None, size_law: str = "uniform") -> Batch:
        """A training batch; without ``num_points`` each graph's N is the sum of its block sizes (the recipe),
        and ``size_law`` (how N is drawn in a ``num_points`` range) must be ``"uniform"``."""
        if num_points is None and size_law != "uniform":
            raise ValueError(f"size_law={size_law!r} draws N in a num_points range; without one each graph's N "
                             "is the sum of its block sizes: give num_points or leave size_law='uniform'")
        if num_points is not None:
            lo, hi = self.check_num_points_range(num_points)
            low, high = self.default_num_points
            if lo < low or hi > high:
                raise ValueError(f"{self.num_blocks} blocks of sizes in [{self.block_sizes[0]}, "
                                 f"{self.block_sizes[1]}) hold between {low} and {high - 1} nodes; num_points "
                                 f"[{lo}, {hi}) goes beyond that")
            return super().simulate(batch_size, num_points, seed=seed, device=device, size_law=size_law)
        batch_size = check_positive_int(batch_size, "batch_size")
        device = torch.device("cpu" if device is None else device)
        generator = make_generator(seed, device)
        low, high = self.block_sizes
        sizes = torch.randint(low, high, (batch_size, self.num_blocks), generator=generator, device=device).sum(-1)
        mask = torch.arange(int(sizes.max()), device=device) < sizes.unsqueeze(-1)
        parts = self._simulate(sizes, mask, generator)
        return Batch.from_labels(parts["x"], parts["labels"], mask=mask, adjacency=parts["adjacency"],
                                 shuffle=False, generator=generator)

    def _simulate(self, sizes: Tensor, mask: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        labels = sized_block_labels(sizes, self.num_blocks, *self.block_sizes, generator)  # random node order
        same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
        dtype = torch.get_default_dtype()
        probs = torch.where(same, self.p_in, self.p_out).to(dtype)
        return self._graph_batch(labels, probs, mask, generator)

    def log_marginal_likelihood(self, adjacency: Any, labels: Any) -> Tensor:
        """log p(graph | partition) with p_in, p_out known; labels (..., N) -> (...,)."""
        adjacency, labels = self._check_data_labels(adjacency, labels)
        return two_probability_log_likelihood(adjacency, labels, self.p_in, self.p_out)

    def gibbs_statistics(self, adjacency: Tensor) -> TwoProbabilityGibbsStatistics:
        """Edges from every node to every block and block sizes of C chains, scored with p_in and p_out."""
        return TwoProbabilityGibbsStatistics(adjacency, self.p_in, self.p_out)
