"""A log-probability estimate made when it is first read, not when the posterior is built.

The guide's estimate of log q for every sample costs many times the sampling itself (a sum over anchors, z
draws, cluster orders and frames for each distinct partition), while the samples, the co-clustering, K and a
MAP ranked by an exact log joint do not need it. :func:`pyro_acp.infer` therefore hands the posterior a
:class:`DeferredLogProb`: the estimate runs once, on the first read of ``log_prob`` / ``log_prob_error``
(or of what needs them: ``summary()``, a MAP without a log joint, ``to_arviz()``, pickling), with the random
stream the eager estimate would have used, so its numbers are the same whenever it is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import chain
from typing import Any

import torch
from torch import Tensor

__all__ = ["DeferredLogProb", "GuideChangedError", "defer_estimate"]


class GuideChangedError(RuntimeError):
    """The guide changed between sampling and the first read of the deferred log q, so it cannot score the
    samples it drew."""


class DeferredLogProb:
    """``estimate()`` -> (log_prob (S,), standard error (S,)), run at most once, on the first :meth:`value`.

    ``seconds`` is the estimate's wall time once it has run (None before); the posterior's ``wall_time``
    counts the sampling alone. Pickling or deep-copying runs a pending estimate and keeps only its values;
    when the guide has changed meanwhile, the copy keeps the refusal instead and raises on its first read.
    """

    def __init__(self, estimate: Callable[[], tuple[Tensor, Tensor]]) -> None:
        self._estimate: Callable[[], tuple[Tensor, Tensor]] | None = estimate
        self._value: tuple[Tensor, Tensor] | None = None
        self._refusal: str | None = None
        self.seconds: float | None = None

    @property
    def pending(self) -> bool:
        """True until the estimate has run."""
        return self._value is None

    def value(self) -> tuple[Tensor, Tensor]:
        """The estimate (computed now when still pending), on the CPU; GuideChangedError when it cannot be."""
        if self._refusal is not None:
            raise GuideChangedError(self._refusal)
        if self._value is None:
            began = time.perf_counter()
            log_prob, error = self._estimate()
            self._value = (log_prob.detach().cpu(), error.detach().cpu())
            self.seconds = time.perf_counter() - began
            self._estimate = None  # drop the guide, the data and the generator state
        return self._value

    def __getstate__(self) -> dict[str, Any]:
        try:
            self.value()
        except GuideChangedError as refusal:
            return {"_estimate": None, "_value": None, "_refusal": str(refusal), "seconds": None}
        return {"_estimate": None, "_value": self._value, "_refusal": None, "seconds": self.seconds}


def _guide_fingerprint(guide: torch.nn.Module) -> tuple[Any, ...]:
    """What the estimate depends on in the guide: every parameter's and buffer's values (two checksums each,
    taken in one pass on their device), devices and shapes, and its settings
    (``config``, e.g. NOC's size cap). An optimiser step (fused ones included), ``load_state_dict``, a write
    through ``.data``, a batch-norm statistic updated by a forward pass or a move to another device changes
    it; reading the guide (no-grad passes, switching train / eval mode) does not."""
    tensors = [t.detach() for t in chain(guide.parameters(), guide.buffers())]
    sums = [torch.stack([t.double().sum(), t.double().square().sum()]) for t in tensors]
    layout = tuple((str(t.device), tuple(t.shape), t.dtype) for t in tensors)
    checksums = torch.stack(sums).cpu() if sums else torch.zeros(0, 2)  # one transfer from the device
    return layout, repr(getattr(guide, "config", None)), checksums


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[:2] == b[:2] and torch.equal(a[2], b[2])


def defer_estimate(guide: torch.nn.Module, estimate_with: Callable[[torch.Generator], tuple[Tensor, Tensor]],
                   generator: torch.Generator) -> DeferredLogProb:
    """A :class:`DeferredLogProb` running ``estimate_with(g)`` later on a generator ``g`` in the state
    ``generator`` has now (the stream an eager call would draw from), so deferring changes no number.
    ``estimate_with`` must hold its own copies of the data it scores (the caller's tensors may change).

    The guide is checked before the estimate runs (:func:`_guide_fingerprint`): when it has changed since
    (further training, new weights, another device, e.g. moved by a later ``infer(..., device=...)`` call,
    or other settings) it raises :class:`GuideChangedError` rather than score the samples with a guide
    that did not draw them. The estimate runs in the train / eval mode the guide had when it sampled.
    """
    state = generator.get_state()
    device = generator.device
    fingerprint = _guide_fingerprint(guide)
    sampled_in_training_mode = guide.training

    def estimate() -> tuple[Tensor, Tensor]:
        if not _same(_guide_fingerprint(guide), fingerprint):
            raise GuideChangedError(
                f"the {type(guide).__name__} guide changed after these samples were drawn (its weights, device or "
                f"settings: further training, loaded weights, or a later infer call with another device= moves "
                f"it), so it can no longer score them: read log_prob before changing the guide, pass "
                f"estimate_log_prob='now' to infer, or call infer again")
        replay = torch.Generator(device)
        replay.set_state(state)
        mode = guide.training
        guide.train(sampled_in_training_mode)
        try:
            return estimate_with(replay)
        finally:
            guide.train(mode)

    return DeferredLogProb(estimate)
