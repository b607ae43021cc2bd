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

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import PAD_LABEL, canonicalize, size_biased_relabel
from pyro_acp.guides.clusterwise import ClusterwiseGuide
from pyro_acp.inference.frames import framed
from pyro_acp.inference.log_prob_settings import (  # noqa: F401  (re-exported: the estimator's settings)
    AUTO,
    LOG_PROB_SETTINGS,
    REFINE_Z_FACTOR,
    REWEIGHT_REFINE_TO,
    REWEIGHT_SETTINGS,
    log_prob_settings,
)
from pyro_acp.inference.log_space import log_stratified_mean_and_error, scatter_logsumexp
from pyro_acp.inference.sampling import padded_inputs
from pyro_acp.inference.streams import EstimatorDraws

ORDER_MODES = ("auto", "sample", "enumerate")
Z_PROPOSALS = ("mixture", "encoder", "prior")
#: the exact sum over orders is done for at most this many clusters (K 2^(K-1) step rows each)
MAX_ENUMERATED_CLUSTERS = 12
#: the join network runs on at most this many (z draw, candidate point) pairs at a time, which bounds its
#: (pairs, H) activations whatever N is (speed is level from 2^14 pairs up on a 2-core CPU)
JOIN_CHUNK = 2**16


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
) -> LogProbEstimate:
    """Estimate log q(partition | x) for partitions (B, S, N) of data sets (B, N, D) (module docstring).

    ``orders``: "auto" sums all orders of a partition exactly when 2^(K-1) <= ``num_orders`` (the sum costs
    N 2^(K-1) anchor evaluations, :func:`_sum_over_orders`) and averages ``num_orders`` size-biased orders
    otherwise; "sample" always samples; "enumerate" always sums (K <= 12).
    ``num_anchors``: None uses every member as an anchor, otherwise at most that many per cluster.
    "auto" (any of the three): :func:`log_prob_settings` for the data sets' size N.
    ``frames`` (F, D, D): with ``sample_frames`` ((S,) or (B, S)) each partition is estimated in its own
    frame; without, the estimate is of the mixture over the F frames (module docstring), stratified by
    ``drawn_frames`` ((S, F) or (B, S, F) bool: the frames each partition was drawn in) when given.
    ``refine_to`` (nats): partitions whose standard error exceeds it get further independent replicates with
    :data:`REFINE_Z_FACTOR` times the z draws, pooled with the first (each replicate is unbiased), for up to
    ``refine_rounds`` rounds: rare partitions, whose joins need unusual z, are the noisy ones.
    ``chunk_size``: z noise is drawn ``chunk_size * 4 // num_z`` anchor rows at a time (memory), and the join
    network runs on at most :data:`JOIN_CHUNK` (z draw, candidate) pairs at a time (the CPU's caches).
    All data sets share ``generator``; :func:`log_prob_estimates` gives each its own.
    """
    x, mask = padded_inputs(x, mask)
    if labels.dim() == 2:
        labels = labels.unsqueeze(0)
    num_sets, num_samples, num_points = labels.shape
    partitions = canonicalize(labels.reshape(-1, num_points).to(x.device))
    owner = torch.arange(num_sets, device=x.device).repeat_interleave(num_samples)
    partition_frame = drawn = None
    if frames is not None and sample_frames is not None:
        partition_frame = sample_frames.to(x.device).expand(num_sets, num_samples).reshape(-1)
    elif frames is not None and drawn_frames is not None:
        drawn = _check_drawn(drawn_frames, frames.shape[0], num_samples).to(x.device)
        drawn = drawn.expand(num_sets, num_samples, -1).reshape(num_sets * num_samples, -1)
    data = _framed_rows(x, mask, frames)
    settings = log_prob_settings(num_points, num_anchors=num_anchors, num_z=num_z, num_orders=num_orders,
                                 z_proposal=z_proposal)
    estimate = _estimate(guide, data, partitions, (owner, partition_frame, drawn), EstimatorDraws(generator),
                         settings, orders, chunk_size, refine_to, refine_rounds)
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
    **settings: Any,
) -> list[LogProbEstimate]:
    """:func:`log_prob_estimate` of several data sets in one batched computation, each on its own generator.

    ``xs``: data sets (N_b, D), N_b may differ; ``partitions``: (P_b, N_b) labels of each, their counts may
    differ; ``frames``: each data set's sampling frames (F_b, D, D) or None; ``drawn_frames``: each one's
    (P_b, F_b) frames its partitions were drawn in, or None (:func:`log_prob_estimate`); the options (``num_z``
    ...) apply to all (call once per setting). Every random number data set b's estimate uses comes from
    ``generators[b]``, in the shapes ``log_prob_estimate(guide, xs[b], partitions[b], generator=generators[b],
    frames=frames[b], drawn_frames=drawn_frames[b])`` draws them in, so estimate b equals that call's up to the
    float rounding of a padded batch, whichever data sets share the batch. Returns one estimate per data set,
    of shape (1, P_b).
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
    estimate = _estimate(guide, data, torch.cat(padded), (owner, None, drawn),
                         EstimatorDraws(generators=generators, sizes=sizes),
                         log_prob_settings(width, **settings), orders, chunk_size, refine_to, refine_rounds)
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
    for own, count, p in zip(drawn_frames, counts, partitions, strict=True):
        if own is None or count == 1:
            parts.append(torch.zeros(p.shape[0], width, dtype=torch.bool, device=device))
        else:
            own = _check_drawn(own, count, p.shape[0]).to(device)
            parts.append(torch.nn.functional.pad(own, (0, width - count), value=False))
    return torch.cat(parts)


@dataclass(frozen=True)
class _DataRows:
    """What the estimator encodes: every data set in each of its frames, ``x`` (R, N, D) with ``mask`` (R, N);
    data set b's frame f is row ``first_row[b] + f``, of ``num_frames[b]`` (1: the data as given)."""

    x: Tensor
    mask: Tensor
    first_row: Tensor
    num_frames: Tensor


