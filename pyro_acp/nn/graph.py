"""Graph encoders: node encodings (B, N, H) from a padded batch of adjacencies (B, N, N).

The batch is handled as one block-diagonal graph: the real nodes of all graphs are numbered 0..M-1 and
the edges are the nonzero entries of the padded adjacency, renumbered, so every layer is a few ``index_add_``
calls over an (E,) edge list (plain PyTorch: no compiled graph library). Padding nodes never enter it.

Node inputs (``node_features``):
- ``"laplacian"``: eigenvectors 2..21 of the symmetric normalised Laplacian
  (:func:`pyro_acp.models.graphs.laplacian_positional_encoding`). Training batches carry them already, drawn
  with random sign flips by the simulator (eigenvectors are only defined up to sign); at inference they are
  computed here from the adjacency, without flips.
- ``"random"``: i.i.d. N(0, 1) features per node, fresh draws from torch's RNG while training; at inference
  drawn from a generator with a fixed seed, so the same graph always gets the same encoding.

Layers (``conv``), each with a residual connection and batch norm over the real nodes (and edges) only:
- ``"gatedgcn"`` (Dwivedi et al., "Benchmarking graph neural networks"): with edge features e_ij,
      e^_ij = C e_ij + D h_i + E h_j,   eta_ij = sigmoid(e^_ij) / (sum_{j' in N(i)} sigmoid(e^_ij') + eps),
      h_i <- h_i + ReLU(BN(A h_i + sum_{j in N(i)} eta_ij * B h_j)),   e_ij <- e_ij + ReLU(BN(e^_ij));
  the edge features start from one learned vector (all edges are of one kind).
- ``"graphsage"`` (Hamilton et al., mean aggregator):
      h_i <- h_i + ReLU(BN(W [h_i ; mean_{j in N(i)} h_j]))   (isolated nodes aggregate zeros).

Batch norm uses the batch's statistics while gradients are being computed (training steps) and its running
averages otherwise (sampling, log-probability estimates, validation), whatever the module's train/eval
flag: :func:`pyro_acp.train` does not switch modes, and a guide must encode one graph the same way at every
call of a sampling run.

Speed on a CPU: every layer makes a dozen (E, H) edge tensors, E about 0.3 N^2 directed edges on dense SBM
graphs, each above glibc's mmap threshold (at most 32 MiB by default). malloc serves such blocks with fresh
``mmap`` pages and returns them on free, so every one page-faults its memory in again;
:func:`keep_freed_memory` keeps freed blocks in the heap for reuse instead (sizes and step times in
docs/graphs.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pyro_acp.models.graphs import laplacian_positional_encoding
from pyro_acp.validation import check_choice, check_positive_int

CONVOLUTIONS = ("gatedgcn", "graphsage")
NODE_FEATURES = ("laplacian", "random")
RANDOM_FEATURE_SEED = 0  # the generator of random node features at inference
GATE_EPS = 1e-6
# glibc mallopt parameters (malloc.h) and the values keep_freed_memory sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_ABOVE = 2**31 - 1  # the largest value mallopt takes (a C int): blocks up to 2 GiB come from the heap
_NEVER_TRIM = -1  # "setting M_TRIM_THRESHOLD to -1 disables trimming completely" (man mallopt)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed large blocks in the heap for reuse (the whole process, from now on).

    Sets ``M_MMAP_THRESHOLD`` to 2 GiB and ``M_TRIM_THRESHOLD`` to -1 with ``mallopt``: blocks up to 2 GiB
    come from the heap, and freed heap memory is never returned to the system. Large temporaries (the
    (E, H) edge tensors of a graph encoder) then reuse memory instead of page-faulting fresh pages at every
    allocation, at the price of a resident set that stays at its peak (docs/graphs.md has the figures for
    graph-guide training). The results of any computation are
    unchanged; only where tensors live in memory changes. Much the same as starting Python with
    ``MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=18446744073709551615`` in the environment.

    Returns whether the settings took (False off Linux / glibc, where nothing is changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_ABOVE)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))


class NodeBatchNorm(nn.BatchNorm1d):
    """Batch norm over rows (M, H) of real nodes or edges: batch statistics exactly while gradients are on."""

    def forward(self, x: Tensor) -> Tensor:
        batch_stats = torch.is_grad_enabled() and x.shape[0] > 1
        if batch_stats:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=batch_stats, momentum=self.momentum, eps=self.eps)


class BlockDiagonalGraph:
    """A padded batch (B, N, N) as one graph on its M real nodes: edges ``src -> dst`` (E,) and the map back.

    ``node`` (M,) is the flat index b * N + i of each real node; ``dst`` receives messages from ``src``.
    """

    def __init__(self, adjacency: Tensor, mask: Tensor):
        batch, n = mask.shape
        flat = mask.reshape(-1)
        self.shape = (batch, n)
        self.node = flat.nonzero().squeeze(-1)
        compact = torch.full((batch * n,), -1, dtype=torch.long, device=mask.device)
        compact[self.node] = torch.arange(self.node.numel(), device=mask.device)
        real_pairs = adjacency.ne(0) & mask.unsqueeze(-1) & mask.unsqueeze(-2)
        b, i, j = real_pairs.nonzero(as_tuple=True)
        self.dst = compact[b * n + i]
        self.src = compact[b * n + j]
        self.num_nodes = int(self.node.numel())
        self.degree = torch.zeros(self.num_nodes, device=mask.device).index_add_(
            0, self.dst, torch.ones_like(self.dst, dtype=torch.get_default_dtype()))

    def nodes_of(self, x: Tensor) -> Tensor:
        """Rows (M, F) of the real nodes of padded features (B, N, F)."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.node)

    def padded(self, h: Tensor) -> Tensor:
        """(B, N, H) from real-node rows (M, H), zero on padding."""
        batch, n = self.shape
        out = h.new_zeros(batch * n, h.shape[-1]).index_copy(0, self.node, h)
        return out.view(batch, n, h.shape[-1])

    def sum_into_dst(self, messages: Tensor) -> Tensor:
        """Sum of edge messages (E, H) at their destination nodes: (M, H)."""
        return messages.new_zeros(self.num_nodes, messages.shape[-1]).index_add_(0, self.dst, messages)


