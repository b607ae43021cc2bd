"""Graph utilities: the adjacency likelihood, a balanced-block prior, positional encodings, networkx I/O.

- :class:`SymmetricAdjacency` — undirected simple graphs with independent edges: the observed site "x" of
  the SBMs. Only the upper triangle is random; samples are mirrored and log_prob counts each pair once.
- :class:`BalancedPartition` — uniform over the partitions of N nodes into ``num_blocks`` blocks of equal
  size (sizes differ by at most one): the "labels" site of :class:`~pyro_acp.models.LogDegreeSBM`.
- :class:`SizedBlocksPartition` — blocks of i.i.d. uniform sizes given their sum, nodes dealt at random: the
  "labels" site of :class:`~pyro_acp.models.PlantedPartition` (the CLUSTER benchmark's recipe).
- :func:`laplacian_positional_encoding` — batched, padding-aware eigenvectors of the symmetric normalised
  Laplacian, the guide inputs of graph data.
- :func:`to_networkx`, :func:`from_networkx`, :func:`check_adjacency`, :func:`as_adjacency` — conversions and
  validation (networkx graphs, scipy sparse matrices, dense arrays).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

from pyro_acp.data.partitions import canonicalize, check_labels, cluster_sizes, enumerate_partitions
from pyro_acp.validation import check_positive_int

if TYPE_CHECKING:
    import networkx as nx

LABEL_ATTRIBUTE = "label"
_NO_SHAPE = torch.Size()
PADDING_EIGENVALUE = 3.0  # above the normalised Laplacian's spectrum [0, 2], so padding sorts last
EIGH_BUCKET = 4  # graphs per eigh call, grouped by size


# ---------------------------------------------------------------------------------------------- validation


def _is_networkx_graph(value: Any) -> bool:
    """Whether ``value`` is a networkx graph, without importing networkx when nobody has (none can exist)."""
    networkx = sys.modules.get("networkx")
    return networkx is not None and isinstance(value, networkx.Graph)


def _is_scipy_sparse(value: Any) -> bool:
    """Whether ``value`` is a scipy sparse matrix or array (scipy is never imported here)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(value)


def _as_float_tensor(value, name: str) -> Tensor:
    if isinstance(value, PreparedGraph):
        return value.adjacency
    if _is_networkx_graph(value):
        value = from_networkx(value)[0]
    elif _is_scipy_sparse(value):
        if len(value.shape) != 2 or value.shape[0] != value.shape[1]:
            raise ValueError(f"{name} must be a square (N, N) matrix, got shape {tuple(value.shape)}")
        value = value.toarray()
    if not torch.is_tensor(value):
        try:
            value = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a tensor, array or networkx graph, got {type(value).__name__}") from err
    if value.dtype == torch.bool or not value.dtype.is_floating_point:
        value = value.to(torch.get_default_dtype())
    return value


def adjacency_problem(adjacency: Tensor) -> str | None:
    """Why ``adjacency`` (..., N, N) is not a simple undirected graph, or None when it is one."""
    if adjacency.dim() < 2 or adjacency.shape[-1] != adjacency.shape[-2]:
        return f"must be a square (N, N) matrix, got shape {tuple(adjacency.shape)}"
    if adjacency.shape[-1] == 0:
        return "is empty: a graph needs at least one node"
    if not torch.isfinite(adjacency).all():
        return "contains NaN or inf"
    if ((adjacency != 0) & (adjacency != 1)).any():
        return ("must hold only 0/1 entries (the models are for unweighted graphs; for a weighted one pass the "
                "edges it has, e.g. (A != 0))")
    if (adjacency != adjacency.transpose(-1, -2)).any():
        return ("must be symmetric (an undirected graph; for a directed one pass its undirected version, e.g. "
                "max(A, A.T))")
    if adjacency.diagonal(dim1=-2, dim2=-1).any():
        return "must have a zero diagonal (no self loops; drop them, e.g. set the diagonal to 0)"
    return None


@dataclass(frozen=True)
class PreparedGraph:
    """An adjacency (N, N) that :func:`as_adjacency` has already validated, with the graph's node names.

    What ``pyro_acp.infer``'s graph path hands on once it has read the user's graph; ``check_adjacency``
    returns its tensor as it is.
    """

    adjacency: Tensor
    nodes: list | None = None


