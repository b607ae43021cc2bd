"""Stochastic block models of undirected simple graphs.

- :class:`SBM` — the single-type infinite relational model: a CRP(alpha) partition of the nodes, one edge
  probability per block pair (Beta(within) on the diagonal, Beta(between) off it), y_ij ~ Bernoulli(phi)
  for i < j. The probabilities are conjugate, so p(graph | partition) is exact (Beta-Bernoulli).
- :class:`LogDegreeSBM` — the symmetric SBM with ``num_blocks`` equal blocks and edge probabilities
  p = a log N / N within and q = b log N / N between (the exact-recovery regime).
- :class:`LabelledDatasets` — a collection of labelled graphs or point sets as the training distribution
  (no simulator), with a held-out split.
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

import numpy as np
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
    check_choice,
    check_int,
    check_positive,
    check_positive_int,
    check_scalar,
    check_vectors,
)

from .base import ExactLikelihood, GenerativeModel
from .conjugate import (
    BlockGibbsStatistics,
    block_log_marginal,
    block_log_predictive,
    block_stats,
    node_block_counts,
)
from .graphs import (
    BalancedPartition,
    SizedBlocksPartition,
    SymmetricAdjacency,
    as_adjacency,
    check_adjacency,
    check_block_sizes,
    data_fingerprint,
    from_networkx,
    label_ids,
    laplacian_positional_encoding,
    sized_block_labels,
    to_networkx,
)

POSITIONAL_ENCODING_DIM = 20


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


class LogDegreeSBM(GraphModel):
    """Symmetric SBM: ``num_blocks`` equal blocks (uniformly random), p = a log N / N, q = b log N / N.

    Exact recovery is possible when (sqrt(a) - sqrt(b))^2 > num_blocks; the defaults (2 blocks, a = 10,
    b = 2) sit just above it. N must be large enough that a log N / N <= 1.
    """

    def __init__(self, num_blocks: int = 2, a: float = 10.0, b: float = 2.0):
        self.num_blocks = check_positive_int(num_blocks, "num_blocks")
        self.a = check_positive(a, "a")
        self.b = check_positive(b, "b")
        super().__init__(num_blocks=self.num_blocks, a=self.a, b=self.b)

    def partition_prior(self, num_points: int) -> BalancedPartition:
        return BalancedPartition(self.num_blocks, check_positive_int(num_points, "num_points"))

    def edge_probabilities(self, num_points: Tensor | int) -> tuple[Tensor, Tensor]:
        """(p, q) at N points; ValueError if either exceeds 1 (N too small for a or b)."""
        n = torch.as_tensor(num_points, dtype=torch.float64)
        scale = torch.log(n) / n
        p, q = self.a * scale, self.b * scale
        if (p > 1).any() or (q > 1).any():
            bad = int(n.flatten()[(p > 1).flatten() | (q > 1).flatten()][0])
            raise ValueError(f"edge probability a log N / N = {self.a * math.log(bad) / bad:.3f} exceeds 1 at "
                             f"N = {bad}; use more points or smaller a, b")
        return p, q

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        like = obs if obs is not None else torch.zeros((), dtype=torch.get_default_dtype())
        labels = pyro.sample("labels", self.partition_prior(num_points)).to(like.device)
        p, q = (v.to(like) for v in self.edge_probabilities(num_points))
        same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
        return pyro.sample("x", SymmetricAdjacency(torch.where(same, p, q)), obs=obs)

    def _simulate(self, sizes: Tensor, mask: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        # Balanced blocks are not projective, so each graph deals its own N_b points round-robin in a random
        # order (which also leaves the nodes in random order for _graph_batch).
        keys = torch.rand(mask.shape, generator=generator, device=mask.device).masked_fill(~mask, 2.0)
        rank = keys.argsort(-1).argsort(-1)
        labels = (rank % self.num_blocks).masked_fill(~mask, -1)
        dtype = torch.get_default_dtype()
        p, q = (v.to(device=mask.device, dtype=dtype).view(-1, 1, 1) for v in self.edge_probabilities(sizes.cpu()))
        same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
        return self._graph_batch(labels, torch.where(same, p, q), mask, generator)

    def log_marginal_likelihood(self, adjacency: Any, labels: Any) -> Tensor:
        """log p(graph | partition) with p, q known (nothing to integrate); labels (..., N) -> (...,)."""
        adjacency, labels = self._check_data_labels(adjacency, labels)
        p, q = (v.to(adjacency) for v in self.edge_probabilities(adjacency.shape[0]))
        return two_probability_log_likelihood(adjacency, labels, p, q)


def two_probability_log_likelihood(adjacency: Tensor, labels: Tensor, p: Tensor | float, q: Tensor | float) -> Tensor:
    """log p(graph | partition) when every within-block pair is an edge with probability p and every other
    pair with probability q: Bernoulli counts of edges and non-edges within and between blocks."""
    n = adjacency.shape[0]
    same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
    upper = torch.ones(n, n, dtype=torch.bool, device=adjacency.device).triu(1)
    within_edges = (adjacency * (same & upper)).sum((-1, -2))
    within_pairs = (same & upper).sum((-1, -2)).to(adjacency.dtype)
    total_edges = adjacency.triu(1).sum()
    between_edges = total_edges - within_edges
    between_pairs = n * (n - 1) / 2 - within_pairs
    p, q = torch.as_tensor(p, dtype=adjacency.dtype), torch.as_tensor(q, dtype=adjacency.dtype)
    xlogy = torch.special.xlogy
    return (xlogy(within_edges, p) + xlogy(within_pairs - within_edges, 1 - p)
            + xlogy(between_edges, q) + xlogy(between_pairs - between_edges, 1 - q))


class PlantedPartition(GraphModel):
    """The CLUSTER benchmark's graphs (Dwivedi et al., "Benchmarking graph neural networks"), simulated by
    their recipe: ``num_blocks`` communities of sizes i.i.d. uniform on ``block_sizes`` = [low, high), the
    nodes in random order, edges with probability ``p_in`` within a community and ``p_out`` between.

    The defaults are the benchmark's: 6 blocks of 5..34 nodes, p_in = 0.55, p_out = 0.25 (about 117 nodes).
    ``simulate`` without ``num_points`` draws the graphs' sizes by the recipe (the sum of the block sizes);
    with ``num_points``, the block sizes are drawn conditioned on that N. The Pyro program's "labels" site
    is :class:`~pyro_acp.models.graphs.SizedBlocksPartition` (its exact prior given N), and the likelihood
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
                 device: str | torch.device | None = None) -> Batch:
        """A training batch; without ``num_points`` each graph's N is the sum of its block sizes (the recipe)."""
        if num_points is not None:
            lo, hi = self.check_num_points_range(num_points)
            low, high = self.default_num_points
            if lo < low or hi > high:
                raise ValueError(f"{self.num_blocks} blocks of sizes in [{self.block_sizes[0]}, "
                                 f"{self.block_sizes[1]}) hold between {low} and {high - 1} nodes; num_points "
                                 f"[{lo}, {hi}) goes beyond that")
            return super().simulate(batch_size, num_points, seed=seed, device=device)
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


