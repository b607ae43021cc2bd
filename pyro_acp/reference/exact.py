"""Exact posteriors over partitions by enumeration, for small data sets and conjugate models.

For N <= 10 points there are at most Bell(10) = 115,975 partitions. A conjugate model scores all of them
with its exact collapsed joint ``log p(partition) + log p(x | partition)`` (cluster parameters integrated
out), and normalising in log space gives the posterior exactly. This is the ground truth every
approximate method (ACP guides, Gibbs, NUTS) is checked against.

A Pyro program (any callable with a partition site and an observed site, or a model that declares
``estimate_log_joint``, e.g. :class:`~pyro_acp.models.ProgramModel`) has no closed form: for N <= 7 points
every partition is enumerated and log p(partition, x) is estimated by importance sampling over the
program's other latents (vectorised over particles), so the result is exact up to a Monte-Carlo error that
it reports (:class:`EstimatedExactPosterior`).

``invariant=True`` asks a model of standardised data for the posterior given its data up to each dimension's
location and scale (the model declares ``invariant_log_likelihood``: :class:`~pyro_acp.models.NIWGaussianMixture`,
:mod:`pyro_acp.models.niw_invariant`): for N <= 8 every partition is enumerated and its likelihood, integrated
over those locations and scales, is estimated by importance sampling with its error, as for programs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import bell_number, enumerate_partitions
from pyro_acp.posteriors.enumerated import ExactPosterior
from pyro_acp.protocols import (
    ClusteringModel,
    CollapsedModel,
    has_collapsed_likelihood,
    has_invariant_likelihood,
    require_collapsed,
)
from pyro_acp.seeding import make_generator
from pyro_acp.validation import check_positive_int, warn_about_data

MAX_EXACT_POINTS = 10
MAX_PROGRAM_POINTS = 7  # Bell(7) = 877 partitions, each scored by importance sampling
DEFAULT_CHUNK_SIZE = 8192
DEFAULT_PARTICLES = 4096

__all__ = ["MAX_EXACT_POINTS", "MAX_PROGRAM_POINTS", "EstimatedExactPosterior", "exact_posterior"]


class EstimatedExactPosterior(ExactPosterior):
    """An enumerated posterior whose log joints are Monte-Carlo estimates, with their errors.

    ``log_joint_error`` (M,): the standard error of each estimated log p(partition, x) in nats;
    ``probs_error`` (M,): the delta-method standard error of each probability,
    Var(p_i) ≈ p_i² [(1 - p_i)² r_i² + Σ_{j≠i} p_j² r_j²] with r the log-joint errors; ``tv_error``: the
    expected total variation to the true posterior from that error alone, about 0.5 Σ_i sd(p_i) · √(2/π).
    """

    exact_log_prob = False

    def __init__(self, partitions: Any, probs: Any, *, log_joint_error: Any = None, **kwargs: Any) -> None:
        super().__init__(partitions, probs, **kwargs)
        error = torch.as_tensor(log_joint_error, dtype=torch.float64).cpu()
        if error.shape != self.probs.shape:
            raise ValueError(f"log_joint_error must have shape {tuple(self.probs.shape)}, got {tuple(error.shape)}")
        self.log_joint_error = error
        p = self.probs
        spread = (p.square() * error.square()).sum()
        self.probs_error = p * ((1 - p).square() * error.square() + spread - p.square() * error.square()).sqrt()
        self.tv_error = float(0.5 * self.probs_error.sum() * math.sqrt(2 / math.pi))
        # the error of log p_i, as the posteriors' summaries report it (NaN where p_i = 0)
        self._log_prob_error = torch.where(p > 0, self.probs_error / p.clamp(min=1e-300), math.nan)


def _is_program(model: Any) -> bool:
    """A Pyro program to wrap (a callable that is not a clustering model), or a model that estimates its log
    joint by importance sampling (``estimate_log_joint``)."""
    return callable(getattr(model, "estimate_log_joint", None)) or (
        callable(model) and not isinstance(model, ClusteringModel))


def _program_posterior(model: Any, x: Any, num_particles: int, seed: int | None) -> EstimatedExactPosterior:
    from pyro_acp.models.program import as_clustering_model

    began = time.perf_counter()
    model = as_clustering_model(model, x)
    data = model.check_data(x)
    num_points = int(model.num_points_of(data))
    if num_points > MAX_PROGRAM_POINTS:
        raise ValueError(
            f"exact enumeration of a program is limited to N <= {MAX_PROGRAM_POINTS} points (Bell("
            f"{MAX_PROGRAM_POINTS}) = {bell_number(MAX_PROGRAM_POINTS)} partitions, each scored by importance "
            f"sampling); this data set has N = {num_points}. Use pyro_acp.mcmc.nuts(program, x) for a finite "
            "mixture, or pyro_acp.infer"
        )
    partitions = enumerate_partitions(num_points)
    log_joint, error = model.estimate_log_joint(data, partitions, num_particles=num_particles, seed=seed)
    if torch.isnan(log_joint).any():
        raise ValueError("the program's estimated log joint is NaN for some partition; check the data and priors")
    return EstimatedExactPosterior.from_log_joint(
        partitions, log_joint, log_joint_error=error, method="exact-is", wall_time=time.perf_counter() - began,
        x=x, model=model,
    )


def _num_points(model: Any, data: Tensor) -> int:
    """The number of points of validated data (a graph model counts nodes)."""
    return int(model.num_points_of(data)) if hasattr(model, "num_points_of") else int(data.shape[0])


def _invariant_posterior(model: Any, x: Any, num_draws: int, seed: int | None) -> EstimatedExactPosterior:
    if not has_invariant_likelihood(model):
        name = getattr(model, "__name__", type(model).__name__)
        raise TypeError(f"exact_posterior(..., invariant=True) needs a model of standardised data that declares "
                        f"invariant_log_likelihood and check_invariant_data (e.g. NIWGaussianMixture); {name} does "
                        f"not")
    began = time.perf_counter()
    data = model.check_data(x).to(torch.float64)
    num_points = _num_points(model, data)
    limit = model.max_invariant_points
    if num_points > limit:
        raise ValueError(
            f"the invariant posterior is enumerated for N <= {limit} points (every subset of the points is "
            f"scored at every importance draw); this data set has N = {num_points}. Use "
            f"pyro_acp.infer(model, x): its guide is trained for this posterior"
        )
    partitions = enumerate_partitions(num_points)
    prior = model.partition_prior(num_points).log_prob(partitions).to(torch.float64)
    likelihood, error = model.invariant_log_likelihood(data, partitions, proposal_log_weights=prior,
                                                       num_draws=num_draws, generator=make_generator(seed))
    log_joint = prior + likelihood
    if torch.isnan(log_joint).any():
        raise ValueError("the invariant log likelihood is NaN for some partition; check the data")
    return EstimatedExactPosterior.from_log_joint(
        partitions, log_joint, log_joint_error=error, method="exact-invariant", log_likelihood=likelihood,
        wall_time=time.perf_counter() - began, x=x, model=model,
    )


def _scores(model: Any, data: Tensor, partitions: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """log p(partition, x) and log p(x | partition) for every partition, chunk by chunk (bounded memory)."""
    joints, likelihoods = [], []
    for chunk in partitions.split(chunk_size):
        chunk = chunk.to(data.device)
        likelihood = model.log_marginal_likelihood(data, chunk).to(torch.float64)
        prior = model.partition_prior(chunk.shape[-1]).log_prob(chunk).to(likelihood)
        joints.append((prior + likelihood).cpu())
        likelihoods.append(likelihood.cpu())
    return torch.cat(joints), torch.cat(likelihoods)


def exact_posterior(model: CollapsedModel | Callable, x: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                    num_particles: int = DEFAULT_PARTICLES, seed: int | None = None,
                    invariant: bool = False) -> ExactPosterior:
    """The exact posterior p(partition | x) over all Bell(N) partitions of N <= 10 points.

    ``model`` must be conjugate (``log_marginal_likelihood``, ``log_joint``); ``x`` is one data set as the
    model expects it (points (N, D), or a graph's adjacency / networkx graph). Scores are computed in
    float64 (float64 data from the values as given, never rounded to float32 first), vectorised over
    ``chunk_size`` partitions at a time. Returns an
    :class:`~pyro_acp.posteriors.posterior.ExactPosterior` with ``.partitions`` (M, N), ``.probs`` (M,), the log
    likelihood and log joint of every partition, and method "exact".

    A Pyro program (see the module docstring) gets an :class:`EstimatedExactPosterior` (method "exact-is")
    for N <= 7: ``num_particles`` importance samples per labelling of its partition site, ``seed`` as
    everywhere (an integer: reproducible, global RNG untouched), and the estimates' errors
    (``log_joint_error``, ``probs_error``, ``tv_error``).

    ``invariant=True`` (a model that declares ``invariant_log_likelihood``, N <= 8): the posterior given the
    data's maximal invariant under a location and a scale per dimension, method "exact-invariant", an
    :class:`EstimatedExactPosterior` whose estimates share ``num_particles`` importance draws (after as many
    more that fit the proposal). The errors are propagated as if independent across partitions, which they
    are not (shared draws): measured against a quadrature, the largest probability's spread was about 1.5
    times its stated error, the total variation about 0.8 times ``tv_error``. For ``NIWGaussianMixture``
    this is the posterior of the process that drew the data and standardised them; the plain one over-counts
    clusters on small tables.
    """
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if not isinstance(invariant, bool):
        raise TypeError(f"invariant must be True or False, got {invariant!r}")
    if invariant:
        return _invariant_posterior(model, x, check_positive_int(num_particles, "num_particles"), seed)
    if not has_collapsed_likelihood(model) and _is_program(model):
        return _program_posterior(model, x, check_positive_int(num_particles, "num_particles"), seed)
    require_collapsed(model, "exact_posterior")
    began = time.perf_counter()
    data = model.check_data(x)
    warn_about_data(model, data)
    num_points = _num_points(model, data)
    if num_points > MAX_EXACT_POINTS:
        raise ValueError(
            f"exact enumeration is limited to N <= {MAX_EXACT_POINTS} points (Bell({MAX_EXACT_POINTS}) = "
            f"{bell_number(MAX_EXACT_POINTS):,} partitions); this data set has N = {num_points} "
            f"(Bell({num_points}) = {bell_number(num_points):.3g}). Use pyro_acp.mcmc.gibbs(model, x) instead"
        )
    data = data.to(torch.float64)
    partitions = enumerate_partitions(num_points)
    log_joint, log_likelihood = _scores(model, data, partitions, chunk_size)
    if torch.isnan(log_joint).any():
        raise ValueError("the model's log joint is NaN for some partition; check the data and hyperparameters")
    return ExactPosterior.from_log_joint(
        partitions,
        log_joint,
        method="exact",
        wall_time=time.perf_counter() - began,
        log_likelihood=log_likelihood,
        x=x,
        model=model,
    )
