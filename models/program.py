"""A plain Pyro program as a clustering model: ``ProgramModel`` and ``as_clustering_model``.

A user writes an ordinary Pyro callable ``program(num_points, x=None)`` that samples a *partition site*
(default name ``"labels"``) and an *observed site* (default ``"x"``), e.g. ::

    def my_model(num_points, x=None):
        labels = pyro.sample("labels", pyro_acp.distributions.CRP(0.5, num_points))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 0.5))
        with pyro.plate("clusters", num_points):
            loc = pyro.sample("loc", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
        with pyro.plate("points", num_points):
            pyro.sample("x", dist.StudentT(4.0, loc[labels], scale).to_event(1), obs=x)

:class:`ProgramModel` wraps it into the :class:`~pyro_acp.protocols.ClusteringModel` protocol (``simulate``
batches with masks and variable N, ``check_data``, ``config``) by running the program itself:

- The partition site is either a partition distribution (event shape (N,) with the partition-label support
  of :mod:`pyro_acp.distributions`: CRP, Pitman-Yor, MFM) or a finite ``Categorical`` (any distribution with
  an integer-interval support {0..T-1}) inside a plate over the N points (finite mixtures, truncated
  stick-breaking). Draws are put in canonical form (clusters numbered by first appearance).
- The observed site draws one vector (D,) or one value () per point; data with one value per point may be
  given as shape (N,) or (N, 1). The guide always sees (N, D) floats.
- Simulation runs B copies of the program at once under an outer ``pyro.plate`` at dim
  -(max_plate_nesting + 1) when the program allows it (one run per N that several data sets of the batch
  share; all at once at the largest N for a program declared ``projective``). That is
  *verified*, not assumed: the trace shapes must split into B per-copy traces, and the joint density of each
  copy's values under the vectorised run must equal the density the plain program gives them when replayed
  with ``poutine.condition``. A program that fails (e.g. ``loc[labels]`` indexing the copy dimension) runs
  once per data set instead, in worker processes (fork) with one seed per data set, so the draws do not
  depend on the number of workers.
- ``estimate_log_joint(x, partitions)``: log p(partition, x) by importance sampling over the program's
  other latents with their prior as the proposal, with its Monte-Carlo standard error;
  :func:`pyro_acp.exact_posterior` enumerates partitions of N <= 7 points with it. The particles run as
  copies under the same verified outer plate (the labellings too, when the program broadcasts batched
  labels), or, for programs that index cluster parameters as ``loc[labels]``, under a right-most plate
  (dim -1, the program's own plates moved left); a program that passes neither check runs once per particle.

:func:`as_clustering_model` returns a clustering model unchanged and wraps a callable, so ``infer``,
``train`` and the references accept programs with one call each.

Seeding follows :mod:`pyro_acp.seeding`: every run happens inside ``forked_rng`` seeded from the caller's
generator, so torch's global RNG is left untouched.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import os
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import constraints

from pyro_acp.data.partitions import canonicalize
from pyro_acp.protocols import ClusteringModel
from pyro_acp.seeding import forked_rng, make_generator
from pyro_acp.validation import check_int, check_positive_int, check_vectors

from .base import GenerativeModel

__all__ = ["ProgramError", "ProgramModel", "as_clustering_model", "compare_sampler_with_program", "inspect_program",
           "load_program", "program_draws", "training_range"]

_SEED_BOUND = 2**62
_COPIES = "_pyro_acp_copies"  # name of the outer plate that vectorises a program
_PROBE_POINTS = 6  # N of the probe runs that inspect a program (checks, vectorisation)
_PROBE_COPIES = 3
_IMPORTANCE_CHUNK = 2**16  # program copies per vectorised importance-sampling run
_DEFAULT_RANGE = (50, 200)


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


# ---------------------------------------------------------------------------------------------- worker processes

# read by forked workers (inherited memory, nothing pickled); weak, so a model no longer used is collected and its
# finalizer stops its workers
_WORKER_MODELS: weakref.WeakValueDictionary[int, ProgramModel] = weakref.WeakValueDictionary()


def _worker_init() -> None:
    torch.set_num_threads(1)


def _worker_draw(task: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One data set drawn in a worker, sent back as NumPy arrays (pickled by value: torch would move tensors
    through shared-memory files, which costs more than the draw)."""
    token, num_points, seed = task
    labels, x = _WORKER_MODELS[token]._draw_one(num_points, seed)
    return labels.numpy(), x.numpy()


