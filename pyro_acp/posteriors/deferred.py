"""A log-probability estimate made when it is first read, not when the posterior is built.

The guide's estimate of log q for every sample costs many times the sampling itself (a sum over anchors, z
draws, cluster orders and frames for each distinct partition), while the samples, the co-clustering, K and a
MAP ranked by an exact log joint do not need it. :func:`pyro_acp.infer` therefore hands the posterior a
:class:`DeferredLogProb`: the estimate runs once, on the first read of ``log_prob`` / ``log_prob_error``
(or of what needs them: ``summary()``, a MAP without a log joint, ``to_arviz()``), with the random stream
the eager estimate would have used, so its numbers are the same whenever it is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["DeferredLogProb", "GuideChangedError", "defer_estimate"]


class GuideChangedError(RuntimeError):
    """The guide's parameters changed between sampling and the first read of the deferred log q."""


class DeferredLogProb:
    """``estimate()`` -> (log_prob (S,), standard error (S,)), run at most once, on the first :meth:`value`.

    ``seconds`` is the estimate's wall time once it has run (None before); the posterior's ``wall_time``
    counts the sampling alone.
    """

    def __init__(self, estimate: Callable[[], tuple[Tensor, Tensor]]) -> None:
        self._estimate = estimate
        self._value: tuple[Tensor, Tensor] | None = None
        self.seconds: float | None = None

    @property
    def pending(self) -> bool:
        """True until the estimate has run."""
        return self._value is None

    def value(self) -> tuple[Tensor, Tensor]:
        """The estimate (computed now when still pending), on the CPU."""
        if self._value is None:
            began = time.perf_counter()
            log_prob, error = self._estimate()
            self._value = (log_prob.detach().cpu(), error.detach().cpu())
            self.seconds = time.perf_counter() - began
            self._estimate = None  # drop the guide, the data and the generator state
        return self._value


def _parameter_fingerprint(module: torch.nn.Module) -> tuple[tuple[int, int], ...]:
    """Each parameter's storage address and in-place version counter: an optimiser step, ``load_state_dict``
    or a move to another device changes it."""
    return tuple((p.data_ptr(), p._version) for p in module.parameters())


def defer_estimate(guide: torch.nn.Module, estimate_with: Callable[[torch.Generator], tuple[Tensor, Tensor]],
                   generator: torch.Generator) -> DeferredLogProb:
    """A :class:`DeferredLogProb` running ``estimate_with(g)`` later on a generator ``g`` in the state
    ``generator`` has now (the stream an eager call would draw from), so deferring changes no number.

    The guide is checked before the estimate runs: when its parameters have changed since (further
    training, new weights, another device) it raises :class:`GuideChangedError` rather than score the
    samples with a guide that did not draw them.
    """
    state = generator.get_state()
    device = generator.device
    fingerprint = _parameter_fingerprint(guide)

    def estimate() -> tuple[Tensor, Tensor]:
        if _parameter_fingerprint(guide) != fingerprint:
            raise GuideChangedError(
                f"the {type(guide).__name__} guide's parameters changed after these samples were drawn, so it "
                f"can no longer score them: read log_prob before training or moving the guide, or call "
                f"infer again")
        replay = torch.Generator(device)
        replay.set_state(state)
        return estimate_with(replay)

    return DeferredLogProb(estimate)
