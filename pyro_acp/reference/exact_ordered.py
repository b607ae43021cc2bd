"""The exact posterior over *ordered* partitions of a tiny catalog, by enumeration and numerical integration.

A model whose clusters are ordered by the norms of their latent means (:class:`NormOrderedModel`, e.g.
:class:`~pyro_acp.models.OrderedGaussianCatalog`) has, for a latent partition pi with clusters 1..K,

    p(pi, sigma | x) = p(pi | x) P(||mu_sigma(1)|| < ... < ||mu_sigma(K)|| | pi, x),

where the means are independent a posteriori, mu_k | pi, x ~ N(m_k, v_k I_D) (conjugate). So r_k = ||mu_k||
has r_k^2 / v_k ~ noncentral chi-square(D, ||m_k||^2 / v_k) with CDF F_k (SciPy's ``ncx2``), and the
probability of an order is the iterated integral

    Q_1(r) = F_sigma(1)(r),   Q_j(r) = int_0^r Q_{j-1}(t) dF_sigma(j)(t),   P(sigma | pi, x) = Q_K(inf),

computed on a uniform grid over [0, R] (R = max_k ||m_k|| + 12 sqrt(v_k)) with the trapezoid rule in the
Stieltjes sense (cell masses of F_sigma(j) times the mean of Q_{j-1} at the cell's ends; error O(h^2)).
For K = 2 this rule telescopes, so the two orders' probabilities sum to exactly one. Every latent partition
pi (Bell(N)) and every order of its clusters (K! each: Fubini(N) pairs, 47,293 at N = 7) is scored; the
pair becomes position labels with the model's own rule (``order_labels``: clusters above the size cap
become consecutive parts), and pairs giving the same labels add up. The reported ``integration_error``
estimates the total variation between the computed and the exact posterior: sum_pi p(pi | x) sum_sigma
|P_h - P_2h| / 3, from a second pass on every other grid point (2h); the probabilities themselves are
Richardson-extrapolated, P_h + (P_h - P_2h) / 3, so their error is smaller still.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from pyro_acp.data.partitions import enumerate_partitions
from pyro_acp.posteriors.ordered import OrderedExactPosterior
from pyro_acp.validation import check_positive_int

MAX_EXACT_ORDERED_POINTS = 7
DEFAULT_GRID_SIZE = 1024

__all__ = ["MAX_EXACT_ORDERED_POINTS", "NormOrderedModel", "distinct_clusters", "exact_ordered_posterior",
           "order_log_probabilities", "order_probabilities"]


@runtime_checkable
class NormOrderedModel(Protocol):
    """A model whose clusters are ordered by the norms of independent Gaussian latent means (see the module
    docstring): what :func:`exact_ordered_posterior` needs."""

    ordered: bool

    def check_data(self, x: Any) -> Tensor: ...

    def log_partition_joint(self, x: Any, partitions: Any) -> Tensor: ...

    def mean_posterior(self, x: Any, partitions: Any) -> tuple[Tensor, Tensor]: ...

    def order_labels(self, partitions: Any, order: Tensor) -> Tensor: ...


def _norm_cdfs(loc: Tensor, var: Tensor, grid: Tensor) -> Tensor:
    """CDFs (U, G) of ||mu|| for mu ~ N(loc (U, D), var (U,) I) at the grid points (G,)."""
    from scipy.stats import ncx2  # imported on use (SciPy's stats are slow to import)

    dim = loc.shape[-1]
    noncentral = (loc.square().sum(-1) / var).numpy()[:, None]
    scaled = (grid.square()[None, :] / var[:, None]).numpy()
    return torch.from_numpy(ncx2.cdf(scaled, dim, noncentral))


def _iterated(cdfs: Tensor, orders: Tensor) -> Tensor:
    """P(order) (R,) for rows of cluster indices into ``cdfs`` (U, G), smallest norm first (the recursion)."""
    q = cdfs[orders[:, 0]]
    for j in range(1, orders.shape[1]):
        f = cdfs[orders[:, j]]
        mass = (f[:, 1:] - f[:, :-1]) * 0.5 * (q[:, 1:] + q[:, :-1])
        q = torch.cat([q.new_zeros(q.shape[0], 1), mass.cumsum(-1)], -1)
    return q[:, -1]


def _grid_cdfs(loc: Tensor, var: Tensor, grid_size: int) -> Tensor:
    """CDFs (U, G + 1) of ||mu_u|| on the uniform grid over [0, R] (G even), the last point taking the tail."""
    loc, var = loc.detach().cpu().to(torch.float64), var.detach().cpu().to(torch.float64)
    top = float((loc.norm(dim=-1) + 12.0 * var.sqrt()).max())
    grid = torch.linspace(0.0, top, 2 * max(grid_size // 2, 1) + 1, dtype=torch.float64)
    cdfs = _norm_cdfs(loc, var, grid)
    cdfs[:, -1] = 1.0  # beyond 12 sd: the rest of the mass, so each F ends at one
    return cdfs


def _extrapolated(cdfs: Tensor, orders: Tensor, chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """Richardson-extrapolated P(order) (R,) from the grid (h) and every other point (2h), and |P_h - P_2h| / 3."""
    if orders.shape[1] == 1:  # one cluster: one order
        ones = torch.ones(orders.shape[0], dtype=torch.float64)
        return ones, torch.zeros_like(ones)
    fine = torch.cat([_iterated(cdfs, rows) for rows in orders.split(chunk_size)])
    coarse = torch.cat([_iterated(cdfs[:, ::2], rows) for rows in orders.split(chunk_size)])
    correction = (fine - coarse) / 3.0  # the O(h^2) error of the fine grid
    return (fine + correction).clamp(min=0.0), correction.abs()


def order_probabilities(loc: Tensor, var: Tensor, orders: Tensor, *, grid_size: int = DEFAULT_GRID_SIZE
                        ) -> tuple[Tensor, Tensor]:
    """P(||mu_o1|| < ... < ||mu_oK||) for independent mu_u ~ N(loc_u, var_u I), and its error estimate.

    ``loc`` (U, D), ``var`` (U,) describe U latent means; ``orders`` (R, K) rows of indices into them (a
    row's own K means, smallest norm first). By the grid recursion of the module docstring on the grid (h)
    and on every other point (2h): returns float64 (R,) Richardson-extrapolated probabilities
    P_h + (P_h - P_2h) / 3 and (R,) error estimates |P_h - P_2h| / 3 (the error of P_h, an upper estimate
    for the extrapolation).
    """
    cdfs = _grid_cdfs(loc, var, check_positive_int(grid_size, "grid_size"))
    return _extrapolated(cdfs, orders)


def distinct_clusters(partitions: Tensor, loc: Tensor, var: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every distinct cluster (member set) of partitions (M, N) once: its mean posterior ``loc`` (C, D) and
    ``var`` (C,) picked from the partitions' (M, K, D) / (M, K) (clusters numbered by first appearance), and
    ``index`` (M, K) of each partition's clusters among them. The empty set (a partition's unused slots) gets
    the smallest variance, so it never widens the CDF grid (it is never ordered)."""
    rows, k = loc.shape[:2]
    members = partitions.unsqueeze(1) == torch.arange(k, device=partitions.device).view(1, -1, 1)  # (M, K, N)
    sets, index = members.reshape(rows * k, -1).unique(dim=0, return_inverse=True)
    first = torch.full((sets.shape[0],), rows * k, dtype=torch.long).scatter_reduce(
        0, index.cpu(), torch.arange(rows * k), "amin")
    set_loc, set_var = loc.reshape(rows * k, -1)[first].cpu(), var.reshape(-1)[first].cpu().clone()
    empty = ~sets.any(-1).cpu()
    set_var[empty] = set_var[~empty].min()
    return set_loc, set_var, index.view(rows, k).cpu()


def order_log_probabilities(loc: Tensor, var: Tensor, orders: Tensor, num_clusters: Tensor, *,
                            grid_size: int = DEFAULT_GRID_SIZE) -> Tensor:
    """log P(||mu_o1|| < ... < ||mu_oK||) (R,) of rows of different lengths: ``orders`` (R, K_max) indices into
    the U means ``loc`` (U, D), ``var`` (U,), row r's first ``num_clusters[r]`` entries its order (the rest
    ignored). One grid of CDFs for all U means (as :func:`exact_ordered_posterior`), then the recursion for
    the rows of each length; 0 for a row of one cluster."""
    cdfs = _grid_cdfs(loc, var, check_positive_int(grid_size, "grid_size"))
    log_probs = torch.zeros(orders.shape[0], dtype=torch.float64)
    for size in range(2, int(num_clusters.max()) + 1):
        pick = (num_clusters == size).nonzero().flatten()
        if pick.numel():
            log_probs[pick] = _extrapolated(cdfs, orders[pick, :size])[0].log()
    return log_probs


def _orders_of(num_clusters: Tensor) -> tuple[Tensor, Tensor]:
    """Every (partition index, order of its clusters) pair: (R,) partition rows and (R, K_max) permutations
    whose first K entries order the partition's K clusters (the empty slots K..K_max-1 follow), partitions
    grouped by their number of clusters (one itertools.permutations table per K)."""
    rows, orders = [], []
    k_max = int(num_clusters.max())
    for k in range(1, k_max + 1):
        parts = (num_clusters == k).nonzero().flatten()
        if not parts.numel():
            continue
        perms = torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long)  # (k!, k)
        rows.append(parts.repeat_interleave(perms.shape[0]))
        padded = torch.arange(k_max).repeat(perms.shape[0], 1)
        padded[:, :k] = perms
        orders.append(padded.repeat(parts.numel(), 1))
    return torch.cat(rows), torch.cat(orders)


