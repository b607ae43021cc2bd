"""Simulation-based calibration (SBC) for posteriors over partitions.

If (partition, x) is drawn from the model and L partitions are drawn from a correct posterior p(· | x), the
rank of any scalar summary of the true partition among the L posterior draws is uniform on {0, ..., L}
(Talts et al. 2018). Partitions have no natural scalar coordinates, so we rank summaries: the number of
clusters K, the largest cluster's share of the points and, for conjugate models, the exact log
likelihood log p(x | partition). These are discrete, so ties are broken uniformly at random, which keeps
the ranks exactly uniform under calibration. Uniformity is tested with a chi-square test per summary and
shown as ECDF differences with simultaneous bands (Säilynoja et al. 2022) and rank histograms.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize, cluster_sizes
from pyro_acp.models.program import as_clustering_model
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.seeding import SeedStream, make_generator, resolve_seed
from pyro_acp.validation import check_int

__all__ = [
    "SBCResult", "default_statistics", "ecdf_band", "plot_sbc", "rank_statistic", "sbc", "uniformity_pvalue",
]

# purposes of the seed stream: the simulated data sets, the rank tie-breaks, each posterior call
_SIMULATIONS, _RANKS, _POSTERIORS = 0, 1, 2

Statistic = Callable[[Tensor, Any], Tensor]  # (labels (M, N), data) -> (M,) float


def _num_clusters(labels: Tensor, data: Any) -> Tensor:
    return (canonicalize(labels).max(-1).values + 1).to(torch.float64)


def _largest_share(labels: Tensor, data: Any) -> Tensor:
    return cluster_sizes(canonicalize(labels)).max(-1).values.to(torch.float64) / labels.shape[-1]


def default_statistics(model: Any) -> dict[str, Statistic]:
    """K, the largest cluster's share, and the exact log likelihood when ``model`` is conjugate."""
    chosen: dict[str, Statistic] = {"num_clusters": _num_clusters, "largest_share": _largest_share}
    if callable(getattr(model, "log_marginal_likelihood", None)):

        def log_likelihood(labels: Tensor, data: Any) -> Tensor:
            return model.log_marginal_likelihood(data, labels).to(torch.float64).cpu()

        chosen["log_likelihood"] = log_likelihood
    return chosen


def rank_statistic(truth: Tensor, draws: Tensor, generator: torch.Generator) -> Tensor:
    """Rank of ``truth`` (...,) among ``draws`` (..., L), ties broken uniformly: values in {0, ..., L}."""
    below = (draws < truth.unsqueeze(-1)).sum(-1)
    ties = (draws == truth.unsqueeze(-1)).sum(-1)
    u = torch.rand(ties.shape, generator=generator, dtype=torch.float64)
    return below + torch.floor(u * (ties + 1)).long()


def _bin_edges(num_ranks: int, num_bins: int) -> np.ndarray:
    """Integer edges splitting ranks 0..num_ranks-1 into ``num_bins`` near-equal bins."""
    return np.unique(np.floor(np.linspace(0, num_ranks, num_bins + 1)).astype(int))


