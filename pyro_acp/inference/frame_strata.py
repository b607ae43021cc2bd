"""The frame mixture q_F(c) = (1 / F) sum_f q_f(c) from a few frames per partition, stratified by where it was drawn.

For an estimator that scores a partition in one frame at a time (the ordered log q of
:func:`pyro_acp.guides.noc.ordered_log_prob_estimate`, whose pointer term is exact per frame), every frame
costs a full estimate. A partition is drawn where its q is high, so its drawn frames D hold most of q_F: they
are all scored, and of the other frames O a simple random sample of m (without replacement):

    q_F = (1 / F) sum_{f in D} q_f + (|O| / F) mean_{f in sample} q_f,

unbiased whatever D is. Its variance is estimated without bias by (1 / F)^2 sum_{f in D} var_f (the drawn
frames' own estimation noise) + (|O| / F)^2 [(1 - m / |O|) s^2 / m + sum_{f sampled} var_f / (m |O|)], s^2 the
sample variance of the m noisy estimates (whose expectation holds the frames' spread and their mean noise, so
only the rest of the noise is added); the finite-population correction makes the first term 0 when every frame
of O is scored, and it is undefined when m = 1 < |O|.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pyro_acp.inference.log_space import scatter_logsumexp
from pyro_acp.validation import check_positive_int

#: frames scored per partition outside those it was drawn in (two: the spread within O needs two)
OTHER_FRAMES = 2


@dataclass(frozen=True)
class FrameSample:
    """The (partition, frame) pairs to score, ``weight`` each pair's share of q_F, and ``other`` whether the pair
    is from the sample of O; per partition, ``num_other`` |O| and ``num_sampled`` m; F in all."""

    num_frames: int
    partition: Tensor
    frame: Tensor
    weight: Tensor
    other: Tensor
    num_other: Tensor
    num_sampled: Tensor


def sample_frames_to_score(drawn: Tensor, generator: torch.Generator | None = None,
                           other_frames: int = OTHER_FRAMES) -> FrameSample:
    """Every drawn frame of each partition and a simple random sample of ``other_frames`` of the others
    (``drawn`` (P, F) bool, every row with a drawn frame). At least one other frame: with none, O's share of
    q_F would be dropped."""
    check_positive_int(other_frames, "other_frames")
    num_partitions, num_frames = drawn.shape
    device = drawn.device
    if num_frames == 1:  # nothing to sample: no draws
        keys = torch.zeros((num_partitions, num_frames), device=device)
    else:
        keys = torch.rand((num_partitions, num_frames), generator=generator, device=device)
    num_other = (~drawn).sum(-1)
    num_sampled = num_other.clamp(max=other_frames)
    rank = keys.masked_fill(drawn, 2.0).argsort(-1).argsort(-1)  # the others in random order first
    chosen_other = ~drawn & (rank < num_sampled.unsqueeze(-1))
    partition, frame = (drawn | chosen_other).nonzero(as_tuple=True)
    other = chosen_other[partition, frame]
    total = float(num_frames)
    share_of_other = num_other[partition].double() / (total * num_sampled[partition].clamp(min=1).double())
    weight = torch.where(other, share_of_other, 1.0 / total)
    return FrameSample(num_frames, partition, frame, weight, other, num_other, num_sampled)


def frame_mixture(log_values: Tensor, errors: Tensor, sample: FrameSample) -> tuple[Tensor, Tensor]:
    """log q_F per partition and its delta-method standard error in nats, from the pairs' log q_f estimates
    ``log_values`` with their own errors in nats ``errors`` (module docstring)."""
    num_partitions = sample.num_other.shape[0]
    log_values = log_values.double()
    log_weighted = log_values + sample.weight.log()
    log_q = scatter_logsumexp(log_weighted, sample.partition, num_partitions)
    relative = (log_weighted - log_q[sample.partition]).exp()  # each pair's share of q_F-hat
    # each scored frame's own noise; a sampled other frame's counts m / |O| of it, the rest being already in the
    # spread s^2 of the noisy values below (E s^2 = the frames' spread + their mean noise variance)
    m_of_pair, other_of_pair = sample.num_sampled[sample.partition].double(), sample.num_other[sample.partition]
    noise_share = torch.where(sample.other, m_of_pair / other_of_pair.double().clamp(min=1), 1.0)
    variance = torch.zeros(num_partitions, dtype=torch.float64, device=log_values.device).index_add(
        0, sample.partition, noise_share * (relative * errors.double()).square())
    # the spread of q_f over the sampled other frames, relative to q_F-hat
    other = sample.other
    scaled = (log_values - log_q[sample.partition]).exp()[other]
    owner = sample.partition[other]
    m = sample.num_sampled.double()
    mean = torch.zeros_like(variance).index_add(0, owner, scaled) / m.clamp(min=1)
    squares = torch.zeros_like(variance).index_add(0, owner, (scaled - mean[owner]).square())
    spread = squares / (m - 1).clamp(min=1)
    share = sample.num_other.double() / sample.num_frames
    correction = 1 - m / sample.num_other.double().clamp(min=1)
    variance = variance + share.square() * correction * spread / m.clamp(min=1)
    undefined = (sample.num_sampled == 1) & (sample.num_other > 1)
    error = variance.sqrt().masked_fill(undefined, float("nan"))
    return log_q, error