def as_adjacency(graph: Any, name: str = "graph") -> PreparedGraph:
    """Read a graph for the SBMs: a networkx graph, a scipy sparse matrix, or a dense array / tensor (N, N).

    What is handled and what is refused (ValueError naming the problem):
    - networkx graphs: nodes in ``graph.nodes`` order (kept as ``nodes``, so results can be keyed by them);
      edge weights and attributes are ignored (an edge is an edge), parallel edges of a multigraph count
      once; directed graphs are refused (pass ``graph.to_undirected()``), and so are self loops.
    - matrices (dense or sparse): must be square, finite, 0/1, symmetric, with a zero diagonal; a weighted
      matrix (entries other than 0/1), a directed one (not symmetric) or one with self loops is refused,
      with the fix in the message.
    - isolated nodes and disconnected graphs are valid SBM graphs and are handled as they are (an isolated
      node gets the Laplacian eigenvector at its own coordinate, which sorts it with the other low-degree
      nodes; disconnected components give the Laplacian several zero eigenvalues).
    - an empty graph (no nodes) is refused; a one-node graph is refused by ``infer`` (nothing to cluster).
    """
    if isinstance(graph, PreparedGraph):
        return graph
    nodes = None
    if _is_networkx_graph(graph):
        nodes = list(graph.nodes)
    return PreparedGraph(check_adjacency(graph, name), nodes)


def check_adjacency(adjacency, name: str = "adjacency") -> Tensor:
    """Validated float adjacency (N, N) from a tensor, array, scipy sparse matrix or networkx graph
    (:func:`as_adjacency` says what is accepted); ValueError naming the problem."""
    adjacency = _as_float_tensor(adjacency, name)
    if adjacency.dim() != 2:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {tuple(adjacency.shape)}")
    problem = adjacency_problem(adjacency)
    if problem is not None:
        raise ValueError(f"{name} {problem}")
    return adjacency


class _SymmetricAdjacencyConstraint(constraints.Constraint):
    """0/1, symmetric, zero-diagonal (..., N, N) matrices."""

    is_discrete = True
    event_dim = 2

    def check(self, value: Tensor) -> Tensor:
        binary = ((value == 0) | (value == 1)).flatten(-2).all(-1)
        symmetric = (value == value.transpose(-1, -2)).flatten(-2).all(-1)
        no_loops = (value.diagonal(dim1=-2, dim2=-1) == 0).all(-1)
        return binary & symmetric & no_loops


symmetric_adjacency = _SymmetricAdjacencyConstraint()


# ---------------------------------------------------------------------------------------------- distributions