def _framed_rows(x: Tensor, mask: Tensor, frames: Tensor | None) -> _DataRows:
    """Data sets (B, N, D) sharing ``frames`` (F, D, D) or none."""
    count = 1 if frames is None else frames.shape[0]
    index = torch.arange(x.shape[0], device=x.device)
    rows, row_mask, first = framed(x, mask, frames, index, torch.zeros_like(index))
    return _DataRows(rows, row_mask, first, torch.full_like(index, count))


def _framed_rows_of(xs: list[Tensor], frames: list[Tensor | None], width: int) -> _DataRows:
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
    return _DataRows(torch.cat(rows), torch.cat(masks), num_frames.cumsum(0) - num_frames, num_frames)


def _estimate(guide: ClusterwiseGuide, data: _DataRows, partitions: Tensor, placement: tuple,
              draws: EstimatorDraws, settings: dict[str, Any], orders: str, chunk_size: int,
              refine_to: float | None, refine_rounds: int) -> tuple[Tensor, Tensor, Tensor]:
    """(log q, standard error, orders enumerated) of every partition (P, N), estimated on the rows ``data``.

    ``placement``: (owner (P,), the data set of each partition (non-decreasing); partition_frame (P,) or None,
    a frame to estimate each in; drawn (P, F_max) bool or None, the frames each was drawn in)."""
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
        loose = (error > refine_to).nonzero(as_tuple=True)[0]  # NaN (one unit) never compares greater
        if loose.numel() == 0:
            break
        num_z *= REFINE_Z_FACTOR
        extra_units, extra = _unit_log_probs(guide, layout, partitions, loose, num_z, *options)
        log_unit, stratum = torch.cat([log_unit, extra]), torch.cat([stratum, extra_units.stratum])
        log_prob, error = pooled(log_unit, stratum)
    return log_prob, error, enumerated


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
    units = _replicate_units(partitions[chosen], num_orders, orders, num_frames, stratifiable)
    if partition_frame is None:
        unit_frame, log_weight = _place_in_frames(units, num_frames, None if drawn is None else drawn[chosen],
                                                  draws, owner[chosen])
    else:  # each partition in its own frame
        unit_frame, log_weight = partition_frame[chosen[units.partition]], torch.zeros(units.partition.shape)
    units = replace(units, partition=chosen[units.partition])
    unit_owner = owner[units.partition]
    unit_row = data.first_row[unit_owner] + unit_frame
    unit_labels = partitions[units.partition]
    rows = _step_rows(units, unit_labels, draws, unit_owner)
    order = unit_owner[rows.unit].argsort(stable=True)  # rows grouped by data set, each in its own order
    rows = _StepRows(rows.unit[order], rows.cluster[order], rows.earlier[order], rows.subset[order])
    log_step, log_share = _log_steps(guide, data, unit_row, unit_labels, rows, unit_owner[rows.unit],
                                     num_anchors, num_z, z_proposal, draws, chunk_size)
    log_unit = log_step.new_empty(units.partition.shape[0])
    sampled = ~units.enumerated[rows.unit]
    per_order = log_step.new_zeros(units.partition.shape[0]).index_add(
        0, rows.unit[sampled], (log_step - log_share)[sampled])  # p_gen(sigma) / r(sigma), sampled orders
    log_unit[~units.enumerated] = per_order[~units.enumerated]
    if units.enumerated.any():
        log_unit[units.enumerated] = _sum_over_orders(log_step, rows, units)[units.enumerated]
    strata = _UnitStrata(units.partition, 2 * units.partition + units.side, log_weight.to(log_unit), units.enumerated)
    return strata, log_unit