def exact_ordered_posterior(model: NormOrderedModel, x: Any, *, grid_size: int = DEFAULT_GRID_SIZE
                            ) -> OrderedExactPosterior:
    """The exact posterior over ordered partitions (position labels) of N <= 7 points (module docstring).

    Returns an :class:`~pyro_acp.posteriors.ordered.OrderedExactPosterior` whose ``partitions`` are the
    ordered partitions with positive probability, ``probs`` their probabilities, ``log_joint`` their
    log p(ordered partition, x), and ``integration_error`` the estimated total variation of the numerical
    integration (of the order of 1e-4 at the default grid).
    """
    if not isinstance(model, NormOrderedModel) or not getattr(model, "ordered", False):
        raise TypeError(f"exact_ordered_posterior needs an ordered model with log_partition_joint, mean_posterior "
                        f"and order_labels (NormOrderedModel: clusters ordered by the norms of Gaussian means); "
                        f"{type(model).__name__} is not one")
    began = time.perf_counter()
    data = model.check_data(x).to(torch.float64)
    num_points = int(data.shape[0])
    if num_points > MAX_EXACT_ORDERED_POINTS:
        raise ValueError(f"exact ordered enumeration is limited to N <= {MAX_EXACT_ORDERED_POINTS} points (every "
                         f"partition times every order of its clusters); this data set has N = {num_points}")
    partitions = enumerate_partitions(num_points)
    log_joint = model.log_partition_joint(data, partitions).to(torch.float64).cpu()
    log_post = log_joint - torch.logsumexp(log_joint, 0)
    loc, var = model.mean_posterior(data, partitions)  # (M, K, D), (M, K)
    k = partitions.max(-1).values + 1
    rows, orders = _orders_of(k)
    sub_loc, sub_var, subset_of = distinct_clusters(partitions, loc, var)  # each distinct cluster scored once
    index = subset_of[rows].gather(1, orders)
    probs = torch.empty(rows.shape[0], dtype=torch.float64)
    error = torch.empty(rows.shape[0], dtype=torch.float64)
    cdfs = _grid_cdfs(sub_loc, sub_var, check_positive_int(grid_size, "grid_size"))
    for size in range(1, int(k.max()) + 1):  # rows of one number of clusters at a time (no padding)
        pick = (k[rows] == size).nonzero().flatten()
        probs[pick], error[pick] = _extrapolated(cdfs, index[pick, :size])
    total = torch.zeros(partitions.shape[0], dtype=torch.float64).index_add_(0, rows, probs)
    probs = probs / total[rows]  # each partition's orders sum to one (off by the integration error only)
    integration_error = float((log_post[rows].exp() * error).sum())
    labels = model.order_labels(partitions[rows], orders)
    row_log_joint = log_joint[rows] + probs.log()
    ordered, inverse = labels.unique(dim=0, return_inverse=True)  # cap splits can map pairs to one labelling
    merged = torch.full((ordered.shape[0],), -math.inf, dtype=torch.float64).scatter_reduce(
        0, inverse, row_log_joint, "amax")
    merged = merged + torch.zeros_like(merged).index_add_(0, inverse, (row_log_joint - merged[inverse]).exp()).log()
    keep = merged > -math.inf
    return OrderedExactPosterior.from_log_joint(
        ordered[keep], merged[keep], method="exact", wall_time=time.perf_counter() - began, x=x, model=model,
        integration_error=integration_error,
    )