class SymmetricAdjacency(TorchDistribution):
    """Independent edges y_ij ~ Bernoulli(probs_ij) for i < j, mirrored, no self loops.

    ``probs`` is (..., N, N); only its strict upper triangle is read, so it need not be symmetric.
    """

    arg_constraints = {"probs": constraints.unit_interval}
    support = symmetric_adjacency
    has_enumerate_support = False

    def __init__(self, probs: Tensor, validate_args: bool | None = None):
        probs = torch.as_tensor(probs, dtype=torch.get_default_dtype()) if not torch.is_tensor(probs) else probs
        if probs.dim() < 2 or probs.shape[-1] != probs.shape[-2]:
            raise ValueError(f"probs must have shape (..., N, N), got {tuple(probs.shape)}")
        self.probs = probs
        n = probs.shape[-1]
        super().__init__(probs.shape[:-2], torch.Size((n, n)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SymmetricAdjacency, _instance)
        batch_shape = torch.Size(batch_shape)
        new.probs = self.probs.expand(batch_shape + self.event_shape)
        super(SymmetricAdjacency, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _upper(self) -> Tensor:
        n = self.event_shape[0]
        return torch.ones(n, n, dtype=torch.bool, device=self.probs.device).triu(1)

    def sample(self, sample_shape=_NO_SHAPE) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            draws = torch.rand(shape, dtype=self.probs.dtype, device=self.probs.device) < self.probs
            upper = draws & self._upper()
            return (upper | upper.transpose(-1, -2)).to(self.probs.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            problem = adjacency_problem(value)
            if problem is not None:
                raise ValueError(f"SymmetricAdjacency value {problem}")
        p = self.probs
        terms = torch.where(value > 0, torch.log(p), torch.log1p(-p))
        return torch.where(self._upper(), terms, terms.new_zeros(())).sum((-1, -2))


def balanced_block_sizes(num_points: int, num_blocks: int) -> list[int]:
    """Sizes of ``num_blocks`` blocks as equal as possible (differing by at most one), empty ones dropped."""
    q, r = divmod(num_points, num_blocks)
    return [s for s in [q + 1] * r + [q] * (num_blocks - r) if s > 0]


class _FixedPartition(TorchDistribution):
    """Shared parts of the priors over partitions of a fixed number of nodes with no batch shape: the
    support, ``expand`` and ``enumerate_support`` (the partitions of N nodes with finite ``log_prob``)."""

    arg_constraints: dict = {}
    has_enumerate_support = True
    num_points: int

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.num_points - 1), 1)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != torch.Size():
            raise NotImplementedError(f"{type(self).__name__} has no batch shape; use sample_shape")
        return self

    def enumerate_support(self, expand: bool = True) -> Tensor:
        partitions = enumerate_partitions(self.num_points)
        return partitions[torch.isfinite(self.log_prob(partitions))]


class BalancedPartition(_FixedPartition):
    """Uniform over partitions of ``num_points`` into ``num_blocks`` blocks of (near-)equal size.

    Sampling puts the points in a uniformly random order and deals them round-robin into the blocks, which is
    uniform over labelled equal-size assignments and hence over the unlabelled partitions. The number of such
    partitions is N! / (prod_k n_k! prod_s m_s!) with m_s the number of blocks of size s, which gives the exact
    log_prob (-inf for any partition with other block sizes). Samples are canonical labels.
    """

    def __init__(self, num_blocks: int, num_points: int, validate_args: bool | None = None):
        self.num_blocks = check_positive_int(num_blocks, "num_blocks")
        self.num_points = check_positive_int(num_points, "num_points")
        sizes = balanced_block_sizes(num_points, num_blocks)
        self._sizes = torch.tensor(sorted(sizes, reverse=True) + [0] * (num_points - len(sizes)))
        multiplicities = torch.bincount(torch.tensor(sizes))
        self._log_count = (
            math.lgamma(num_points + 1)
            - sum(math.lgamma(s + 1) for s in sizes)
            - float(torch.lgamma(multiplicities.double() + 1).sum())
        )
        super().__init__(torch.Size(), torch.Size((num_points,)), validate_args=validate_args)

    def sample(self, sample_shape=_NO_SHAPE) -> Tensor:
        shape = torch.Size(sample_shape) + self.event_shape
        rank = torch.rand(shape).argsort(-1).argsort(-1)
        return canonicalize(rank % self.num_blocks)

    def log_prob(self, value: Tensor) -> Tensor:
        labels = canonicalize(check_labels(value))
        sizes = cluster_sizes(labels, self.num_points).sort(-1, descending=True).values
        ok = (sizes == self._sizes.to(sizes.device)).all(-1)
        dtype = torch.get_default_dtype()
        return torch.where(ok, -self._log_count, -math.inf).to(dtype)


def block_size_counts(num_blocks: int, low: int, high: int, max_points: int) -> Tensor:
    """(num_blocks + 1, max_points + 1) float64 table: entry [k, n] is the number of size vectors
    (n_1..n_k), each n_j in [low, high), summing to n (the k-fold convolution of a uniform count)."""
    counts = torch.zeros(num_blocks + 1, max_points + 1, dtype=torch.float64)
    counts[0, 0] = 1.0
    for k in range(1, num_blocks + 1):
        for size in range(low, min(high, max_points + 1)):
            counts[k, size:] += counts[k - 1, : max_points + 1 - size]
    return counts


class SizedBlocksPartition(_FixedPartition):
    """Partitions of N nodes into ``num_blocks`` blocks whose sizes are i.i.d. uniform on [low, high),
    conditioned on summing to N, the nodes dealt uniformly at random (the CLUSTER benchmark's recipe).

    With c_K(N) the number of size vectors of K blocks summing to N (:func:`block_size_counts`), every
    ordered size vector has probability 1 / c_K(N) and, given it, every assignment of the nodes
    prod_k n_k! / N!; the K! / prod_s m_s! size vectors and prod_s m_s! assignments that give one
    unordered partition (m_s blocks of size s) sum to
        p(partition) = K! prod_k n_k! / (N! c_K(N))
    for a partition into exactly K blocks of allowed sizes, 0 otherwise. Samples are canonical labels.
    """

    def __init__(self, num_blocks: int, block_sizes: tuple[int, int], num_points: int,
                 validate_args: bool | None = None):
        self.num_blocks = check_positive_int(num_blocks, "num_blocks")
        self.num_points = check_positive_int(num_points, "num_points")
        self.low, self.high = check_block_sizes(block_sizes)
        self._counts = block_size_counts(self.num_blocks, self.low, self.high, self.num_points)
        if self._counts[-1, -1] == 0:
            raise ValueError(f"{self.num_blocks} blocks of sizes in [{self.low}, {self.high}) cannot hold "
                             f"{self.num_points} nodes (between {self.num_blocks * self.low} and "
                             f"{self.num_blocks * (self.high - 1)})")
        super().__init__(torch.Size(), torch.Size((num_points,)), validate_args=validate_args)

    def sample(self, sample_shape=_NO_SHAPE, generator: torch.Generator | None = None) -> Tensor:
        shape = torch.Size(sample_shape)
        total = torch.full((shape.numel(),), self.num_points, dtype=torch.long)
        labels = sized_block_labels(total, self.num_blocks, self.low, self.high, generator)
        return canonicalize(labels).reshape(*shape, self.num_points)

    def log_prob(self, value: Tensor) -> Tensor:
        labels = canonicalize(check_labels(value))
        sizes = cluster_sizes(labels, self.num_points).to(torch.float64)
        used = sizes > 0
        ok = (used.sum(-1) == self.num_blocks) & ((~used) | ((sizes >= self.low) & (sizes < self.high))).all(-1)
        log_p = (math.lgamma(self.num_blocks + 1) + torch.lgamma(sizes + 1).sum(-1)
                 - math.lgamma(self.num_points + 1) - math.log(float(self._counts[-1, -1])))
        return torch.where(ok, log_p, -math.inf).to(torch.get_default_dtype())


def check_block_sizes(block_sizes: Any) -> tuple[int, int]:
    """(low, high) with 1 <= low < high: a half-open range of block sizes."""
    try:
        low, high = block_sizes
    except (TypeError, ValueError) as err:
        raise ValueError(f"block_sizes must be a range (low, high), got {block_sizes!r}") from err
    low, high = check_positive_int(low, "block_sizes low"), check_positive_int(high, "block_sizes high")
    if high <= low:
        raise ValueError(f"block_sizes (low, high) is half-open and needs high > low, got ({low}, {high})")
    return low, high


def sized_block_labels(num_points: Tensor, num_blocks: int, low: int, high: int,
                       generator: torch.Generator | None = None) -> Tensor:
    """(B, max N) labels (-1 beyond each N_b): block sizes uniform on [low, high) conditioned on summing to
    N_b, drawn one block at a time from the exact conditional P(n_k | rest) ∝ c_{K-k}(rest - n_k), then the
    first N_b positions of a random order dealt into the blocks. ``num_points`` (B,) long."""
    device = num_points.device
    n_max = int(num_points.max())
    counts = block_size_counts(num_blocks, low, high, n_max).to(device)
    sizes = torch.arange(low, high, device=device)
    remaining = num_points.clone()
    block_sizes = []
    for k in range(num_blocks - 1, -1, -1):  # k blocks still to fill after this one
        rest = remaining.unsqueeze(-1) - sizes  # (B, W)
        weights = torch.where((rest >= 0) & (rest <= n_max), counts[k, rest.clamp(0, n_max)], 0.0)
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(-1)
        block_sizes.append(sizes[pick])
        remaining = remaining - sizes[pick]
    ends = torch.stack(block_sizes, -1).cumsum(-1)  # (B, K)
    keys = torch.rand(num_points.shape[0], n_max, generator=generator, device=device)
    real = torch.arange(n_max, device=device) < num_points.unsqueeze(-1)
    rank = keys.masked_fill(~real, 2.0).argsort(-1).argsort(-1)
    labels = torch.searchsorted(ends, rank, right=True)
    return labels.masked_fill(~real, -1)


# ---------------------------------------------------------------------------------------------- encodings


def _bucketed_eigenvectors(laplacian: Tensor, mask: Tensor, dim: int, bucket: int = EIGH_BUCKET) -> Tensor:
    """Eigenvectors 2..dim+1 of padded Laplacians (..., N, N), zero-padded to ``dim`` columns.

    eigh costs ~N^3 per matrix, so graphs are sorted by size and decomposed ``bucket`` at a time, each group
    trimmed to its largest graph: about 3x faster than one call at the batch's largest N for sizes spread
    over [50, 300). Trimming needs the real nodes first; otherwise every group keeps the full N.
    """
    shape = laplacian.shape
    flat = laplacian.reshape(-1, shape[-1], shape[-1])
    real = mask.reshape(-1, shape[-1])
    counts = real.sum(-1)
    positions = torch.arange(shape[-1], device=mask.device)
    prefix = bool((real == (positions < counts.unsqueeze(-1))).all())
    out = flat.new_zeros(flat.shape[0], shape[-1], dim)
    for group in counts.argsort().split(bucket):
        n = int(counts[group].max()) if prefix else shape[-1]
        vectors = torch.linalg.eigh(flat[group, :n, :n]).eigenvectors[..., 1 : dim + 1]
        out[group, :n, : vectors.shape[-1]] = vectors
    return out.reshape(*shape[:-1], dim)


def laplacian_positional_encoding(
    adjacency: Tensor,
    mask: Tensor | None = None,
    dim: int = 20,
    sign_flip_generator: torch.Generator | None = None,
) -> Tensor:
    """Eigenvectors 2..dim+1 of L = I - D^-1/2 A D^-1/2 per graph, shape (..., N, dim).

    One batched ``eigh`` serves graphs of different sizes: padding nodes are disconnected and get the
    diagonal value 3 (> 2, the top of a normalised Laplacian's spectrum), so their eigenpairs sort last and
    the real eigenvectors are exactly those of the unpadded graph (zero on padding). The trivial first
    eigenvector is dropped; columns beyond a graph's N_b - 1 real eigenvectors are zero. With
    ``sign_flip_generator`` each column's sign is flipped at random (training augmentation: eigenvectors
    are only defined up to sign).
    """
    adjacency = _as_float_tensor(adjacency, "adjacency")
    if adjacency.dim() < 2 or adjacency.shape[-1] != adjacency.shape[-2]:
        raise ValueError(f"adjacency must have shape (..., N, N), got {tuple(adjacency.shape)}")
    dim = check_positive_int(dim, "dim")
    if mask is None:
        mask = torch.ones(adjacency.shape[:-1], dtype=torch.bool, device=adjacency.device)
    mask = mask.bool()
    if mask.shape != adjacency.shape[:-1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match adjacency {tuple(adjacency.shape)}")
    # Degrees count real neighbours only; a zero scale on padding rows and columns then cuts every edge
    # touching padding, so no (N, N) pair mask is needed. Two passes over (N, N) in all.
    degree = (adjacency @ mask.to(adjacency.dtype).unsqueeze(-1)).squeeze(-1)
    inv_sqrt = torch.where(mask & (degree > 0), degree.clamp(min=1e-12).rsqrt(), 0.0)
    laplacian = adjacency * -inv_sqrt.unsqueeze(-1)
    laplacian.mul_(inv_sqrt.unsqueeze(-2))
    laplacian.diagonal(dim1=-2, dim2=-1).add_(torch.where(mask, 1.0, PADDING_EIGENVALUE).to(adjacency.dtype))
    pe = _bucketed_eigenvectors(laplacian, mask, dim)
    real = torch.arange(1, dim + 1, device=adjacency.device) < mask.sum(-1, keepdim=True)  # (..., dim)
    pe = pe * real.unsqueeze(-2) * mask.unsqueeze(-1)
    if sign_flip_generator is not None:
        flips = torch.randint(0, 2, (*pe.shape[:-2], 1, dim), generator=sign_flip_generator,
                              device=sign_flip_generator.device)
        pe = pe * (1 - 2 * flips.to(device=pe.device, dtype=pe.dtype))
    return pe


# ---------------------------------------------------------------------------------------------- networkx


def to_networkx(adjacency, labels: Tensor | None = None) -> nx.Graph:
    """Undirected networkx graph on nodes 0..N-1; ``labels`` become the node attribute "label"."""
    adjacency = check_adjacency(adjacency)
    n = adjacency.shape[0]
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    rows, cols = torch.triu_indices(n, n, 1)
    keep = adjacency[rows, cols] > 0
    graph.add_edges_from(zip(rows[keep].tolist(), cols[keep].tolist(), strict=True))
    if labels is not None:
        labels = check_labels(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        nx.set_node_attributes(graph, dict(enumerate(labels.tolist())), LABEL_ATTRIBUTE)
    return graph


def from_networkx(graph: nx.Graph, label_attribute: str = LABEL_ATTRIBUTE) -> tuple[Tensor, Tensor | None]:
    """(adjacency (N, N) float, labels (N,) long or None) in ``graph.nodes`` order.

    Labels are read from the node attribute ``label_attribute`` when every node has it; edge weights are
    ignored (any edge counts as 1, parallel edges once). Directed graphs and self loops raise ValueError.
    """
    import networkx as nx

    if not isinstance(graph, nx.Graph):
        raise TypeError(f"expected a networkx graph, got {type(graph).__name__}")
    if graph.is_directed():
        raise ValueError("graph must be undirected (it is directed: pass graph.to_undirected())")
    if graph.number_of_nodes() == 0:
        raise ValueError("graph has no nodes")
    if nx.number_of_selfloops(graph) > 0:
        raise ValueError("graph has self loops; the models are for simple graphs "
                         "(drop them: graph.remove_edges_from(nx.selfloop_edges(graph)))")
    nodes = list(graph.nodes)
    counts = nx.to_numpy_array(graph, nodelist=nodes, weight=None)
    adjacency = torch.as_tensor(counts != 0, dtype=torch.get_default_dtype())
    values = [graph.nodes[v].get(label_attribute) for v in nodes]
    present = [value is not None for value in values]
    if not any(present):
        return adjacency, None
    if not all(present):
        raise ValueError(f"only some nodes carry the '{label_attribute}' attribute")
    return adjacency, check_labels(torch.as_tensor(values), label_attribute)


# ---------------------------------------------------------------------------------------------- labelled data sets


def label_ids(labels: Any, nodes: list | None, n: int, name: str) -> Tensor:
    """(N,) integer labels 0..K-1 (by first appearance) from a sequence of hashable labels, or for a
    networkx graph a dict {node: label} covering every node."""
    if isinstance(labels, dict):
        if nodes is None:
            raise ValueError(f"{name}: a dict of labels needs a networkx graph (whose nodes it names)")
        missing = [node for node in nodes if node not in labels]
        if missing:
            raise ValueError(f"{name}: node {missing[0]!r} has no label")
        labels = [labels[node] for node in nodes]
    elif torch.is_tensor(labels) or isinstance(labels, np.ndarray):
        labels = labels.tolist()
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"{name}: {len(labels)} labels for {n} points")
    ids: dict[Any, int] = {}
    try:
        return torch.tensor([ids.setdefault(label, len(ids)) for label in labels], dtype=torch.long)
    except TypeError as err:
        raise TypeError(f"{name}: labels must be hashable (e.g. ints or strings)") from err


def data_fingerprint(tensors: list[Tensor]) -> str:
    """A short SHA-256 of the data sets' values and shapes: which collection a guide was trained on."""
    import hashlib

    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
