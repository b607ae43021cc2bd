"""Running a user's Pyro program and reading its sites: the tracing half of :mod:`pyro_acp.models.program`.

:func:`inspect_program` runs a program once and checks its partition site (a partition distribution, or a
finite ``Categorical`` inside a plate over the points) and its observed site (one value or one vector per
point), naming the site and the problem when they are not what a clustering model needs;
:func:`program_draws` runs it once per seed. The helpers split a trace of B copies of a program (run under an
outer plate) into per-copy values and log densities. A program that raises is reported as a
:class:`ProgramError` naming the program and the call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import constraints

from pyro_acp.seeding import forked_rng
from pyro_acp.validation import check_positive_int

__all__ = ["ProgramError", "ProgramSites", "inspect_program", "program_draws", "training_range"]

_SEED_BOUND = 2**62
_COPIES = "_pyro_acp_copies"  # name of the outer plate that vectorises a program
_PROBE_POINTS = 6  # N of the probe runs that inspect a program (checks, vectorisation)
_PROBE_COPIES = 3

# ---------------------------------------------------------------------------------------------- helpers


def training_range(num_points: int) -> tuple[int, int]:
    """The half-open training range of N for data of ``num_points`` points: [max(2, m/4), m + 1), m the
    smallest power of two >= N (so N = 6 -> [2, 9), N = 150 -> [64, 257)). Bucketed, so data sets of similar
    size share one range (and one cached guide)."""
    n = check_positive_int(num_points, "num_points")
    m = 1 << max(1, math.ceil(math.log2(n)))
    return max(2, m // 4), m + 1


def _program_name(program: Callable) -> str:
    return getattr(program, "__qualname__", None) or getattr(program, "__name__", None) or type(program).__name__


def _sample_sites(trace) -> dict[str, dict]:
    """The sample sites of a trace (plates' subsample sites left out), in program order."""
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)}


def _max_plate_nesting(trace) -> int:
    dims = [-frame.dim for site in _sample_sites(trace).values() for frame in site["cond_indep_stack"]
            if frame.vectorized and frame.dim is not None]
    return max(dims, default=0)


def _site_list(sites: dict) -> str:
    return ", ".join(repr(name) for name in sites) or "none"


class ProgramError(ValueError):
    """The user's program raised while the library ran it (the message names the program and the call)."""


def _run(program: Callable, num_points: int, obs: Tensor | None, *, condition: dict | None = None,
         name: str = "program", copies: tuple[int, int] | None = None):
    """``poutine.trace`` of one run of ``program(num_points, obs)`` (conditioned on ``condition``; under an
    outer plate of ``copies = (size, dim)``); a :class:`ProgramError` naming the program if it raises."""
    fn = poutine.condition(program, data=condition) if condition else program
    try:
        if copies is None:
            return poutine.trace(fn).get_trace(num_points, obs)
        with pyro.plate(_COPIES, copies[0], dim=copies[1]):
            return poutine.trace(fn).get_trace(num_points, obs)
    except ProgramError:
        raise
    except Exception as err:  # the user's code: report what it raised, and where
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""  # Pyro appends its shape tables
        raise ProgramError(f"the program {name} raised {type(err).__name__} when run with num_points={num_points}"
                           f"{'' if obs is None else ' and observed data'}: {first}") from err


def _per_copy(value: Tensor, event_dim: int, dim: int, count: int, shape: torch.Size) -> Tensor:
    """(count, *shape) per-copy values of a site sampled under the outer plate at batch dim ``dim``."""
    pos = dim - event_dim  # the copy dimension, counted from the right of the value
    value = torch.as_tensor(value)
    if value.dim() < -pos:
        value = value.reshape((1,) * (-pos - value.dim()) + tuple(value.shape))
    value = value.movedim(pos, 0)
    value = value.expand(count, *value.shape[1:])
    return value.reshape(count, *shape)


def _per_copy_log_density(trace, dim: int, count: int, names) -> Tensor:
    """(count,) the sum of the named sites' log densities for each copy of a vectorised trace."""
    total = torch.zeros(count, dtype=torch.float64)
    for name in names:
        log_prob = trace.nodes[name]["log_prob"]
        if log_prob.dim() < -dim:
            log_prob = log_prob.reshape((1,) * (-dim - log_prob.dim()) + tuple(log_prob.shape))
        moved = log_prob.movedim(dim, 0)
        total = total + moved.expand(count, *moved.shape[1:]).reshape(count, -1).sum(-1).double()
    return total