def uniformity_pvalue(ranks: np.ndarray, num_ranks: int, num_bins: int | None = None) -> float:
    """Chi-square p-value that ``ranks`` (values 0..num_ranks-1) are uniform, on near-equal bins.

    The default number of bins keeps about 5 expected counts per bin (at most 20, at least 2).
    """
    from scipy import stats as scipy_stats  # imported on use: it takes a second to import

    ranks = np.asarray(ranks)
    if num_bins is None:
        num_bins = int(min(20, max(2, ranks.size // 5)))
    num_bins = min(num_bins, num_ranks)
    edges = _bin_edges(num_ranks, num_bins)
    observed = np.histogram(ranks, bins=edges)[0]
    expected = np.diff(edges) / num_ranks * ranks.size
    return float(scipy_stats.chisquare(observed, expected).pvalue)


@dataclass
class SBCResult:
    """Ranks of each summary statistic over the simulations, and their chi-square uniformity p-values."""

    ranks: dict[str, np.ndarray]
    num_posterior_samples: int
    p_values: dict[str, float]
    num_points: int
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def num_simulations(self) -> int:
        return len(next(iter(self.ranks.values())))

    def to_dict(self) -> dict:
        return {
            "ranks": {k: v.tolist() for k, v in self.ranks.items()},
            "num_posterior_samples": self.num_posterior_samples,
            "p_values": dict(self.p_values),
            "num_points": self.num_points,
        }

    def __str__(self) -> str:
        lines = [
            f"SBC: {self.num_simulations} simulations, N = {self.num_points}, "
            f"L = {self.num_posterior_samples} posterior draws (ranks 0..L)"
        ]
        for name, p in self.p_values.items():
            flag = "  <- not uniform at 1%" if p < 0.01 else ""
            lines.append(f"  {name:<16} chi-square p = {p:.3f}{flag}")
        return "\n".join(lines)

    def plot(self, path: str | Path | None = None, alpha: float = 0.05) -> Any:
        return plot_sbc(self, path=path, alpha=alpha)


def _check_posterior_fn(posterior_fn: Any) -> None:
    """TypeError unless ``posterior_fn`` is a callable that takes the data and a ``seed`` keyword."""
    if not callable(posterior_fn):
        raise TypeError("posterior_fn must be a callable (x, *, seed) -> ClusteringPosterior")
    try:
        inspect.signature(posterior_fn).bind(None, seed=0)
    except TypeError:
        raise TypeError(
            "posterior_fn must accept a seed keyword: sbc gives every data set its own seed, e.g. "
            "lambda x, seed: pyro_acp.infer(model, x, seed=seed)"
        ) from None
    except ValueError:  # no signature to inspect (some builtins): trust the caller
        pass


def _posterior_draws(post: ClusteringPosterior, count: int, generator: torch.Generator) -> Tensor:
    """``count`` partitions from a posterior: resampled by weight when weighted, else evenly thinned."""
    if not isinstance(post, ClusteringPosterior):
        raise TypeError(f"posterior_fn must return a ClusteringPosterior, got {type(post).__name__}")
    if post.weights is not None:
        index = torch.multinomial(post.weights, count, replacement=True, generator=generator)
        return post.samples[index]
    if post.num_samples < count:
        raise ValueError(
            f"posterior_fn returned {post.num_samples} samples but num_posterior_samples={count} are needed"
        )
    index = torch.linspace(0, post.num_samples - 1, count).round().long()
    return post.samples[index]


def sbc(
    model: Any,
    posterior_fn: Callable[..., ClusteringPosterior],
    *,
    num_simulations: int = 100,
    num_points: int = 10,
    num_posterior_samples: int = 99,
    seed: int | None = 0,
    statistics: dict[str, Statistic] | None = None,
    num_bins: int | None = None,
) -> SBCResult:
    """Simulation-based calibration of ``posterior_fn`` (``(x, *, seed) -> ClusteringPosterior``) under ``model``.

    Simulates ``num_simulations`` data sets of ``num_points`` points from ``model`` (seeded), calls
    ``posterior_fn(x, seed=s)`` on each (an amortized guide, Gibbs, the exact posterior, ...) with its own
    seed ``s`` from ``SeedStream(seed)``, takes
    ``num_posterior_samples`` = L partitions from it (weighted posteriors are resampled, sample sets are
    thinned evenly, so MCMC output should hold at least L draws) and ranks each summary statistic of the
    true partition among them. ``statistics`` maps names to functions (labels (M, N), data) -> (M,);
    the default is :func:`default_statistics`. Returns an :class:`SBCResult`.

    ``posterior_fn`` should draw with the seed it is given, e.g. ``lambda x, seed: pyro_acp.infer(model, x,
    seed=seed)``: draws that reuse the same random numbers for every data set make the ranks depend on those
    numbers (the shipped guide's K passes at N = 30 with ``seed=0`` fixed, p = 0.10, and fails with a seed per
    call, p = 0.004: notebooks/03_checking_against_mcmc.ipynb). A function that takes no ``seed`` is refused.
    """
    model = as_clustering_model(model)  # a plain Pyro program becomes a model (pyro_acp.models.program)
    num_simulations = check_int(num_simulations, "num_simulations", 1)
    num_points = check_int(num_points, "num_points", 1)
    num_posterior_samples = check_int(num_posterior_samples, "num_posterior_samples", 1)
    _check_posterior_fn(posterior_fn)
    statistics = default_statistics(model) if statistics is None else dict(statistics)
    if not statistics:
        raise ValueError("statistics is empty: give at least one summary to rank")
    stream = SeedStream(resolve_seed(seed))
    batch = model.simulate(num_simulations, num_points=num_points, seed=stream.seed_for(0, _SIMULATIONS))
    generator = make_generator(stream.seed_for(0, _RANKS))
    ranks: dict[str, list[int]] = {name: [] for name in statistics}
    for b in range(num_simulations):
        x = batch.adjacency[b] if batch.adjacency is not None else batch.x[b]
        truth = canonicalize(batch.labels[b].cpu())
        posterior = posterior_fn(x, seed=stream.seed_for(b, _POSTERIORS))
        draws = _posterior_draws(posterior, num_posterior_samples, generator)
        if draws.shape[-1] != num_points:
            raise ValueError(f"posterior_fn returned partitions of {draws.shape[-1]} points, expected {num_points}")
        both = torch.cat([truth.unsqueeze(0), draws])
        for name, statistic in statistics.items():
            values = torch.as_tensor(statistic(both, x), dtype=torch.float64).cpu()
            ranks[name].append(int(rank_statistic(values[0], values[1:], generator)))
    arrays = {name: np.asarray(r) for name, r in ranks.items()}
    p_values = {name: uniformity_pvalue(r, num_posterior_samples + 1, num_bins) for name, r in arrays.items()}
    return SBCResult(arrays, num_posterior_samples, p_values, num_points)


# ---------------------------------------------------------------------------------------------- plots
def ecdf_band(num_simulations: int, num_ranks: int, alpha: float = 0.05, num_trials: int = 2000,
              seed: int = 0, max_grid: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid z (J,) and a simultaneous 1 - ``alpha`` band (lower, upper) for ECDF(z) - z of uniform ranks.

    Säilynoja et al. (2022): simulate uniform rank sets, find the pointwise level γ at which the chance that
    a whole uniform ECDF stays within the pointwise binomial intervals is 1 - alpha, and return those
    intervals minus z.
    """
    from scipy import stats as scipy_stats  # imported on use: it takes a second to import

    grid_ranks = np.unique(np.linspace(1, num_ranks - 1, min(max_grid, num_ranks - 1)).round().astype(int))
    z = grid_ranks / num_ranks
    rng = np.random.default_rng(seed)
    sims = rng.integers(0, num_ranks, size=(num_trials, num_simulations))
    counts = (sims[:, :, None] < grid_ranks[None, None, :]).sum(1)  # (trials, J)
    lower_tail = scipy_stats.binom.cdf(counts, num_simulations, z)
    upper_tail = scipy_stats.binom.sf(counts - 1, num_simulations, z)
    p_min = np.minimum(2 * np.minimum(lower_tail, upper_tail), 1.0).min(-1)
    gamma = float(np.quantile(p_min, alpha))
    low = scipy_stats.binom.ppf(gamma / 2, num_simulations, z) / num_simulations - z
    high = scipy_stats.binom.ppf(1 - gamma / 2, num_simulations, z) / num_simulations - z
    return z, low, high


def plot_sbc(result: SBCResult, path: str | Path | None = None, alpha: float = 0.05) -> Any:
    """One column per statistic: ECDF difference with a simultaneous 1 - alpha band (top), rank histogram
    with the 99% range of a uniform bin count (bottom). Saves to ``path`` when given; returns the figure."""
    from matplotlib.figure import Figure
    from scipy import stats as scipy_stats  # imported on use: it takes a second to import

    if not isinstance(result, SBCResult):
        raise TypeError(f"plot_sbc needs an SBCResult, got {type(result).__name__}")
    names = list(result.ranks)
    num_ranks = result.num_posterior_samples + 1
    n = result.num_simulations
    fig = Figure(figsize=(4 * len(names), 6), layout="constrained")
    axes = np.asarray(fig.subplots(2, len(names), squeeze=False))
    z, low, high = ecdf_band(n, num_ranks, alpha=alpha) if num_ranks > 1 else (np.zeros(0),) * 3
    num_bins = int(min(20, max(2, n // 5), num_ranks))
    edges = _bin_edges(num_ranks, num_bins)
    for col, name in enumerate(names):
        ranks = result.ranks[name]
        top, bottom = axes[0, col], axes[1, col]
        ecdf = (ranks[None, :] < (z * num_ranks)[:, None]).mean(-1) - z if z.size else z
        top.fill_between(z, low, high, color="0.85", step="mid", label=f"{1 - alpha:.0%} simultaneous band")
        top.plot(z, ecdf, color="tab:blue", drawstyle="steps-mid")
        top.axhline(0.0, color="0.4", linewidth=0.8)
        top.set_title(f"{name} (chi-square p = {result.p_values[name]:.2f})")
        top.set_xlabel("normalised rank")
        top.set_ylabel("ECDF − uniform")
        top.legend(loc="lower right", fontsize="small")
        widths = np.diff(edges)
        expected = widths / num_ranks * n
        low_count = scipy_stats.binom.ppf(0.005, n, widths / num_ranks)
        high_count = scipy_stats.binom.ppf(0.995, n, widths / num_ranks)
        bottom.hist(ranks, bins=edges, color="tab:blue", alpha=0.8)
        bottom.fill_between(edges, np.append(low_count, low_count[-1]), np.append(high_count, high_count[-1]),
                            color="0.85", step="post", zorder=0, label="99% range if uniform")
        bottom.step(edges, np.append(expected, expected[-1]), where="post", color="0.3", linewidth=0.8)
        bottom.set_xlabel(f"rank among {result.num_posterior_samples} posterior draws")
        bottom.set_ylabel("count")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig

