"""Posteriors over the communities of a graph, and ``pyro_acp.infer``'s path for graph models.

:class:`GraphClusteringPosterior` is a :class:`~pyro_acp.posteriors.ClusteringPosterior` whose points are a
graph's nodes: it keeps the node names (a networkx graph's own nodes; 0..N-1 for a matrix), so the MAP, a
point estimate and the samples can be read by node, and its figure shows the adjacency matrix sorted by the
point estimate beside the co-clustering matrix and the posterior of K.

:func:`infer_graph` is what ``pyro_acp.infer(model, graph)`` runs for a model whose ``data_kind`` is
``"graph"``: it reads the graph (:func:`pyro_acp.models.graphs.as_adjacency` says what is accepted and what
is refused), finds the guide (it must have a graph encoder; one trained on demand gets the encoder the model
declares, :func:`pyro_acp.protocols.guide_options`), sets up semi-supervised anchors from
``labelled``, runs the shared inference on the adjacency and returns this posterior.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_acp.posteriors.plots import plot_posterior
from pyro_acp.posteriors.point_estimate import check_loss
from pyro_acp.posteriors.posterior import ClusteringPosterior

__all__ = ["GraphClusteringPosterior", "balanced_accuracy", "infer_graph", "labelled_classes"]

class GraphClusteringPosterior(ClusteringPosterior):
    """S posterior partitions of a graph's N nodes, readable by node name.

    Takes the arguments of :class:`~pyro_acp.posteriors.ClusteringPosterior` and ``nodes``, the node names in
    the order of the columns of ``samples`` (default 0..N-1), and ``labelled``, the known labels
    {node: label} the samples were conditioned on (semi-supervised anchors), if any.
    """

    def __init__(self, samples: Any, *, nodes: list | None = None,
                 labelled: Mapping[Hashable, Hashable] | None = None, new_clusters: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(samples, **kwargs)
        self.nodes = list(range(self.num_points)) if nodes is None else list(nodes)
        if len(self.nodes) != self.num_points:
            raise ValueError(f"{len(self.nodes)} node names for samples of {self.num_points} nodes")
        self._index = {node: i for i, node in enumerate(self.nodes)}
        if len(self._index) != len(self.nodes):
            raise ValueError("node names must be distinct")
        self.labelled = None if labelled is None else dict(labelled)
        self.new_clusters = bool(new_clusters)

    @classmethod
    def from_posterior(cls, posterior: ClusteringPosterior, *, nodes: list | None = None, x: Any = None,
                       labelled: Mapping | None = None, new_clusters: bool = True) -> GraphClusteringPosterior:
        """The same samples and scores as ``posterior``, keyed by ``nodes`` (``x``: the graph, for plots)."""
        return cls(posterior.samples, nodes=nodes, labelled=labelled, new_clusters=new_clusters,
                   **posterior.log_prob_arguments(), weight_diagnostics=posterior.weight_diagnostics,
                   weights=posterior.weights, chain=posterior.chain, method=posterior.method,
                   wall_time=posterior.wall_time, log_likelihood=posterior.log_likelihood,
                   x=posterior.x if x is None else x, model=posterior.model, log_joint=posterior.log_joint)

    def same_kind(self, other: ClusteringPosterior) -> GraphClusteringPosterior:
        """``other`` keyed by this posterior's nodes and conditioned on its known labels."""
        return GraphClusteringPosterior.from_posterior(other, nodes=self.nodes, x=self.x, labelled=self.labelled,
                                                       new_clusters=self.new_clusters)

    def conditioning(self) -> dict[str, Any]:
        """With known labels, ``refined_map`` keeps the labelled nodes where the samples put them (one cluster
        per label, never merged) and, with ``new_clusters=False``, opens no further cluster."""
        if self.labelled is None:
            return {}
        frozen = torch.zeros(self.num_points, dtype=torch.bool)
        frozen[[self.node_index(node) for node in self.labelled]] = True
        return {"frozen": frozen, "new_clusters": self.new_clusters}

    def node_index(self, node: Hashable) -> int:
        """Column of ``node`` in ``samples``; KeyError naming it when the graph has no such node."""
        try:
            return self._index[node]
        except KeyError:
            raise KeyError(f"node {node!r} is not in the graph") from None

    def node_labels(self, labels: Tensor | None = None) -> dict[Hashable, int]:
        """{node: label} of a partition (N,) of the nodes: by default the MAP."""
        labels = self.map if labels is None else torch.as_tensor(labels)
        if labels.shape != (self.num_points,):
            raise ValueError(f"labels must have shape ({self.num_points},), got {tuple(labels.shape)}")
        return dict(zip(self.nodes, labels.tolist(), strict=True))

    @property
    def map_by_node(self) -> dict[Hashable, int]:
        """{node: MAP label}."""
        return self.node_labels()

    def samples_by_node(self) -> dict[Hashable, Tensor]:
        """{node: (S,) labels of that node in every sample} (labels are canonical per sample)."""
        return {node: self.samples[:, i] for i, node in enumerate(self.nodes)}

    def plot(self, ax: Any = None, path: str | Path | None = None, loss: str = "vi") -> Any:
        """Three panels: the adjacency with the nodes sorted by the ``loss`` point estimate (lines between its
        communities), the co-clustering matrix in the same order, and the posterior of K. ``ax``: three
        matplotlib Axes (else a new figure); saved to ``path`` when given; returns the figure."""
        adjacency = self._adjacency()
        without_data = copy.copy(self)  # the shared figure, its data panel left empty (no graph layout drawn)
        without_data.x = None
        fig = plot_posterior(without_data, ax=ax, loss=loss)
        fig.axes[0].clear()
        _plot_adjacency(fig.axes[0], adjacency, self.point_estimate(loss).numpy(), check_loss(loss))
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig

    def _adjacency(self) -> np.ndarray:
        from pyro_acp.models.graphs import check_adjacency

        if self.x is None:
            raise ValueError("this posterior holds no graph to draw (x=None)")
        return check_adjacency(self.x).cpu().numpy()


