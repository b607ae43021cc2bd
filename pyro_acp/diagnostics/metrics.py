"""Clustering metrics and distances between posteriors over partitions.

Label inputs may be tensors, NumPy arrays or lists, one partition (N,) or a batch (B, N) with -1 padding
(padding must sit at the same positions in both arguments). Pairwise scores (AMI, ARI, NMI, V-measure,
Kendall tau) come from scikit-learn / SciPy and return a float for one partition and a float64 tensor (B,)
for a batch.

Distances between posteriors:

- ``total_variation(p, q)`` = 1/2 sum_partitions |p(s) - q(s)|, each side given as ``(partitions (M, N),
  probs (M,))``, as samples (S, N) (equal weights), or as a posterior object (``.partitions``/``.probs`` or
  ``.samples`` with optional ``.weights``). Partitions are matched by canonical form, so any labelling works.
- ``coclustering_error(A, B)`` = mean over pairs i < j of |A_ij - B_ij|, for co-clustering matrices (N, N)
  (or posterior objects, whose ``.coclustering()`` is used). Diagonals are always 1, so they are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.partitions import PAD_LABEL, canonicalize, check_labels, coclustering_matrix, num_clusters

__all__ = [
    "adjusted_mutual_info",
    "adjusted_rand_index",
    "coclustering",
    "coclustering_error",
    "kendall_tau",
    "normalized_mutual_info",
    "num_clusters_error",
    "total_variation",
    "v_measure",
]


# ---------------------------------------------------------------------------------------------- label input


def _sklearn_score(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """A scikit-learn clustering score, imported on first use (scikit-learn takes about a second to import)."""
    from sklearn import metrics

    return getattr(metrics, name)


def _as_labels(labels: Any, name: str) -> Tensor:
    """A LongTensor (N,) or (B, N) on the CPU, else ValueError naming ``name``."""
    if isinstance(labels, (list, tuple)):
        labels = np.asarray(labels)
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not torch.is_tensor(labels):
        raise TypeError(f"{name} must be a tensor, array or list of labels, got {type(labels).__name__}")
    labels = check_labels(labels.detach().cpu(), name)
    if labels.dim() > 2:
        raise ValueError(f"{name} must have shape (N,) or (B, N), got {tuple(labels.shape)}")
    return labels


def _pair(a: Any, b: Any, names: tuple[str, str]) -> tuple[Tensor, Tensor, bool]:
    """Two label tensors as (B, N) with matching shapes and padding; the flag says whether input was single."""
    a, b = _as_labels(a, names[0]), _as_labels(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} has shape {tuple(a.shape)} but {names[1]} has shape {tuple(b.shape)}")
    if not torch.equal(a == PAD_LABEL, b == PAD_LABEL):
        raise ValueError(f"{names[0]} and {names[1]} have -1 padding at different positions")
    single = a.dim() == 1
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    if bool((a == PAD_LABEL).all(-1).any()):
        raise ValueError(f"{names[0]} contains a partition with no real point")
    return a, b, single


def _rowwise(score: Callable[[np.ndarray, np.ndarray], float], a: Any, b: Any,
             names: tuple[str, str]) -> float | Tensor:
    a, b, single = _pair(a, b, names)
    values = []
    for row_a, row_b in zip(a.numpy(), b.numpy(), strict=True):
        keep = row_a != PAD_LABEL
        values.append(float(score(row_a[keep], row_b[keep])))
    return values[0] if single else torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- clustering scores

_TRUE_PRED = ("labels_true", "labels_pred")


def adjusted_mutual_info(labels_true: Any, labels_pred: Any) -> float | Tensor:
    """Adjusted mutual information (sklearn, arithmetic normalisation): 1 for equal partitions, ~0 by chance."""
    return _rowwise(_sklearn_score("adjusted_mutual_info_score"), labels_true, labels_pred, _TRUE_PRED)


def adjusted_rand_index(labels_true: Any, labels_pred: Any) -> float | Tensor:
    """Adjusted Rand index (sklearn)."""
    return _rowwise(_sklearn_score("adjusted_rand_score"), labels_true, labels_pred, _TRUE_PRED)


def normalized_mutual_info(labels_true: Any, labels_pred: Any) -> float | Tensor:
    """Normalised mutual information (sklearn, arithmetic normalisation)."""
    return _rowwise(_sklearn_score("normalized_mutual_info_score"), labels_true, labels_pred, _TRUE_PRED)


def v_measure(labels_true: Any, labels_pred: Any) -> float | Tensor:
    """V-measure (sklearn): harmonic mean of homogeneity and completeness, the NOC paper's cluster score."""
    return _rowwise(_sklearn_score("v_measure_score"), labels_true, labels_pred, _TRUE_PRED)


