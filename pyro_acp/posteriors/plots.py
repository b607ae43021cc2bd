"""The posterior's figure: the data coloured by a point estimate, the sorted co-clustering matrix and the
posterior of K (matplotlib's object-oriented API, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from pyro_acp.posteriors.point_estimate import check_loss


def _is_adjacency(a: np.ndarray, model: Any) -> bool:
    """Square 0/1 symmetric matrix with an empty diagonal, or any square matrix of a graph model."""
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        return False
    if getattr(model, "data_kind", None) == "graph":
        return True
    if model is not None or a.shape[0] < 3:
        return False
    binary = np.isin(a, (0, 1)).all()
    return bool(binary and np.array_equal(a, a.T) and not np.diag(a).any())


def _layout(post: Any) -> tuple[np.ndarray | None, Any, str]:
    """(N, 2) positions of the points, the graph to draw edges of (or None) and an axis caption."""
    x = post.x
    if x is None:
        return None, None, "no data"
    if hasattr(x, "number_of_nodes"):
        graph = x
    else:
        a = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=float)
        if _is_adjacency(a, post.model):
            import networkx as nx  # graphs only: points need no networkx

            graph = nx.from_numpy_array(a)
        elif a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1):
            return np.stack([a.reshape(-1), np.arange(a.shape[0])], 1), None, "x (vertical: point index)"
        elif a.ndim == 2 and a.shape[1] == 2:
            return a, None, "x"
        elif a.ndim == 2:
            centred = a - a.mean(0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            return centred @ vt[:2].T, None, "first two principal components"
        else:
            return None, None, f"no 2-D view of data of shape {a.shape}"
    import networkx as nx

    pos = nx.spring_layout(graph, seed=0)
    return np.array([pos[node] for node in graph.nodes]), graph, "graph (spring layout)"


def _plot_points(ax: Any, post: Any, estimate: np.ndarray, loss: str) -> None:
    import matplotlib as mpl

    coords, graph, caption = _layout(post)
    colours = mpl.colormaps["tab20"]((2 * estimate) % 20 + (estimate // 10) % 2)  # strong hues first
    if coords is None:  # no usable data: one row of points, coloured
        coords = np.stack([np.arange(post.num_points), np.zeros(post.num_points)], 1)
    if graph is not None:
        index = {node: i for i, node in enumerate(graph.nodes)}
        segments = [(coords[index[u]], coords[index[v]]) for u, v in graph.edges]
        ax.add_collection(mpl.collections.LineCollection(segments, colors="0.8", linewidths=0.5, zorder=1))
    ax.scatter(coords[:, 0], coords[:, 1], c=colours, s=18, edgecolors="none", zorder=2)
    ax.set_title(f"{loss.upper()} point estimate: K = {int(estimate.max()) + 1}")
    ax.set_xlabel(caption)


def _plot_coclustering(ax: Any, post: Any, estimate: np.ndarray) -> Any:
    order = np.lexsort((np.arange(post.num_points), estimate))
    matrix = post.coclustering().numpy()[np.ix_(order, order)]
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
    ax.set_title("co-clustering (sorted by estimate)")
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def _plot_num_clusters(ax: Any, post: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    dist = post.num_clusters_distribution().numpy()
    ks = np.arange(dist.shape[0])
    ax.bar(ks[1:], dist[1:], color="tab:blue")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of clusters K")
    ax.set_ylabel("posterior probability")
    ax.set_title(f"posterior of K ({post.method})")


def plot_posterior(post: Any, ax: Any = None, path: str | Path | None = None,
                    loss: str = "vi") -> Any:
    """Draw the three panels with the object-oriented API (no pyplot state, safe under Agg)."""
    from matplotlib.figure import Figure

    loss = check_loss(loss)
    if ax is None:
        fig = Figure(figsize=(13, 4), layout="constrained")
        axes = fig.subplots(1, 3)
    else:
        axes = list(np.ravel(ax)) if not hasattr(ax, "figure") or isinstance(ax, np.ndarray) else [ax]
        if len(axes) != 3:
            raise ValueError(f"ax must be three matplotlib Axes, got {len(axes)}")
        fig = axes[0].figure
    estimate = post.point_estimate(loss).numpy()
    _plot_points(axes[0], post, estimate, loss)
    image = _plot_coclustering(axes[1], post, estimate)
    fig.colorbar(image, ax=axes[1], fraction=0.046)
    _plot_num_clusters(axes[2], post)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
