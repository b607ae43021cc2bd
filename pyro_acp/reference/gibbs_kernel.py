"""The collapsed Gibbs kernel: C chains vectorised in one state, Gibbs sweeps and split-merge moves.

The model supplies the collapsed likelihood as per-cluster sufficient statistics
(``model.gibbs_statistics(x)``, the :class:`~pyro_acp.protocols.GibbsStatistics` protocol) and the partition
prior its seating weights (closed-form tables for Gibbs-type priors, see :mod:`pyro_acp.reference.seating`);
the kernel only moves labels. See :mod:`pyro_acp.reference.gibbs` for the algorithm.

Under ``pyro.infer.MCMC`` the sample sites are scalar summaries of every chain, so ``mcmc.summary()`` is a
short table with one row per summary and R-hat across the kernel's chains: ``num_clusters``,
``largest_share`` (the largest cluster's share of the points), ``log_joint`` and ``log_likelihood``. The
labels of every kept sweep are recorded by the kernel (:meth:`CollapsedGibbs.get_labels`);
``MCMC(..., save_params=[..., "labels"])`` stores them in the MCMC object too.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch import Tensor

from pyro_acp.data.partitions import canonicalize, check_labels
from pyro_acp.protocols import require_collapsed, require_gibbs_statistics
from pyro_acp.reference.seating import check_seating_prior, seating_tables_for
from pyro_acp.seeding import make_generator
from pyro_acp.validation import check_int, check_seed, warn_about_data

__all__ = ["SITES", "SUMMARY_SITES", "CollapsedGibbs", "started_kernel"]

_SLACK = 8  # spare empty cluster slots kept per chain (fewer host syncs; see CollapsedGibbs._refresh_slack)
#: the sites MCMC stores by default; sorted, because MCMC flattens sites in ``save_params`` order and unpacks
#: them in sorted order
SUMMARY_SITES = ("largest_share", "log_joint", "log_likelihood", "num_clusters")
SITES = (*SUMMARY_SITES, "labels")


class _ChainsFirst:
    """MCMC "transform" of every site: moves the kernel's vectorised chains into MCMC's chain dimension.

    ``MCMC.run`` ends by applying ``transforms[site].inv`` to each stored site, shaped (runs, draws, C, ...)
    with runs = MCMC's own num_chains (1 here); this makes it (runs * C, draws, ...), so ``get_samples``,
    ``summary`` and ``diagnostics`` see C chains.
    """

    @staticmethod
    def inv(z: Tensor) -> Tensor:
        runs, draws, chains = z.shape[:3]
        return z.movedim(2, 1).reshape(runs * chains, draws, *z.shape[3:])


class CollapsedGibbs(MCMCKernel):
    """Collapsed Gibbs kernel over partitions with ``num_chains`` chains vectorised in one state.

    Use with ``pyro.infer.MCMC(kernel, num_samples, warmup_steps).run(x)`` (leave MCMC's own ``num_chains``
    at 1: the chains live inside the kernel and appear as MCMC's chains in ``get_samples`` and ``summary``).
    Each ``sample`` call is ``sweeps`` sweeps over the points in random order, followed by one split-merge
    proposal per chain when ``split_merge`` is set. The params it returns hold ``labels`` (C, N) (canonical,
    as floats) and the summaries of :data:`SUMMARY_SITES`, each (C,).

    ``model`` is None, as for a Pyro kernel built from a potential function: the kernel runs on the collapsed
    model (``clustering_model``) rather than on a Pyro program, and ``arviz.from_pyro(mcmc)`` reads the
    samples only.

    Args:
        model: a conjugate model with ``gibbs_statistics`` (:class:`~pyro_acp.protocols.CollapsedModel`) and a
            partition prior with seating weights (CRP, Pitman-Yor, MFM or any ``seating_log_weights``).
        num_chains: number of chains C.
        split_merge: add a Jain-Neal split-merge proposal to every sweep.
        restricted_scans: intermediate restricted Gibbs scans that build the split-merge launch state.
        seed: seeds the kernel's own generator; None draws it from torch's global RNG (so
            ``pyro.set_rng_seed`` makes runs reproducible). The global RNG is not used otherwise.
        sweeps: Gibbs sweeps per ``sample`` call (thinning); 0 with ``split_merge`` runs split-merge moves
            alone (an irreducible chain too, used to check the split-merge acceptance ratio).
        keep_labels: record the labels of every sweep after warmup (:meth:`get_labels`).
        greedy: zero temperature: each point goes to its most probable slot instead of a draw from its full
            conditional (iterated conditional modes), so no sweep lowers log p(partition, x); an ascent to a
            local mode (:func:`pyro_acp.reference.map_ascent.ascend_to_mode`), not a sampler.
        frozen: (N,) bool, points the sweeps never move (known labels: the chains then sample, or ascend,
            p(partition | x, those points' clusters)); needs initial labels (``initial_params``) and no
            split-merge.
        new_clusters: whether a point may open a new cluster (False: only the existing clusters, e.g. one per
            known label).
        report_data_warnings: issue the model's warnings about the data at ``setup``
            (:func:`pyro_acp.validation.warn_about_data`); False where the data's entry point already did.
        symmetric_scan: each sweep visits the points in a random order and then in the reverse order (twice the
            work). Every single-point update is self-adjoint, so a scan in a *fixed* order is not reversible
            (its adjoint is the reverse scan); the forward-then-backward scan is, for every order. Then, from
            c ~ p(c | x), the pair (c, c') of one ``sample`` call is exchangeable even though all chains share one
            order, which is what a test of symmetry (:mod:`pyro_acp.diagnostics.stationarity`) needs. That holds
            for ``sweeps=1`` without split-merge; several symmetric sweeps in a row, each in its own order, or a
            split-merge move after them, are p-invariant but not reversible for the orders drawn.
    """

    def __init__(
        self,
        model: Any,
        *,
        num_chains: int = 4,
        split_merge: bool = False,
        restricted_scans: int = 3,
        seed: int | None = None,
        sweeps: int = 1,
        keep_labels: bool = True,
        greedy: bool = False,
        frozen: Any = None,
        new_clusters: bool = True,
        report_data_warnings: bool = True,
        symmetric_scan: bool = False,
    ) -> None:
        require_collapsed(model, "collapsed Gibbs")
        # probed at the smallest N the model simulates: a prior with constrained block sizes cannot take N = 1
        check_seating_prior(model, model.partition_prior(int(getattr(model, "default_num_points", (1,))[0])))
        require_gibbs_statistics(model, "collapsed Gibbs")
        self.clustering_model = model
        self.model = None
        self.num_chains = check_int(num_chains, "num_chains", 1)
        self.split_merge = bool(split_merge)
        self.restricted_scans = check_int(restricted_scans, "restricted_scans", 0)
        self.sweeps = check_int(sweeps, "sweeps", 0)
        if self.sweeps == 0 and not self.split_merge:
            raise ValueError("sweeps=0 needs split_merge=True: the kernel would never move")
        self.seed = check_seed(seed)
        self.keep_labels = bool(keep_labels)
        self.greedy = bool(greedy)
        if self.greedy and self.split_merge:
            raise ValueError("greedy=True (an ascent) cannot take split_merge moves (a Metropolis-Hastings sampler)")
        self.frozen = None if frozen is None else torch.as_tensor(frozen, dtype=torch.bool)
        self.new_clusters = bool(new_clusters)
        self.report_data_warnings = bool(report_data_warnings)
        self.symmetric_scan = bool(symmetric_scan)
        if (self.frozen is not None or not self.new_clusters) and self.split_merge:
            raise ValueError("frozen points and new_clusters=False apply to Gibbs sweeps, not to split_merge moves")
        self.save_params = SUMMARY_SITES
        self.transforms = {name: _ChainsFirst() for name in SITES}
        self._init_labels: Tensor | None = None
        self._params: dict[str, Tensor] | None = None
        self._kept: list[Tensor] = []
        self._sm_proposed = 0
        self._sm_accepted = 0

    @property
    def save_params(self) -> list[str]:
        """The sites ``pyro.infer.MCMC`` stores (default :data:`SUMMARY_SITES`; add "labels" for the labels)."""
        return self._save_params

    @save_params.setter
    def save_params(self, names: Any) -> None:
        names = sorted(names)  # MCMC unpacks the stored sites in sorted order, whatever order it saved them in
        unknown = [name for name in names if name not in SITES]
        if unknown:
            raise ValueError(f"CollapsedGibbs has no site {', '.join(map(repr, unknown))}; its sites: {list(SITES)}")
        self._save_params = names

    # ------------------------------------------------------------------ MCMCKernel interface
    def setup(self, warmup_steps: int, x: Any, *args: Any, **kwargs: Any) -> None:
        """Validate the data, seed the generator and initialise every chain."""
        model = self.clustering_model
        data = model.check_data(x).to(torch.float64)
        if self.report_data_warnings:
            warn_about_data(model, data)
        self.data = data
        self.num_points = int(model.num_points_of(data))
        self.statistics = model.gibbs_statistics(data)
        self.prior = model.partition_prior(self.num_points)
        device = data.device
        start = self._init_labels is None  # the sequential start reads every row of the seating tables
        if start and (self.frozen is not None or not self.new_clusters):
            raise ValueError("frozen points and new_clusters=False keep to the clusters of the initial labels: set "
                             "initial_params first")
        if self.frozen is not None:
            if self.frozen.shape != (self.num_points,):
                raise ValueError(f"frozen must be a (N,) = ({self.num_points},) mask, got {tuple(self.frozen.shape)}")
            self._movable = torch.nonzero(~self.frozen.to(device)).squeeze(-1)
        self._tables = seating_tables_for(self.prior, self.num_points, 0 if start else self.num_points - 1, device)
        self._one = torch.ones(self.num_chains, dtype=data.dtype, device=device)
        self._minus_one = -self._one
        self.generator = make_generator(self.seed, device)
        self._sm_proposed = self._sm_accepted = 0
        self._warmup_steps, self._num_sampled, self._kept = int(warmup_steps), 0, []
        self._label_dtype = torch.int16 if self.num_points < 2**15 else torch.int32
        with pyro.validation_enabled(False):
            if start:
                self._sequential_init()
            else:
                self._set_state(self._init_labels.to(device))
            self._params = self._make_params()

    @property
    def initial_params(self) -> dict[str, Tensor]:
        if self._params is None:
            raise RuntimeError("call setup(warmup_steps, x) (or run the kernel under pyro.infer.MCMC) first")
        return self._params

    @initial_params.setter
    def initial_params(self, params: dict[str, Tensor]) -> None:
        labels = check_labels(torch.as_tensor(params["labels"]).round(), "initial labels")
        if labels.dim() == 1:
            labels = labels.expand(self.num_chains, -1)
        if labels.shape[0] != self.num_chains or (labels < 0).any():
            raise ValueError(f"initial labels must be (num_chains={self.num_chains}, N) non-negative, "
                             f"got shape {tuple(labels.shape)}")
        self._init_labels = labels.clone()

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One sweep (+ a split-merge proposal), returning the new params of all chains."""
        if params is not self._params:  # handed a state we did not produce: restart from its labels
            self._set_state(params["labels"].round().long().to(self.data.device))
        with pyro.validation_enabled(False):  # counts and labels are exact by construction: skip per-call checks
            for _ in range(self.sweeps):
                order = self._sweep_order().tolist()
                self._seat(order + order[::-1] if self.symmetric_scan else order, seated=None)
            if self.split_merge and self.num_points > 1:
                self._split_merge()
            self._params = self._make_params()
        self._num_sampled += 1
        if self.keep_labels and self._num_sampled > self._warmup_steps:
            self._kept.append(self._params["labels"].to(self._label_dtype))
        return self._params

    def _sweep_order(self) -> Tensor:
        """A random order of the points a sweep updates: all of them, or those not ``frozen``."""
        device = self.data.device
        if self.frozen is None:
            return torch.randperm(self.num_points, generator=self.generator, device=device)
        return self._movable[torch.randperm(len(self._movable), generator=self.generator, device=device)]

    def get_labels(self, group_by_chain: bool = False) -> Tensor:
        """The labels of every sweep after warmup, in the latest run: (C * S, N) canonical, chain-major (chain 0's
        S sweeps first), or (C, S, N) with ``group_by_chain``."""
        if not self._kept:
            raise RuntimeError("no labels recorded: run the kernel (keep_labels=True) for sweeps after warmup")
        labels = torch.stack(self._kept, 1).long()  # (C, S, N)
        return labels if group_by_chain else labels.reshape(-1, self.num_points)

    def logging(self) -> dict[str, str]:
        k = (self.statistics.counts > 0).sum(-1).to(torch.float64).mean()
        out = {"mean K": f"{float(k):.2f}"}
        if self.split_merge and self._sm_proposed:
            out["split-merge acc."] = f"{self._sm_accepted / self._sm_proposed:.3f}"
        return out

    def diagnostics(self) -> dict[str, Any]:
        """Split-merge acceptance when on; ``divergences`` is always empty (Gibbs moves cannot diverge; ArviZ's
        ``from_pyro`` reads it)."""
        out: dict[str, Any] = {"divergences": []}
        if self.split_merge:
            out["split_merge_acceptance"] = self._sm_accepted / max(self._sm_proposed, 1)
        return out

    # ------------------------------------------------------------------ state
    def _set_state(self, labels: Tensor) -> None:
        labels = canonicalize(labels)
        if labels.shape != (self.num_chains, self.num_points):
            raise ValueError(
                f"labels must have shape ({self.num_chains}, {self.num_points}), got {tuple(labels.shape)}"
            )
        self.labels = labels.clone()
        max_clusters = int(labels.max()) + 1
        self.capacity = max_clusters + _SLACK
        self.statistics.init(self.labels, self.capacity + 1)
        self._safe_steps = self.capacity - max_clusters
        if self._tables is not None:
            self._tables.ensure(self.capacity)

    def _refresh_slack(self) -> None:
        """Make sure every chain keeps an empty cluster slot for the next ``_safe_steps`` point updates.

        A point update opens at most one cluster, so with K_max clusters in the fullest chain the next
        ``capacity - K_max`` updates always find an empty slot: one host sync per that many updates.
        """
        max_clusters = int((self.statistics.counts > 0).sum(-1).max())
        if self.capacity - max_clusters < _SLACK // 2:
            extra = max_clusters + _SLACK - self.capacity
            self.statistics.grow(extra)
            self.capacity += extra
        if self._tables is not None:
            self._tables.ensure(self.capacity)
        self._safe_steps = self.capacity - max_clusters

    def _make_params(self) -> dict[str, Tensor]:
        self.statistics.init(self.labels, self.capacity + 1)  # fresh statistics: exact, no round-off drift
        log_likelihood = self.statistics.log_likelihood().to(torch.float64)
        counts = self.statistics.counts
        log_prior = self.prior.log_prob(self.labels).to(log_likelihood)
        return {
            "labels": canonicalize(self.labels).to(torch.float64),  # the state keeps its slots: same moves
            "log_joint": log_prior + log_likelihood,
            "log_likelihood": log_likelihood,
            "num_clusters": (counts > 0).sum(-1).to(torch.float64),
            "largest_share": counts.max(-1).values.to(torch.float64) / self.num_points,
        }

    def _log_target(self, labels: Tensor) -> Tensor:
        """(C,) log p(partition) + log p(x | partition) of ``labels`` (split-merge acceptance)."""
        self.statistics.init(labels, self.capacity + 1)
        return self.prior.log_prob(labels).to(self.data) + self.statistics.log_likelihood()

    def _gumbel(self, shape: tuple[int, ...]) -> Tensor:
        if self.greedy:  # argmax of the scores themselves
            return torch.zeros(shape, device=self.data.device, dtype=self.data.dtype)
        u = torch.rand(shape, generator=self.generator, device=self.data.device, dtype=self.data.dtype)
        return -torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))

    def _scores(self, i: int, num_seated: int) -> Tensor:
        """(C, W) unnormalised log p(c_i = slot | rest): cluster slots (-inf when empty), then new cluster."""
        counts = self.statistics.counts
        scores = self.statistics.log_predictive(i)
        if self._tables is not None:
            scores = self._tables.add_to(scores, counts, num_seated)
        else:
            scores = scores + self.prior.seating_log_weights(counts, num_seated).to(scores.dtype)
        if not self.new_clusters:
            scores[..., -1] = -math.inf
        return scores

    # ------------------------------------------------------------------ Gibbs moves
    def _seat(self, order: list[int], seated: list[int] | None) -> None:
        """Gibbs-update the points in ``order``; ``seated`` None means every other point is placed (a sweep),
        else ``seated[t]`` points are placed before step t and point ``order[t]`` is not (initialisation).

        Sampling is Gumbel-max over the W scores; "new cluster" (the last slot) goes to the chain's first
        empty slot, which ``argmin`` of the slot sizes finds without a host sync.
        """
        noise = self._gumbel((len(order), self.num_chains, self.capacity + 1))
        for t, i in enumerate(order):
            if self._safe_steps <= 0:
                self._refresh_slack()
                if noise.shape[-1] != self.capacity + 1:
                    noise = self._gumbel((len(order), self.num_chains, self.capacity + 1))
            self._safe_steps -= 1
            if seated is None:
                self.statistics.move(i, self.labels[:, i], self._minus_one)
            num_seated = self.num_points - 1 if seated is None else seated[t]
            choice = (self._scores(i, num_seated) + noise[t]).argmax(-1)
            new = torch.where(choice == self.capacity, self.statistics.counts.argmin(-1), choice)
            self.statistics.move(i, new, self._one)
            self.labels[:, i] = new

    def _sequential_init(self) -> None:
        """Seat the points one by one from their predictive given the points already seated: a dispersed,
        data-aware start that differs between chains."""
        self.labels = torch.full((self.num_chains, self.num_points), -1, dtype=torch.long, device=self.data.device)
        self.capacity = _SLACK
        self.statistics.init(self.labels, self.capacity + 1)
        self._safe_steps = self.capacity
        if self._tables is not None:
            self._tables.ensure(self.capacity)
        order = torch.randperm(self.num_points, generator=self.generator, device=self.data.device)
        self._seat(order.tolist(), seated=list(range(self.num_points)))
        if self._tables is not None:
            self._tables.drop_below(self.num_points - 1)  # the sweeps read the last row only
        self._set_state(self.labels)

    # ------------------------------------------------------------------ split-merge (Jain & Neal 2004)
    def _restricted_scan(self, labels: Tensor, a: Tensor, b: Tensor, active: Tensor, points: list[int],
                         forced: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Restricted Gibbs scan: every active point ((C, N) mask) is resampled between slots a and b (C,).

        ``forced = (rows, choice)``: in chains ``rows`` (C,) the choice "slot a" is imposed as ``choice`` (C, N)
        instead of sampled. Returns (C,) the log probability of the choices made or imposed.
        """
        rows = torch.arange(self.num_chains, device=labels.device)
        log_q = torch.zeros(self.num_chains, dtype=self.data.dtype, device=labels.device)
        uniform = torch.rand((len(points), self.num_chains), generator=self.generator, device=labels.device,
                             dtype=self.data.dtype)
        for t, k in enumerate(points):
            act = active[:, k]
            weight = act.to(self.data.dtype)
            self.statistics.move(k, labels[:, k], -weight)
            score = self._scores(k, self.num_points - 1)
            score_a, score_b = score[rows, a], score[rows, b]
            norm = torch.logaddexp(score_a, score_b)
            log_pa, log_pb = score_a - norm, score_b - norm
            choose_a = uniform[t].log() < log_pa
            if forced is not None:
                choose_a = torch.where(forced[0], forced[1][:, k], choose_a)
            log_q = log_q + torch.where(act, torch.where(choose_a, log_pa, log_pb), 0.0)
            new = torch.where(act, torch.where(choose_a, a, b), labels[:, k])
            self.statistics.move(k, new, weight)
            labels[:, k] = new
        return log_q

    def _split_merge(self) -> None:
        """One split-merge Metropolis-Hastings proposal per chain, all chains at once.

        Two distinct points i, j are drawn per chain. Same cluster: propose a split, built by restricted
        Gibbs scans from a random launch state, with proposal probability q; accept with
        min(1, π(split) / (π(current) q)). Different clusters: propose the merge; q is then the probability
        that the final restricted scan recreates the current split, and the ratio is π(merge) q / π(current).
        """
        c, n, device = self.num_chains, self.num_points, self.data.device
        rows = torch.arange(c, device=device)
        gen = self.generator
        i = torch.randint(0, n, (c,), generator=gen, device=device)
        j = torch.randint(0, n - 1, (c,), generator=gen, device=device)
        j = j + (j >= i).long()
        current = self.labels
        ci, cj = current[rows, i], current[rows, j]
        same = ci == cj
        self._refresh_slack()  # guarantees an empty slot for the split
        new_slot = self.statistics.counts.argmin(-1)
        a, b = torch.where(same, new_slot, ci), cj
        pair = torch.zeros(c, n, dtype=torch.bool, device=device)
        pair[rows, i] = True
        pair[rows, j] = True
        active = ((current == ci[:, None]) | (current == cj[:, None])) & ~pair
        # Launch state: the other members of the two clusters assigned at random, i to slot a, j to slot b.
        coin = torch.rand(c, n, generator=gen, device=device) < 0.5
        launch = torch.where(active, torch.where(coin, a[:, None], b[:, None]), current)
        launch[rows, i] = a
        self.statistics.init(launch, self.capacity + 1)
        points = active.any(0).nonzero().flatten().tolist()
        for _ in range(self.restricted_scans):
            self._restricted_scan(launch, a, b, active, points)
        log_q = self._restricted_scan(launch, a, b, active, points, forced=(~same, current == ci[:, None]))
        merged = torch.where(active | pair, b[:, None], current)
        proposal = canonicalize(torch.where(same[:, None], launch, merged))
        log_ratio = self._log_target(proposal) - self._log_target(current) + torch.where(same, -log_q, log_q)
        u = torch.rand(c, generator=gen, device=device, dtype=self.data.dtype)
        accept = u.log() < log_ratio
        self._sm_proposed += c
        self._sm_accepted += int(accept.sum())
        self._set_state(torch.where(accept[:, None], proposal, current))


def started_kernel(model: Any, data: Tensor, starts: Tensor,
                   **options: Any) -> tuple[CollapsedGibbs, dict[str, Tensor]]:
    """A :class:`CollapsedGibbs` kernel with one chain per row of ``starts`` (S, N) canonical labels, set up on
    validated ``data`` and started at them, and its initial params (labels, log_joint, ...: the statistics'
    exact values). ``options`` go to the kernel (``seed``, ``greedy``, ``frozen``, ...); it keeps no labels and
    leaves the data warnings to the caller, whose entry point reported them."""
    kernel = CollapsedGibbs(model, num_chains=starts.shape[0], keep_labels=False, report_data_warnings=False,
                            **options)
    kernel.initial_params = {"labels": starts.to(torch.float64)}
    kernel.setup(0, data)
    return kernel, kernel.initial_params