@dataclass(frozen=True)
class _Units:
    """The independent replicates of every partition's estimate: unit u estimates q(partition[u]) by the exact
    sum over its orders (``enumerated[u]``) or by one size-biased order; ``replicate[u]`` numbers the units of
    one partition; a partition split into two frame strata puts its units alternately in stratum ``side`` 0
    (its drawn frames) and 1 (the others), ``split[u]`` (else ``side`` 0)."""

    partition: Tensor
    replicate: Tensor
    enumerated: Tensor
    num_clusters: Tensor
    side: Tensor
    split: Tensor


def _replicate_units(partitions: Tensor, num_orders: int, orders: str, num_frames: Tensor | int = 1,
                     stratifiable: Tensor | bool = False) -> _Units:
    """``num_orders`` sampled-order units per partition, or max(2, num_orders // 2^(K-1)) enumerated ones;
    an enumerated count of at least ``num_frames`` (per partition, or one for all) is rounded up to a multiple
    of it, so that every frame is visited equally often (the frames then contribute no noise: the mean is over
    all of them). A ``stratifiable`` partition whose count is not a multiple of its frames is split into two
    strata of max(2, ceil(count / 2)) units each (a standard error needs two per stratum)."""
    num_clusters = partitions.max(-1).values + 1
    subset_rows = 2 ** (num_clusters - 1)  # (S, c) pairs per cluster and partition in the exact sum, over N
    if orders == "enumerate":
        if int(num_clusters.max()) > MAX_ENUMERATED_CLUSTERS:
            raise ValueError(f"orders='enumerate' sums over all cluster orders of partitions with at most "
                             f"{MAX_ENUMERATED_CLUSTERS} clusters; one has {int(num_clusters.max())}: use "
                             "orders='auto' or 'sample'")
        enumerated = torch.ones_like(num_clusters, dtype=torch.bool)
    elif orders == "auto":
        enumerated = (subset_rows <= num_orders) & (num_clusters <= MAX_ENUMERATED_CLUSTERS)
    else:
        enumerated = torch.zeros_like(num_clusters, dtype=torch.bool)
    exact_count = (num_orders // subset_rows).clamp(min=2)
    stratified = (exact_count + num_frames - 1) // num_frames * num_frames
    exact_count = torch.where(exact_count >= num_frames, stratified, exact_count)  # at most doubles the cost
    count = torch.where(enumerated, exact_count, torch.full_like(num_clusters, num_orders))
    split = torch.as_tensor(stratifiable, device=partitions.device) & (count % num_frames != 0)
    count = torch.where(split, 2 * ((count + 1) // 2).clamp(min=2), count)
    partition = torch.arange(partitions.shape[0], device=partitions.device).repeat_interleave(count)
    first = count.cumsum(0) - count
    replicate = torch.arange(partition.shape[0], device=partitions.device) - first[partition]
    split = split.expand_as(count)[partition]
    side = torch.where(split, replicate % 2, 0)
    return _Units(partition, replicate, enumerated[partition], num_clusters[partition], side, split)


def _place_in_frames(units: _Units, num_frames: Tensor, drawn: Tensor | None, draws: EstimatorDraws,
                     owner: Tensor) -> tuple[Tensor, Tensor]:
    """The frame of every unit and the log share (|stratum| / F) of the frames its stratum stands for.

    A stratum's frames (all F of the partition's data set; or, split, its drawn frames / the others) are taken
    in turn from a uniformly drawn start, so each unit's frame is uniform within the stratum (the stratum's
    mean is unbiased) and a stratum with as many units as frames visits each once. ``num_frames``,
    ``drawn`` (F_max columns) and ``owner`` are per partition, ``units.partition`` indexes them."""
    device = num_frames.device
    width = int(num_frames.max()) if drawn is None else drawn.shape[-1]
    partition = units.partition
    frame_index = torch.arange(width, device=device)
    in_stratum = frame_index < num_frames[partition].unsqueeze(-1)  # (U, F_max)
    if drawn is not None:
        mine = drawn[partition]
        side_mask = torch.where((units.side == 0).unsqueeze(-1), mine, ~mine)
        in_stratum = in_stratum & torch.where(units.split.unsqueeze(-1), side_mask, True)
    size = in_stratum.sum(-1)
    start = torch.zeros(num_frames.shape[0], 2, device=device)
    framed_sets = (num_frames > 1).nonzero(as_tuple=True)[0]  # no draws where there is one frame: as before
    if framed_sets.numel():
        start[framed_sets] = draws.row_uniforms(owner[framed_sets], 2, device)
    first = (start[partition, units.side] * size).long().clamp(max=size - 1)
    within = torch.where(units.split, units.replicate // 2, units.replicate)
    members = ((~in_stratum) * width + frame_index).argsort(-1)  # the stratum's frames first, in order
    frame = members.gather(1, ((first + within) % size).unsqueeze(-1)).squeeze(-1)
    log_weight = torch.where(units.split, size.double().log() - num_frames[partition].double().log(), 0.0)
    return frame, log_weight


@dataclass(frozen=True)
class _StepRows:
    """Cluster steps to score: in unit ``unit``, cluster ``cluster`` built after the clusters in ``earlier``
    (R, K_max) bool. An enumerated unit has a row for every (earlier set S, cluster c not in S), ``subset``
    being the bit mask of S; a sampled one has the K steps of one size-biased order (``subset`` -1)."""

    unit: Tensor
    cluster: Tensor
    earlier: Tensor
    subset: Tensor


def _step_rows(units: _Units, unit_labels: Tensor, draws: EstimatorDraws, unit_owner: Tensor) -> _StepRows:
    device = unit_labels.device
    max_clusters = int(units.num_clusters.max())
    pieces = []
    for k in units.num_clusters[units.enumerated].unique().tolist():
        unit = (units.enumerated & (units.num_clusters == k)).nonzero(as_tuple=True)[0]
        subset = torch.arange(2**k, device=device)
        members = (subset.unsqueeze(-1) & 2 ** torch.arange(k, device=device)) > 0  # (2^k, k)
        pair_subset, pair_cluster = (~members).nonzero(as_tuple=True)  # every c not in S
        earlier = torch.zeros(pair_subset.shape[0], max_clusters, dtype=torch.bool, device=device)
        earlier[:, :k] = members[pair_subset]
        pieces.append((unit.repeat_interleave(pair_subset.shape[0]), pair_cluster.repeat(unit.shape[0]),
                       earlier.repeat(unit.shape[0], 1), pair_subset.repeat(unit.shape[0])))
    sampled = (~units.enumerated).nonzero(as_tuple=True)[0]
    if sampled.numel():
        labels = unit_labels[sampled]
        keys = draws.uniform(unit_owner[sampled], tuple(labels.shape), 2.0, device)
        position = size_biased_relabel(labels, keys=keys)  # (T, N): the step at which each point's cluster is built
        cluster_step = torch.full((sampled.shape[0], max_clusters), max_clusters, dtype=torch.long, device=device)
        # amin, not a plain scatter: padding (label -1, clamped to 0) must not overwrite cluster 0's step
        cluster_step.scatter_reduce_(1, labels.clamp(min=0), torch.where(labels >= 0, position, max_clusters), "amin")
        thread, cluster = (cluster_step < max_clusters).nonzero(as_tuple=True)
        earlier = cluster_step[thread] < cluster_step[thread, cluster].unsqueeze(-1)
        pieces.append((sampled[thread], cluster, earlier, torch.full_like(cluster, -1)))
    unit, cluster, earlier, subset = (torch.cat(parts) for parts in zip(*pieces, strict=True))
    return _StepRows(unit, cluster, earlier, subset)


def _log_steps(guide: ClusterwiseGuide, data: _DataRows, unit_row: Tensor, unit_labels: Tensor, rows: _StepRows,
               row_owner: Tensor, num_anchors: int | None, num_z: int, z_proposal: str, draws: EstimatorDraws,
               chunk_size: int) -> tuple[Tensor, Tensor]:
    """Per step row: the estimate of log[(1 / |I|) sum_{d in s_c} p(b_c | d, earlier clusters, x)], the
    probability that the step picks an anchor in s_c and builds exactly s_c, and log(|s_c| / |I|), the
    size-biased probability of visiting s_c next (|I|: points outside the earlier clusters)."""
    x, device = data.x, data.x.device
    num_points = unit_labels.shape[-1]
    encoded = guide.encode_data(x, data.mask)
    labels = unit_labels[rows.unit]
    valid = labels >= 0
    cluster = (labels == rows.cluster.unsqueeze(-1))  # (R, N) s_c
    assigned = rows.earlier.gather(1, labels.clamp(min=0)) & valid
    dataset = unit_row[rows.unit]
    unassigned = data.mask[dataset] & ~assigned  # I
    # G: the summed summaries of the earlier clusters, from one summary per (unit, cluster)
    max_clusters = rows.earlier.shape[1]
    steps = torch.arange(max_clusters, device=device)
    unit_members = unit_labels.unsqueeze(1) == steps.view(1, -1, 1)  # (U, K, N)
    unit_index, cluster_index = unit_members.any(-1).nonzero(as_tuple=True)
    summaries = guide.cluster_summaries(encoded.cluster_points, unit_row[unit_index],
                                        unit_members[unit_index, cluster_index])
    table = summaries.new_zeros(*unit_members.shape[:2], guide.hidden_dim).index_put(
        (unit_index, cluster_index), summaries)
    cluster_code = summaries.new_zeros(rows.unit.shape[0], guide.hidden_dim)
    for k in range(max_clusters):  # sum over the earlier clusters, one (R, H) slice at a time
        cluster_code += rows.earlier[:, k : k + 1].to(table.dtype) * table[rows.unit, k]
    cluster_size = cluster.sum(-1)
    used = cluster_size if num_anchors is None else cluster_size.clamp(max=num_anchors)
    scores = draws.uniform(row_owner, tuple(cluster.shape), -1.0, device).masked_fill(~cluster, -1.0)
    rank = scores.argsort(-1, descending=True).argsort(-1)
    row, anchor_point = (cluster & (rank < used.unsqueeze(-1))).nonzero(as_tuple=True)  # (step row, anchor)
    log_terms = torch.empty(row.shape[0], num_z, dtype=x.dtype, device=device)
    piece = max(1, chunk_size * 4 // num_z)  # rows x z draws per noise piece bounded: memory
    noise = draws.normal_stream(row_owner[row], num_z, guide.z_dim, piece, device)
    candidates = (unassigned.sum(-1) - 1).clamp(min=1)[row] * num_z  # (z draw, candidate) pairs per anchor row
    for start, stop in _chunk_bounds(candidates, JOIN_CHUNK, piece):
        r = row[start:stop]
        anchor = torch.zeros(r.shape[0], num_points, dtype=torch.bool, device=device)
        anchor[torch.arange(r.shape[0], device=device), anchor_point[start:stop]] = True
        available = unassigned[r] & ~anchor
        enc, prior = guide.encode_step(encoded, dataset[r], anchor, available, cluster_code[r], cluster[r] & available)
        z, log_weight = _draw_z(guide, enc, prior, noise.take(r.shape[0]), z_proposal)
        logits = guide.join_logits(z, enc)  # (M, R, N)
        log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, enc.targets.to(x.dtype).expand_as(logits), reduction="none"
        )
        log_terms[start:stop] = ((log_lik * available).sum(-1) + log_weight).T
    # mean over z draws and anchors, times |s_c| / |I|
    log_anchor_mean = scatter_logsumexp(log_terms.logsumexp(-1), row, cluster.shape[0]) - math.log(num_z)
    log_share = cluster_size.to(x.dtype).log() - unassigned.sum(-1).to(x.dtype).log()
    return log_anchor_mean - used.to(x.dtype).log() + log_share, log_share


def _chunk_bounds(work: Tensor, budget: int, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) row ranges of at most ``max_rows`` rows whose summed ``work`` stays within
    ``budget`` (a row over the budget alone in its range)."""
    before = work.cumsum(0) - work  # a range holds the rows that start within one budget's span
    counts = torch.unique_consecutive(torch.div(before, budget, rounding_mode="floor"), return_counts=True)[1]
    bounds, start = [], 0
    for count in counts.tolist():
        for first in range(start, start + count, max_rows):
            bounds.append((first, min(first + max_rows, start + count)))
        start += count
    return bounds


def _sum_over_orders(log_step: Tensor, rows: _StepRows, units: _Units) -> Tensor:
    """log sum over all K! orders sigma of prod_k step(sigma_<k, sigma_k), per enumerated unit (-inf for the
    others), by dynamic programming over subsets: f(empty) = 1, f(T) = sum_{c in T} f(T - c) step(T - c, c),
    q = f(all clusters) (Held-Karp style: K 2^(K-1) step estimates instead of K K!). Every order's product uses
    distinct rows, whose estimates are independent, so the sum stays unbiased."""
    device = log_step.device
    chosen = units.enumerated.nonzero(as_tuple=True)[0]
    slot = torch.full_like(units.partition, -1).index_copy(0, chosen, torch.arange(chosen.shape[0], device=device))
    k_max = int(units.num_clusters[chosen].max())
    on = rows.subset >= 0
    table = log_step.new_full((chosen.shape[0], 2**k_max, k_max), float("-inf"))
    table[slot[rows.unit[on]], rows.subset[on], rows.cluster[on]] = log_step[on]
    subsets = torch.arange(2**k_max, device=device)
    bits = 2 ** torch.arange(k_max, device=device)
    popcount = ((subsets.unsqueeze(-1) & bits) > 0).sum(-1)
    f = log_step.new_full((chosen.shape[0], 2**k_max), float("-inf"))
    f[:, 0] = 0.0
    for level in range(1, k_max + 1):
        target = subsets[popcount == level]  # (M,)
        inside = (target.unsqueeze(-1) & bits) > 0  # (M, K): c in T
        before = (target.unsqueeze(-1) - bits).clamp(min=0)  # T - c, meaningful where c in T
        terms = f[:, before] + table[:, before, torch.arange(k_max, device=device)]
        f[:, target] = terms.masked_fill(~inside, float("-inf")).logsumexp(-1)
    out = log_step.new_full((units.partition.shape[0],), float("-inf"))
    out[chosen] = f[torch.arange(chosen.shape[0], device=device), 2 ** units.num_clusters[chosen] - 1]
    return out


def _draw_z(guide: ClusterwiseGuide, enc, prior, noise: Tensor, z_proposal: str) -> tuple[Tensor, Tensor]:
    """z draws per step (M, R, Z) from standard normal ``noise`` (M, R, Z) and their log importance weights
    log p(z) - log proposal(z).

    "mixture" draws the first half from the prior p(z | context) and the rest from the encoder q(z | joins) and
    weights every draw by p / (p/2 + q/2) (the balance heuristic of multiple importance sampling: unbiased,
    with weights at most 2, so neither an overconfident encoder nor a prior that misses unusual z makes the
    estimate heavy-tailed).
    """
    num_z = noise.shape[0]
    if z_proposal == "prior":
        return prior.loc + prior.scale * noise, noise.new_zeros(noise.shape[:2])
    posterior = guide.posterior(enc)
    if z_proposal == "encoder":
        z = posterior.loc + posterior.scale * noise
        return z, prior.log_prob(z).sum(-1) - posterior.log_prob(z).sum(-1)
    from_prior = torch.arange(num_z, device=noise.device) < (num_z + 1) // 2
    loc = torch.where(from_prior.view(-1, 1, 1), prior.loc, posterior.loc)
    scale = torch.where(from_prior.view(-1, 1, 1), prior.scale, posterior.scale)
    z = loc + scale * noise
    log_p, log_q = prior.log_prob(z).sum(-1), posterior.log_prob(z).sum(-1)
    return z, log_p - (torch.logaddexp(log_p, log_q) - math.log(2.0))
