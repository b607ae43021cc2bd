"""Collapsed Gibbs sampling over partitions (Neal 2000, algorithm 3) with optional split-merge moves.

The cluster parameters of the conjugate models are integrated out, so the chain moves on partitions only.
Point i's full conditional is

    p(c_i = k | c_-i, x) ∝ prior seating weight of slot k given the others' cluster sizes
                           × p(x_i | the other points of cluster k)   (collapsed posterior predictive)

with one extra slot for a new cluster. Both factors come from what the model and its prior declare, never
from their classes:

- the predictives from the model's sufficient statistics, ``model.gibbs_statistics(x)`` (the
  :class:`~pyro_acp.protocols.GibbsStatistics` protocol: per-cluster statistics of all chains that each move
  updates in place; the library's are in :mod:`pyro_acp.models.conjugate`), so a user's conjugate model
  plugs in by providing them;
- the seating weights from the prior's closed form: for a Gibbs-type prior (CRP, Pitman-Yor, MFM) lookup
  tables filled from its EPPF V(n, K) prod W(n_k) (:mod:`pyro_acp.reference.seating`), for any other
  exchangeable prior its ``seating_log_weights``.

**Chains are vectorised**: the kernel state holds the labels of all C chains, (C, N), and their statistics
with a shared number of cluster slots; point i is updated in every chain at once. Split-merge moves
(Jain & Neal 2004, restricted Gibbs launch states, one Metropolis-Hastings proposal per sweep and chain)
are vectorised the same way, with per-chain masks.

The kernel, :class:`~pyro_acp.reference.gibbs_kernel.CollapsedGibbs`, is a
:class:`pyro.infer.mcmc.mcmc_kernel.MCMCKernel`, so ``pyro.infer.MCMC`` runs it (progress bar, warmup,
``get_samples``, a short ``summary`` of scalar sites, ``arviz.from_pyro``); :func:`gibbs` wraps that into a
:class:`~pyro_acp.posteriors.posterior.ClusteringPosterior`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from pyro.infer.mcmc import MCMC

from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.protocols import CollapsedModel
from pyro_acp.reference.gibbs_kernel import CollapsedGibbs
from pyro_acp.seeding import resolve_seed
from pyro_acp.user_warnings import warn_user
from pyro_acp.validation import check_int, check_partition_rows

__all__ = ["CollapsedGibbs", "gibbs"]


def gibbs(
    model: CollapsedModel,
    x: Any,
    *,
    num_samples: int = 1000,
    warmup_steps: int = 200,
    num_chains: int | None = None,
    seed: int | None = None,
    split_merge: bool = False,
    progress_bar: bool = True,
    init: ClusteringPosterior | Any = None,
) -> ClusteringPosterior:
    """Collapsed Gibbs posterior over partitions of ``x`` under a conjugate ``model``.

    Runs :class:`CollapsedGibbs` under ``pyro.infer.MCMC`` with ``num_chains`` vectorised chains (default 4),
    keeping ``num_samples`` sweeps per chain after ``warmup_steps``. ``init``: start one chain at each partition of
    a posterior of ``x`` (e.g. ``infer``'s samples; of a weighted posterior, as many draws from its weights) or of a
    (C, N) array of labels, instead of seating the points one by one; ``num_chains`` is then C, and what the
    posterior's samples were conditioned on (a graph's known labels: ``posterior.conditioning()``) is kept;
    partitions of zero probability start no chain; the result is of the posterior's kind (``same_kind``: a
    graph posterior keyed by its nodes and conditioned as it was). From an amortized guide's samples a few sweeps
    (``warmup_steps=10, num_samples=1``: MCMC then runs 11, keeping the last) take the chains to the posterior where
    the guide's samples are close, which is what the stationarity check of ``infer`` asks for when they fail it
    (:mod:`pyro_acp.diagnostics.stationarity`). Returns a
    :class:`~pyro_acp.posteriors.posterior.ClusteringPosterior` (method "gibbs") with num_chains × num_samples
    partitions (chain-major), their chain ids, log joint and log likelihood (for ESS / R-hat) and the wall time.
    Supported: any model with ``gibbs_statistics`` and a partition prior with seating weights (the CRP / Pitman-Yor
    / MFM Gaussian mixtures, the Beta-Bernoulli SBM, users' conjugate models).

    An integer ``seed`` makes the run reproducible and leaves torch's global RNG as it was; None draws a
    fresh seed from it.
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
    seed = resolve_seed(seed)
    starts = None if init is None else starting_labels(model, x, init, seed)
    if starts is not None and num_chains is not None and num_chains != starts.shape[0]:
        raise ValueError(f"num_chains={num_chains} but init holds {starts.shape[0]} partitions (one chain each): "
                         f"leave num_chains out")
    num_chains = starts.shape[0] if starts is not None else check_int(4 if num_chains is None else num_chains,
                                                                       "num_chains", 1)
    began = time.perf_counter()
    conditioning = init.conditioning() if isinstance(init, ClusteringPosterior) else {}
    kernel = CollapsedGibbs(model, num_chains=num_chains, split_merge=split_merge, seed=seed,
                            **conditioning)
    if starts is not None:
        kernel.initial_params = {"labels": starts}
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=1,
                disable_progbar=not progress_bar)
    mcmc.run(x)
    wall_time = time.perf_counter() - began
    draws = mcmc.get_samples()  # chain-major (C * S,): the kernel's chains are MCMC's chains
    posterior = ClusteringPosterior(
        kernel.get_labels().cpu(),
        chain=torch.arange(num_chains).repeat_interleave(num_samples),
        method="gibbs",
        wall_time=wall_time,
        log_likelihood=draws["log_likelihood"].cpu(),
        log_joint=draws["log_joint"].cpu(),
        x=x,
        model=model,
    )
    return init.same_kind(posterior) if isinstance(init, ClusteringPosterior) else posterior


