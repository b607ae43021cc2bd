"""Importance sampling of log p(partition, x) for a Pyro program (the estimate behind
``exact_posterior(program, x)``): :class:`ImportanceSampling`, a mixin of
:class:`~pyro_acp.models.program.ProgramModel`.

The particles run as copies under the same verified outer plate as simulation (the labellings too, when the
program broadcasts batched labels), or, for programs that index cluster parameters as ``loc[labels]``,
under a right-most plate (dim -1, the program's own plates moved left); a program that passes neither
check runs once per particle.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.seeding import forked_rng, make_generator
from pyro_acp.user_warnings import warn_user
from pyro_acp.validation import check_positive_int

from .program_trace import _SEED_BOUND, _per_copy_log_density, _run

__all__ = ["ImportanceSampling"]

_IMPORTANCE_CHUNK = 2**16  # program copies per vectorised importance-sampling run


class ImportanceSampling:
    """log p(partition, x) by importance sampling over a program's other latents (module docstring)."""

    def _labellings(self, partition: Tensor) -> Tensor:
        """(L, N) the values of the partition site that give ``partition``: itself for a partition site; every
        injective map of its K clusters into the T components for a Categorical site (none when K > T)."""
        if self.sites.kind == "partition":
            return partition.unsqueeze(0)
        k, t = int(partition.max()) + 1, self.sites.num_components
        if k > t:
            return partition.new_zeros(0, partition.shape[0])
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
                warn_user(f"the program {self.program_name} does not vectorise over copies of its latents, so "
                          f"importance sampling runs it once per particle ({num_particles} runs per labelling): "
                          "slow. Index cluster parameters with loc[..., labels, :] to let it vectorise",
                          UserWarning)
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

