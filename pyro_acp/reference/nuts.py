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

A user's Pyro program whose partition site is a finite ``Categorical`` in a plate (a finite mixture, a
truncated stick-breaking form) runs the same way, generically: the partition site is enumerated in parallel
(``poutine.infer_config``, Pyro's ``config_enumerate`` for that one site), NUTS samples every continuous
latent, and ``infer_discrete`` draws the labels of each posterior draw. A program with a partition
distribution (a CRP: unboundedly many clusters) cannot be enumerated and is refused.
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
from pyro_acp.user_warnings import warn_user
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


def _is_program(model: Any) -> bool:
    """A Pyro program (a callable that is not a clustering model) or a model wrapping one (``partition_site_kind``)."""
    from pyro_acp.protocols import ClusteringModel

    return hasattr(model, "partition_site_kind") or (callable(model) and not isinstance(model, ClusteringModel))


def _program_nuts(program: Any, x: Any, *, num_samples: int, warmup_steps: int, num_chains: int, seed: int | None,
                  progress_bar: bool, jit_compile: bool) -> ClusteringPosterior:
    """NUTS over a program's continuous latents with its Categorical partition site enumerated out (the
    potential JIT-compiled when ``jit_compile``, about twice as fast; a program the JIT cannot trace runs
    without it, with a warning)."""
    from pyro_acp.models.program import as_clustering_model

    model = as_clustering_model(program, x)
    site = model.labels_site
    if model.partition_site_kind != "categorical":
        raise TypeError(
            f"nuts needs a finite Categorical partition site to enumerate; the site {site!r} of "
            f"{model.program_name} is a partition distribution (a CRP-like prior over unboundedly many clusters). "
            "Write the model as a truncated stick-breaking mixture (sticks ~ Beta, labels ~ Categorical(weights) "
            "in a plate over the points), or use pyro_acp.mcmc.gibbs for a conjugate model"
        )
    if model.sites.discrete_latents:
        raise TypeError(f"nuts enumerates only the partition site {site!r}; the program {model.program_name} has "
                        f"other discrete latent sites: {', '.join(model.sites.discrete_latents)}")
    data = model.check_data(x).to(torch.get_default_dtype())
    obs, num_points, nesting = model.program_data(data), data.shape[0], model.max_plate_nesting

    def conditioned() -> Any:
        return model.program(num_points, obs)

    enumerated = poutine.infer_config(conditioned, lambda msg: {"enumerate": "parallel"} if msg["name"] == site
                                      else {})
    seed = resolve_seed(seed)
    began = time.perf_counter()
    labels = []
    for chain in range(num_chains):
        with forked_rng(seed + 7919 * chain, data.device):
            draws = _run_nuts(enumerated, nesting, num_samples, warmup_steps, progress_bar, jit_compile)
            with torch.no_grad(), poutine.block():
                for s in range(num_samples):
                    fixed = poutine.condition(enumerated, data={name: value[s] for name, value in draws.items()})
                    sampler = infer_discrete(fixed, first_available_dim=-(nesting + 1), temperature=1)
                    trace = poutine.trace(sampler).get_trace()
                    labels.append(trace.nodes[site]["value"].reshape(num_points))
    return ClusteringPosterior(
        canonicalize(torch.stack(labels).long().cpu()),
        chain=torch.arange(num_chains).repeat_interleave(num_samples),
        method="nuts",
        wall_time=time.perf_counter() - began,
        x=x,
        model=model,
    )


def _run_nuts(program: Any, nesting: int, num_samples: int, warmup_steps: int, progress_bar: bool,
              jit_compile: bool) -> dict[str, Tensor]:
    """Posterior draws of a program's continuous latents (its discrete site enumerated) from one NUTS chain."""
    state = torch.get_rng_state()
    for jit in (True, False) if jit_compile else (False,):
        torch.set_rng_state(state)  # the same chain with or without the JIT
        kernel = NUTS(program, max_plate_nesting=nesting, jit_compile=jit, ignore_jit_warnings=True)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress_bar)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
                mcmc.run()
        except Exception as err:  # the JIT could not trace the program: run it plainly
            if not jit:
                raise
            warn_user(f"nuts could not JIT-compile the program ({type(err).__name__}: {err}); running it "
                      "without jit_compile (slower)", UserWarning)
            continue
        return mcmc.get_samples()
    raise AssertionError("unreachable")


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

    ``model`` may also be a Pyro program with a finite ``Categorical`` partition site (see the module
    docstring; ``truncation`` and ``jit_compile`` do not apply): its posterior has no closed-form log joint,
    so ``log_joint`` is None.
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
    num_chains = check_int(num_chains, "num_chains", 1)
    if not callable(getattr(model, "stick_breaking_form", None)) and _is_program(model):
        return _program_nuts(model, x, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=num_chains,
                             seed=seed, progress_bar=progress_bar, jit_compile=jit_compile)
    alpha, discount, form = _stick_parameters(model)
    truncation = check_int(truncation, "truncation", 2)
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
