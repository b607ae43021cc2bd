"""Graph utilities: the adjacency likelihood, a balanced-block prior, positional encodings, networkx I/O.

- :class:`SymmetricAdjacency` — undirected simple graphs with independent edges: the observed site "x" of
  the SBMs. Only the upper triangle is random; samples are mirrored and log_prob counts each pair once.
- :class:`BalancedPartition` — uniform over the partitions of N nodes into ``num_blocks`` blocks of equal
  size (sizes differ by at most one): the "labels" site of :class:`~pyro_acp.models.LogDegreeSBM`.
- :func:`laplacian_positional_encoding` — batched, padding-aware eigenvectors of the symmetric normalised
  Laplacian, the guide inputs of graph data.
- :func:`to_networkx`, :func:`from_networkx`, :func:`check_adjacency` — conversions and validation.
"""

from __future__ import annotations

import math
import sys
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


def _as_float_tensor(value, name: str) -> Tensor:
    if _is_networkx_graph(value):
        value = from_networkx(value)[0]
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
        return "must hold only 0/1 entries"
    if (adjacency != adjacency.transpose(-1, -2)).any():
        return "must be symmetric (an undirected graph)"
    if adjacency.diagonal(dim1=-2, dim2=-1).any():
        return "must have a zero diagonal (no self loops)"
    return None


def check_adjacency(adjacency, name: str = "adjacency") -> Tensor:
    """Validated float adjacency (N, N) from a tensor, array or networkx graph; ValueError naming the problem."""
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


class BalancedPartition(TorchDistribution):
    """Uniform over partitions of ``num_points`` into ``num_blocks`` blocks of (near-)equal size.

    Sampling puts the points in a uniformly random order and deals them round-robin into the blocks, which is
    uniform over labelled equal-size assignments and hence over the unlabelled partitions. The number of such
    partitions is N! / (prod_k n_k! prod_s m_s!) with m_s the number of blocks of size s, which gives the exact
    log_prob (-inf for any partition with other block sizes). Samples are canonical labels.
    """

    arg_constraints: dict = {}
    has_enumerate_support = True

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

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.num_points - 1), 1)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != torch.Size():
            raise NotImplementedError("BalancedPartition has no batch shape; use sample_shape")
        return self

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

    def enumerate_support(self, expand: bool = True) -> Tensor:
        partitions = enumerate_partitions(self.num_points)
        return partitions[torch.isfinite(self.log_prob(partitions))]


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
    ignored (any edge counts as 1). Directed graphs and self loops raise ValueError.
    """
    import networkx as nx

    if not isinstance(graph, nx.Graph):
        raise TypeError(f"expected a networkx graph, got {type(graph).__name__}")
    if graph.is_directed():
        raise ValueError("graph must be undirected")
    if graph.number_of_nodes() == 0:
        raise ValueError("graph has no nodes")
    if nx.number_of_selfloops(graph) > 0:
        raise ValueError("graph has self loops; the models are for simple graphs")
    nodes = list(graph.nodes)
    adjacency = torch.as_tensor(nx.to_numpy_array(graph, nodelist=nodes, weight=None),
                                dtype=torch.get_default_dtype())
    values = [graph.nodes[v].get(label_attribute) for v in nodes]
    present = [value is not None for value in values]
    if not any(present):
        return adjacency, None
    if not all(present):
        raise ValueError(f"only some nodes carry the '{label_attribute}' attribute")
    return adjacency, check_labels(torch.as_tensor(values), label_attribute)