class GatedGCNLayer(nn.Module):
    """One residual GatedGCN layer on node (M, H) and edge (E, H) features (see the module docstring).

    ``update_edges=False`` (the last layer, whose edge features nothing reads) returns no edge features.
    """

    def __init__(self, hidden_dim: int, update_edges: bool = True):
        super().__init__()
        self.node_self = nn.Linear(hidden_dim, hidden_dim)  # A
        self.node_message = nn.Linear(hidden_dim, hidden_dim)  # B
        self.edge_own = nn.Linear(hidden_dim, hidden_dim)  # C
        self.edge_dst = nn.Linear(hidden_dim, hidden_dim)  # D
        self.edge_src = nn.Linear(hidden_dim, hidden_dim)  # E
        self.node_norm = NodeBatchNorm(hidden_dim)
        self.edge_norm = NodeBatchNorm(hidden_dim) if update_edges else None

    def forward(self, graph: BlockDiagonalGraph, h: Tensor, e: Tensor) -> tuple[Tensor, Tensor | None]:
        """``e`` (E, H), or (H,) when every edge has the same features (the first layer): C e is then
        computed once instead of once per edge."""
        gate_logits = self.edge_own(e) + self.edge_dst(h).index_select(0, graph.dst) \
            + self.edge_src(h).index_select(0, graph.src)
        gates = torch.sigmoid(gate_logits)
        messages = gates * self.node_message(h).index_select(0, graph.src)
        aggregated = graph.sum_into_dst(messages) / (graph.sum_into_dst(gates) + GATE_EPS)
        h_new = h + F.relu(self.node_norm(self.node_self(h) + aggregated))
        if self.edge_norm is None:
            return h_new, None
        return h_new, e + F.relu(self.edge_norm(gate_logits))


class GraphSAGELayer(nn.Module):
    """One residual GraphSAGE layer (mean aggregator) on node features (M, H)."""

    def __init__(self, hidden_dim: int, update_edges: bool = True):
        super().__init__()
        self.linear = nn.Linear(2 * hidden_dim, hidden_dim)
        self.norm = NodeBatchNorm(hidden_dim)

    def forward(self, graph: BlockDiagonalGraph, h: Tensor, e: Tensor | None) -> tuple[Tensor, None]:
        neighbours = graph.sum_into_dst(h.index_select(0, graph.src)) / graph.degree.clamp(min=1).unsqueeze(-1)
        return h + F.relu(self.norm(self.linear(torch.cat([h, neighbours], -1)))), None


