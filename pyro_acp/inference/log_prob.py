"""Log-probability estimates of sampled partitions under a trained clusterwise guide, with their error.

The sampler generates *ordered* cluster sequences sigma = (s_1, ..., s_K): at step k it draws an anchor d
uniformly among the |I_k| points not yet assigned, a latent z_k from the guide's prior, and joins, so

    p_gen(sigma) = prod_k (1 / |I_k|) sum_{d in s_k} integral p(b_k | d, z, s_<k, x) p(z | d, s_<k, x) dz,

and a partition's probability is the sum over the K! orders of its clusters, q(s) = sum_sigma p_gen(sigma).
Each factor is estimated without bias:

- **orders**: summed exactly (all K! orders) when K! is within the order budget (``num_orders``), otherwise
  ``num_orders`` orders are drawn size-biased, r(sigma) = prod_k |s_k| / |I_k| (the cluster of a uniformly
  chosen point first), and p_gen(sigma) / r(sigma) is averaged;
- **anchors**: every member of s_k (``num_anchors=None``: exact), or a uniform random subset of A_k of them
  scaled by |s_k| / A_k;
- **z**: ``num_z`` draws per anchor from the encoder q(z | joins) that training fitted, weighted by
  p(z) / q(z | joins) (``z_proposal="encoder"``), or from the prior (``"prior"``: far noisier).

An estimate is repeated as independent *replicates* (one sampled order each, or the full enumeration of orders
repeated max(2, num_orders // K!) times), averaged in probability space (an unbiased estimate of q(s)); its
standard error in nats is the delta-method sd of that mean, sd_r(q_r) / (sqrt(R) mean_r q_r).

Frames (:mod:`pyro_acp.inference.frames`): sampling in F frames Q_f draws from the mixture
q_F(s) = (1 / F) sum_f q(s | Q_f x), and ``frames`` alone (the F sampling frames) estimates q_F itself, the
density the samples were drawn from:

- where a partition's replicates are a multiple of F (orders summed exactly with a budget of at least F
  replicates, rounded up; or F sampled orders), replicate r runs in frame (s + r) % F from a random start s:
  every frame equally, no noise from the frames;
- otherwise, with ``drawn_frames`` (the frames each partition was drawn in, D), the frames are split into two
  strata, D and the rest O, each estimated by at least 2 replicates in frames taken in turn from a random
  start, q_F = (|D| / F) mean_D + (|O| / F) mean_O, with variance (|D| / F)^2 var_D / n_D + (|O| / F)^2
  var_O / n_O. Unbiased whichever D is given; D is where q is likely high (a partition is drawn where it is
  probable), so the stratum that holds most of q_F is never missed. (The frame a partition was drawn in must
  not be used *alone*: it favours that partition);
- otherwise the replicates run in frames taken in turn from a random start: unbiased, noisier.

The frame of replicate r used to be r % F in every case, which for fewer than F replicates averages frames
0 .. R-1 alone: biased low by more than its stated error where q spreads across frames (docs/benchmarks.md).
``frames`` with ``sample_frames`` estimates q(s | Q x) in the given frame of each partition.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import PAD_LABEL, canonicalize
from pyro_acp.guides.clusterwise import ClusterwiseGuide
from pyro_acp.inference.cluster_steps import StepRows, log_steps, step_rows, sum_over_orders
from pyro_acp.inference.frames import framed
from pyro_acp.inference.log_prob_settings import (  # noqa: F401  (re-exported: the estimator's settings)
    AUTO,
    LOG_PROB_SETTINGS,
    REFINE_Z_FACTOR,
    REWEIGHT_REFINE_MASS,
    REWEIGHT_REFINE_TO,
    REWEIGHT_SETTINGS,
    log_prob_settings,
)
from pyro_acp.inference.log_space import log_stratified_mean_and_error, scatter_logsumexp
from pyro_acp.inference.replicates import place_in_frames, replicate_units
from pyro_acp.inference.sampling import padded_inputs
from pyro_acp.inference.streams import EstimatorDraws

ORDER_MODES = ("auto", "sample", "enumerate")
Z_PROPOSALS = ("mixture", "encoder", "prior")


@dataclass(frozen=True)
class LogProbEstimate:
    """Estimates of log q(partition) (B, S), their standard errors in nats (NaN with one replicate), and
    which partitions had all their cluster orders summed exactly.

    The delta-method error sd_r(q_r) / (sqrt(R) mean_r q_r) can never exceed 1 nat (its value when one replicate
    holds all the mass), so an error near 1 says the estimate is dominated by one replicate and may be off by
    far more (docs/benchmarks.md: tens of nats at N = 100 with the default settings)."""

    log_prob: Tensor
    standard_error: Tensor
    orders_enumerated: Tensor

    def pair(self) -> tuple[Tensor, Tensor]:
        """(log_prob, standard_error), as a posterior stores them."""
        return self.log_prob, self.standard_error


def estimate_log_prob(guide: ClusterwiseGuide, x: Tensor, labels: Tensor, mask: Tensor | None = None,
                      **options) -> Tensor:
    """log q(partition | x) estimates (B, S) for partitions (B, S, N) of data sets (B, N, D); the options of
    :func:`log_prob_estimate`, which also returns the estimates' standard errors."""
    return log_prob_estimate(guide, x, labels, mask, **options).log_prob


