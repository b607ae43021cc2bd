"""The default model for real data: a CRP mixture of full-covariance Gaussians, Normal-Inverse-Wishart clusters.

**A model of standardised data.** ``check_data`` centres every dimension and divides it by its standard
deviation (population form; a constant dimension is only centred), and ``simulate`` does the same to every
simulated data set (masked) before the guide sees it, then turns it by a uniformly random rotation. So
everything downstream - the guide, the MAP ranking, collapsed Gibbs, exact enumeration, reweighting - sees
z = (x - mean) / sd, and no result depends on the data's units or offsets. Standardising is idempotent, so
a data set that is already standardised is left as it is (up to round-off).

**Generative process** of z (D dimensions, N points), with hyperpriors on fixed quadrature grids:

    alpha ~ sum_a w_a delta(alpha_a)             concentration: Gauss-Legendre nodes on log alpha in
                                                 ``alpha_range``, weights from a Gamma(shape, rate) prior
    s ~ sum_j v_j delta(s_j)                     within-cluster scale (a fraction of the unit variance):
                                                 Gauss-Legendre nodes on log s in ``scale_range``, log-uniform
    partition ~ CRP(alpha)
    Sigma_k ~ InverseWishart(nu0, Psi_j),        nu0 = D + 3, Psi_j = 2 s_j^2 I   (so E Sigma_k = s_j^2 I)
    mu_k | Sigma_k ~ N(0, Sigma_k / kappa_j),    kappa_j = s_j^2 / (1 - s_j^2)   (so E mu mu^T = (1 - s_j^2) I)
    z_i ~ N(mu_{c_i}, Sigma_{c_i})

Every grid node has E[within-cluster covariance] + E[mean spread] = I, the covariance of standardised data:
that is the prior on the cluster means' spread that matches standardisation. The grids are part of the
model (not an approximation made when scoring it): the prior of alpha IS the discrete law on the nodes,
and so is the prior of s. Because alpha only touches the partition and s only the data,

    p(partition) = sum_a w_a CRP(partition | alpha_a)                 (a Gibbs-type prior, c = 0,
                                                                       V(n, K) = sum_a w_a alpha_a^K / (alpha_a)_n)
    p(z | partition) = sum_j v_j prod_k m_j(z_k)                      (log-sum-exp over the nodes)

are exact finite mixtures, with m_j the NIW marginal of one cluster (m0 = 0):

    log m_j = -(n D / 2) log pi + log Gamma_D(nu_n / 2) - log Gamma_D(nu0 / 2)
              + (nu0 / 2) log |Psi_j| - (nu_n / 2) log |Psi_n| + (D / 2) log(kappa_j / kappa_n),
    kappa_n = kappa_j + n,  nu_n = nu0 + n,  Psi_n = Psi_j + sum_i z_i z_i^T - (sum_i z_i)(sum_i z_i)^T / kappa_n,

which needs only each cluster's count, sum and sum of outer products (and is 0 for an empty cluster). The
chain of multivariate Student-t predictives gives the same numbers (a test checks it). A point's collapsed
predictive given the other points' partition is a mixture over the s nodes whose weights are the nodes'
posterior given the other points: log sum_j v_j L_j m_j(z_k + z_i) / m_j(z_k) - log sum_j v_j L_j, with
L_j = prod_k m_j(z_k) (:class:`NIWGibbsStatistics`, what collapsed Gibbs updates point by point).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.distributions.gibbs_type import GibbsPartition
from pyro_acp.seeding import generator_rng
from pyro_acp.validation import check_positive, check_positive_int, check_vectors

from .base import ExactLikelihood, GenerativeModel

__all__ = ["GridCRP", "NIWGaussianMixture", "NIWGibbsStatistics", "log_grid", "niw_log_marginal", "niw_stats",
           "standardize"]

EXTRA_DOF = 3  # nu0 = D + 3: the smallest integer degrees of freedom with a finite mean and variance of Sigma


def log_grid(lo: float, hi: float, size: int, log_density: Any = None) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes on log t in [log lo, log hi] (float64 values t (size,)) and normalised log weights.

    ``log_density(t)`` is the log density of the prior in t (None: log-uniform); the weight of node j is the
    quadrature weight times the density of u = log t, p(t) t, normalised to sum to one.
    """
    if not 0 < lo < hi:
        raise ValueError(f"a grid range needs 0 < lo < hi, got ({lo}, {hi})")
    u, w = np.polynomial.legendre.leggauss(check_positive_int(size, "grid_size"))
    a, b = math.log(lo), math.log(hi)
    u = torch.as_tensor(0.5 * (b - a) * u + 0.5 * (b + a), dtype=torch.float64)
    log_w = torch.log(torch.as_tensor(w, dtype=torch.float64))
    t = u.exp()
    if log_density is not None:
        log_w = log_w + log_density(t) + u
    return t, log_w - torch.logsumexp(log_w, 0)