class GraphEncoder(nn.Module):
    """Node encodings (B, N, H) of padded graphs: node inputs, a linear embedding, ``num_layers`` layers.

    Args:
        input_dim: width of the node inputs (20 Laplacian eigenvectors or 20 random features).
        hidden_dim: width of every layer.
        num_layers: number of graph convolution layers.
        conv: ``"gatedgcn"`` or ``"graphsage"``.
        node_features: ``"laplacian"`` or ``"random"``.
        num_label_slots: when > 0, nodes may carry a known label 0..num_label_slots-1 (semi-supervised
            clustering), embedded and added to the node input embedding; unlabelled nodes add nothing.
    """

    def __init__(self, input_dim: int = 20, hidden_dim: int = 128, num_layers: int = 4, conv: str = "gatedgcn",
                 node_features: str = "laplacian", num_label_slots: int = 0):
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        num_layers = check_positive_int(num_layers, "num_layers")
        self.conv = check_choice(conv, "encoder", CONVOLUTIONS)
        self.node_features = check_choice(node_features, "node_features", NODE_FEATURES)
        self.embed = nn.Linear(self.input_dim, hidden_dim)
        self.label_embedding = nn.Embedding(num_label_slots, hidden_dim) if num_label_slots > 0 else None
        layer = GatedGCNLayer if self.conv == "gatedgcn" else GraphSAGELayer
        self.layers = nn.ModuleList(layer(hidden_dim, update_edges=k + 1 < num_layers) for k in range(num_layers))
        self.edge_init = nn.Parameter(torch.zeros(hidden_dim)) if self.conv == "gatedgcn" else None

    def node_inputs(self, adjacency: Tensor, mask: Tensor, features: Tensor | None = None) -> Tensor:
        """(B, N, input_dim) node inputs: ``features`` when given (training batches), else computed."""
        if self.node_features == "random":
            shape = (*mask.shape, self.input_dim)
            if torch.is_grad_enabled():
                return torch.randn(shape, dtype=adjacency.dtype, device=adjacency.device)
            generator = torch.Generator(adjacency.device).manual_seed(RANDOM_FEATURE_SEED)
            return torch.randn(shape, generator=generator, device=adjacency.device).to(adjacency.dtype)
        if features is not None:
            if features.shape != (*mask.shape, self.input_dim):
                raise ValueError(f"node features of shape {tuple(features.shape)} do not match the encoder's "
                                 f"{(*mask.shape, self.input_dim)}")
            return features
        return laplacian_positional_encoding(adjacency, mask, self.input_dim)

    def forward(self, adjacency: Tensor, mask: Tensor, features: Tensor | None = None,
                node_labels: Tensor | None = None) -> Tensor:
        """Encodings (B, N, H), zero on padding, of adjacencies (B, N, N) with real-node mask (B, N).

        ``node_labels`` (B, N): a known label per node (0..num_label_slots-1), -1 where unknown.
        """
        if adjacency.dim() != 3 or adjacency.shape[-1] != adjacency.shape[-2] or adjacency.shape[:2] != mask.shape:
            raise ValueError(f"a graph encoder needs adjacencies (B, N, N) with a (B, N) mask, got "
                             f"{tuple(adjacency.shape)} and {tuple(mask.shape)}")
        mask = mask.bool()
        graph = BlockDiagonalGraph(adjacency, mask)
        inputs = graph.nodes_of(self.node_inputs(adjacency, mask, features))
        h = self.embed(inputs.to(self.embed.weight.dtype))
        if node_labels is not None and self.label_embedding is not None:
            known = graph.nodes_of(node_labels.unsqueeze(-1)).squeeze(-1)
            h = h + self.label_embedding(known.clamp(min=0)) * (known >= 0).unsqueeze(-1).to(h.dtype)
        e = self.edge_init  # (H,): one learned vector for every edge, broadcast by the first layer
        for layer in self.layers:
            h, e = layer(graph, h, e)
        return graph.padded(h)