@torch.no_grad()
def log_prob_estimate(
    guide: ClusterwiseGuide,
    x: Tensor,
    labels: Tensor,
    mask: Tensor | None = None,
    num_anchors: int | None | str = AUTO,
    num_z: int | str = AUTO,
    num_orders: int | str = AUTO,
    generator: torch.Generator | None = None,
    chunk_size: int = 4096,
    z_proposal: str = AUTO,
    frames: Tensor | None = None,
    sample_frames: Tensor | None = None,
    drawn_frames: Tensor | None = None,
    orders: str = "auto",
    refine_to: float | None = None,
    refine_rounds: int = 1,
    refine_target: Tensor | None = None,
) -> LogProbEstimate:
    """Estimate log q(partition | x) for partitions (B, S, N) of data sets (B, N, D) (module docstring).

    ``orders``: "auto" sums all orders of a partition exactly when 2^(K-1) <= ``num_orders`` (the sum costs
    N 2^(K-1) anchor evaluations, :func:`pyro_acp.inference.cluster_steps.sum_over_orders`) and averages
    ``num_orders`` size-biased orders otherwise; "sample" always samples; "enumerate" always sums (K <= 12).
    ``num_anchors``: None uses every member as an anchor, otherwise at most that many per cluster.
    "auto" (any of the three): :func:`log_prob_settings` for the data sets' size N.
    ``frames`` (F, D, D): with ``sample_frames`` ((S,) or (B, S)) each partition is estimated in its own
    frame; without, the estimate is of the mixture over the F frames (module docstring), stratified by
    ``drawn_frames`` ((S, F) or (B, S, F) bool: the frames each partition was drawn in) when given (a
    ValueError without ``frames`` or with ``sample_frames``, where it would mean nothing).
    ``refine_to`` (nats): partitions whose standard error exceeds it get further independent replicates with
    :data:`REFINE_Z_FACTOR` times the z draws, pooled with the first (each replicate is unbiased), for up to
    ``refine_rounds`` rounds: rare partitions, whose joins need unusual z, are the noisy ones.
    ``refine_target`` ((B, S) or (S,)): the log numerator of each partition's importance weight, log count +
    log p(partition, x), so that w = exp(target - log q) up to a constant: then only the loose partitions that
    carry weight are refined (:func:`refinement_choice`).
    ``chunk_size``: z noise is drawn ``chunk_size * 4 // num_z`` anchor rows at a time (memory), and the join
    network runs on at most :data:`pyro_acp.inference.cluster_steps.JOIN_CHUNK` (z draw, candidate) pairs at
    a time (the CPU's caches).
    All data sets share ``generator``; :func:`log_prob_estimates` gives each its own.
    """
    x, mask = padded_inputs(x, mask)
    if labels.dim() == 2:
        labels = labels.unsqueeze(0)
    num_sets, num_samples, num_points = labels.shape
    partitions = canonicalize(labels.reshape(-1, num_points).to(x.device))
    owner = torch.arange(num_sets, device=x.device).repeat_interleave(num_samples)
    partition_frame = drawn = None
    if drawn_frames is not None and (frames is None or sample_frames is not None):
        raise ValueError("drawn_frames stratifies the estimate of the mixture over frames: it needs frames= and "
                         "no sample_frames= (which scores each partition in its own frame instead)")
    if frames is not None and sample_frames is not None:
        partition_frame = sample_frames.to(x.device).expand(num_sets, num_samples).reshape(-1)
    elif frames is not None and drawn_frames is not None:
        drawn = _check_drawn(drawn_frames, frames.shape[0], num_samples).to(x.device)
        drawn = drawn.expand(num_sets, num_samples, -1).reshape(num_sets * num_samples, -1)
    data = _framed_rows(x, mask, frames)
    settings = log_prob_settings(num_points, num_anchors=num_anchors, num_z=num_z, num_orders=num_orders,
                                 z_proposal=z_proposal)
    target = None if refine_target is None else refine_target.to(x.device).expand(num_sets, num_samples).reshape(-1)
    estimate = _estimate(guide, data, partitions, (owner, partition_frame, drawn), EstimatorDraws(generator),
                         settings, orders, chunk_size, (refine_to, refine_rounds, target))
    shape = (num_sets, num_samples)
    return LogProbEstimate(*(value.view(shape) for value in estimate))


