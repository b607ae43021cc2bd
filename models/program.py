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

The parts live beside this module: tracing and site discovery in :mod:`~pyro_acp.models.program_trace`,
simulation (vectorised copies, worker processes) in :mod:`~pyro_acp.models.program_runs`, importance
sampling in :mod:`~pyro_acp.models.program_importance`, the sampler check and ``load_program`` in
:mod:`~pyro_acp.models.program_check`; the program's fingerprint is
:func:`pyro_acp.pretrained.registry.program_fingerprint`.

Seeding follows :mod:`pyro_acp.seeding`: every run happens inside ``forked_rng`` seeded from the caller's
generator, so torch's global RNG is left untouched.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.protocols import ClusteringModel
from pyro_acp.seeding import forked_rng
from pyro_acp.validation import check_int, check_positive_int, check_vectors

from .base import GenerativeModel
from .program_check import compare_sampler_with_program, load_program
from .program_importance import ImportanceSampling
from .program_runs import _WORKER_MODELS, ProgramRuns
from .program_trace import (  # noqa: F401  (_COPIES: the name of the outer plate, part of this module's names)
    _COPIES,
    _SEED_BOUND,
    ProgramError,
    ProgramSites,
    _program_name,
    _run,
    inspect_program,
    program_draws,
    training_range,
)

__all__ = ["ProgramError", "ProgramModel", "ProgramSites", "as_clustering_model", "compare_sampler_with_program",
           "inspect_program", "load_program", "program_draws", "training_range"]

_DEFAULT_RANGE = (50, 200)


class ProgramModel(ImportanceSampling, ProgramRuns, GenerativeModel):
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
