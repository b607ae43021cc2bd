"""The amortized posterior of one data set as a partition-valued Pyro distribution.

``AmortizedPartition(guide, x)`` is q(partition | x) of a trained clusterwise guide (ACP, ACP-S, CCP) for the
data set ``x``: ``sample`` draws partitions (O(K) network rounds, all draws in parallel), ``log_prob``
estimates log q(partition | x) in log space (the guide's importance-sampled estimate over anchors, latent
draws and cluster orders). It can stand as the guide of a program's partition site::

    def partition_guide(num_points, x=None):
        pyro.sample("labels", AmortizedPartition(trained, data))

    pyro.infer.Predictive(program, guide=partition_guide, num_samples=100)(len(data))

gives posterior-predictive data (the program's other latents drawn given each sampled partition), and
``poutine.trace`` sees the labels. Draws use torch's global RNG (so ``pyro.set_rng_seed`` makes them
reproducible, as for every Pyro distribution); ``log_prob`` is an estimate, not exact.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.distributions.gibbs_type import canonical_partition_labels
from pyro_acp.validation import check_labels, check_positive_int, check_vectors, warn_about_data

__all__ = ["AmortizedPartition"]

_SEED_BOUND = 2**62


class AmortizedPartition(TorchDistribution):
    """q(partition | x) of a trained guide for one data set (event shape (N,); see the module docstring).

    Args:
        guide: a trained clusterwise guide; its ``data_dim`` must match ``x``'s width.
        x: one data set (N, D) (or (N,) for one value per point), or anything ``model.check_data`` accepts.
        model: the model the guide was trained for (optional): validates ``x`` as the model expects it.
        num_anchors, num_z, num_orders: the log-probability estimate's anchors per cluster, latent draws and
            random cluster orders (more: less noise, linear cost).
    """

    arg_constraints: dict = {}
    support = canonical_partition_labels
    has_rsample = False
    has_enumerate_support = False

    def __init__(self, guide: Any, x: Any, *, model: Any = None, num_anchors: int | None = 3, num_z: int = 1,
                 num_orders: int = 4, validate_args: bool | None = None):
        if model is not None:
            data = model.check_data(x)
            warn_about_data(model, data)
        else:
            if (torch.is_tensor(x) and x.dim() == 1) or (hasattr(x, "ndim") and x.ndim == 1):
                x = torch.as_tensor(x).reshape(-1, 1)
            data = check_vectors(x, guide.data_dim)
        device = next(guide.parameters()).device
        self.guide = guide
        self.x = data.to(device=device, dtype=torch.get_default_dtype())
        self.num_anchors = None if num_anchors is None else check_positive_int(num_anchors, "num_anchors")
        self.num_z = check_positive_int(num_z, "num_z")
        self.num_orders = check_positive_int(num_orders, "num_orders")
        super().__init__(torch.Size(), torch.Size((self.x.shape[0],)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        """i.i.d. copies over ``batch_shape`` (as ``pyro.plate`` needs)."""
        new = self._get_checked_instance(AmortizedPartition, _instance)
        new.__dict__.update(self.__dict__)
        TorchDistribution.__init__(new, torch.Size(batch_shape), self.event_shape, validate_args=False)
        return new

    def _generator(self) -> torch.Generator:
        seed = int(torch.randint(0, _SEED_BOUND, ()))  # one draw from the global RNG
        return torch.Generator(device=self.x.device).manual_seed(seed)

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        """Canonical partitions (*sample_shape, *batch_shape, N) drawn from the guide."""
        from pyro_acp.inference.sampling import sample_partitions

        shape = torch.Size(sample_shape) + self.batch_shape
        num = max(1, math.prod(shape))
        labels = sample_partitions(self.guide, self.x, num, generator=self._generator())
        labels = labels[0] if isinstance(labels, tuple) else labels
        return canonicalize(labels.reshape(num, -1))[: math.prod(shape)].reshape(shape + self.event_shape)

    @torch.no_grad()
    def log_prob(self, value: Tensor) -> Tensor:
        """Estimated log q(partition | x) of any labelling (..., N), in log space."""
        from pyro_acp.inference.log_prob import estimate_log_prob

        labels = check_labels(value)
        n = self.event_shape[0]
        if labels.shape[-1] != n:
            raise ValueError(f"labels must have {n} points in the last dimension, got shape {tuple(labels.shape)}")
        flat = canonicalize(labels.reshape(-1, n)).to(self.x.device)
        unique, inverse = flat.unique(dim=0, return_inverse=True)
        out = estimate_log_prob(self.guide, self.x, unique.unsqueeze(0), num_anchors=self.num_anchors,
                                num_z=self.num_z, num_orders=self.num_orders, generator=self._generator())
        out = out[0] if isinstance(out, tuple) else out
        log_q = out.reshape(-1)[inverse].reshape(labels.shape[:-1])
        return log_q.expand(torch.broadcast_shapes(log_q.shape, self.batch_shape))

    def __repr__(self) -> str:
        return f"AmortizedPartition({type(self.guide).__name__}, num_points={self.event_shape[0]})"
