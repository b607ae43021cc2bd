"""Side-by-side comparison of clustering posteriors (ACP, Gibbs, NUTS, exact, ...) in one table.

Columns (None where not applicable):

- ``samples``, ``wall_time``: how many partitions the method returned and how long it took;
- ``K_mean``, ``K_sd``: the posterior mean and standard deviation of the number of clusters;
- ``tv``: total variation distance to the reference when the reference is an exact posterior (the
  method's sample frequencies, or weights, against the exact probabilities);
- ``coclustering_error``: mean absolute difference of the co-clustering matrices over pairs i < j,
  against the reference (both from :mod:`pyro_acp.metrics`);
- ``ami_map``, ``ami_point``: adjusted mutual information to the true partition of the MAP and of the
  Variation-of-Information point estimate;
- ``ess_K``, ``rhat_K``, ``ess_loglik``, ``rhat_loglik``: effective sample size and R-hat (ArviZ, rank
  normalised) of K and of the log likelihood, for sample-based posteriors (chains as recorded).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.partitions import check_labels
from pyro_acp.posteriors.enumerated import ExactPosterior
from pyro_acp.posteriors.posterior import ClusteringPosterior

__all__ = ["ComparisonTable", "compare"]

COLUMNS = (
    "method", "samples", "wall_time", "K_mean", "K_sd", "tv", "coclustering_error", "ami_map", "ami_point",
    "ess_K", "rhat_K", "ess_loglik", "rhat_loglik",
)
_MIN_DRAWS_FOR_DIAGNOSTICS = 4  # per chain
_REFERENCE_COLUMNS = ("tv", "coclustering_error")  # the columns measured against the reference


@dataclass
class ComparisonTable:
    """Rows of comparison metrics, one per method; print it, or turn it into a DataFrame or a dict."""

    rows: list[dict[str, Any]]
    reference: str | None = None

    @property
    def columns(self) -> list[str]:
        return [c for c in COLUMNS if any(row.get(c) is not None for row in self.rows)]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, method: str) -> dict[str, Any]:
        for row in self.rows:
            if row["method"] == method:
                return row
        raise KeyError(f"no row for method {method!r}; rows: {[r['method'] for r in self.rows]}")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """{method: {column: value}} with plain Python numbers (JSON-able)."""
        return {row["method"]: {c: row.get(c) for c in self.columns if c != "method"} for row in self.rows}

    def to_pandas(self) -> Any:
        """A pandas DataFrame indexed by method."""
        import pandas as pd

        return pd.DataFrame([{c: row.get(c) for c in self.columns} for row in self.rows]).set_index("method")

    def __str__(self) -> str:
        columns = self.columns
        cells = [[_format(row.get(c)) for c in columns] for row in self.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        line = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths,
                                                                                                strict=True)))
        out = [line, "-" * len(line)]
        for r in cells:
            out.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths,
                                                                                                     strict=True))))
        against = [c for c in _REFERENCE_COLUMNS if c in columns]
        if self.reference is not None and against:
            out.append(f"({' and '.join(against)} against {self.reference})")
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"ComparisonTable({len(self.rows)} rows)\n{self}"


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


# ---------------------------------------------------------------------------------------------- helpers
def _k_moments(post: ClusteringPosterior) -> tuple[float, float]:
    k = post.num_clusters.to(torch.float64)
    w = post.sample_weights
    mean = float((w * k).sum())
    var = float((w * (k - mean) ** 2).sum())
    return mean, math.sqrt(max(var, 0.0))


def _diagnostics(post: ClusteringPosterior) -> dict[str, float | None]:
    """ESS and R-hat of K and of the log likelihood via ArviZ; None for weighted or too-short runs, and
    R-hat None for a single chain (it compares chains; ArviZ would only warn)."""
    empty = {"ess_K": None, "rhat_K": None, "ess_loglik": None, "rhat_loglik": None}
    if post.weights is not None:
        return empty
    chain = post.chain if post.chain is not None else torch.zeros(post.num_samples, dtype=torch.long)
    if int(torch.bincount(chain).masked_select(torch.bincount(chain) > 0).min()) < _MIN_DRAWS_FOR_DIAGNOSTICS:
        return empty
    import arviz as az

    data = post.to_arviz()
    names = ["num_clusters"] + (["log_likelihood"] if post.log_likelihood is not None else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant chains (e.g. K never changes) give NaN with a warning
        ess = az.ess(data, var_names=names)
        rhat = az.rhat(data, var_names=names) if int(chain.unique().numel()) > 1 else None
    out = dict(empty)
    for name, key in (("num_clusters", "K"), ("log_likelihood", "loglik")):
        if name in names:
            out[f"ess_{key}"] = float(ess[name])
            out[f"rhat_{key}"] = None if rhat is None else float(rhat[name])
    return out


def _check_inputs(posteriors: Any, truth: Any, reference: Any) -> tuple[dict, Tensor | None, Any, str | None]:
    if not isinstance(posteriors, Mapping) or len(posteriors) == 0:
        raise ValueError("posteriors must be a non-empty dict {name: ClusteringPosterior}")
    for name, post in posteriors.items():
        if not isinstance(post, ClusteringPosterior):
            raise TypeError(f"posteriors[{name!r}] is a {type(post).__name__}, not a ClusteringPosterior")
    sizes = {name: post.num_points for name, post in posteriors.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the posteriors cover different numbers of points: {sizes}")
    n = next(iter(sizes.values()))
    ref_name = None
    if isinstance(reference, str):
        if reference not in posteriors:
            raise ValueError(f"reference {reference!r} is not one of the posteriors {list(posteriors)}")
        ref_name, reference = reference, posteriors[reference]
    elif reference is not None:
        if not isinstance(reference, ClusteringPosterior):
            raise TypeError(f"reference must be a ClusteringPosterior or a key of posteriors, got "
                            f"{type(reference).__name__}")
        if reference.num_points != n:
            raise ValueError(f"the reference has {reference.num_points} points but the posteriors {n}")
        ref_name = f"reference ({reference.method})"
    if truth is not None:
        truth = check_labels(torch.as_tensor(np.asarray(truth) if not torch.is_tensor(truth) else truth), "truth")
        if truth.shape != (n,):
            raise ValueError(f"truth must be one labelling of shape ({n},), got {tuple(truth.shape)}")
        if (truth < 0).any():
            raise ValueError("truth must not contain padding labels")
    return dict(posteriors), truth, reference, ref_name


# ---------------------------------------------------------------------------------------------- compare
def compare(
    posteriors: Mapping[str, ClusteringPosterior],
    *,
    truth: Any = None,
    reference: ClusteringPosterior | str | None = None,
) -> ComparisonTable:
    """One row of metrics per posterior (see the module docstring for the columns).

    ``truth``: the true labels (N,) for AMI columns. ``reference``: an exact posterior (enables ``tv``) or
    any posterior, e.g. a long Gibbs run, given directly or as the name of one of ``posteriors``; a
    reference given directly and not among ``posteriors`` gets its own first row.
    """
    from pyro_acp.diagnostics.metrics import adjusted_mutual_info, coclustering_error, total_variation

    posteriors, truth, reference, ref_name = _check_inputs(posteriors, truth, reference)
    entries = list(posteriors.items())
    if reference is not None and not any(post is reference for _, post in entries):
        entries.insert(0, (ref_name, reference))
    ref_cc = reference.coclustering() if reference is not None else None
    rows = []
    for name, post in entries:
        k_mean, k_sd = _k_moments(post)
        row: dict[str, Any] = {"method": name, "samples": post.num_samples, "wall_time": post.wall_time,
                               "K_mean": k_mean, "K_sd": k_sd}
        if isinstance(reference, ExactPosterior):
            row["tv"] = float(total_variation(post, reference))
        if ref_cc is not None:
            row["coclustering_error"] = float(coclustering_error(post.coclustering(), ref_cc))
        if truth is not None:
            row["ami_map"] = float(adjusted_mutual_info(truth, post.map))
            row["ami_point"] = float(adjusted_mutual_info(truth, post.point_estimate("vi")))
        row.update(_diagnostics(post))
        rows.append(row)
    return ComparisonTable(rows, reference=ref_name)
