"""The posterior of standardised data as the process made them: the NIW likelihood integrated over each
dimension's location and scale.

:class:`~pyro_acp.models.NIWGaussianMixture` scores standardised data z = (x - mean) / sd as if the program had
drawn z itself. It did not: it drew x, and z is x's maximal invariant under x_d -> a_d + b_d x_d, so on small
tables the plain posterior over-counts clusters (``benchmarks/niw_standardization_calibration.py``). The
posterior given that invariant - the one the guides are trained for, since they learn from data drawn and then
standardised - has by Wijsman's representation the likelihood, up to a factor common to all partitions,

    L(partition | z) = int prod_d b_d^(N-2) p(a + b * z | partition) da db
                     = int exp((N - 1) sum_d u_d) p(a + e^u * z | partition) da du,      u = log b,

with p the model's collapsed likelihood (its mixture over scale nodes, ``models.niw``). Each cluster's count,
sum and sum of outer products move linearly with (a, b), so every evaluation is the NIW marginal of
transformed statistics. The 2D-dimensional integral is taken by importance sampling (:func:`invariant_log_likelihood`):
a broad multivariate Student-t over (a, u) first, then a Student-t fitted to the integrand's mass (summed over
the partitions asked about) and kept in a defensive mixture with the broad one, the same draws for every
partition so that their ratios carry little noise; each estimate has its delta-method standard error. For
D <= 2 a tensor Gauss-Legendre rule (:func:`invariant_log_likelihood_grid`) gives the same integral
deterministically, which is what the importance sampler is tested against. The statistics are those of the
distinct clusters of the partitions asked about (:func:`cluster_table`), computed once: the 2^N - 1 subsets of
the points when every partition of a small table is enumerated, only the clusters that occur when a guide's
samples are reweighted (``infer(..., reweight="invariant")``, on tables of any size).
"""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_acp.seeding import generator_rng

from .niw import MAX_INVARIANT_POINTS, niw_log_marginal

__all__ = ["MAX_INVARIANT_POINTS", "check_identified", "cluster_statistics", "cluster_table",
           "invariant_log_likelihood", "invariant_log_likelihood_grid"]

#: the broad first proposal over (a, u): Student-t degrees of freedom, location and scale of u = log b. A raw
#: draw's per-dimension standard deviation b is about 1 (the model's total variance) and can be as small as
#: the smallest within-cluster scale (0.05) when the points share one tight cluster
BROAD_DF, BROAD_U_LOC, BROAD_A_SCALE, BROAD_U_SCALE = 3.0, -0.5, 1.0, 1.2
#: the fitted proposal: degrees of freedom, covariance inflation, and the defensive share of broad draws
FITTED_DF, INFLATION, DEFENSIVE_SHARE = 5.0, 1.5 ** 2, 0.25
#: the integral is taken over |a_d| <= A, b_d in [b_lo, b_hi]: the integrand is negligible beyond (far-out
#: draws would also lose precision in the NIW statistics); below b_lo the cut mass scales as b_lo^(N - 1)
#: (1e-3 cost TV 2e-3 at N = 2, D = 1; small b carries no precision risk, the prior scale floors Psi_n)
BOX = (10.0, 1e-6, 20.0)
#: importance draws scored at once, at most (memory grows as draws x scale nodes x clusters x D x D) ...
DRAW_CHUNK = 1024
#: ... and fewer where that product would pass this many numbers (256 MiB of float64 per tensor)
CHUNK_ELEMENTS = 2 ** 25
#: fewer final draws than this give no usable error (and no fitted proposal)
MIN_DRAWS = 64
PARTITION_CHUNK = 64


def check_identified(z: Tensor) -> None:
    """ValueError naming the constant columns of standardised points z (N, D): the invariant posterior integrates
    over each column's scale, which such a column does not identify (the representation does not hold)."""
    constant = (z.amax(0) - z.amin(0) <= 1e-6 * z.abs().amax(0).clamp(min=1.0)).nonzero().flatten().tolist()
    if constant:
        raise ValueError(f"column(s) {constant} of the data are constant: the invariant posterior integrates over "
                         f"each column's scale, which such a column does not identify; drop it")