@torch.no_grad()
def log_prob_estimates(
    guide: ClusterwiseGuide,
    xs: list[Tensor],
    partitions: list[Tensor],
    generators: list[torch.Generator],
    frames: list[Tensor | None] | None = None,
    drawn_frames: list[Tensor | None] | None = None,
    chunk_size: int = 4096,
    orders: str = "auto",
    refine_to: float | None = None,
    refine_rounds: int = 1,
    refine_targets: list[Tensor] | None = None,
    **settings: Any,
) -> list[LogProbEstimate]:
    """:func:`log_prob_estimate` of several data sets in one batched computation, each on its own generator.

    ``xs``: data sets (N_b, D), N_b may differ; ``partitions``: (P_b, N_b) labels of each, their counts may
    differ; ``frames``: each data set's sampling frames (F_b, D, D) or None; ``drawn_frames``: each one's
    (P_b, F_b) frames its partitions were drawn in, or None (:func:`log_prob_estimate`); the options (``num_z``
    ...) apply to all (call once per setting). Every random number data set b's estimate uses comes from
    ``generators[b]``, in the shapes ``log_prob_estimate(guide, xs[b], partitions[b], generator=generators[b],
    frames=frames[b], drawn_frames=drawn_frames[b])`` draws them in, so estimate b equals that call's up to the
    float rounding of a padded batch, whichever data sets share the batch. ``refine_targets``: each data set's
    ``refine_target`` (P_b,) (for all data sets, or None). Returns one estimate per data set, of shape (1, P_b).
    """
    if not (len(xs) == len(partitions) == len(generators)) or not xs:
        raise ValueError("log_prob_estimates needs as many data sets, partition sets and generators, at least one")
    frames = [None] * len(xs) if frames is None else frames
    drawn = _drawn_of(frames, partitions, drawn_frames, xs[0].device)
    sizes = [int(x.shape[0]) for x in xs]
    width, device = max(sizes), xs[0].device
    data = _framed_rows_of(xs, frames, width)
    padded = [torch.nn.functional.pad(canonicalize(p.to(device)), (0, width - p.shape[-1]), value=PAD_LABEL)
              for p in partitions]
    owner = torch.arange(len(xs), device=device).repeat_interleave(
        torch.tensor([p.shape[0] for p in padded], device=device))
    if refine_targets is not None and (len(refine_targets) != len(xs) or any(
            t is None or tuple(t.shape) != (p.shape[0],) for t, p in zip(refine_targets, partitions, strict=False))):
        raise ValueError("refine_targets needs one (P_b,) tensor per data set, as long as its partitions")
    target = None if refine_targets is None else torch.cat([t.to(device) for t in refine_targets])
    estimate = _estimate(guide, data, torch.cat(padded), (owner, None, drawn),
                         EstimatorDraws(generators=generators, sizes=sizes),
                         log_prob_settings(width, **settings), orders, chunk_size, (refine_to, refine_rounds, target))
    counts = [p.shape[0] for p in padded]
    return [LogProbEstimate(*(value.unsqueeze(0) for value in parts))
            for parts in zip(*(value.split(counts) for value in estimate), strict=True)]


