"""The partition prior's seating weights for collapsed Gibbs, read from its closed form.

A Gibbs-type prior (CRP, Pitman-Yor, MFM: :class:`~pyro_acp.distributions.GibbsPartition`) has the EPPF
V(n, K) prod_k W(n_k) with W(m + 1) / W(m) = m + c. With m points seated in t blocks, the next point joins a
block of size s with probability (s + c) V(m + 1, t) / V(m, t) and opens a new block with probability
V(m + 1, t + 1) / V(m, t). :class:`SeatingTables` holds these as lookup tables, filled from the prior's
``size_shift`` c and log V:

    size[s] = log(s + c)  (size[0] = -inf: an empty slot)
    join[m, t] = log V(m + 1, t) - log V(m, t),   new[m, t] = log V(m + 1, t + 1) - log V(m, t)

so a point's seating weights, for every chain at once, are three gathers instead of an evaluation of the
prior's predictive. Rows m serve the sequential start (m = 0..N-1 points seated before the next one); the
sweeps only read row N - 1, so the other rows are dropped after the start.

A prior of another kind (exchangeable, with a ``seating_log_weights`` method but not the Gibbs-type form) is
served by calling that method for every point (:func:`seating_tables_for` returns None).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["SeatingTables", "check_seating_prior", "seating_tables_for"]

LogV = Callable[[Tensor, Tensor, int], Tensor]


def gibbs_type_form(prior: Any) -> tuple[float, LogV] | None:
    """(c, log V) of a Gibbs-type prior (``size_shift`` and ``log_v``, the form every :class:`GibbsPartition`
    declares, and any user prior may), else None."""
    size_shift, log_v = getattr(prior, "size_shift", None), getattr(prior, "log_v", None)
    if size_shift is None or not callable(log_v):
        return None
    return float(size_shift), log_v


def check_seating_prior(model: Any, prior: Any) -> None:
    """TypeError unless ``prior`` gives Gibbs seating weights: the Gibbs-type form, or a well-formed
    ``seating_log_weights``."""
    if not callable(getattr(prior, "seating_log_weights", None)):
        raise TypeError(
            f"collapsed Gibbs needs a partition prior with seating_log_weights (an exchangeable Gibbs-type prior "
            f"such as CRP, PitmanYor or MFM); {type(model).__name__}'s prior {type(prior).__name__} has none"
        )
    if gibbs_type_form(prior) is not None:
        return
    probe = prior.seating_log_weights(torch.tensor([[2.0, 0.0, 1.0]]), 3)
    if probe.shape != (1, 4) or not torch.isneginf(probe[0, 1]) or not torch.isfinite(probe[0, [0, 2, 3]]).all():
        raise TypeError(
            f"{type(prior).__name__}.seating_log_weights must return (..., K+1) with -inf for empty slots "
            f"and finite weights elsewhere; got {probe.tolist()} for counts [[2, 0, 1]]"
        )


def seating_tables_for(prior: Any, num_points: int, first_seated: int, device: torch.device) -> SeatingTables | None:
    """Lookup tables of ``prior``'s seating weights with ``first_seated``..N-1 points seated, or None when the
    prior does not have the Gibbs-type form (then its ``seating_log_weights`` is called directly)."""
    form = gibbs_type_form(prior)
    if form is None:
        return None
    return SeatingTables(*form, num_points, first_seated, device)


class SeatingTables:
    """A Gibbs-type prior's seating weights at m = ``first_seated``..N-1 points seated, as table lookups (float64).

    ``ensure(width)`` fills the block counts t = 0..width (called as the kernel's cluster slots grow);
    :meth:`add_to` adds the weights of every slot to a chain's scores.
    """

    def __init__(self, size_shift: float, log_v: LogV, num_points: int, first_seated: int,
                 device: torch.device) -> None:
        self.shift, self.log_v, self.num_points, self.device = size_shift, log_v, num_points, device
        self.first = first_seated
        s = torch.arange(num_points + 1, dtype=torch.float64, device=device)
        self.size = torch.where(s > 0, torch.log(s + size_shift), -math.inf)
        self.width = -1
        self.ensure(1)

    def ensure(self, width: int) -> None:
        """Fill the rows for up to ``width`` occupied blocks (t = 0..width), if not yet done."""
        if width <= self.width:
            return
        m = torch.arange(self.first, self.num_points, dtype=torch.float64, device=self.device).unsqueeze(-1)
        t = torch.arange(width + 1, device=self.device)
        bound = max(self.num_points, width) + 2
        base = self.log_v(m, t, bound)
        join = self.log_v(m + 1, t, bound) - base
        new = self.log_v(m + 1, t + 1, bound) - base
        # -inf - (-inf) where no partition has t blocks on m points: never read, made -inf rather than NaN
        self.join = torch.where(torch.isnan(join), -math.inf, join)
        self.new = torch.where(torch.isnan(new), -math.inf, new)
        self.width = width
        self._row = None  # the number seated whose rows are cached in _join_row / _new_row

    def drop_below(self, num_seated: int) -> None:
        """Keep only the rows for ``num_seated`` or more points seated (the sweeps read row N - 1 alone)."""
        if num_seated > self.first:
            self.join, self.new = self.join[num_seated - self.first:], self.new[num_seated - self.first:]
            self.first, self._row = num_seated, None

    def add_to(self, scores: Tensor, counts: Tensor, num_seated: int) -> Tensor:
        """Add the log seating weights for slot sizes ``counts`` (C, K) with ``num_seated`` points seated to
        ``scores`` (C, K+1) in place (K slots, then new); index_select lookups, no host sync."""
        if num_seated != self._row:  # a sweep reads one row throughout: select it once
            self._row = num_seated
            self._join_row, self._new_row = self.join[num_seated - self.first], self.new[num_seated - self.first]
        t = (counts > 0).sum(-1)
        index = counts.long()
        join = self.size.index_select(0, index.flatten()).view(index.shape)
        join += self._join_row.index_select(0, t).unsqueeze(-1)
        scores[..., :-1] += join
        scores[..., -1] += self._new_row.index_select(0, t)
        return scores

    def __call__(self, counts: Tensor, num_seated: int) -> Tensor:
        """(C, K+1) log seating weights for ``counts`` (C, K), in the layout of ``seating_log_weights``."""
        self.ensure(counts.shape[-1])
        out = torch.zeros(*counts.shape[:-1], counts.shape[-1] + 1, dtype=torch.float64, device=counts.device)
        return self.add_to(out, counts, num_seated)
