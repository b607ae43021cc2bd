"""The importance-weighted bound of the clusterwise VAE, written as a Pyro ELBO.

Pyro's ``RenyiELBO(alpha=0)`` takes one logsumexp over the particles of the *whole* batch, which is the
IWAE bound of a single global latent. Here every (data set, cluster step) has its own latent z_k, so the
bound is  sum_{b,k} log (1/P) sum_p w_{p,b,k}  with the logsumexp taken per step. Particles are vectorised
in an outer plate. Optional DReG gradients (Tucker et al. 2019) for the encoder q.
"""

from __future__ import annotations

import contextlib
import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.poutine.util import site_is_subsample
from torch import Tensor


class ClusterwiseIWAE(ELBO):
    """IWAE bound with a logsumexp per (data set, cluster step); ``dreg=True`` for DReG encoder gradients.

    The model and guide must put every latent and observed site inside one plate (the steps), as the
    guides of :mod:`pyro_acp.guides` do; ``loss`` is the negative bound averaged over data sets.
    """

    def __init__(self, num_particles: int = 40, dreg: bool = False):
        super().__init__(num_particles=num_particles, max_plate_nesting=1, vectorize_particles=True)
        self.dreg = dreg

    def _traces(self, model, guide, args, kwargs):
        particles = pyro.plate("iwae_particles", self.num_particles, dim=-2)
        owner = getattr(model, "__self__", None)
        shared = owner.reuse_encoding() if hasattr(owner, "reuse_encoding") else contextlib.nullcontext()
        with shared:
            guide_trace = poutine.trace(particles(guide)).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(particles(model), trace=guide_trace)).get_trace(*args, **kwargs)
        return model_trace, guide_trace

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("ClusterwiseIWAE draws all particles at once; see log_weights")

    def log_weights(self, model, guide, *args, **kwargs) -> tuple[Tensor, float, Tensor]:
        """(log w (P, S), scale, latent values) for one vectorised draw of P particles per step."""
        model_trace, guide_trace = self._traces(model, guide, args, kwargs)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
        log_w, scale, latents = 0.0, 1.0, []
        for site in _sample_sites(model_trace):
            log_w = log_w + site["unscaled_log_prob"]
            scale = site["scale"]
        for site in _sample_sites(guide_trace):
            latents.append(site["value"])
            log_q = site["unscaled_log_prob"]
            if self.dreg:
                log_q = _detached(site["fn"]).log_prob(site["value"])
            log_w = log_w - log_q
        if not torch.is_tensor(log_w) or log_w.dim() != 2:
            raise ValueError("ClusterwiseIWAE needs every site inside the particle and step plates")
        return log_w, float(scale), latents

    def _bound(self, log_w: Tensor, scale: float) -> Tensor:
        return scale * (log_w.logsumexp(0) - math.log(self.num_particles)).sum()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> Tensor:
        log_w, scale, _ = self.log_weights(model, guide, *args, **kwargs)
        return -self._bound(log_w, scale)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        log_w, scale, latents = self.log_weights(model, guide, *args, **kwargs)
        bound = self._bound(log_w, scale)
        if self.dreg:
            weights = torch.softmax(log_w.detach(), dim=0)
            for value in latents:
                if value.requires_grad:
                    value.register_hook(lambda grad, w=weights: grad * w.unsqueeze(-1))
            surrogate = scale * (weights * log_w).sum()
        else:
            surrogate = bound
        (-surrogate).backward()
        return -bound.item()


def _sample_sites(trace) -> list[dict]:
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _detached(fn: dist.Distribution) -> dist.Distribution:
    """The same distribution with its parameters cut from the graph (the DReG 'stop gradient')."""
    if isinstance(fn, dist.Independent):
        return _detached(fn.base_dist).to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.Normal):
        return dist.Normal(fn.loc.detach(), fn.scale.detach())
    raise NotImplementedError(f"DReG needs a Normal guide site, got {type(fn).__name__}")