def _check_drawn(drawn_frames: Tensor, num_frames: int, num_samples: int) -> Tensor:
    """``drawn_frames`` as a bool (S, F) or (B, S, F) tensor with a frame for every partition, or a ValueError."""
    if drawn_frames.dim() not in (2, 3) or drawn_frames.shape[-2:] != (num_samples, num_frames):
        raise ValueError(f"drawn_frames must have shape (S, F) = ({num_samples}, {num_frames}) or (B, S, F): "
                         f"got {tuple(drawn_frames.shape)}")
    drawn = drawn_frames.bool()
    if not drawn.any(-1).all():
        raise ValueError("drawn_frames: every partition must have been drawn in at least one frame")
    return drawn


def _drawn_of(frames: list[Tensor | None], partitions: list[Tensor], drawn_frames: list[Tensor | None] | None,
              device: torch.device) -> Tensor | None:
    """The data sets' drawn-frame masks, checked, padded to the most frames and stacked (P, F_max); False where
    a data set has none (then it is not stratified)."""
    if drawn_frames is None or all(d is None for d in drawn_frames):
        return None
    if len(drawn_frames) != len(partitions):
        raise ValueError("log_prob_estimates needs one drawn_frames entry (or None) per data set")
    counts = [1 if f is None else f.shape[0] for f in frames]
    width = max(counts)
    parts = []
    for b, (own, count, p) in enumerate(zip(drawn_frames, counts, partitions, strict=True)):
        if own is not None and frames[b] is None:
            raise ValueError(f"data set {b} has drawn_frames but no frames: drawn_frames needs the frames it indexes")
        if own is None or count == 1:
            parts.append(torch.zeros(p.shape[0], width, dtype=torch.bool, device=device))
        else:
            own = _check_drawn(own, count, p.shape[0]).to(device)
            parts.append(torch.nn.functional.pad(own, (0, width - count), value=False))
    return torch.cat(parts)


@dataclass(frozen=True)
class DataRows:
    """What the estimator encodes: every data set in each of its frames, ``x`` (R, N, D) with ``mask`` (R, N);
    data set b's frame f is row ``first_row[b] + f``, of ``num_frames[b]`` (1: the data as given)."""

    x: Tensor
    mask: Tensor
    first_row: Tensor
    num_frames: Tensor


def _framed_rows(x: Tensor, mask: Tensor, frames: Tensor | None) -> DataRows:
    """Data sets (B, N, D) sharing ``frames`` (F, D, D) or none."""
    count = 1 if frames is None else frames.shape[0]
    index = torch.arange(x.shape[0], device=x.device)
    rows, row_mask, first = framed(x, mask, frames, index, torch.zeros_like(index))
    return DataRows(rows, row_mask, first, torch.full_like(index, count))


def _framed_rows_of(xs: list[Tensor], frames: list[Tensor | None], width: int) -> DataRows:
    """Data sets (N_b, D) with their own frames, each rotated alone (as :func:`log_prob_estimate` rotates it),
    padded to ``width`` points."""
    rows, masks, counts = [], [], []
    for x, own in zip(xs, frames, strict=True):
        x = x.unsqueeze(0)
        ones = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        zero = torch.zeros(1, dtype=torch.long, device=x.device)
        x = framed(x, ones, own, zero, zero)[0]
        rows.append(torch.nn.functional.pad(x, (0, 0, 0, width - x.shape[1])))
        masks.append((torch.arange(width, device=x.device) < ones.shape[1]).expand(x.shape[0], width))
        counts.append(x.shape[0])
    num_frames = torch.tensor(counts, device=xs[0].device)
    return DataRows(torch.cat(rows), torch.cat(masks), num_frames.cumsum(0) - num_frames, num_frames)