class LabelledDatasets(GenerativeModel):
    """A collection of labelled data sets used as the training distribution instead of a simulator.

    "All we need for training are labeled datasets" (the ACP paper's SNAP experiment): ``datasets`` is a
    sequence of ``(x, labels)`` pairs, all graphs (networkx graphs, scipy sparse or dense adjacencies, read
    by :func:`~pyro_acp.models.graphs.as_adjacency`) or all point sets (N, D). ``labels`` are any hashable
    values, one per node / point in order (for a networkx graph also a dict {node: label}); only which
    nodes share a label matters.

    A fraction ``held_out`` of the data sets (at least one when there are two or more), drawn with
    ``seed``, is kept out of training: :meth:`simulate` draws training batches uniformly with replacement
    from the others, and :attr:`held_out_datasets` returns the held-out ones for evaluation. Graph batches
    get their nodes in a random order and Laplacian encodings with random sign flips, as simulated graphs
    do; point batches a random point order.

    There is no generative program (no prior, no likelihood): ``model()``, ``partition_prior`` and the
    exact references are not available, and ``infer`` uses the guide alone. ``config()`` identifies the
    collection by a fingerprint of its data, so a cached guide is matched to the same collection only.
    """

    ordered = False

    def __init__(self, datasets: Any, *, kind: str | None = None, held_out: float = 0.2, seed: int = 0):
        pairs = list(datasets)
        if not pairs:
            raise ValueError("datasets is empty: give a sequence of (x, labels) pairs")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"datasets[{i}] must be an (x, labels) pair")
        if kind is None:
            first = pairs[0][0]
            kind = "graph" if hasattr(first, "number_of_nodes") or hasattr(first, "tocoo") else "vector"
        self.data_kind = check_choice(kind, "kind", ("graph", "vector"))
        held_out = check_scalar(held_out, "held_out")
        if not 0.0 <= held_out < 1.0:
            raise ValueError(f"held_out must be a fraction in [0, 1), got {held_out}")
        xs, labels = [], []
        dim = None if self.data_kind == "graph" else int(np.shape(pairs[0][0])[-1])
        for i, (x, y) in enumerate(pairs):
            if self.data_kind == "graph":
                graph = as_adjacency(x, f"datasets[{i}] graph")
                xs.append(graph.adjacency.to(torch.get_default_dtype()))
                labels.append(label_ids(y, graph.nodes, xs[-1].shape[0], f"datasets[{i}]"))
            else:
                xs.append(check_vectors(x, dim, f"datasets[{i}] x").to(torch.get_default_dtype()))
                labels.append(label_ids(y, None, xs[-1].shape[0], f"datasets[{i}]"))
        self._xs, self._labels = xs, labels
        count = len(pairs)
        num_held = min(count - 1, max(1, round(held_out * count))) if held_out > 0 and count > 1 else 0
        order = torch.randperm(count, generator=torch.Generator().manual_seed(check_int(seed, "seed")))
        self._held, self._train = sorted(order[:num_held].tolist()), sorted(order[num_held:].tolist())
        self._dim = POSITIONAL_ENCODING_DIM if dim is None else dim
        sizes = [int(x.shape[0]) for x in xs]
        self.default_num_points = (min(sizes), max(sizes) + 1)
        super().__init__(kind=self.data_kind, num_datasets=count, held_out=held_out, seed=seed,
                         fingerprint=data_fingerprint(xs + labels))

    @property
    def data_dim(self) -> int:
        return self._dim

    @property
    def held_out_datasets(self) -> list[tuple[Tensor, Tensor]]:
        """The held-out (x, labels) pairs: adjacencies or points as tensors, labels 0..K-1."""
        return [(self._xs[i], self._labels[i]) for i in self._held]

    @property
    def training_datasets(self) -> list[tuple[Tensor, Tensor]]:
        """The (x, labels) pairs training batches are drawn from."""
        return [(self._xs[i], self._labels[i]) for i in self._train]

    def check_data(self, x: Any) -> Tensor:
        if self.data_kind == "graph":
            return check_adjacency(x, "graph")
        return check_vectors(x, self._dim)

    def partition_prior(self, num_points: int):
        raise NotImplementedError("a collection of labelled data sets has no prior over partitions")

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        raise NotImplementedError("a collection of labelled data sets has no generative program; it serves "
                                  "training batches (simulate) only")

    def simulate(self, batch_size: int, num_points: int | tuple[int, int] | None = None, seed: int | None = None,
                 device: str | torch.device | None = None, *, split: str = "train") -> Batch:
        """``batch_size`` data sets drawn uniformly with replacement from the training part (``split="held_out"``:
        from the held-out part, for evaluation), those with N in ``num_points`` when given; padded, in random
        point order, with teacher-forcing masks."""
        batch_size = check_positive_int(batch_size, "batch_size")
        lo, hi = self.check_num_points_range(num_points)
        part = self._train if check_choice(split, "split", ("train", "held_out")) == "train" else self._held
        pool = [i for i in part if lo <= self._xs[i].shape[0] < hi]
        if not pool:
            raise ValueError(f"no {split.replace('_', '-')} data set has N in [{lo}, {hi})")
        device = torch.device("cpu" if device is None else device)
        generator = make_generator(seed, device)
        picks = torch.randint(len(pool), (batch_size,), generator=generator, device=device).tolist()
        chosen = [pool[p] for p in picks]
        sizes = torch.tensor([self._xs[i].shape[0] for i in chosen], device=device)
        n = int(sizes.max())
        mask = torch.arange(n, device=device) < sizes.unsqueeze(-1)
        labels = torch.full((batch_size, n), -1, dtype=torch.long, device=device)
        width = n if self.data_kind == "graph" else self._dim
        data = torch.zeros(batch_size, n, width, device=device)
        for row, i in enumerate(chosen):  # copying B tensors of different shapes into one padded block
            m = self._xs[i].shape[0]
            data[row, :m, : self._xs[i].shape[1]] = self._xs[i].to(device)
            labels[row, :m] = self._labels[i].to(device)
        if self.data_kind == "vector":
            return Batch.from_labels(data, labels, mask=mask, generator=generator)
        perm = random_point_order(mask, generator)
        labels = labels.gather(1, perm)
        data = data.gather(1, perm.unsqueeze(-1).expand_as(data)).gather(2, perm.unsqueeze(1).expand_as(data))
        pe = laplacian_positional_encoding(data, mask, POSITIONAL_ENCODING_DIM, sign_flip_generator=generator)
        return Batch.from_labels(pe, labels, mask=mask, adjacency=data, shuffle=False, generator=generator)
