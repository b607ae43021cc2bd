"""What a model can do, as ``typing.Protocol`` s: the library dispatches on these, never on concrete classes.

- :class:`ClusteringModel`: a generative model with a latent partition that can be simulated in batches
  (what training and ``infer`` need).
- :class:`CollapsedModel`: a clustering model with an exact collapsed likelihood (cluster parameters
  integrated out): ``log_marginal_likelihood``, ``log_joint``, ``log_predictive``. This is what exact
  enumeration, exact importance weights and the exact MAP need; collapsed Gibbs also needs
  ``gibbs_statistics``, the per-cluster sufficient statistics it updates point by point
  (:class:`GibbsStatistics`), and a partition prior with ``seating_log_weights`` (see
  :mod:`pyro_acp.reference.gibbs`).
- ``guide_options`` (optional, a method or an attribute): what the model's guide needs, as the guide's
  config minus ``data_dim`` (``{"type": "NOC", "max_cluster_size": 30}``, ``{"type": "ACPS", "encoder":
  "gatedgcn"}``); :func:`guide_options` reads it, with a default from what the model declares.
- ``support_violations(x, samples)`` (optional): for each way a partition can lie outside the support of the
  posterior (a rule of the model's prior it breaks), which samples (S,) do, as a dict from a readable reason
  to a boolean tensor; for models without an exact log joint (a catalog grammar) it is how ``infer`` finds
  samples of probability zero (:func:`support_violations`). An ordered model's also takes ``ordered=False``
  for labels that only group the points (an ordered posterior's ``unordered()`` view): the order-free rules.
- ``stick_breaking_form()`` (:class:`StickBreakingForm`): a Gaussian mixture that NUTS can run as a truncated
  stick-breaking mixture, given a Pitman-Yor / CRP prior (``alpha``, ``discount``).

A user's model plugs in by having the methods (no base class needed); :func:`require` turns a missing one
into a ``TypeError`` that names what is missing.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

from torch import Tensor

from pyro_acp.data.batch import Batch

__all__ = [
    "ClusteringModel",
    "CollapsedModel",
    "GibbsStatistics",
    "StickBreakingForm",
    "exact_log_joint",
    "guide_options",
    "has_collapsed_likelihood",
    "require",
    "require_collapsed",
    "require_gibbs_statistics",
    "support_violations",
]


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
    """A clustering model whose likelihood of a partition is available in closed form.

    Exact enumeration, exact importance weights and the exact MAP need ``log_marginal_likelihood`` and
    ``log_joint`` (:func:`has_collapsed_likelihood`); collapsed Gibbs also needs ``gibbs_statistics``.
    """

    def log_marginal_likelihood(self, x: Any, labels: Any) -> Tensor:
        """log p(x | partition) (...,) of labellings (..., N), cluster parameters integrated out."""

    def log_joint(self, x: Any, labels: Any) -> Tensor:
        """log p(partition) + log p(x | partition) (...,): the unnormalised exact posterior."""

    def log_predictive(self, x: Any, labels: Any, index: int, num_clusters: int | None = None) -> Tensor:
        """log p(x_index | the other points' clusters) for each cluster slot and a new one (..., K + 1)."""

    def gibbs_statistics(self, x: Tensor) -> GibbsStatistics:
        """Fresh sufficient statistics over the validated data set ``x`` (float64), for collapsed Gibbs."""


@runtime_checkable
class GibbsStatistics(Protocol):
    """Per-cluster-slot sufficient statistics of C chains, updated in place as collapsed Gibbs moves points.

    Every chain has W slots; the kernel keeps the last one empty, so its predictive is that of a new cluster
    (the slot layout of the prior's ``seating_log_weights``: K existing slots, then new). ``init`` is called
    again whenever the kernel resets its state (after a split-merge proposal, at every recorded sample), so
    any round-off drift of the in-place updates is cleared there.
    """

    @property
    def counts(self) -> Tensor:
        """(C, W - 1) float sizes of the cluster slots, current after every ``move`` (a view is fine)."""

    def init(self, labels: Tensor, width: int) -> None:
        """Statistics of ``labels`` (C, N) (label -1 = not placed) in ``width`` slots."""

    def grow(self, extra: int) -> None:
        """Append ``extra`` empty slots to every chain."""

    def move(self, i: int, slot: Tensor, weight: Tensor) -> None:
        """Add point ``i`` to ``slot`` (C,) with ``weight`` (C,): +1 joins, -1 leaves, 0 changes nothing."""

    def log_predictive(self, i: int) -> Tensor:
        """(C, W) log p(x_i | the points in each slot), up to a constant per chain; point i must be out of
        the statistics. An empty slot gives the prior predictive (a new cluster). A fresh tensor: the kernel
        adds the seating weights to it in place."""

    def log_likelihood(self) -> Tensor:
        """(C,) log p(x | partition) of the labels of the last ``init``."""


class StickBreakingForm(NamedTuple):
    """The likelihood of a Gaussian mixture as NUTS runs it: x_i ~ N(mu_k, sigma^2 I), mu_k ~ N(0, mean_scale^2 I)."""

    sigma: float
    mean_scale: float


def guide_options(model: Any) -> dict[str, Any]:
    """The guide architecture ``model`` asks for: ``{"type": <a guide class in pyro_acp.guides.GUIDES>, **its
    keyword options}`` (``data_dim`` comes from the model).

    A model declares it with ``guide_options`` (a method returning that dict, or the dict as an attribute). A
    model that declares none gets one from what it does declare: an ordered model (``ordered``) a NOC guide
    (a pointer network learns the order) capped at its ``max_cluster_size`` when it has one; a graph model
    (``data_kind == "graph"``) an ACP-S guide with a GatedGCN encoder; any other an ACP-S guide on points.
    """
    declared = getattr(model, "guide_options", None)
    if declared is not None:
        options = declared() if callable(declared) else declared
        if not isinstance(options, dict) or not isinstance(options.get("type"), str):
            raise TypeError(f"{type(model).__name__}.guide_options must give a dict with a 'type' (a guide class "
                            f"name, e.g. 'ACPS' or 'NOC'), got {options!r}")
        return dict(options)
    if getattr(model, "ordered", False):
        return {"type": "NOC", "max_cluster_size": getattr(model, "max_cluster_size", None)}
    if getattr(model, "data_kind", "vector") == "graph":
        return {"type": "ACPS", "encoder": "gatedgcn"}
    return {"type": "ACPS"}


_COLLAPSED_METHODS = ("check_data", "partition_prior", "log_marginal_likelihood", "log_joint")
#: what collapsed Gibbs (and the ascent built on it) updates point by point, beside the collapsed likelihood
_GIBBS_METHODS = ("gibbs_statistics", "num_points_of")


def has_collapsed_likelihood(model: Any) -> bool:
    """Whether ``model`` has an exact collapsed log p(partition, x) (enough for enumeration and weights)."""
    return all(callable(getattr(model, name, None)) for name in _COLLAPSED_METHODS)


def has_invariant_likelihood(model: Any) -> bool:
    """Whether ``model`` gives the likelihood of its standardised data integrated over each column's location and
    scale (``invariant_log_likelihood``) and says on which data it can (``check_invariant_data``): the invariant
    posterior of ``exact_posterior(..., invariant=True)`` and ``infer(..., reweight="invariant")``."""
    return (all(callable(getattr(model, name, None)) for name in ("invariant_log_likelihood", "check_invariant_data"))
            and not getattr(model, "ordered", False))


def has_exact_log_joint(model: Any, num_points: int | None = None) -> bool:
    """Whether :func:`exact_log_joint` gives numbers for ``model`` (on data sets of ``num_points``, when given):
    a collapsed likelihood, or for an ordered model ``log_ordered_joint`` of its ordered partitions where its
    ``ordered_joint_available(num_points)`` says it is exact."""
    if getattr(model, "ordered", False):
        available = getattr(model, "ordered_joint_available", None)
        return (callable(getattr(model, "log_ordered_joint", None)) and callable(available)
                and (num_points is None or bool(available(num_points))))
    return has_collapsed_likelihood(model)


def exact_log_joint(model: Any, x: Tensor, labels: Tensor) -> Tensor | None:
    """log p(partition, x) of partitions (S, N) of one data set (for an ordered model: of the ordered
    partitions, position labels), or None where the model has no exact one (:func:`has_exact_log_joint`).

    It ranks samples exactly (up to a constant), where a guide's own estimates are noisy.
    """
    if not has_exact_log_joint(model, labels.shape[-1]):
        return None
    return model.log_ordered_joint(x, labels) if getattr(model, "ordered", False) else model.log_joint(x, labels)


def support_violations(model: Any, x: Tensor, samples: Tensor, ordered: bool = True) -> dict[str, Tensor] | None:
    """Which samples (S, N) of one data set break each rule of the model's support (reason -> (S,) bool),
    or None where the model does not declare its support (``support_violations``). For an ordered model,
    ``ordered=False`` says the samples are partitions, not positions (the order-free rules only)."""
    check = getattr(model, "support_violations", None)
    if not callable(check):
        return None
    return check(x, samples) if ordered or not getattr(model, "ordered", False) else check(x, samples, ordered=False)


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


def can_ascend_to_mode(model: Any) -> bool:
    """Whether greedy ascent to a local mode (``ClusteringPosterior.refined_map``) applies: an unordered model
    with an exact collapsed likelihood and the sufficient statistics collapsed Gibbs updates."""
    has_statistics = all(callable(getattr(model, name, None)) for name in _GIBBS_METHODS)
    return not getattr(model, "ordered", False) and has_collapsed_likelihood(model) and has_statistics


def require_gibbs_statistics(model: Any, caller: str) -> None:
    """TypeError unless ``model`` also provides the sufficient statistics collapsed Gibbs updates."""
    require(model, _GIBBS_METHODS, caller,
            "the per-cluster sufficient statistics it updates point by point")
