"""An enumerated posterior: every partition of a small data set with its exact probability.

:class:`ExactPosterior` is a :class:`~pyro_acp.posteriors.posterior.ClusteringPosterior` whose samples are all
the partitions and whose weights are their probabilities, so every summary of the sampled posteriors reads the
same on it; it also draws i.i.d. samples (the Monte-Carlo floor of a sampler's distance to it). Built by
:func:`pyro_acp.exact_posterior` (``pyro_acp.reference.exact``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.seeding import make_generator
from pyro_acp.validation import check_positive_int, check_vector, check_weights

__all__ = ["ExactPosterior"]


class ExactPosterior(ClusteringPosterior):
    """An enumerated posterior: every partition (M, N) with its probability (M,), e.g. from exact inference.

    ``log_prob`` is log ``probs`` (normalised), ``weights`` are ``probs``, the MAP is the most probable
    partition, and :meth:`sample` draws partitions from it. Its ``log_prob`` is exact and its weights are the
    posterior itself (``exact_log_prob``, ``weights_are_probabilities``): :meth:`summary` calls the MAP
    probability exact and reports no effective sample size (``effective_sample_size`` is only 1 / sum p²).
    """

    exact_log_prob: ClassVar[bool] = True
    weights_are_probabilities: ClassVar[bool] = True

    def __init__(
        self,
        partitions: Any,
        probs: Any,
        *,
        method: str = "exact",
        wall_time: float | None = None,
        log_likelihood: Any = None,
        x: Any = None,
        model: Any = None,
        log_joint: Any = None,
    ) -> None:
        partitions = self.canonical_samples(partitions, "partitions")
        probs = check_weights(probs, partitions.shape[0], name="probs")
        super().__init__(
            partitions, log_prob=probs.log(), weights=probs, method=method, wall_time=wall_time,
            log_likelihood=log_likelihood, x=x, model=model, log_joint=log_joint,
        )

    @classmethod
    def from_log_joint(cls, partitions: Any, log_joint: Any, **kwargs: Any) -> ExactPosterior:
        """Normalise log p(partition, x) over the enumerated partitions in log space (no underflow)."""
        partitions = cls.canonical_samples(partitions, "partitions")
        log_joint = check_vector(log_joint, "log_joint", partitions.shape[0], allow_neg_inf=True)
        if torch.isneginf(log_joint).all():
            raise ValueError("log_joint is -inf for every partition")
        probs = (log_joint - torch.logsumexp(log_joint, 0)).exp()
        return cls(partitions, probs, log_joint=log_joint, **kwargs)

    @property
    def partitions(self) -> Tensor:
        """(M, N) every enumerated partition, canonical."""
        return self._samples

    @property
    def probs(self) -> Tensor:
        """(M,) float64 posterior probabilities, summing to one."""
        return self._weights

    def sample(self, num_samples: int, seed: int | None = None) -> Tensor:
        """(num_samples, N) partitions drawn i.i.d. from the exact posterior (seeded when ``seed`` is given)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        generator = make_generator(seed)
        index = torch.multinomial(self._weights, num_samples, replacement=True, generator=generator)
        return self._samples[index]
