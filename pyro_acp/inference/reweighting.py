"""What ``infer(..., reweight=...)`` weighs a guide's samples towards.

``reweight=True``: the model's exact log joint p(c, x) (a collapsed likelihood; for an ordered catalog
``log_ordered_joint``), so the weighted samples estimate the model's posterior.

``reweight="invariant"``, for a model of standardised data that declares ``invariant_log_likelihood``
(:class:`~pyro_acp.models.NIWGaussianMixture`): log p(c) + log L(c | z), the likelihood integrated over each
dimension's location and scale (:mod:`pyro_acp.models.niw_invariant`). That is the posterior of data drawn, in
whatever units and offsets, and then standardised: the one the guides are trained for. On small tables it differs
from the plain posterior of the standardised numbers, which over-counts clusters; it is the calibrated one. L is
itself an importance-sampling estimate over (location, log scale), with the same draws for every distinct sampled
partition, fitted to their importance-weighted mixture; a warning says when its standard error, averaged over the
weighted samples, is large enough to move the weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pyro_acp.diagnostics.importance import ImportanceWeightWarning
from pyro_acp.user_warnings import warn_user

#: importance draws over (location, log scale) for the invariant likelihood of a guide's samples
INVARIANT_DRAWS = 8192
#: a standard error of the invariant log likelihood (nats) above which the weights it gives are noisy
IMPRECISE_NATS = 0.25


def check_reweight_option(reweight: Any) -> bool | str:
    """``reweight`` as :func:`~pyro_acp.infer` acts on it: ``"invariant"``, or any other value as a bool (numpy
    and torch booleans included); ValueError for any other string."""
    if not isinstance(reweight, str):
        return bool(reweight)
    if reweight != "invariant":
        raise ValueError(f"reweight must be False, True (the model's exact log joint) or 'invariant' (for a model "
                         f"of standardised data: the posterior given the data up to each column's location and "
                         f"scale), got {reweight!r}")
    return reweight


def invariant_log_joint(model: Any, x: Tensor, samples: Tensor, log_q: Tensor,
                        generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """log p(c) + log L(c | z) (S,) of canonical samples (S, N) of standardised data ``x`` (N, D), and the
    standard error (S,) of that estimate, in nats (module docstring).

    The (location, log scale) proposal is fitted to the samples' mixture sum_c n_c p(c) L(c | z) / q(c)
    (n_c: how often the distinct partition c was drawn, ``log_q``: the guide's log q of every sample), the
    posterior's mixture over (a, u) as far as the samples tell it. Warns
    (:class:`~pyro_acp.diagnostics.importance.ImportanceWeightWarning`) when the errors, averaged with the
    samples' importance weights, pass :data:`IMPRECISE_NATS`. The result is on the device of ``log_q``."""
    # on the CPU, from a CPU stream forked off the caller's (whatever its device), so the numbers match everywhere
    stream = torch.Generator().manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator,
                                                             device=generator.device)))
    unique, inverse, counts = samples.unique(dim=0, return_inverse=True, return_counts=True)
    unique_log_q = torch.empty(len(unique), dtype=torch.float64, device=log_q.device)
    unique_log_q[inverse] = log_q.to(torch.float64)  # one estimate per distinct partition: read it back
    prior = model.partition_prior(samples.shape[-1]).log_prob(unique.cpu()).to(torch.float64)
    mixture = prior + counts.cpu().log() - unique_log_q.cpu()
    likelihood, error = model.invariant_log_likelihood(x.cpu(), unique.cpu(), proposal_log_weights=mixture,
                                                       num_draws=INVARIANT_DRAWS, generator=stream)
    log_joint, error = (prior + likelihood)[inverse.cpu()], error[inverse.cpu()]
    weighted = float((torch.softmax(log_joint - log_q.cpu().to(torch.float64), 0) * error).sum())
    if not weighted <= IMPRECISE_NATS:
        warn_user(f"the invariant log likelihood of the samples is imprecise (weighted standard error "
                  f"{weighted:.2f} nats, over {INVARIANT_DRAWS} importance draws): the weights carry that noise",
                  ImportanceWeightWarning)
    return log_joint.to(log_q.device), error.to(log_q.device)