def kendall_tau(order_true: Any, order_pred: Any, degenerate: str = "dummy") -> float | Tensor:
    """Kendall tau-b between two orderings of the same points, e.g. each point's cluster position in an order.

    Ties are handled by tau-b (SciPy). When one side is constant (a single cluster) tau-b is undefined:
    ``degenerate="dummy"`` follows the NOC evaluation and appends one extra point ranked last in both orders;
    ``degenerate="nan"`` returns NaN instead.
    """
    if degenerate not in ("dummy", "nan"):
        raise ValueError(f"degenerate must be 'dummy' or 'nan', got {degenerate!r}")

    def score(a: np.ndarray, b: np.ndarray) -> float:
        if degenerate == "dummy" and (np.all(a == a[0]) or np.all(b == b[0])):
            a = np.append(a, max(a.max(), b.max()) + 1)
            b = np.append(b, a[-1])
        from scipy.stats import kendalltau  # imported on use: SciPy's stats take a second to import

        return kendalltau(a, b).statistic

    return _rowwise(score, order_true, order_pred, ("order_true", "order_pred"))


def num_clusters_error(labels_true: Any, labels_pred: Any) -> int | Tensor:
    """|K_hat - K|: absolute difference of the numbers of clusters (int, or LongTensor (B,))."""
    a, b, single = _pair(labels_true, labels_pred, _TRUE_PRED)
    error = (num_clusters(b) - num_clusters(a)).abs()
    return int(error[0]) if single else error


# ---------------------------------------------------------------------------------------------- co-clustering


def coclustering(labels: Any, weights: Any = None) -> Tensor:
    """Co-clustering matrix (N, N) of partitions (S, N) or (N,), optionally weighted (S,).

    A thin input-converting front end of :func:`pyro_acp.data.partitions.coclustering_matrix`.
    """
    labels = _as_labels(labels, "labels")
    if weights is not None:
        weights = _as_probs(weights, labels.shape[0] if labels.dim() == 2 else 1, "weights")
    return coclustering_matrix(labels, weights)


def _as_matrix(value: Any, name: str) -> Tensor:
    if hasattr(value, "coclustering") and callable(value.coclustering):
        value = value.coclustering()
    matrix = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value).detach().cpu()
    matrix = matrix.to(torch.float64)
    if matrix.dim() < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"{name} must be a co-clustering matrix of shape (..., N, N), got {tuple(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return matrix


def coclustering_error(a: Any, b: Any) -> float | Tensor:
    """Mean over pairs i < j of |A_ij - B_ij| (float; batched inputs (..., N, N) give a tensor (...,)).

    The diagonal is excluded (it is 1 for every partition). With one point there are no pairs and the error
    is 0. Posterior objects with a ``coclustering()`` method may be passed directly.
    """
    a, b = _as_matrix(a, "A"), _as_matrix(b, "B")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"A is over {a.shape[-1]} points but B is over {b.shape[-1]}")
    n = a.shape[-1]
    upper = torch.ones(n, n, dtype=torch.bool).triu(1)
    diff = (a - b).abs()[..., upper]
    error = diff.mean(-1) if n > 1 else diff.sum(-1)
    return float(error) if error.dim() == 0 else error


# ---------------------------------------------------------------------------------------------- total variation


def _as_probs(probs: Any, size: int, name: str) -> Tensor:
    probs = torch.as_tensor(np.asarray(probs) if not torch.is_tensor(probs) else probs).detach().cpu()
    probs = probs.to(torch.float64).reshape(-1)
    if probs.shape[0] != size:
        raise ValueError(f"{name} has {probs.shape[0]} entries for {size} partitions")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative")
    total = probs.sum()
    if not total > 0:
        raise ValueError(f"{name} sum to zero")
    return probs / total


def _as_distribution(value: Any, name: str) -> tuple[Tensor, Tensor]:
    """(canonical partitions (M, N), probabilities (M,)) from any accepted form of a distribution."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{name} as a tuple must be (partitions, probs), got {len(value)} items")
        parts, probs = value
    elif hasattr(value, "partitions") and hasattr(value, "probs"):
        parts, probs = value.partitions, value.probs
    elif hasattr(value, "samples"):
        parts, probs = value.samples, getattr(value, "weights", None)
    else:
        parts, probs = value, None
    parts = _as_labels(parts, f"{name} partitions")
    if parts.dim() == 1:
        parts = parts.unsqueeze(0)
    probs = torch.ones(parts.shape[0], dtype=torch.float64) if probs is None else probs
    return canonicalize(parts), _as_probs(probs, parts.shape[0], f"{name} probs")


def total_variation(p: Any, q: Any) -> float:
    """Total variation distance 1/2 sum_s |p(s) - q(s)| between two distributions over partitions.

    Each side is ``(partitions (M, N), probs (M,))`` (weights are normalised; repeated partitions add up),
    samples (S, N), or a posterior object. Partitions are matched exactly by canonical form with one
    ``torch.unique`` over the rows of both sides.
    """
    parts_p, probs_p = _as_distribution(p, "p")
    parts_q, probs_q = _as_distribution(q, "q")
    if parts_p.shape[-1] != parts_q.shape[-1]:
        raise ValueError(f"p is over {parts_p.shape[-1]} points but q is over {parts_q.shape[-1]}")
    _, index = torch.unique(torch.cat([parts_p, parts_q]), dim=0, return_inverse=True)
    size = int(index.max()) + 1
    mass_p = torch.zeros(size, dtype=torch.float64).index_add_(0, index[: len(probs_p)], probs_p)
    mass_q = torch.zeros(size, dtype=torch.float64).index_add_(0, index[len(probs_p):], probs_q)
    return 0.5 * float((mass_p - mass_q).abs().sum())