@dataclass(frozen=True)
class ProgramSites:
    """What one plain run tells about a program.

    ``kind``: "partition" (a partition distribution) or "categorical" (a finite Categorical in a plate over
    the points, ``num_components`` values); ``point_shape``: () or (D,), one point of the observed site;
    ``obs_event_dim``: the observed site's event dimensions;
    ``latents``: the other (unobserved) sample sites, in program order; ``discrete_latents``: those of them
    with a discrete support; ``partition_first``: the partition site comes before every other sample site
    (its distribution then depends on no latent, and is the partition prior).
    """

    kind: str
    num_components: int | None
    point_shape: tuple[int, ...]
    obs_event_dim: int
    max_plate_nesting: int
    latents: tuple[str, ...]
    discrete_latents: tuple[str, ...]
    partition_first: bool


def inspect_program(program: Callable, num_points: int = _PROBE_POINTS, *, labels_site: str = "labels",
                    obs_site: str = "x", name: str | None = None) -> ProgramSites:
    """Run ``program`` once at ``num_points`` and check its partition and observed sites (ValueError /
    TypeError naming the site and the problem)."""
    name = name or _program_name(program)
    with forked_rng(0), torch.no_grad():  # a fixed probe that leaves the global RNG alone
        trace = _run(program, num_points, None, name=name)
    sites = _sample_sites(trace)
    for role, site_name, option in (("partition", labels_site, "labels_site"), ("observed", obs_site, "obs_site")):
        if site_name not in sites:
            raise ValueError(f"the program {name} has no sample site {site_name!r} (its {role} site); its sample "
                             f"sites are {_site_list(sites)}: pass {option}= to name it")
    part, obs = sites[labels_site], sites[obs_site]
    if part["is_observed"]:
        raise ValueError(f"the program {name} observes its partition site {labels_site!r} when run with x=None; "
                         "the partition must be sampled")
    if obs["is_observed"]:
        raise ValueError(f"the program {name} observes its site {obs_site!r} even when called with x=None; "
                         "observe it with obs=x so that the program can simulate data")
    fn, value = part["fn"], part["value"]
    support = getattr(fn, "support", None)
    described = type(fn).__name__
    if tuple(value.shape) != (num_points,):
        raise TypeError(f"the partition site {labels_site!r} of {name} has value shape {tuple(value.shape)} at "
                        f"num_points={num_points}; it must hold one label per point, shape ({num_points},)")
    if support is not None and support.is_discrete and support.event_dim == 1 \
            and tuple(fn.event_shape) == (num_points,):
        kind, components = "partition", None
    elif isinstance(support, constraints.integer_interval) and fn.event_shape == () and \
            int(support.lower_bound) == 0 and any(f.size == num_points for f in part["cond_indep_stack"]):
        kind, components = "categorical", int(support.upper_bound) + 1
    else:
        raise TypeError(
            f"the partition site {labels_site!r} of {name} is a {described} (support {support}); it must be a "
            "partition distribution from pyro_acp.distributions (CRP, PitmanYor, MixtureOfFiniteMixtures) or a "
            "finite Categorical inside a pyro.plate over the points"
        )
    x_value = obs["value"]
    if x_value.dim() not in (1, 2) or x_value.shape[0] != num_points:
        raise TypeError(f"the observed site {obs_site!r} of {name} draws a value of shape {tuple(x_value.shape)} at "
                        f"num_points={num_points}; it must be ({num_points},) or ({num_points}, D): one value or "
                        "one vector per point")
    latents = tuple(n for n, s in sites.items() if n not in (labels_site, obs_site) and not s["is_observed"])
    discrete = tuple(n for n in latents if getattr(sites[n]["fn"], "support", None) is not None
                     and sites[n]["fn"].support.is_discrete)
    return ProgramSites(kind, components, tuple(x_value.shape[1:]), len(obs["fn"].event_shape),
                        _max_plate_nesting(trace), latents, discrete,
                        partition_first=next(iter(sites)) == labels_site)


def program_draws(program: Callable, num_points: int, seeds: list[int], *, labels_site: str = "labels",
                  obs_site: str = "x") -> list[tuple[Tensor, Tensor]]:
    """One run of ``program(num_points)`` per seed: [(labels (N,) as drawn, x as drawn)], each run in
    ``forked_rng(seed)``. The labels site may be a deterministic site (e.g. ordered labels)."""
    out = []
    name = _program_name(program)
    for seed in seeds:
        with forked_rng(int(seed)), torch.no_grad():
            trace = _run(program, num_points, None, name=name)
        for site in (labels_site, obs_site):
            if site not in trace.nodes:
                raise ValueError(f"the program {name} has no site {site!r}")
        out.append((trace.nodes[labels_site]["value"], trace.nodes[obs_site]["value"]))
    return out