def _estimate(guide: ClusterwiseGuide, data: DataRows, partitions: Tensor, placement: tuple,
              draws: EstimatorDraws, settings: dict[str, Any], orders: str, chunk_size: int,
              refinement: tuple[float | None, int, Tensor | None]) -> tuple[Tensor, Tensor, Tensor]:
    """(log q, standard error, orders enumerated) of every partition (P, N), estimated on the rows ``data``.

    ``placement``: (owner (P,), the data set of each partition (non-decreasing); partition_frame (P,) or None,
    a frame to estimate each in; drawn (P, F_max) bool or None, the frames each was drawn in).
    ``refinement``: (refine_to, rounds, target (P,) or None), as :func:`log_prob_estimate` takes them."""
    refine_to, refine_rounds, target = refinement
    z_proposal = settings.get("z_proposal", AUTO)
    if z_proposal not in Z_PROPOSALS:
        raise ValueError(f"z_proposal must be one of {Z_PROPOSALS}, got {z_proposal!r}")
    if orders not in ORDER_MODES:
        raise ValueError(f"orders must be one of {ORDER_MODES}, got {orders!r}")
    num_z = settings["num_z"]
    options = (settings["num_anchors"], settings["num_orders"], orders, z_proposal, draws, chunk_size)
    layout = (data, *placement)
    num_partitions = partitions.shape[0]
    everything = torch.arange(num_partitions, device=partitions.device)
    units, log_unit = _unit_log_probs(guide, layout, partitions, everything, num_z, *options)
    # stratum 2 p + side of partition p; a stratum's weight is fixed by its partition (the same in every round)
    stratum_log_weight = log_unit.new_zeros(2 * num_partitions).index_put_((units.stratum,), units.log_weight)
    stratum_group = torch.arange(2 * num_partitions, device=partitions.device) // 2
    enumerated = torch.zeros(num_partitions, dtype=torch.bool, device=partitions.device).index_fill(
        0, units.partition[units.enumerated], True)
    stratum = units.stratum

    def pooled(log_values: Tensor, strata: Tensor) -> tuple[Tensor, Tensor]:
        return log_stratified_mean_and_error(log_values, strata, stratum_log_weight, stratum_group, num_partitions)

    log_prob, error = pooled(log_unit, stratum)
    for _ in range(refine_rounds if refine_to is not None else 0):
        loose = refinement_choice(log_prob, error, refine_to, target, placement[0])
        if loose.numel() == 0:
            break
        num_z *= REFINE_Z_FACTOR
        extra_units, extra = _unit_log_probs(guide, layout, partitions, loose, num_z, *options)
        log_unit, stratum = torch.cat([log_unit, extra]), torch.cat([stratum, extra_units.stratum])
        log_prob, error = pooled(log_unit, stratum)
    return log_prob, error, enumerated


def refinement_choice(log_prob: Tensor, error: Tensor, refine_to: float, target: Tensor | None = None,
                      owner: Tensor | None = None, mass: float | None = None) -> Tensor:
    """Indices of the partitions to estimate further: those whose standard error exceeds ``refine_to`` (NaN,
    one unit, never does); with ``target`` (P,), the log numerators of the importance weights, only the
    fewest of them, taken by their share of the weight times their error, that leave the rest of each data set
    (``owner`` (P,)) carrying sum_p w_p SE_p <= ``mass`` (default :data:`REWEIGHT_REFINE_MASS`), the shares
    w_p of a data set summing to one. The shares are pessimistic, w_p proportional to
    exp(target_p - log q_p + 2 SE_p): an over-estimated q hides its weight. A share that is not a number (a
    data set whose every target is -inf) carries nothing; each data set is ranked on its own."""
    loose = error > refine_to
    if target is None or target.numel() == 0:
        return loose.nonzero(as_tuple=True)[0]
    mass = REWEIGHT_REFINE_MASS if mass is None else mass
    owner = torch.zeros_like(target, dtype=torch.long) if owner is None else owner
    num_sets = int(owner.max()) + 1
    log_share = (target - log_prob + 2 * error.nan_to_num(nan=0.0)).double()
    log_share = log_share - scatter_logsumexp(log_share, owner, num_sets)[owner]
    carried = (log_share.exp() * error.double()).nan_to_num(nan=0.0)
    carried = torch.where(loose & (carried > 0), carried, 0.0)
    # per data set, the most weight x error first: a (data set, rank) table whose rows are summed from the end
    by_carried = carried.argsort(descending=True, stable=True)
    order = by_carried[owner[by_carried].argsort(stable=True)]
    sorted_owner = owner[order]
    counts = torch.bincount(owner, minlength=num_sets)
    rank = torch.arange(order.numel(), device=owner.device) - (counts.cumsum(0) - counts)[sorted_owner]
    table = carried.new_zeros(num_sets, int(counts.max())).index_put_((sorted_owner, rank), carried[order])
    left = table.flip(-1).cumsum(-1).flip(-1)[sorted_owner, rank]  # carried by this partition and those after it
    chosen = order[(left > mass) & (carried[order] > 0)]
    return chosen.sort().values


