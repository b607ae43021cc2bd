"""Running a program many times: B copies at once under a verified outer plate, or one run per data set
in worker processes (the simulation half of :mod:`pyro_acp.models.program`).

:class:`ProgramRuns` is a mixin of :class:`~pyro_acp.models.program.ProgramModel`: it reads the model's
``program``, ``sites``, site names and vectorisation flags. A vectorised run is *verified*, not assumed: the
trace shapes must split into B per-copy traces, and the joint density of each copy's values under the
vectorised run must equal the density the plain program gives them when replayed with
``poutine.condition``. Worker processes are forked on first use, each run seeded on its own, so the draws do
not depend on the number of workers.
"""

from __future__ import annotations

import math
import multiprocessing
import warnings
import weakref
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.seeding import forked_rng

from .program_trace import (
    _PROBE_COPIES,
    _PROBE_POINTS,
    ProgramError,
    _per_copy,
    _per_copy_log_density,
    _run,
    _sample_sites,
    _site_list,
)

__all__ = ["ProgramRuns"]

# ---------------------------------------------------------------------------------------------- worker processes

# read by forked workers (inherited memory, nothing pickled); weak, so a model no longer used is collected and its
# finalizer stops its workers
_WORKER_MODELS: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


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


class ProgramRuns:
    """How a :class:`~pyro_acp.models.program.ProgramModel` runs its program: one data set at a time (here or in
    worker processes) and vectorised over copies (see the module docstring)."""

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