def starting_labels(model: CollapsedModel, x: Any, init: ClusteringPosterior | Any, seed: int) -> Any:
    """(C, N) labels to start chains at: a posterior's samples (ValueError when it is of other data than ``x``;
    for a weighted posterior, as many draws from its weights, by ``seed``) or the labels given, checked to be C
    partitions of x's N points; those of zero probability under the model are left out, with a warning
    (ValueError when that is all of them)."""
    data = model.check_data(x).to(torch.float64)
    num_points = model.num_points_of(data)
    if isinstance(init, ClusteringPosterior):
        if init.x is not None and not _same_data(model if init.model is None else init.model, init.x, x):
            raise ValueError("init is a posterior of other data than x: start the chains at samples of x")
        samples = init.samples
        if init.weights is not None:  # e.g. exact_posterior (each partition once) or reweight=True
            generator = torch.Generator().manual_seed(seed)
            samples = samples[torch.multinomial(init.weights.double(), samples.shape[0], replacement=True,
                                                generator=generator)]
        init = samples
    labels = check_partition_rows(init, "init")
    if labels.shape[1] != num_points:
        raise ValueError(f"init must hold partitions of the {num_points} points of x, shape (C, {num_points}); "
                         f"got shape {tuple(labels.shape)}")
    possible = model.log_joint(data, labels) > -math.inf
    if not possible.any():
        raise ValueError(f"none of the {labels.shape[0]} partitions of init has positive probability under "
                         f"{model!r}: start the chains afresh (init=None)")
    if not possible.all():  # every single-point move from a partition the prior rules out may be ruled out too
        warn_user(f"{int((~possible).sum())} of the {labels.shape[0]} partitions of init have zero probability "
                  f"under {model!r} and start no chain: {int(possible.sum())} chains", UserWarning)
    return labels[possible]


def _same_data(model: Any, kept: Any, given: Any) -> bool:
    """Whether ``given`` is the data set a posterior kept (``kept``, after its model's preprocessing and in the
    default dtype), as that posterior's ``model`` sees both: each value equal up to its float32 round-off and
    1e-4 of its column's spread."""
    a, b = (model.check_data(data).to(torch.float64).cpu() for data in (kept, given))
    if a.shape != b.shape:
        return False
    spread = b.std(0, keepdim=True) if b.dim() == 2 and b.shape[0] > 1 else torch.zeros(())
    tolerance = 4 * torch.finfo(torch.float32).eps * torch.maximum(a.abs(), b.abs()) + 1e-4 * spread
    return bool(((a - b).abs() <= tolerance).all())