@dataclass(frozen=True)
class _UnitStrata:
    """Where each unit estimate goes: its partition, its stratum (2 partition + side), the log share of the
    frames that stratum stands for (0: one stratum for all), and whether it sums its orders exactly."""

    partition: Tensor
    stratum: Tensor
    log_weight: Tensor
    enumerated: Tensor


def _unit_log_probs(guide: ClusterwiseGuide, layout: tuple, partitions: Tensor, chosen: Tensor, num_z: int,
                    num_anchors: int | None, num_orders: int, orders: str, z_proposal: str, draws: EstimatorDraws,
                    chunk_size: int) -> tuple[_UnitStrata, Tensor]:
    """Independent unit estimates of log q for the partitions ``chosen`` (indices into ``partitions``): where
    each goes, and their log values."""
    data, owner, partition_frame, drawn = layout
    num_frames = data.num_frames[owner[chosen]] if partition_frame is None else torch.ones_like(chosen)
    stratifiable = torch.zeros_like(chosen, dtype=torch.bool)
    if drawn is not None and partition_frame is None:
        times_drawn = drawn[chosen].sum(-1)
        stratifiable = (times_drawn > 0) & (times_drawn < num_frames)
    units = replicate_units(partitions[chosen], num_orders, orders, num_frames, stratifiable)
    if partition_frame is None:
        unit_frame, log_weight = place_in_frames(units, num_frames, None if drawn is None else drawn[chosen],
                                                 draws, owner[chosen])
    else:  # each partition in its own frame
        unit_frame, log_weight = partition_frame[chosen[units.partition]], torch.zeros(units.partition.shape)
    units = replace(units, partition=chosen[units.partition])
    unit_owner = owner[units.partition]
    unit_row = data.first_row[unit_owner] + unit_frame
    unit_labels = partitions[units.partition]
    rows = step_rows(units, unit_labels, draws, unit_owner)
    order = unit_owner[rows.unit].argsort(stable=True)  # rows grouped by data set, each in its own order
    rows = StepRows(rows.unit[order], rows.cluster[order], rows.earlier[order], rows.subset[order])
    log_step, log_share = log_steps(guide, data, unit_row, unit_labels, rows, unit_owner[rows.unit],
                                    num_anchors, num_z, z_proposal, draws, chunk_size)
    log_unit = log_step.new_empty(units.partition.shape[0])
    sampled = ~units.enumerated[rows.unit]
    per_order = log_step.new_zeros(units.partition.shape[0]).index_add(
        0, rows.unit[sampled], (log_step - log_share)[sampled])  # p_gen(sigma) / r(sigma), sampled orders
    log_unit[~units.enumerated] = per_order[~units.enumerated]
    if units.enumerated.any():
        log_unit[units.enumerated] = sum_over_orders(log_step, rows, units)[units.enumerated]
    strata = _UnitStrata(units.partition, 2 * units.partition + units.side, log_weight.to(log_unit), units.enumerated)
    return strata, log_unit