def _plot_adjacency(ax: Any, adjacency: np.ndarray, estimate: np.ndarray, loss: str) -> None:
    order = np.lexsort((np.arange(estimate.shape[0]), estimate))
    ax.imshow(adjacency[np.ix_(order, order)], cmap="Greys", vmin=0.0, vmax=1.0, interpolation="nearest")
    bounds = np.flatnonzero(np.diff(estimate[order])) + 0.5
    for b in bounds:
        ax.axhline(b, color="tab:red", linewidth=0.6)
        ax.axvline(b, color="tab:red", linewidth=0.6)
    ax.set_title(f"adjacency sorted by the {loss.upper()} estimate: K = {int(estimate.max()) + 1}")
    ax.set_xticks([])
    ax.set_yticks([])


def labelled_classes(posterior: GraphClusteringPosterior, labels: Tensor | None = None) -> dict[Hashable, Any]:
    """{node: class} of a partition (default the MAP) conditioned on ``posterior.labelled``: each cluster
    takes the label of the labelled nodes it holds; nodes in clusters that hold none get None."""
    if not posterior.labelled:
        raise ValueError("the posterior was not conditioned on labelled nodes (infer(..., labelled=...))")
    labels = posterior.map if labels is None else torch.as_tensor(labels)
    cluster_class = {int(labels[posterior.node_index(node)]): value for node, value in posterior.labelled.items()}
    return {node: cluster_class.get(int(label)) for node, label in zip(posterior.nodes, labels.tolist(), strict=True)}


def balanced_accuracy(posterior: GraphClusteringPosterior, truth: Mapping[Hashable, Hashable] | Any,
                      labels: Tensor | None = None) -> float:
    """Class-balanced accuracy of a partition (default the MAP) conditioned on labelled nodes: the mean over
    the true classes of the share of their nodes whose cluster carries their label (the CLUSTER benchmark's
    metric, Dwivedi et al.). Nodes in clusters that hold no labelled node count as wrong.

    ``truth``: {node: true label} for every node, or a sequence of labels in ``posterior.nodes`` order.
    """
    predicted = labelled_classes(posterior, labels)
    if not isinstance(truth, Mapping):
        truth = dict(zip(posterior.nodes, list(truth), strict=True))
    missing = [node for node in posterior.nodes if node not in truth]
    if missing:
        raise ValueError(f"truth has no label for node {missing[0]!r}")
    recall: dict[Hashable, list[bool]] = {}
    for node in posterior.nodes:
        recall.setdefault(truth[node], []).append(predicted[node] == truth[node])
    return float(np.mean([np.mean(hits) for hits in recall.values()]))