def cluster_table(partitions: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct clusters of canonical ``partitions`` (M, N): their members (Q, N) (0/1, one row per
    distinct cluster) and an index (M, K) whose slot k holds the row of cluster k, or Q (an empty slot, scored
    0) for k >= K of that partition. For all partitions of N points the rows are the 2^N - 1 non-empty
    subsets; for a guide's samples, only the clusters that occur."""
    num_slots = int(partitions.max()) + 1
    slots = torch.arange(num_slots, device=partitions.device).view(1, -1, 1)
    members = (partitions.unsqueeze(1) == slots).flatten(0, 1)  # (M * K, N)
    rows, index = members.unique(dim=0, return_inverse=True)
    occupied = rows.any(-1)
    # the empty slot (all False, when some partition has fewer than K clusters) is sorted first: drop it
    position = torch.cumsum(occupied, 0) - 1
    index = torch.where(occupied[index], position[index], int(occupied.sum()))
    return rows[occupied], index.view(-1, num_slots)


def cluster_statistics(z: Tensor, members: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Count (Q,), sum (Q, D) and sum of outer products (Q, D, D) of the points z (N, D) in each row of
    ``members`` (Q, N)."""
    members = members.to(z.dtype)
    return members.sum(-1), members @ z, torch.einsum("qn,nd,ne->qde", members, z, z)


def _transformed_cluster_marginals(model, statistics: tuple[Tensor, Tensor, Tensor], a: Tensor, u: Tensor) -> Tensor:
    """(G, S, Q + 1) log m_j of every cluster of y = a + e^u * z at every draw (a, u) (G, D) and scale node j;
    the last column (an empty slot) is 0."""
    count, total, outer = statistics
    b = u.exp().unsqueeze(1)  # (G, 1, D)
    c = count.view(1, -1, 1)
    scaled = b * total  # (G, Q, D): the cluster's sum of b * z
    loc = a.unsqueeze(1)
    total_y = c * loc + scaled
    outer_y = (b.unsqueeze(-1) * outer * b.unsqueeze(-2) + loc.unsqueeze(-1) * scaled.unsqueeze(-2)
               + scaled.unsqueeze(-1) * loc.unsqueeze(-2) + c.unsqueeze(-1) * loc.unsqueeze(-1) * loc.unsqueeze(-2))
    per = niw_log_marginal(count.expand(len(a), -1), total_y, outer_y, model.kappa, model.psi, model.nu0)
    return torch.cat([per, per.new_zeros(*per.shape[:-1], 1)], -1)


def _log_integrand(model, statistics, index: Tensor, num_points: int, a: Tensor, u: Tensor) -> Tensor:
    """(G, M) log of the integrand exp((N - 1) sum u) p(a + e^u z | partition) at draws (G, D) for the
    partitions whose cluster rows are ``index`` (M, K) (:func:`cluster_table`); -inf outside :data:`BOX`."""
    bound, b_lo, b_hi = BOX
    inside = ((a.abs() <= bound) & (u >= math.log(b_lo)) & (u <= math.log(b_hi))).all(-1, keepdim=True)  # (G, 1)
    a, u = torch.where(inside, a, 0.0), torch.where(inside, u, 0.0)
    per = _transformed_cluster_marginals(model, statistics, a, u)  # (G, S, Q + 1)
    log_v = model.scale_log_weights.to(per).view(1, -1, 1)
    jacobian = (num_points - 1) * u.sum(-1, keepdim=True)  # (G, 1)
    # the gather is (G, S, chunk, K): as many partitions at once as keep it within CHUNK_ELEMENTS
    chunk = max(1, min(PARTITION_CHUNK, CHUNK_ELEMENTS // (per.shape[0] * per.shape[1] * index.shape[-1])))
    return torch.cat([torch.logsumexp(per[:, :, rows].sum(-1) + log_v, 1)
                      for rows in index.split(chunk)], -1).masked_fill(~inside, -math.inf) + jacobian


def _draws_per_chunk(model, statistics, most: int = DRAW_CHUNK) -> int:
    """How many draws :func:`_log_integrand` takes at once: ``most``, fewer when the clusters' transformed outer
    products would pass :data:`CHUNK_ELEMENTS` numbers."""
    count, _, outer = statistics
    per_draw = len(model.scale_log_weights) * len(count) * outer.shape[-1] * outer.shape[-2]
    return max(1, min(most, CHUNK_ELEMENTS // per_draw))


def _log_integrand_chunked(model, statistics, index: Tensor, num_points: int, draws: Tensor) -> Tensor:
    """:func:`_log_integrand` at draws (G, 2D) = (a, u), a memory-bounded chunk of draws at a time."""
    dim = draws.shape[-1] // 2
    return torch.cat([_log_integrand(model, statistics, index, num_points, chunk[:, :dim], chunk[:, dim:])
                      for chunk in draws.split(_draws_per_chunk(model, statistics))])


def _broad_proposal(dim: int, dtype: torch.dtype) -> dist.MultivariateStudentT:
    loc = torch.cat([torch.zeros(dim, dtype=dtype), torch.full((dim,), BROAD_U_LOC, dtype=dtype)])
    scale = torch.cat([torch.full((dim,), BROAD_A_SCALE, dtype=dtype), torch.full((dim,), BROAD_U_SCALE, dtype=dtype)])
    return dist.MultivariateStudentT(torch.tensor(BROAD_DF, dtype=dtype), loc, torch.diag(scale))


def _fitted_proposal(draws: Tensor, log_weights: Tensor) -> dist.MultivariateStudentT | None:
    """A Student-t with the weighted draws' mean and inflated covariance; None when too few draws carry the
    weight for a covariance (Kish effective size below 4 per coordinate)."""
    if not bool(torch.isfinite(log_weights).any()):
        return None
    w = torch.softmax(log_weights, 0)
    if 1.0 / float(w.square().sum()) < 4 * draws.shape[-1]:
        return None
    mean = w @ draws
    centred = draws - mean
    cov = (w.unsqueeze(-1) * centred).T @ centred * INFLATION
    cov = cov + 1e-6 * torch.eye(len(mean), dtype=cov.dtype)
    return dist.MultivariateStudentT(torch.tensor(FITTED_DF, dtype=draws.dtype), mean, torch.linalg.cholesky(cov))


def invariant_log_likelihood(model, z: Tensor, partitions: Tensor, proposal_log_weights: Tensor, num_draws: int,
                             generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """log L(partition | z) (M,) of standardised points z (N, D) for ``partitions`` (M, N), up to a constant
    common to all partitions, and its standard error (M,) in nats (module docstring).

    ``num_draws`` (at least :data:`MIN_DRAWS`) broad draws fit the second proposal to the integrand's mass
    summed over the partitions, weighted by ``proposal_log_weights`` (M,) (with the partitions' prior
    probabilities, or their importance weights p(c) / q(c) when they are a guide's samples, this is their
    posterior mixture over (a, u));
    then ``num_draws`` fresh draws, a quarter of them from the broad proposal, give every partition's estimate
    (the same draws for all). ValueError when a column of z is constant (its scale is then unidentified and the
    representation does not hold) or when no draw falls where the integrand lives."""
    if num_draws < MIN_DRAWS:
        raise ValueError(f"the invariant likelihood needs num_particles >= {MIN_DRAWS} importance draws, got "
                         f"{num_draws}")
    z = z.to(torch.float64)
    check_identified(z)
    members, index = cluster_table(partitions)
    dim, num_points, statistics = z.shape[-1], z.shape[0], cluster_statistics(z, members)
    broad = _broad_proposal(dim, z.dtype)
    with generator_rng(generator):
        first = broad.sample((num_draws,))
    log_f = _log_integrand_chunked(model, statistics, index, num_points, first)
    fitted = _fitted_proposal(first, torch.logsumexp(log_f + proposal_log_weights, -1) - broad.log_prob(first))
    if fitted is None:
        draws, log_q = first, broad.log_prob(first)
    else:
        num_broad = round(DEFENSIVE_SHARE * num_draws)
        with generator_rng(generator):
            draws = torch.cat([broad.sample((num_broad,)), fitted.sample((num_draws - num_broad,))])
        # the balance heuristic: with fixed shares of draws from each, f / (sum_i share_i q_i) is unbiased
        share = num_broad / num_draws
        log_q = torch.logaddexp(math.log(share) + broad.log_prob(draws),
                                math.log1p(-share) + fitted.log_prob(draws))
        log_f = _log_integrand_chunked(model, statistics, index, num_points, draws)
    log_w = log_f - log_q.unsqueeze(-1)  # (G, M)
    if not bool(torch.isfinite(log_w).any(0).all()):
        raise ValueError("no importance draw fell where the invariant likelihood of some partition lives: more "
                         "draws are needed (exact_posterior's num_particles)")
    estimate = torch.logsumexp(log_w, 0) - math.log(len(draws))
    ratio = (log_w - log_w.amax(0)).exp()  # delta method on the mean of the weights, in log space
    error = (ratio.var(0) / len(draws)).sqrt() / ratio.mean(0)
    return estimate, error


def _gauss_legendre(lo: float, hi: float, size: int) -> tuple[Tensor, Tensor]:
    u, w = np.polynomial.legendre.leggauss(size)
    return (torch.tensor(0.5 * (hi - lo) * u + 0.5 * (hi + lo)), torch.tensor(np.log(w * 0.5 * (hi - lo))))


def invariant_log_likelihood_grid(model, z: Tensor, partitions: Tensor, grid: tuple[int, int, float, float, float],
                                  node_chunk: int = 16384) -> Tensor:
    """log L(partition | z) (M,) by a tensor Gauss-Legendre rule, up to a constant common to all partitions.

    ``grid`` = (nodes per location, nodes per log scale, A, b_lo, b_hi): a in [-A, A]^D, u in
    [log b_lo, log b_hi]^D; (size_a * size_u)^D nodes, taken ``node_chunk`` at a time (fewer when memory asks),
    so this is for D <= 2."""
    size_a, size_u, bound, b_lo, b_hi = grid
    a, wa = _gauss_legendre(-bound, bound, size_a)
    u, wu = _gauss_legendre(math.log(b_lo), math.log(b_hi), size_u)
    dim = z.shape[-1]
    nodes = torch.cartesian_prod(*([a] * dim + [u] * dim)).view(-1, 2 * dim)
    log_w = torch.cartesian_prod(*([wa] * dim + [wu] * dim)).view(-1, 2 * dim).sum(-1)
    z = z.to(torch.float64)
    members, index = cluster_table(partitions)
    statistics = cluster_statistics(z, members)
    chunk_size = _draws_per_chunk(model, statistics, node_chunk)
    per_chunk = [torch.logsumexp(_log_integrand(model, statistics, index, len(z), chunk[:, :dim], chunk[:, dim:])
                                 + weights.unsqueeze(-1), 0)
                 for chunk, weights in zip(nodes.split(chunk_size), log_w.split(chunk_size), strict=True)]
    return torch.logsumexp(torch.stack(per_chunk), 0)
