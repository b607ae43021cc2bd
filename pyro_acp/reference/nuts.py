"""NUTS on the truncated stick-breaking mixture, with the cluster labels enumerated out.

A CRP(α) / Pitman-Yor(α, d) Gaussian mixture is, up to truncation, the stick-breaking mixture

    β_t ~ Beta(1 - d, α + t d), t = 1..T-1;   w = stick-breaking weights of β (the last stick takes the rest)
    μ_t ~ N(0, s² I), t = 1..T;                z_i ~ Categorical(w);   x_i ~ N(μ_{z_i}, σ² I).

The labels z are summed out by Pyro's parallel enumeration, so NUTS samples only the continuous (β, μ).
For every posterior draw the labels are then sampled from p(z | β, μ, x) with
:func:`pyro.infer.infer_discrete`, vectorised over draws with an outer plate, and turned into canonical
partitions, so label switching between components does not matter. With T comfortably above the number
of occupied clusters the truncation error is negligible (the expected left-over stick mass after T-1
sticks is (α / (1 + α))^(T-1) for the CRP).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, infer_discrete
from pyro.infer.autoguide.initialization import init_to_value
from pyro.ops.indexing import Vindex
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.protocols import StickBreakingForm
from pyro_acp.seeding import forked_rng, resolve_seed
from pyro_acp.validation import check_int

__all__ = ["nuts", "stick_breaking_mixture", "stick_breaking_weights"]

_DRAWS_PER_CHUNK = 256  # posterior draws per vectorised infer_discrete call (memory ∝ chunk × N × T)


def stick_breaking_weights(beta: Tensor) -> Tensor:
    """(..., T) mixture weights from (..., T-1) stick proportions; the last component takes what is left."""
    rest = torch.cumprod(1.0 - beta, dim=-1)
    return torch.nn.functional.pad(beta, (0, 1), value=1.0) * torch.nn.functional.pad(rest, (1, 0), value=1.0)


def _assignments(x: Tensor, weights: Tensor, means: Tensor, sigma: float) -> Tensor:
    """The label and data sites: z_i ~ Categorical(weights), x_i ~ N(means[z_i], σ² I), enumerated in parallel."""
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(Vindex(means)[..., z, :], sigma).to_event(1), obs=x)
    return z


def stick_breaking_mixture(
    x: Tensor, alpha: float, discount: float, truncation: int, sigma: float, mean_scale: float
) -> Tensor:
    """The truncated stick-breaking Gaussian mixture as a Pyro program (sites "beta", "mu", "z", "x")."""
    t = torch.arange(1, truncation, dtype=x.dtype, device=x.device)
    with pyro.plate("sticks", truncation - 1, dim=-1):
        beta = pyro.sample("beta", dist.Beta(torch.full_like(t, 1.0 - discount), alpha + discount * t))
    zeros = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
    with pyro.plate("components", truncation, dim=-1):
        means = pyro.sample("mu", dist.Normal(zeros, mean_scale).to_event(1))
    return _assignments(x, stick_breaking_weights(beta), means, sigma)


def _recover_labels(x: Tensor, beta: Tensor, means: Tensor, sigma: float) -> Tensor:
    """(S, N) labels drawn from p(z | β, μ, x) for S posterior draws at once, with ``infer_discrete``."""
    out = []
    for b, m in zip(beta.split(_DRAWS_PER_CHUNK), means.split(_DRAWS_PER_CHUNK), strict=True):
        weights, m = stick_breaking_weights(b).unsqueeze(-2), m.unsqueeze(-3)  # (s, 1, T), (s, 1, T, D)

        def batched(weights: Tensor = weights, m: Tensor = m) -> Tensor:
            with pyro.plate("draws", weights.shape[0], dim=-2):
                return _assignments(x, weights, m, sigma)

        out.append(infer_discrete(batched, first_available_dim=-3, temperature=1)())
    return torch.cat(out).reshape(beta.shape[0], x.shape[0])


def _stick_parameters(model: Any) -> tuple[float, float, StickBreakingForm]:
    """(alpha, discount, likelihood form) of a model NUTS can run as a stick-breaking mixture, else TypeError.

    The model declares its Gaussian likelihood with ``stick_breaking_form()``; its partition prior must be
    Pitman-Yor-like (``alpha`` and ``discount``: CRP, PitmanYor).
    """
    hint = "(use pyro_acp.mcmc.gibbs for other conjugate models)"
    if not callable(getattr(model, "stick_breaking_form", None)):
        raise TypeError(
            "nuts needs a stick-breaking Gaussian mixture: a model with stick_breaking_form() (its sigma and "
            f"mean_scale) and a Pitman-Yor / CRP partition prior; {type(model).__name__} lacks "
            f"stick_breaking_form {hint}"
        )
    prior = model.partition_prior(1)
    alpha, discount = getattr(prior, "alpha", None), getattr(prior, "discount", None)
    if alpha is None or discount is None:
        missing = " and ".join(name for name, value in (("alpha", alpha), ("discount", discount)) if value is None)
        raise TypeError(
            "nuts needs a stick-breaking Gaussian mixture with a Pitman-Yor / CRP partition prior (alpha, "
            f"discount); {type(model).__name__}'s prior {type(prior).__name__} has no {missing} {hint}"
        )
    form = model.stick_breaking_form()
    return float(alpha), float(discount), StickBreakingForm(float(form.sigma), float(form.mean_scale))


def _initial_values(x: Tensor, alpha: float, discount: float, truncation: int, generator: torch.Generator) -> dict:
    """A data-driven start: component means at randomly chosen data points, sticks at their prior means."""
    index = torch.randint(0, x.shape[0], (truncation,), generator=generator)
    t = torch.arange(1, truncation, dtype=x.dtype)
    beta = (1.0 - discount) / (1.0 + alpha + (t - 1.0) * discount)
    return {"beta": beta.to(x.device), "mu": x[index.to(x.device)].clone()}


def nuts(
    model: Any,
    x: Any,
    *,
    num_samples: int = 1000,
    warmup_steps: int = 500,
    truncation: int = 10,
    num_chains: int = 1,
    seed: int | None = None,
    progress_bar: bool = True,
    jit_compile: bool = True,
) -> ClusteringPosterior:
    """Posterior over partitions of ``x`` from NUTS on the truncated stick-breaking mixture.

    ``model`` declares its likelihood with ``stick_breaking_form()`` (σ, mean scale) and has a Pitman-Yor /
    CRP partition prior (α, d), e.g. :class:`~pyro_acp.models.CRPGaussianMixture` or
    :class:`~pyro_acp.models.PitmanYorGaussianMixture`; ``truncation`` is the number of components T. Chains
    run one after another, each seeded from ``seed`` (an integer: reproducible; None: drawn from torch's
    global RNG); the global RNG states are restored afterwards. Returns a
    :class:`~pyro_acp.posteriors.posterior.ClusteringPosterior` (method "nuts") with num_chains × num_samples canonical
    partitions, chain ids, the exact collapsed log likelihood and log joint of each partition under
    ``model``, and the wall time.
    """
    alpha, discount, form = _stick_parameters(model)
    num_samples = check_int(num_samples, "num_samples", 1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
    truncation = check_int(truncation, "truncation", 2)
    num_chains = check_int(num_chains, "num_chains", 1)
    seed = resolve_seed(seed)
    data = model.check_data(x).to(torch.get_default_dtype())
    began = time.perf_counter()
    program_args = (data, alpha, discount, truncation, form.sigma, form.mean_scale)
    labels = []
    for chain in range(num_chains):
        with forked_rng(seed + 7919 * chain, data.device):
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
            init = _initial_values(data, alpha, discount, truncation, generator)
            kernel = NUTS(stick_breaking_mixture, max_plate_nesting=1, jit_compile=jit_compile,
                          ignore_jit_warnings=True, init_strategy=init_to_value(values=init))
            mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress_bar)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
                mcmc.run(*program_args)
            draws = mcmc.get_samples()
            with torch.no_grad(), poutine.block():
                labels.append(_recover_labels(data, draws["beta"], draws["mu"], form.sigma))
    wall_time = time.perf_counter() - began
    samples = canonicalize(torch.cat(labels).cpu())
    with torch.no_grad():
        log_likelihood = model.log_marginal_likelihood(data.to(torch.float64), samples)
        log_prior = model.partition_prior(samples.shape[1]).log_prob(samples).to(log_likelihood)
    return ClusteringPosterior(
        samples,
        chain=torch.arange(num_chains).repeat_interleave(num_samples),
        method="nuts",
        wall_time=wall_time,
        log_likelihood=log_likelihood.cpu(),
        log_joint=(log_prior + log_likelihood).cpu(),
        x=x,
        model=model,
    )