def _close_pool(pool: Any) -> None:
    pool.terminate()
    pool.join()


# ---------------------------------------------------------------------------------------------- the model


class ProgramModel(GenerativeModel):
    """A user's Pyro program as a clustering model (see the module docstring).

    Args:
        program: ``program(num_points, x=None)``, a Pyro callable with a partition site and an observed site.
        labels_site, obs_site: the names of those sites.
        data_dim: the number of values per point (default: read from the program's observed site).
        num_points_range: the half-open range (lo, hi) of N of training simulations (default (50, 200);
            :func:`as_clustering_model` picks one around the data's size, :func:`training_range`).
        name, version: identify the program in ``config()`` instead of its code fingerprint (a guide cached
            for a program is reused only while its fingerprint, or name and version, stay the same).
        vectorize: None (default) vectorises simulation and importance sampling over copies of the program
            when a probe run verifies it works; False never does; True raises a ValueError where it does not.
        workers: processes for simulating programs that do not vectorise (default: min(4, CPU count));
            0 runs them in this process. They are forked on first use and hold a copy of the program as it
            was then; they stop with :meth:`close`, when the model is garbage-collected, or at exit.
        projective: the user's promise that the program's first n points are distributed as the program run
            at n (true of exchangeable partition priors and i.i.d. likelihoods whose hyperparameters do not
            depend on N). A vectorised batch is then one run at the largest N, each data set cut to its own
            N and relabelled canonically, instead of one run per distinct N.
    """

    data_kind = "vector"
    ordered = False
    rotation_invariant = False

    def __init__(self, program: Callable, *, labels_site: str = "labels", obs_site: str = "x",
                 data_dim: int | None = None, num_points_range: tuple[int, int] | None = None,
                 name: str | None = None, version: str | None = None, vectorize: bool | None = None,
                 workers: int | None = None, projective: bool = False):
        if not callable(program):
            raise TypeError(f"program must be a callable Pyro program program(num_points, x=None), got "
                            f"{type(program).__name__}")
        for option, value in (("labels_site", labels_site), ("obs_site", obs_site)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{option} must be a site name (a non-empty string), got {value!r}")
        if labels_site == obs_site:
            raise ValueError(f"labels_site and obs_site must differ, both are {labels_site!r}")
        self.program = program
        self.labels_site, self.obs_site = labels_site, obs_site
        self.program_name = name or _program_name(program)
        self.version = None if version is None else str(version)
        self.default_num_points = self.check_num_points_range(
            _DEFAULT_RANGE if num_points_range is None else tuple(num_points_range))
        self.sites = inspect_program(program, labels_site=labels_site, obs_site=obs_site, name=self.program_name)
        width = int(np.prod(self.sites.point_shape)) if self.sites.point_shape else 1
        if data_dim is not None and check_positive_int(data_dim, "data_dim") != width:
            raise ValueError(f"data_dim={data_dim} but the program's site {obs_site!r} draws "
                             f"{self._point_description()}")
        self._data_dim = width
        self.workers = min(4, os.cpu_count() or 1) if workers is None else check_int(workers, "workers", 0)
        self.vectorize = vectorize
        self.projective = bool(projective)
        self._simulation_vectorised = None if vectorize is not False else False
        self._particles_vectorised: bool | None = None if vectorize is not False else False
        self._labels_vectorised = False
        self._particle_dim = -(self.sites.max_plate_nesting + 1)  # where importance sampling puts its particles
        self._pool = None
        from pyro_acp.pretrained.registry import program_fingerprint

        self.fingerprint = program_fingerprint(program, name=name, version=version)
        super().__init__(program=self.program_name, fingerprint=self.fingerprint, labels_site=labels_site,
                         obs_site=obs_site, data_dim=width, num_points_range=self.default_num_points)

    # ------------------------------------------------------------------ description
    @property
    def data_dim(self) -> int:
        return self._data_dim

    @property
    def partition_site_kind(self) -> str:
        """"partition" (a partition distribution) or "categorical" (a finite Categorical in a plate)."""
        return self.sites.kind

    @property
    def max_plate_nesting(self) -> int:
        return self.sites.max_plate_nesting

    def _point_description(self) -> str:
        shape = self.sites.point_shape
        return "one value per point" if not shape else f"points of {shape[0]} values"

    def __repr__(self) -> str:
        lo, hi = self.default_num_points
        return f"ProgramModel({self.program_name}, data_dim={self.data_dim}, num_points_range=({lo}, {hi}))"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    # ------------------------------------------------------------------ data
    def check_data(self, x: Any) -> Tensor:
        """(N, D) float points for the guide; one value per point may come as (N,). Errors name the site."""
        if self.data_dim == 1 and (torch.is_tensor(x) or isinstance(x, np.ndarray)) and np.ndim(x) == 1:
            x = torch.as_tensor(x).reshape(-1, 1)
        try:
            return check_vectors(x, self.data_dim)
        except ValueError as err:
            shape = tuple(np.shape(x)) if not torch.is_tensor(x) else tuple(x.shape)
            if len(shape) == 2 and shape[1] != self.data_dim:
                raise ValueError(f"the data have {shape[1]} values per point but the program's site "
                                 f"{self.obs_site!r} draws {self._point_description()} (x must have shape "
                                 f"(N, {self.data_dim}))") from err
            raise

    def program_data(self, x: Tensor) -> Tensor:
        """Validated (N, D) points in the shape the program's observed site has: (N,) or (N, D)."""
        return x.reshape(x.shape[0], *self.sites.point_shape)

    def partition_prior(self, num_points: int):
        """The partition site's distribution at ``num_points``: the prior over partitions when that site is a
        partition distribution sampled before any other latent; else TypeError (the prior is then a mixture
        over the program's latents, with no closed form)."""
        if self.sites.kind != "partition" or not self.sites.partition_first:
            raise TypeError(f"the partition prior of {self.program_name} has no closed form (its site "
                            f"{self.labels_site!r} is a {self.sites.kind} site that depends on other latents)")
        with forked_rng(0), torch.no_grad():
            trace = _run(self.program, check_positive_int(num_points, "num_points"), None, name=self.program_name)
        return trace.nodes[self.labels_site]["fn"]

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        return self.program(num_points, None if obs is None else self.program_data(obs))

    # ------------------------------------------------------------------ one data set at a time
    def _draw_one(self, num_points: int, seed: int) -> tuple[Tensor, Tensor]:
        """(labels (N,) canonical, x (N, D)) of one run of the program in ``forked_rng(seed)``."""
        with forked_rng(int(seed)), torch.no_grad():
            trace = _run(self.program, num_points, None, name=self.program_name)
        return self._read(trace, num_points)

    def _read(self, trace, num_points: int) -> tuple[Tensor, Tensor]:
        labels = trace.nodes[self.labels_site]["value"]
        x = trace.nodes[self.obs_site]["value"]
        if tuple(labels.shape) != (num_points,) or tuple(x.shape) != (num_points, *self.sites.point_shape):
            raise ValueError(f"the program {self.program_name} drew {self.labels_site!r} of shape "
                             f"{tuple(labels.shape)} and {self.obs_site!r} of shape {tuple(x.shape)} at "
                             f"num_points={num_points}; expected ({num_points},) and "
                             f"{(num_points, *self.sites.point_shape)}")
        return canonicalize(labels.long()), x.reshape(num_points, self.data_dim).to(torch.get_default_dtype())

    def _draw_many(self, tasks: list[tuple[int, int]]) -> list[tuple[Tensor, Tensor]]:
        """One program run per (N, seed), in worker processes when there are several tasks and workers."""
        if self.workers < 2 or len(tasks) < 2 or multiprocessing.current_process().daemon:
            return [self._draw_one(n, s) for n, s in tasks]
        pool = self._worker_pool()
        drawn = pool.map(_worker_draw, [(id(self), n, s) for n, s in tasks],
                         chunksize=max(1, len(tasks) // (2 * self.workers)))
        return [(torch.from_numpy(labels), torch.from_numpy(x)) for labels, x in drawn]

    def _worker_pool(self):
        if self._pool is None:
            if "fork" not in multiprocessing.get_all_start_methods():
                raise RuntimeError("simulating a program that does not vectorise in parallel needs the 'fork' start "
                                   "method; pass workers=0 to run it in this process")
            _WORKER_MODELS[id(self)] = self
            self._pool = multiprocessing.get_context("fork").Pool(self.workers, initializer=_worker_init)
            weakref.finalize(self, _close_pool, self._pool)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (they are also stopped when the model is garbage-collected)."""
        if self._pool is not None:
            _close_pool(self._pool)
            self._pool = None
            _WORKER_MODELS.pop(id(self), None)

    # ------------------------------------------------------------------ vectorised over copies
    @property
    def _copy_dim(self) -> int:
        return -(self.sites.max_plate_nesting + 1)

    def _vectorised_trace(self, num_points: int, count: int, obs: Tensor | None, condition: dict | None = None,
                          dim: int | None = None):
        """A trace of ``count`` copies under the outer plate at batch dim ``dim``. Data the copies share (``obs``,
        conditioned values) get a singleton at the copy dimension at their sites (the program's argument is the
        data as they are), so they broadcast with the copies wherever that dimension lies (left of the program's
        plates, or right-most)."""
        dim = self._copy_dim if dim is None else dim
        if obs is not None:  # the program gets the data as they are; its observed site sees them shaped for copies
            condition = {self.obs_site: obs, **(condition or {})}
        if condition:
            event_dims = {self.obs_site: self.sites.obs_event_dim,
                          self.labels_site: 1 if self.sites.kind == "partition" else 0}
            condition = {name: self._shared(value, event_dims[name], dim) if name in event_dims else value
                         for name, value in condition.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _run(self.program, num_points, obs, condition=condition, name=self.program_name,
                        copies=(count, dim))

    @staticmethod
    def _shared(value: Tensor, event_dim: int, dim: int) -> Tensor:
        """One data set's value (one row per point) with a singleton at the copy dimension when that dimension
        falls inside it (right-most copies); left of it, broadcasting adds the copies. Values already batched
        over copies (more dimensions than points and events) are left as they are."""
        position = dim - event_dim  # from the right
        if value.dim() == 1 + event_dim and -position <= value.dim():
            return value.unsqueeze(position)
        return value

    def _split(self, trace, count: int, reference, dim: int) -> dict[str, Tensor]:
        """Per-copy values (count, *plain shape) of every sample site of a vectorised trace, or ValueError."""
        sites, plain = _sample_sites(trace), _sample_sites(reference)
        if list(sites) != list(plain):
            raise ValueError(f"the vectorised run has sites {_site_list(sites)}, the plain run {_site_list(plain)}")
        return {name: plain[name]["value"].expand(count, *plain[name]["value"].shape) if site["is_observed"] else
                _per_copy(site["value"], len(site["fn"].event_shape), dim, count, plain[name]["value"].shape)
                for name, site in sites.items()}  # observed / conditioned values are the same for every copy

    def _verify_copies(self, trace, count: int, num_points: int, obs: Tensor | None, reference, dim: int) -> bool:
        """Whether each copy of a vectorised trace has the density the plain program gives its values."""
        try:
            values = self._split(trace, count, reference, dim)
            trace.compute_log_prob()
            names = list(_sample_sites(trace))
            vectorised = _per_copy_log_density(trace, dim, count, names)
            for c in range(count):
                data = {name: value[c] for name, value in values.items()}
                replay = _run(self.program, num_points, obs, condition=data, name=self.program_name)
                replay.compute_log_prob()
                plain = sum(float(replay.nodes[name]["log_prob_sum"]) for name in names)
                if not math.isclose(plain, float(vectorised[c]), rel_tol=1e-4, abs_tol=1e-3):
                    return False
        except (ValueError, RuntimeError, IndexError, TypeError):
            return False
        return True

    def _probe(self, num_points: int, obs: Tensor | None, condition: dict | None,
               reference_condition: dict | None = None, dim: int | None = None) -> bool:
        """Whether the program vectorises over copies at ``num_points`` (with ``obs`` / ``condition``, which may
        hold per-copy values; ``reference_condition``: one copy's, for the plain run that gives the shapes)."""
        with forked_rng(0), torch.no_grad():
            try:
                reference = _run(self.program, num_points, obs, name=self.program_name,
                                 condition=condition if reference_condition is None else reference_condition)
                dim = self._copy_dim if dim is None else dim
                trace = self._vectorised_trace(num_points, _PROBE_COPIES, obs, condition, dim)
            except ProgramError:
                return False
            return self._verify_copies(trace, _PROBE_COPIES, num_points, obs, reference, dim)

    @property
    def simulation_vectorised(self) -> bool:
        """Whether simulation runs copies of the program under an outer plate (probed once, then cached)."""
        if self._simulation_vectorised is None:
            self._simulation_vectorised = self._probe(_PROBE_POINTS, None, None)
            self._insist("simulation", self._simulation_vectorised)
        return self._simulation_vectorised

    def _insist(self, what: str, works: bool) -> None:
        if self.vectorize and not works:
            raise ValueError(f"vectorize=True but {what} of the program {self.program_name} does not vectorise over "
                             "copies under an outer plate (the per-copy densities differ from the plain program's, or "
                             "it raised); pass vectorize=None to fall back to one run per copy")

    @property
    def particles_vectorised(self) -> bool | None:
        """Whether importance sampling runs copies of the program under an outer plate (probed on the first
        ``estimate_log_joint``; None before)."""
        return self._particles_vectorised

    def _draw_vectorised(self, num_points: int, count: int, seed: int) -> tuple[Tensor, Tensor]:
        with forked_rng(int(seed)), torch.no_grad():
            trace = self._vectorised_trace(num_points, count, None)
            sites = _sample_sites(trace)
            labels = _per_copy(sites[self.labels_site]["value"], len(sites[self.labels_site]["fn"].event_shape),
                               self._copy_dim, count, torch.Size([num_points]))
            x_site = sites[self.obs_site]
            x = _per_copy(x_site["value"], len(x_site["fn"].event_shape), self._copy_dim, count,
                          torch.Size([num_points, *self.sites.point_shape]))
        return canonicalize(labels.long()), x.reshape(count, num_points, self.data_dim).to(torch.get_default_dtype())

    # ------------------------------------------------------------------ simulation
    def _simulate(self, sizes: Tensor, mask: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        batch, width = mask.shape
        seeds = torch.randint(0, _SEED_BOUND, (batch,), generator=generator, device=generator.device).tolist()
        labels = torch.full((batch, width), -1, dtype=torch.long)
        x = torch.zeros(batch, width, self.data_dim)
        sizes_list = sizes.tolist()
        if self.simulation_vectorised and self.projective:  # one run at the largest N, cut to each data set's N
            lab, xs = self._draw_vectorised(width, batch, seeds[0])
            for b, n in enumerate(sizes_list):
                labels[b, :n], x[b, :n] = canonicalize(lab[b, :n]), xs[b, :n]
        else:  # vectorised: one run per N shared by several data sets; the others one run each
            groups: dict[int, list[int]] = {}
            for b, n in enumerate(sizes_list):
                groups.setdefault(n, []).append(b)
            single = []
            for n, rows in sorted(groups.items()):
                if self.simulation_vectorised and len(rows) > 1:
                    labels[rows, :n], x[rows, :n] = self._draw_vectorised(n, len(rows), seeds[rows[0]])
                else:
                    single.extend(rows)
            drawn = self._draw_many([(sizes_list[b], seeds[b]) for b in single])
            for b, (lab, xs) in zip(single, drawn, strict=True):
                labels[b, : sizes_list[b]], x[b, : sizes_list[b]] = lab, xs
        return {"x": x.to(mask.device), "labels": labels.to(mask.device)}

    # ------------------------------------------------------------------ importance sampling of log p(partition, x)
    def _labellings(self, partition: Tensor) -> Tensor:
        """(L, N) the values of the partition site that give ``partition``: itself for a partition site; every
        injective map of its K clusters into the T components for a Categorical site (none when K > T)."""
        if self.sites.kind == "partition":
            return partition.unsqueeze(0)
        k, t = int(partition.max()) + 1, self.sites.num_components
        if k > t:
            return partition.new_zeros(0, partition.shape[0])
        import itertools

        maps = torch.tensor(list(itertools.permutations(range(t), k)), dtype=torch.long)
        return maps[:, partition]

    def _batched_labels(self, labellings: Tensor, count: int) -> Tensor:
        """(L, N) labellings, each repeated ``count`` times, shaped as the partition site's value under the outer
        plate: the copy dimension at batch dim -(max_plate_nesting + 1)."""
        event_dim = 1 if self.sites.kind == "partition" else 0
        ndim = event_dim - self._copy_dim
        flat = labellings.repeat_interleave(count, 0)
        return flat.reshape(flat.shape[0], *([1] * (ndim - 2)), labellings.shape[-1])

    def _log_weights(self, obs: Tensor, labellings: Tensor, num_particles: int, mode: str) -> Tensor:
        """(L, S) log p(z_l, x | θ_s) for S prior draws of the other latents θ per labelling z_l.

        ``mode``: "batched" runs all L × S copies in one outer plate (labels batched too), "particles" one run
        of S copies per labelling, "loop" one plain run per (labelling, particle)."""
        names = (self.labels_site, self.obs_site)
        n, count = labellings.shape[-1], labellings.shape[0] * num_particles
        if mode == "batched":
            condition = {self.labels_site: self._batched_labels(labellings, num_particles), self.obs_site: obs}
            trace = self._vectorised_trace(n, count, obs, condition)
            trace.compute_log_prob()
            return _per_copy_log_density(trace, self._copy_dim, count, names).reshape(-1, num_particles)
        out = torch.empty(labellings.shape[0], num_particles, dtype=torch.float64)
        for row, labels in enumerate(labellings):
            condition = {self.labels_site: labels, self.obs_site: obs}
            if mode == "particles":
                trace = self._vectorised_trace(n, num_particles, obs, condition, self._particle_dim)
                trace.compute_log_prob()
                out[row] = _per_copy_log_density(trace, self._particle_dim, num_particles, names)
                continue
            for s in range(num_particles):
                trace = _run(self.program, n, obs, condition=condition, name=self.program_name)
                trace.compute_log_prob()
                out[row, s] = sum(float(trace.nodes[name]["log_prob_sum"]) for name in names)
        return out

    def _importance_mode(self, data: Tensor, obs: Tensor) -> str:
        """How importance sampling runs the program on this data set (probed once, then cached; see
        :meth:`_log_weights`). Probes condition every point into one cluster (a valid labelling always)."""
        if self._particles_vectorised is None:
            one_cluster = torch.zeros(data.shape[0], dtype=torch.long)
            self._particles_vectorised = self._probe(data.shape[0], obs, {self.labels_site: one_cluster})
            if not self._particles_vectorised:  # copies right-most: cluster parameters indexed as loc[labels]
                self._particles_vectorised = self._probe(data.shape[0], obs, {self.labels_site: one_cluster}, dim=-1)
                self._particle_dim = -1
            components = min(2, self.sites.num_components or 2)
            probe = torch.stack([one_cluster, torch.arange(data.shape[0]) % components, one_cluster])
            left = self._particles_vectorised and self._particle_dim == self._copy_dim
            self._labels_vectorised = left and self._probe(
                data.shape[0], obs, {self.labels_site: self._batched_labels(probe, 1)},
                reference_condition={self.labels_site: one_cluster})
            self._insist("importance sampling", self._particles_vectorised)
        if not self._particles_vectorised:
            return "loop"
        return "batched" if self._labels_vectorised else "particles"

    def estimate_log_joint(self, x: Any, partitions: Any, *, num_particles: int = 4096,
                           seed: int | None = None) -> tuple[Tensor, Tensor]:
        """log p(partition, x) (M,) of partitions (M, N) of one data set, and its Monte-Carlo standard error.

        For a labelling z of the partition site, p(z, x) = E_{θ ~ p(θ | z)} [p(z | θ) p(x | z, θ)] over the
        program's other latents θ, drawn by running the program with z and x conditioned (its prior as the
        proposal): p̂ = mean_s w_s, w_s = p(z | θ_s) p(x | z, θ_s). A partition's probability sums the
        labellings that give it (one for a partition site; the (T)_K injective maps of its K clusters into the
        T components of a Categorical site). The error is the delta-method standard error of log p̂,
        sqrt(Σ_z Var(p̂_z)) / p̂ with Var(p̂_z) = var(w) / S (float64). Runs are vectorised over particles
        (and over labellings too when the program allows) under a verified outer plate, in chunks of about
        2^16 copies. ``seed``: an integer is reproducible and leaves torch's global RNG as it was.
        """
        num_particles = check_positive_int(num_particles, "num_particles")
        data = self.check_data(x).to(torch.get_default_dtype())
        obs = self.program_data(data)
        partitions = canonicalize(torch.as_tensor(partitions).long().reshape(-1, data.shape[0]))
        seed = int(torch.randint(0, _SEED_BOUND, (), generator=make_generator(seed)))
        labellings = [self._labellings(p) for p in partitions]
        owner = torch.cat([torch.full((z.shape[0],), m) for m, z in enumerate(labellings)])
        labellings = torch.cat(labellings)
        with forked_rng(seed), torch.no_grad():
            mode = self._importance_mode(data, obs)
            if mode == "loop":
                warnings.warn(f"the program {self.program_name} does not vectorise over copies of its latents, so "
                              f"importance sampling runs it once per particle ({num_particles} runs per labelling): "
                              "slow. Index cluster parameters with loc[..., labels, :] to let it vectorise",
                              UserWarning, stacklevel=2)
            chunk = max(1, _IMPORTANCE_CHUNK // num_particles) if mode == "batched" else 1
            log_w = torch.cat([self._log_weights(obs, part, num_particles, mode) for part in labellings.split(chunk)]) \
                if labellings.shape[0] else torch.zeros(0, num_particles, dtype=torch.float64)
        top = log_w.max(-1, keepdim=True).values.clamp(min=torch.finfo(torch.float64).min)
        w = (log_w - top).exp()
        estimate = top.squeeze(-1) + w.mean(-1).log()  # log p̂(z, x) per labelling
        variance = 2 * top.squeeze(-1) + (w.var(-1) / num_particles).log()  # log Var(p̂(z, x))
        log_joint = torch.full((partitions.shape[0],), -math.inf, dtype=torch.float64)
        log_error = torch.zeros_like(log_joint)
        for m in range(partitions.shape[0]):
            mine = owner == m
            if mine.any() and torch.isfinite(estimate[mine]).any():
                log_joint[m] = torch.logsumexp(estimate[mine], 0)
                log_error[m] = (0.5 * torch.logsumexp(variance[mine], 0) - log_joint[m]).exp()
        return log_joint, log_error


# ---------------------------------------------------------------------------------------------- sampler check


def _summaries(labels: Tensor, data: Tensor) -> dict[str, float]:
    """Summary statistics of one data set: labels (N,) and its data (N, F) (graphs: adjacency rows)."""
    labels = canonicalize(labels.long()) if labels.min() >= 0 else labels
    data = data.reshape(labels.shape[0], -1).double()
    sizes = torch.bincount(labels)
    means = torch.zeros(sizes.shape[0], data.shape[1], dtype=torch.float64).index_add_(0, labels, data)
    means = means / sizes.clamp(min=1).unsqueeze(-1)
    return {
        "num_clusters": float((sizes > 0).sum()),
        "largest_cluster": float(sizes.max()),
        "cluster_of_label_0": float(sizes[0]),
        "data_mean": float(data.mean()),
        "data_mean_square": float(data.square().mean()),
        "within_cluster_spread": float((data - means[labels]).square().sum(-1).mean()),
    }


def compare_sampler_with_program(model: Any, *, num_points: int, num_datasets: int = 300,
                                 seed: int = 0) -> dict[str, float]:
    """Two-sample Kolmogorov-Smirnov p-values: the model's hand-written ``simulate`` against its own Pyro program.

    ``num_datasets`` data sets of ``num_points`` points from each; per data set the number of clusters, the
    largest cluster's size, the size of the cluster labelled 0 (a size-biased pick; for ordered models the
    first cluster), and the mean, mean square and within-cluster spread of the data (graphs: adjacency rows).
    A sampler that draws from another distribution than the program gives small p-values (the tests state
    the power); a program that raises raises :class:`ProgramError`. Needs SciPy.
    """
    from scipy.stats import ks_2samp

    num_points = check_positive_int(num_points, "num_points")
    num_datasets = check_positive_int(num_datasets, "num_datasets")
    batch = model.simulate(num_datasets, num_points=num_points, seed=seed)
    data = batch.adjacency if batch.adjacency is not None else batch.x
    sampler = [_summaries(batch.labels[b], data[b]) for b in range(num_datasets)]

    def program(n: int, x: Tensor | None = None) -> Tensor:
        return model.model(num_points=n, obs=x)

    program.__qualname__ = f"{type(model).__name__}.model"
    seeds = torch.randint(0, _SEED_BOUND, (num_datasets,), generator=make_generator(seed + 1)).tolist()
    drawn = [_summaries(labels, x) for labels, x in program_draws(program, num_points, seeds)]
    with warnings.catch_warnings():  # ties (discrete statistics): SciPy falls back to the asymptotic p-value
        warnings.simplefilter("ignore", RuntimeWarning)
        return {key: float(ks_2samp([row[key] for row in sampler], [row[key] for row in drawn]).pvalue)
                for key in sampler[0]}


# ---------------------------------------------------------------------------------------------- entry point


def load_program(spec: str) -> Callable:
    """The callable named by ``"module:function"`` (``pyro-acp train --program module:function``); the module
    may be a dotted import path or a ``.py`` file. ValueError naming what is missing."""
    import importlib
    import importlib.util
    from pathlib import Path

    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"a program is named 'module:function' (e.g. my_models:crp_mixture), got {spec!r}")
    module_name, attribute = spec.split(":")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"program file {module_name} does not exist")
        loader = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"cannot import the program's module {module_name!r}: {err}") from None
    program = module
    for part in attribute.split("."):
        if not hasattr(program, part):
            raise ValueError(f"module {module_name!r} has no {attribute!r}")
        program = getattr(program, part)
    if not callable(program):
        raise ValueError(f"{spec} is a {type(program).__name__}, not a callable Pyro program")
    return program



def as_clustering_model(obj: Any, x: Any = None, **options: Any) -> ClusteringModel:
    """``obj`` itself when it is a clustering model (or anything with ``simulate``, all that training needs); a
    :class:`ProgramModel` when it is a Pyro program.

    For a program, ``x`` (one data set) sets the data dimension and the training range of N
    (:func:`training_range`) unless ``options`` give ``data_dim`` / ``num_points_range``; ``options`` are
    :class:`ProgramModel`'s keywords. Data with one value per point may be (N,).
    """
    if isinstance(obj, ClusteringModel) or hasattr(obj, "simulate"):  # a simulator is a model already
        if options:
            raise TypeError(f"{sorted(options)} configure a Pyro program; {type(obj).__name__} is already a model")
        return obj
    if not callable(obj):
        raise TypeError(f"a model must be a clustering model from pyro_acp.models or a Pyro program (a callable "
                        f"program(num_points, x=None)), got {type(obj).__name__}")
    if x is not None:
        shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
        if len(shape) not in (1, 2) or shape[0] < 1:
            raise ValueError(f"x must have shape (N,) or (N, D), got {shape}")
        options.setdefault("data_dim", 1 if len(shape) == 1 else int(shape[1]))
        options.setdefault("num_points_range", training_range(int(shape[0])))
    return ProgramModel(obj, **options)


@atexit.register
def _close_pools() -> None:  # worker processes never outlive the interpreter
    for model in list(_WORKER_MODELS.values()):
        model.close()
