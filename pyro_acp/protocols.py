"""What a model can do, as ``typing.Protocol`` s: the library dispatches on these, never on concrete classes.

- :class:`ClusteringModel`: a generative model with a latent partition that can be simulated in batches
  (what training and ``infer`` need).
- :class:`CollapsedModel`: a clustering model with an exact collapsed likelihood (cluster parameters
  integrated out): ``log_marginal_likelihood``, ``log_joint``, ``log_predictive``. This is what exact
  enumeration, exact importance weights and the exact MAP need; collapsed Gibbs needs these and the
  sufficient statistics it updates point by point (see :mod:`pyro_acp.reference.gibbs`).

A user's model plugs in by having the methods (no base class needed); :func:`require` turns a missing one
into a ``TypeError`` that names what is missing.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from pyro_acp.data.batch import Batch

__all__ = ["ClusteringModel", "CollapsedModel", "exact_log_joint", "has_collapsed_likelihood", "require"]


@runtime_checkable
class ClusteringModel(Protocol):
    """A Pyro program with a partition site "labels" and an observed site "x", and a batched simulator.

    ``data_kind``: "vector" (points (N, D)) or "graph" (an adjacency); ``ordered``: the clusters carry an
    order (labels are positions); ``rotation_invariant``: p(partition | Q x) = p(partition | x) for every
    orthogonal Q.
    """

    data_kind: str
    ordered: bool

    @property
    def data_dim(self) -> int:
        """Width of the guide's per-point input."""

    def config(self) -> dict:
        """JSON-able {"type": ..., **hyperparameters}: what a trained guide records to be matched again."""

    def check_data(self, x: Any) -> Tensor:
        """One observed data set, validated and converted (ValueError / TypeError naming the problem)."""

    def num_points_of(self, x: Tensor) -> int:
        """Number of points (or nodes) of a validated data set."""

    def partition_prior(self, num_points: int) -> Any:
        """The distribution of the "labels" site at ``num_points`` points."""

    def simulate(self, batch_size: int, num_points: Any = None, seed: int | None = None,
                 device: Any = None) -> Batch:
        """``batch_size`` simulated data sets with their partitions, padded, with teacher-forcing masks."""


@runtime_checkable
class CollapsedModel(ClusteringModel, Protocol):
    """A clustering model whose likelihood of a partition is available in closed form."""

    def log_marginal_likelihood(self, x: Any, labels: Any) -> Tensor:
        """log p(x | partition) (...,) of labellings (..., N), cluster parameters integrated out."""

    def log_joint(self, x: Any, labels: Any) -> Tensor:
        """log p(partition) + log p(x | partition) (...,): the unnormalised exact posterior."""

    def log_predictive(self, x: Any, labels: Any, index: int, num_clusters: int | None = None) -> Tensor:
        """log p(x_index | the other points' clusters) for each cluster slot and a new one (..., K + 1)."""


_COLLAPSED_METHODS = ("check_data", "partition_prior", "log_marginal_likelihood", "log_joint")


def has_collapsed_likelihood(model: Any) -> bool:
    """Whether ``model`` has an exact collapsed log p(partition, x) (enough for enumeration and weights)."""
    return all(callable(getattr(model, name, None)) for name in _COLLAPSED_METHODS)


def exact_log_joint(model: Any, x: Tensor, labels: Tensor) -> Tensor | None:
    """log p(partition, x) of partitions (S, N) of one data set, or None without a collapsed likelihood.

    It ranks samples exactly (up to a constant), where a guide's own estimates are noisy.
    """
    return model.log_joint(x, labels) if has_collapsed_likelihood(model) else None


def require(model: Any, methods: tuple[str, ...], caller: str, what: str) -> None:
    """TypeError unless ``model`` has every method in ``methods``, naming the missing ones."""
    missing = [name for name in methods if not callable(getattr(model, name, None))]
    if missing:
        raise TypeError(
            f"{caller} needs {what} (methods {', '.join(methods)}); {type(model).__name__} lacks "
            f"{', '.join(missing)}"
        )


def require_collapsed(model: Any, caller: str) -> None:
    """TypeError unless ``model`` has an exact collapsed likelihood."""
    require(model, _COLLAPSED_METHODS, caller, "a conjugate model with an exact collapsed likelihood")