class GridCRP(GibbsPartition):
    """The CRP with its concentration drawn from a discrete law on ``alphas`` (log weights ``log_weights``).

    Gibbs-type with c = 0 and V(n, K) = sum_a w_a alpha_a^K Gamma(alpha_a) / Gamma(alpha_a + n): exact
    ``log_prob``, seating weights and sampling come from that form (:class:`GibbsPartition`).
    """

    size_shift = 0.0

    def __init__(self, num_points: int, alphas: Tensor, log_weights: Tensor, validate_args: bool | None = None):
        self.alphas = torch.as_tensor(alphas, dtype=torch.float64)
        self.log_weights = torch.as_tensor(log_weights, dtype=torch.float64)
        if self.alphas.dim() != 1 or self.alphas.shape != self.log_weights.shape or not bool((self.alphas > 0).all()):
            raise ValueError("alphas must be positive, one per log weight, both of shape (S,)")
        super().__init__(num_points, torch.get_default_dtype(), torch.device("cpu"), validate_args=validate_args)

    def _params(self) -> dict[str, float]:
        return {"mean_alpha": float((self.log_weights.exp() * self.alphas).sum())}

    def log_v(self, n: Tensor, k: Tensor, bound: int) -> Tensor:
        n = torch.as_tensor(n, dtype=torch.float64)
        k = torch.as_tensor(k, device=n.device).to(torch.float64)
        n, k = torch.broadcast_tensors(n, k)
        alphas, log_w = self.alphas.to(n.device), self.log_weights.to(n.device)
        terms = (log_w + k.unsqueeze(-1) * alphas.log() + torch.lgamma(alphas)
                 - torch.lgamma(alphas + n.unsqueeze(-1)))
        valid = (k <= n) & ((k >= 1) | (n == 0))
        return torch.where(valid, torch.logsumexp(terms, -1), -math.inf)


