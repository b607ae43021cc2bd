"""Exact posteriors over partitions by enumeration, for small data sets and conjugate models.

For N <= 10 points there are at most Bell(10) = 115,975 partitions. A conjugate model scores all of them
with its exact collapsed joint ``log p(partition) + log p(x | partition)`` (cluster parameters integrated
out), and normalising in log space gives the posterior exactly. This is the ground truth every
approximate method (ACP guides, Gibbs, NUTS) is checked against.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import bell_number, enumerate_partitions
from pyro_acp.posteriors.posterior import ExactPosterior
from pyro_acp.protocols import CollapsedModel, require_collapsed
from pyro_acp.validation import check_positive_int

MAX_EXACT_POINTS = 10
DEFAULT_CHUNK_SIZE = 8192

__all__ = ["MAX_EXACT_POINTS", "exact_posterior"]


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


def exact_posterior(model: CollapsedModel, x: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ExactPosterior:
    """The exact posterior p(partition | x) over all Bell(N) partitions of N <= 10 points.

    ``model`` must be conjugate (``log_marginal_likelihood``, ``log_joint``); ``x`` is one data set as the
    model expects it (points (N, D), or a graph's adjacency / networkx graph). Scores are computed in
    float64 (float64 data from the values as given, never rounded to float32 first), vectorised over
    ``chunk_size`` partitions at a time. Returns an
    :class:`~pyro_acp.posteriors.posterior.ExactPosterior` with ``.partitions`` (M, N), ``.probs`` (M,), the log
    likelihood and log joint of every partition, and method "exact".
    """
    require_collapsed(model, "exact_posterior")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    began = time.perf_counter()
    data = model.check_data(x)
    num_points = int(model.num_points_of(data)) if hasattr(model, "num_points_of") else int(data.shape[0])
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
