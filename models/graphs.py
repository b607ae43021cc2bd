"""Graph utilities: reading and validating graphs, the adjacency likelihood, positional encodings, networkx I/O.

- :class:`SymmetricAdjacency` — undirected simple graphs with independent edges: the observed site "x" of
  the SBMs. Only the upper triangle is random; samples are mirrored and log_prob counts each pair once.
- :func:`laplacian_positional_encoding` — batched, padding-aware eigenvectors of the symmetric normalised
  Laplacian, the guide inputs of graph data.
- :func:`to_networkx`, :func:`from_networkx`, :func:`networkx_adjacency`, :func:`check_adjacency`,
  :func:`as_adjacency` — conversions and validation (networkx graphs, scipy sparse matrices, dense arrays).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

from pyro_acp.data.partitions import check_labels
from pyro_acp.validation import check_positive_int

if TYPE_CHECKING:
    import networkx as nx

LABEL_ATTRIBUTE = "label"
POSITIONAL_ENCODING_DIM = 20  # Laplacian eigenvectors per node: the guide inputs of graph models
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
        value = networkx_adjacency(value)
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
      edge weights and node / edge attributes are ignored (an edge is an edge), parallel edges of a multigraph count
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


def networkx_adjacency(graph: nx.Graph) -> Tensor:
    """Adjacency (N, N) float of an undirected networkx graph in ``graph.nodes`` order; node and edge
    attributes are ignored (any edge counts as 1, parallel edges once). Directed graphs, graphs without
    nodes and self loops raise ValueError naming the fix."""
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
    counts = nx.to_numpy_array(graph, nodelist=list(graph.nodes), weight=None)
    return torch.as_tensor(counts != 0, dtype=torch.get_default_dtype())


def from_networkx(graph: nx.Graph, label_attribute: str = LABEL_ATTRIBUTE) -> tuple[Tensor, Tensor | None]:
    """(adjacency (N, N) float, labels (N,) long or None) in ``graph.nodes`` order.

    Labels are read from the node attribute ``label_attribute`` when every node has it; the adjacency is
    :func:`networkx_adjacency`'s (directed graphs and self loops raise ValueError).
    """
    adjacency = networkx_adjacency(graph)
    nodes = list(graph.nodes)
    values = [graph.nodes[v].get(label_attribute) for v in nodes]
    present = [value is not None for value in values]
    if not any(present):
        return adjacency, None
    if not all(present):
        raise ValueError(f"only some nodes carry the '{label_attribute}' attribute")
    return adjacency, check_labels(torch.as_tensor(values), label_attribute)