# ---------------------------------------------------------------------------------------------- infer's graph path


def anchor_labels(labelled: Mapping[Hashable, Hashable], nodes: list) -> tuple[Tensor, dict]:
    """(N,) classes 0..L-1 of the labelled nodes (-1 elsewhere), numbered by first appearance in
    ``labelled``, and {class: the user's label}. ValueError naming a node that is not in the graph."""
    if not isinstance(labelled, Mapping) or not labelled:
        raise ValueError("labelled must be a non-empty dict {node: label}")
    index = {node: i for i, node in enumerate(nodes)}
    out = torch.full((len(nodes),), -1, dtype=torch.long)
    classes: dict[Hashable, int] = {}
    for node, label in labelled.items():
        if node not in index:
            raise ValueError(f"labelled node {node!r} is not in the graph")
        try:
            out[index[node]] = classes.setdefault(label, len(classes))
        except TypeError as err:
            raise TypeError(f"the label of node {node!r} must be hashable, got {type(label).__name__}") from err
    return out, {c: label for label, c in classes.items()}


def infer_graph(infer: Callable[..., ClusteringPosterior], model: Any, graph: Any, *,
                labelled: Mapping[Hashable, Hashable] | None = None, new_clusters: bool = True,
                **options: Any) -> GraphClusteringPosterior:
    """``infer(model, graph, **options)`` for a graph model (see the module docstring).

    ``labelled`` {node: label}: the labelled nodes anchor the clusters of their labels, in a random order
    per sample (:meth:`~pyro_acp.guides.ClusterwiseGuide.with_anchors`); ``new_clusters``: whether the
    other nodes may also form clusters that hold no labelled node. With ``labelled`` the guide's
    log-probability estimates (which are of the unconditioned guide) are skipped and ``reweight`` is
    refused; the MAP is ranked by the exact log joint, which conditioning on the labels leaves valid.
    """
    from pyro_acp.inference.on_demand import resolve_guide
    from pyro_acp.models.graphs import as_adjacency

    prepared = as_adjacency(graph)
    nodes = prepared.nodes if prepared.nodes is not None else list(range(prepared.adjacency.shape[0]))
    if prepared.adjacency.shape[0] < 2:
        raise ValueError(f"the graph has {prepared.adjacency.shape[0]} node(s); clustering needs at least 2")
    anchors = None
    if labelled is not None:
        anchors, _ = anchor_labels(labelled, nodes)
        if options.get("reweight"):
            raise ValueError(f"reweight={options['reweight']!r} with labelled nodes is not available: the guide's "
                             "probability estimates are of unconditioned samples")
        options["estimate_log_prob"] = False
    # one on-demand path for every model: a graph model's guide gets the graph encoder the model declares
    # (pyro_acp.protocols.guide_options)
    settings = {key: options.get(key) for key in ("device", "seed", "train_minutes")}
    guide = resolve_guide(model, options.pop("guide", None), train=options.get("train", True),
                          progress_bar=options.get("progress_bar", True), semi_supervised=anchors is not None,
                          num_points=prepared.adjacency.shape[0], **settings)
    if not getattr(guide, "encodes_graphs", False):
        raise ValueError(f"the {type(guide).__name__} guide encodes points, but {type(model).__name__}'s data "
                         f"are graphs: use a guide with a graph encoder, e.g. "
                         f"{type(guide).__name__}({model.data_dim}, encoder='gatedgcn')")
    if anchors is not None:
        guide = guide.with_anchors(anchors, new_clusters=new_clusters)
    check_samples = options.pop("check_samples", True)  # made below, under the known labels
    posterior = infer(model, prepared, guide=guide, check_samples=False, **options)
    original = graph if _is_graph_object(graph) else prepared.adjacency
    posterior = GraphClusteringPosterior.from_posterior(posterior, nodes=nodes, x=original, labelled=labelled,
                                                        new_clusters=new_clusters)
    if check_samples and not options.get("reweight"):
        from pyro_acp.inference.infer import check_samples_are_stationary

        check_samples_are_stationary(model, posterior)
    return posterior


def _is_graph_object(value: Any) -> bool:
    """A networkx graph (kept as the posterior's ``x``, so plots and node names refer to it)."""
    return hasattr(value, "number_of_nodes") and hasattr(value, "nodes")