def standardize(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Centre every dimension of data sets x (..., N, D) and divide it by its population standard deviation.

    ``mask`` (..., N) marks the real points (the others are set to 0); a dimension with zero spread is only
    centred.
    """
    weight = torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
    weight = weight.unsqueeze(-1)
    count = weight.sum(-2, keepdim=True).clamp(min=1)
    mean = (x * weight).sum(-2, keepdim=True) / count
    centred = (x - mean) * weight
    sd = (centred.square().sum(-2, keepdim=True) / count).sqrt()
    return centred / torch.where(sd > 0, sd, 1.0)


def niw_stats(x: Tensor, labels: Tensor, num_clusters: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-cluster count (..., K), sum (..., K, D) and sum of outer products (..., K, D, D); label -1 skipped.

    ``x`` (..., N, D) and ``labels`` (..., N) broadcast over leading dimensions.
    """
    z = (labels.unsqueeze(-1) == torch.arange(num_clusters, device=labels.device)).to(x.dtype)  # (..., N, K)
    outer = x.unsqueeze(-1) * x.unsqueeze(-2)  # (..., N, D, D)
    return z.sum(-2), z.transpose(-1, -2) @ x, torch.einsum("...nk,...nde->...kde", z, outer)


def niw_log_marginal(count: Tensor, total: Tensor, outer: Tensor, kappa: Tensor, psi: Tensor, nu0: float) -> Tensor:
    """log m_j of every cluster at every grid node, (..., S, K), from statistics (..., K), (..., K, D), (..., K, D, D).

    ``kappa`` and ``psi`` (S,) are the nodes' kappa_j and Psi_j = psi_j I (see the module docstring); an empty
    cluster gives 0.
    """
    dim = total.shape[-1]
    kappa = kappa.to(total).view(-1, 1)  # (S, 1)
    psi = psi.to(total).view(-1, 1)
    count, total, outer = count.unsqueeze(-2), total.unsqueeze(-3), outer.unsqueeze(-4)  # node axis
    kappa_n = kappa + count  # (..., S, K)
    nu_n = nu0 + count
    eye = torch.eye(dim, dtype=total.dtype, device=total.device)
    psi_n = (psi.unsqueeze(-1).unsqueeze(-1) * eye + outer
             - total.unsqueeze(-1) * total.unsqueeze(-2) / kappa_n.unsqueeze(-1).unsqueeze(-1))
    log_det = 2 * torch.linalg.cholesky(psi_n).diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return (-0.5 * count * dim * math.log(math.pi) + torch.mvlgamma(nu_n / 2, dim) - _lmvgamma_half(nu0, dim)
            + 0.5 * nu0 * dim * psi.log() - 0.5 * nu_n * log_det + 0.5 * dim * (kappa.log() - kappa_n.log()))


def _lmvgamma_half(nu: float, dim: int) -> float:
    """log Gamma_D(nu / 2) as a Python float."""
    return float(torch.mvlgamma(torch.tensor(nu / 2, dtype=torch.float64), dim))


def _mixture_predictive(m_old: Tensor, m_new: Tensor, log_v: Tensor) -> Tensor:
    """log p(z_i | the others' partition) per slot (..., W) from the slots' log marginals without (m_old) and
    with (m_new) point i, both (..., S, W), at nodes of log weight ``log_v`` (S,): a mixture over the nodes
    weighted by their posterior given the other points."""
    base = log_v.to(m_old).unsqueeze(-1) + m_old.sum(-1, keepdim=True)  # (..., S, 1)
    return torch.logsumexp(base + m_new - m_old, -2) - torch.logsumexp(base, -2)


def _random_rotations(batch: int, dim: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """(batch, dim, dim) Haar-distributed orthogonal matrices (QR of Gaussian matrices, signs fixed)."""
    a = torch.randn(batch, dim, dim, generator=generator, device=generator.device, dtype=dtype)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(r.diagonal(dim1=-2, dim2=-1)).unsqueeze(-2)


#: the invariant posterior is enumerated up to this many points: its likelihood scores every subset of the points at
#: every importance draw, 2^N - 1 subsets, Bell(N) partitions (4,140 at N = 8)
MAX_INVARIANT_POINTS = 8

#: below this many points check_data warns that standardising biases K (measured at N = 4 to 9)
SMALL_TABLE = 10


class NIWGaussianMixture(ExactLikelihood, GenerativeModel):
    """CRP mixture of full-covariance Gaussians under a Normal-Inverse-Wishart prior, for standardised data.

    See the module docstring for the process, the hyperprior grids and the exact collapsed likelihood.

    Args:
        dim: data dimension D.
        alpha_shape, alpha_rate: the Gamma prior of the CRP concentration, placed on ``grid_size``
            Gauss-Legendre nodes of log alpha in ``alpha_range``.
        scale_range: range of the within-cluster scale s (standard deviations of standardised data, so in
            (0, 1)), log-uniform on ``grid_size`` Gauss-Legendre nodes of log s.
        grid_size: number of nodes of each grid.
    """

    data_kind = "vector"
    ordered = False
    default_num_points = (2, 200)
    rotation_invariant = True  # Psi = psi I and mean 0: the likelihood of standardised data is isotropic
    #: below this size the guides target the invariant posterior, not the plain one (data_warnings)
    plain_posterior_from_points = SMALL_TABLE

    def __init__(self, dim: int = 2, alpha_shape: float = 1.0, alpha_rate: float = 1.0,
                 alpha_range: tuple[float, float] = (0.02, 10.0), scale_range: tuple[float, float] = (0.05, 0.9),
                 grid_size: int = 8):
        self.dim = check_positive_int(dim, "dim")
        shape, rate = check_positive(alpha_shape, "alpha_shape"), check_positive(alpha_rate, "alpha_rate")
        alpha_range = tuple(float(v) for v in alpha_range)
        scale_range = tuple(float(v) for v in scale_range)
        if len(alpha_range) != 2 or len(scale_range) != 2:
            raise ValueError("alpha_range and scale_range must be pairs (lo, hi)")
        if not 0 < scale_range[0] < scale_range[1] < 1:
            raise ValueError(f"scale_range must satisfy 0 < lo < hi < 1 (a fraction of the unit variance of "
                             f"standardised data), got {scale_range}")
        self.grid_size = check_positive_int(grid_size, "grid_size")
        self.alphas, self.alpha_log_weights = log_grid(
            *alpha_range, grid_size, lambda a: (shape - 1) * a.log() - rate * a)
        self.scales, self.scale_log_weights = log_grid(*scale_range, grid_size)
        var = self.scales.square()
        self.kappa = var / (1 - var)  # E mu mu^T = E Sigma / kappa = (1 - s^2) I
        self.psi = (EXTRA_DOF - 1) * var  # E Sigma = Psi / (nu0 - D - 1) = s^2 I
        self.nu0 = float(self.dim + EXTRA_DOF)
        super().__init__(dim=self.dim, alpha_shape=shape, alpha_rate=rate, alpha_range=alpha_range,
                         scale_range=scale_range, grid_size=self.grid_size)

    @property
    def data_dim(self) -> int:
        return self.dim

    def check_data(self, x: Any) -> Tensor:
        """Points (N, D), validated, then standardised per dimension (:func:`standardize`): the model's data."""
        return standardize(check_vectors(x, self.dim))

    def data_warnings(self, x: Tensor) -> list[str]:
        """What a user should know about validated data ``x`` before reading its posterior.

        Below ``SMALL_TABLE`` points: the posterior given standardised data over-counts clusters there
        (``benchmarks/niw_standardization_calibration.py``); the invariant posterior
        (``exact_posterior(..., invariant=True)``, :mod:`pyro_acp.models.niw_invariant`) does not. Entry points
        (``infer``, ``exact_posterior``, collapsed Gibbs) report these once per call
        (:func:`pyro_acp.validation.warn_about_data`)."""
        if len(x) >= SMALL_TABLE:
            return []
        return [f"NIWGaussianMixture on a table of {len(x)} points: the model's posterior given standardised data "
                f"over-counts clusters on small tables (on its own simulations, E[K | data] - K = +1.2 at N = 4 "
                f"and +1.85 at N = 9, where the likelihood alone is calibrated); the posterior of data drawn and "
                f"then standardised is calibrated: infer(model, x, reweight='invariant') weighs the guide's samples "
                f"towards it, and for N <= {MAX_INVARIANT_POINTS} exact_posterior(model, x, invariant=True) "
                f"enumerates it (docs/shipped-guides.md)"]

    def partition_prior(self, num_points: int) -> GridCRP:
        return GridCRP(check_positive_int(num_points, "num_points"), self.alphas, self.alpha_log_weights)

    # ------------------------------------------------------------------ the Pyro program and the simulator
    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        device = obs.device if obs is not None else torch.device("cpu")
        dtype = obs.dtype if obs is not None else torch.get_default_dtype()
        labels = pyro.sample("labels", self.partition_prior(num_points)).to(device)
        node = pyro.sample("scale_node", dist.Categorical(logits=self.scale_log_weights.to(device, dtype)))
        pyro.deterministic("scale", self.scales.to(device, dtype)[node])
        eye = torch.eye(self.dim, dtype=dtype, device=device)
        with pyro.plate("clusters", int(labels.max()) + 1), warnings.catch_warnings():
            # torch's Wishart.rsample flags its valid (positive definite) draws as singular and redraws them
            # (the same law): its "Singular sample detected" warning is spurious here
            warnings.filterwarnings("ignore", "Singular sample detected", UserWarning)
            precision = pyro.sample("precision", dist.Wishart(torch.tensor(self.nu0, dtype=dtype, device=device),
                                                              covariance_matrix=eye / self.psi.to(eye)[node]))
            means = pyro.sample("means", dist.MultivariateNormal(
                torch.zeros(self.dim, dtype=dtype, device=device),
                precision_matrix=self.kappa.to(eye)[node] * precision))
        with pyro.plate("points", num_points):
            return pyro.sample("x", dist.MultivariateNormal(means[labels], precision_matrix=precision[labels]),
                               obs=obs)

    def _simulate(self, sizes: Tensor, mask: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Labels from the grid CRP, a scale node per data set, NIW clusters; each data set standardised
        (masked) and turned by a random rotation, as the guide sees data."""
        batch, n = mask.shape
        device, dtype, d = mask.device, torch.get_default_dtype(), self.dim
        labels = self.sample_prior(n, batch, generator).masked_fill(~mask, -1)
        k = int(labels.max()) + 1
        node = torch.multinomial(self.scale_log_weights.exp().to(device), batch, replacement=True,
                                 generator=generator)
        psi, kappa = self.psi.to(device, dtype)[node], self.kappa.to(device, dtype)[node]
        # Bartlett: precision = A A^T / psi ~ Wishart(nu0, I / psi), A lower triangular, A_ii^2 ~ chi2(nu0 - i)
        shape = torch.arange(d, dtype=torch.float64, device=device).mul(-0.5).add(0.5 * self.nu0)
        with generator_rng(generator):
            chi2 = 2 * torch._standard_gamma(shape.expand(batch, k, d).contiguous())
        lower = torch.randn(batch, k, d, d, generator=generator, device=device, dtype=torch.float64).tril(-1)
        lower = lower + torch.diag_embed(chi2.sqrt())
        # Sigma = L^-T L^-1 with precision = L L^T, L = A / sqrt(psi), so L^-T eps ~ N(0, Sigma)
        upper = (lower / psi.to(torch.float64).sqrt().view(-1, 1, 1, 1)).transpose(-1, -2)
        eps = torch.randn(batch, k + n, d, 1, generator=generator, device=device, dtype=torch.float64)
        means = torch.linalg.solve_triangular(upper, eps[:, :k], upper=True).squeeze(-1)
        means = means / kappa.to(torch.float64).sqrt().view(-1, 1, 1)
        index = labels.clamp(min=0)
        rows = torch.arange(batch, device=device).unsqueeze(-1)
        noise = torch.linalg.solve_triangular(upper[rows, index], eps[:, k:], upper=True).squeeze(-1)
        x = standardize(means[rows, index] + noise, mask).to(dtype)
        x = x @ _random_rotations(batch, d, generator, dtype).transpose(-1, -2)
        return {"x": x, "labels": labels}

    # ------------------------------------------------------------------ exact collapsed likelihood
    def _node_marginals(self, count: Tensor, total: Tensor, outer: Tensor) -> Tensor:
        return niw_log_marginal(count, total, outer, self.kappa, self.psi, self.nu0)

    def log_marginal_likelihood(self, x: Any, labels: Any) -> Tensor:
        """log p(z | partition) (...,) of labellings (..., N) of the standardised data: the NIW marginal of
        every cluster at every scale node, multiplied over clusters and averaged over the nodes."""
        x, labels = self._check_data_labels(x, labels)
        labels = canonicalize(labels)
        per_node = self._node_marginals(*niw_stats(x, labels, int(labels.max()) + 1)).sum(-1)  # (..., S)
        return torch.logsumexp(per_node + self.scale_log_weights.to(per_node), -1)

    def log_predictive(self, x: Any, labels: Any, index: int, num_clusters: int | None = None) -> Tensor:
        """log p(z_index | the other points and their clusters) for slots k = 0..K-1 and a new cluster (K).

        ``labels`` (..., N) in 0..K-1; the label at ``index`` is ignored. Shape (..., K+1), the slot layout of
        the partition prior's ``seating_log_weights``; exp sums to one over the slots' joint with the seating.
        """
        x, labels = self._check_data_labels(x, labels)
        others, k = self._without_point(labels, index, num_clusters)
        count, total, outer = niw_stats(x, others, k + 1)
        x_i = x[index]
        m_old = self._node_marginals(count, total, outer)
        m_new = self._node_marginals(count + 1, total + x_i, outer + x_i.unsqueeze(-1) * x_i)
        return _mixture_predictive(m_old, m_new, self.scale_log_weights)

    # ------------------------------------------------------------------ the invariant likelihood (small tables)
    max_invariant_points = MAX_INVARIANT_POINTS

    def invariant_log_likelihood(self, x: Any, partitions: Any, *, proposal_log_weights: Tensor, num_draws: int,
                                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """log L(partition | z) (M,) integrated over every dimension's location and scale, up to a constant
        common to all partitions, and its standard error (M,), by importance sampling
        (:mod:`pyro_acp.models.niw_invariant`); ``partitions`` (M, N) of the standardised points, weighed by
        ``proposal_log_weights`` (M,) when the proposal is fitted. What ``exact_posterior(..., invariant=True)``
        enumerates (N <= ``max_invariant_points``) and ``infer(..., reweight="invariant")`` weighs a guide's
        samples by (any N)."""
        from .niw_invariant import invariant_log_likelihood  # it builds on this module's NIW marginal

        data, partitions = self._check_data_labels(x, partitions)
        return invariant_log_likelihood(self, data, canonicalize(partitions), proposal_log_weights.to(torch.float64),
                                        check_positive_int(num_draws, "num_draws"), generator)

    def check_invariant_data(self, x: Any) -> None:
        """ValueError when the invariant likelihood cannot be taken on ``x`` (a constant column: its scale is not
        identified); what ``infer(..., reweight="invariant")`` checks before any work."""
        from .niw_invariant import check_identified

        check_identified(self.check_data(x).to(torch.float64))

    def gibbs_statistics(self, x: Tensor) -> NIWGibbsStatistics:
        """Per-slot counts, sums and sums of outer products of C chains over the validated points ``x``."""
        return NIWGibbsStatistics(x, self)


class NIWGibbsStatistics:
    """Collapsed Gibbs statistics of :class:`NIWGaussianMixture`: count (C, W), sum (C, W, D), outer (C, W, D, D).

    ``log_predictive`` is the node mixture of the module docstring, from the NIW marginals of every slot with
    and without point i (two batched Cholesky factorisations of (C, S, W, D, D)).
    """

    def __init__(self, x: Tensor, model: NIWGaussianMixture) -> None:
        self.x, self.model = x, model
        self.outer_x = x.unsqueeze(-1) * x.unsqueeze(-2)

    @property
    def counts(self) -> Tensor:
        return self.count[:, :-1]

    def init(self, labels: Tensor, width: int) -> None:
        self.count, self.total, self.outer = niw_stats(self.x, labels, width)

    def grow(self, extra: int) -> None:
        pad = torch.nn.functional.pad
        self.count = pad(self.count, (0, extra))
        self.total = pad(self.total, (0, 0, 0, extra))
        self.outer = pad(self.outer, (0, 0, 0, 0, 0, extra))

    def move(self, i: int, slot: Tensor, weight: Tensor) -> None:
        index = slot.view(-1, 1)
        self.count.scatter_add_(1, index, weight.unsqueeze(-1))
        d = self.x.shape[-1]
        self.total.scatter_add_(1, index.unsqueeze(-1).expand(-1, 1, d), (weight.view(-1, 1) * self.x[i]).unsqueeze(1))
        self.outer.scatter_add_(1, index.view(-1, 1, 1, 1).expand(-1, 1, d, d),
                                (weight.view(-1, 1, 1) * self.outer_x[i]).unsqueeze(1))

    def log_predictive(self, i: int) -> Tensor:
        m_old = self.model._node_marginals(self.count, self.total, self.outer)
        m_new = self.model._node_marginals(self.count + 1, self.total + self.x[i], self.outer + self.outer_x[i])
        return _mixture_predictive(m_old, m_new, self.model.scale_log_weights)

    def log_likelihood(self) -> Tensor:
        per_node = self.model._node_marginals(self.count, self.total, self.outer).sum(-1)
        return torch.logsumexp(per_node + self.model.scale_log_weights.to(per_node), -1)
