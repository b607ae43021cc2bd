"""Posteriors over *ordered* partitions (catalogs: group the points, then order the groups).

An ordered partition of N points is stored in its canonical form: label = the position of the point's cluster
in the order (0 = first), so every row uses the positions 0..K-1, each at least once. Two samples are the same
ordered partition exactly when their rows are equal; the same unordered partition when they are equal after
renumbering by first appearance. :class:`OrderedClusteringPosterior` keeps these labels as given (it does not
renumber them as :class:`~pyro_acp.posteriors.posterior.ClusteringPosterior` does), so the order survives,
and adds the order's summaries:

- ``precedence()``: P(i ≺ j) = E[ pos(c_i) < pos(c_j) ], the posterior probability that point i's cluster
  comes before point j's. With the co-clustering C_ij = P(c_i = c_j): P(i ≺ j) + P(j ≺ i) + C_ij = 1.
- ``position_distribution()``: P(pos(c_i) = p), the posterior of each point's position.
- ``unique()``: distinct ordered partitions with their weights (``ordered=False``: distinct partitions).

Every unordered summary (co-clustering, K, the MAP, point estimates, ArviZ export, plot) works unchanged;
the point estimate minimises an order-free loss and numbers its clusters by their mean posterior position.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.posteriors.enumerated import ExactPosterior
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.validation import check_partition_rows

__all__ = ["OrderedClusteringPosterior", "OrderedExactPosterior", "check_ordered_labels"]


def check_ordered_labels(samples: Any, name: str = "samples") -> Tensor:
    """(S, N) ordered partitions on the CPU, as given: each row must use the positions 0..K-1, every one.

    Raises ValueError naming the first row with a gap (e.g. labels {0, 2}: position 1 has no cluster).
    """
    samples = check_partition_rows(samples, name)
    num_clusters = samples.max(-1).values + 1
    used = torch.zeros(samples.shape[0], int(num_clusters.max()), dtype=torch.bool).scatter_(1, samples, True)
    gaps = used.sum(-1) != num_clusters
    if gaps.any():
        row = int(gaps.nonzero()[0])
        missing = (~used[row, : int(num_clusters[row])]).nonzero().flatten().tolist()
        raise ValueError(
            f"{name} row {row} uses labels {sorted(set(samples[row].tolist()))} but not {missing}: ordered "
            "partitions are labelled by cluster position 0..K-1 (0 = first), with every position used"
        )
    return samples


class OrderedClusteringPosterior(ClusteringPosterior):
    """S posterior ordered partitions of N points: labels are positions in the order (0 = first).

    Takes the arguments of :class:`~pyro_acp.posteriors.posterior.ClusteringPosterior`; ``log_prob``,
    ``log_joint`` and ``log_likelihood`` refer to the ordered partition (clustering *and* order), so the MAP
    is the most probable ordered partition (without scores: the most frequent one).
    """

    ordered_samples = True

    @classmethod
    def canonical_samples(cls, samples: Any, name: str = "samples") -> Tensor:
        """Ordered partitions are canonical as positions: kept as given, checked (:func:`check_ordered_labels`)."""
        return check_ordered_labels(samples, name)

    # ------------------------------------------------------------------ order summaries
    def position_distribution(self) -> Tensor:
        """(N, K_max) posterior probability that point i's cluster sits at position p (rows sum to one)."""
        positions = torch.nn.functional.one_hot(self._samples, int(self.num_clusters.max()))
        return torch.einsum("s,sip->ip", self.sample_weights, positions.to(torch.float64))

    def precedence(self) -> Tensor:
        """(N, N) P(i ≺ j): posterior probability that point i's cluster comes before point j's.

        P(i ≺ j) = Σ_s w_s Σ_p [pos_s(i) = p] [pos_s(j) > p], computed as one contraction of the position
        one-hots with their "after p" indicators (O(S N K) memory). Zero on the diagonal and wherever i and
        j always share a cluster; P(i ≺ j) + P(j ≺ i) = 1 - coclustering()[i, j].
        """
        one_hot = torch.nn.functional.one_hot(self._samples, int(self.num_clusters.max())).to(torch.float64)
        after = 1.0 - one_hot.cumsum(-1)  # [pos_s(j) > p]
        precedence = torch.einsum("s,sip,sjp->ij", self.sample_weights, one_hot, after)
        return precedence.to(torch.get_default_dtype())

    def unique(self, ordered: bool = True) -> tuple[Tensor, Tensor]:
        """Distinct ordered partitions (U, N) (position labels) and their counts or, when weighted, total
        weights, from the most to the least frequent (ties: first appearance). ``ordered=False``: distinct
        partitions regardless of order (canonical labels), each with the total of its orders."""
        if ordered:
            return super().unique()
        return self.unordered().unique()

    def unordered(self) -> ClusteringPosterior:
        """The posterior of the partition alone: the same samples, weights and chains, order forgotten.

        Probabilities of ordered partitions (``log_prob``, ``log_joint``, ``log_likelihood``) do not carry
        over, so they are dropped (the MAP is then the most frequent partition).
        """
        return ClusteringPosterior(
            canonicalize(self._samples), weights=self._weights, chain=self._chain, method=self.method,
            wall_time=self.wall_time, x=self.x, model=self.model,
        )

    def point_estimate(self, loss: str = "vi", **kwargs: Any) -> Tensor:
        """(N,) the partition minimising the expected ``loss`` (order-free; see the base class), with its
        clusters numbered by mean posterior position: cluster A comes before B when the average over A's
        points of E[pos(c_i)] is smaller (ties: first appearance)."""
        estimate = super().point_estimate(loss, **kwargs)
        mean_position = (self._samples.to(torch.float64) * self.sample_weights[:, None]).sum(0)  # (N,)
        num_clusters = int(estimate.max()) + 1
        totals = torch.zeros(num_clusters, dtype=torch.float64).index_add_(0, estimate, mean_position)
        sizes = torch.zeros(num_clusters, dtype=torch.float64).index_add_(0, estimate, torch.ones_like(mean_position))
        rank = (totals / sizes).argsort(stable=True).argsort()
        return rank[estimate]

    def plot_order(self, ax: Any = None, path: str | Path | None = None) -> Any:
        """Two panels: the MAP ordered partition, and the precedence matrix P(i before j) with the points
        sorted by their MAP position (then index). Points (2-D, or 1-D against the index) are coloured by
        their cluster's position (viridis, 0 = first); one-hot catalogs (rows with a single 1) are drawn as
        their sections in order, one row per section, each token a square in its colour (the model's
        ``rules.colours`` when they name matplotlib colours). ``ax``: two Axes (else a new figure); saved to
        ``path`` when given; returns the figure (no pyplot state)."""
        import numpy as np
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(10, 4), layout="constrained")
            axes = fig.subplots(1, 2)
        else:
            axes = list(np.ravel(ax))
            if len(axes) != 2:
                raise ValueError(f"ax must be two matplotlib Axes, got {len(axes)}")
            fig = axes[0].figure
        position = self.map.numpy()
        x = None if self.x is None else np.asarray(self.x.detach().cpu() if torch.is_tensor(self.x) else self.x,
                                                    dtype=float)
        one_hot = x is not None and x.ndim == 2 and np.isin(x, (0, 1)).all() and (x.sum(1) == 1).all()
        if one_hot:
            self._draw_sections(axes[0], position, x.argmax(1))
        elif x is not None and x.ndim == 2 and x.shape[1] <= 2:
            coords = x if x.shape[1] == 2 else np.stack([x[:, 0], np.arange(len(x))], 1)
            dots = axes[0].scatter(coords[:, 0], coords[:, 1], c=position, cmap="viridis", s=18)
            fig.colorbar(dots, ax=axes[0], fraction=0.046, label="position in the order (MAP)")
            axes[0].set_title("MAP ordered partition")
        else:
            axes[0].set_title("no 2-D view of the data")
        order = np.lexsort((np.arange(len(position)), position))
        image = axes[1].imshow(self.precedence().numpy()[np.ix_(order, order)], vmin=0, vmax=1, cmap="magma")
        fig.colorbar(image, ax=axes[1], fraction=0.046)
        axes[1].set_title("P(i's cluster before j's), sorted by MAP position")
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig

    def _draw_sections(self, ax: Any, position: Any, colour: Any) -> None:
        """The catalog as its sections in order: row p = the section at position p, its tokens as squares."""
        import matplotlib as mpl
        import numpy as np

        names = list(getattr(getattr(self.model, "rules", None), "colours", ()))
        palette = [name if mpl.colors.is_color_like(name) else mpl.colormaps["tab10"](i % 10)
                   for i, name in enumerate(names)] or [mpl.colormaps["tab10"](i % 10) for i in range(colour.max() + 1)]
        for p in range(int(position.max()) + 1):
            tokens = np.sort(colour[position == p])
            for j, c in enumerate(tokens):
                ax.add_patch(mpl.patches.Rectangle((j, -p - 0.4), 0.9, 0.8, color=palette[int(c) % len(palette)]))
        ax.set_xlim(-0.5, max(int(np.bincount(position).max()), 1) + 0.5)
        ax.set_ylim(-int(position.max()) - 1, 1)
        ax.set_yticks(-np.arange(int(position.max()) + 1), [str(p) for p in range(int(position.max()) + 1)])
        ax.set_xlabel("tokens of the section")
        ax.set_ylabel("section position (MAP)")
        ax.set_title("MAP catalog, sections in order")

    def to_arviz(self, num_draws: int | None = None, seed: int = 0) -> Any:
        """As the base class, ``labels`` being positions; the posterior group's ``labels`` attribute says so."""
        data = super().to_arviz(num_draws, seed)
        data["posterior"].attrs["labels"] = "position of the point's cluster in the order (0 = first)"
        return data


class OrderedExactPosterior(OrderedClusteringPosterior, ExactPosterior):
    """An enumerated posterior over ordered partitions: every ordered partition (M, N), in position labels,
    with its probability (M,); :meth:`sample` draws ordered partitions.

    ``integration_error``: when the probabilities come from a numerical integration (the order's
    probability given a partition, :func:`pyro_acp.reference.exact_ordered.exact_ordered_posterior`), its
    estimated total-variation error; None when they are exact.
    """

    def __init__(self, partitions: Any, probs: Any, *, integration_error: float | None = None, **kwargs: Any) -> None:
        super().__init__(partitions, probs, **kwargs)
        if integration_error is not None:
            integration_error = float(integration_error)
            if not (math.isfinite(integration_error) and integration_error >= 0):
                raise ValueError(f"integration_error must be a non-negative number, got {integration_error}")
        self.integration_error = integration_error
