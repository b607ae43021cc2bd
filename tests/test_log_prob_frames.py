"""The log q estimate with sampling frames: the mixture q_F(c) = (1 / F) sum_f q(c | Q_f x) the samples came
from, unbiased with fewer replicates than frames (the frames stratified into those a partition was drawn in and
the rest), against a per-frame reference whose orders and anchors are summed exactly.

Before: replicate r ran in frame r % F, so 2 replicates averaged frames 0 and 1 alone (at N = 100 with the
shipped guide: -8.8 nats on average against the all-frame mixture, with a stated error of 1.0).
"""

from __future__ import annotations

import math

import pytest
import torch

import pyro_acp.inference.infer  # noqa: F401  (imports the guides before the estimator)
from pyro_acp.diagnostics.evaluation import close_cluster_sets
from pyro_acp.guides import ACPS
from pyro_acp.inference.frame_strata import frame_mixture, sample_frames_to_score
from pyro_acp.inference.frames import drawn_frames, random_frames
from pyro_acp.inference.infer import resolve_guide
from pyro_acp.inference.log_prob import log_prob_estimate, log_prob_estimates
from pyro_acp.inference.log_space import log_mean_and_error, log_stratified_mean_and_error
from pyro_acp.models import CRPGaussianMixture

#: the shipped guide, which is not rotation invariant: for three clusters on a line (close set 3, N = 7) its
#: q of a partition differs by up to 6 nats between the data as given and turned by 90 degrees
GUIDE = resolve_guide(CRPGaussianMixture(), train=False)
X = close_cluster_sets(10)[3]
TURN = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
#: the two orientations twice each: frames 0 and 1 (all the old estimator saw with 2 replicates) are one of them
FRAMES = torch.stack([torch.eye(2), torch.eye(2), TURN, TURN])
#: the guide's four most frequent draws in these frames
PARTITIONS = torch.tensor([[0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0],
                           [0, 0, 1, 0, 0, 1, 0]])
#: two sampled orders per partition: fewer replicates than the 4 frames, the case that was biased
CHEAP = {"orders": "sample", "num_orders": 2, "num_anchors": None, "num_z": 4, "z_proposal": "mixture"}
REPEATS = 300


@pytest.fixture(scope="module")
def per_frame_log_q() -> torch.Tensor:
    """log q(c | Q_f x) (F, P), every order and anchor summed, at least 32 replicates of 32 z draws: stated
    errors below 0.05 nats."""
    count, num_partitions = FRAMES.shape[0], PARTITIONS.shape[0]
    est = log_prob_estimate(GUIDE, X, PARTITIONS.repeat(count, 1), generator=torch.Generator().manual_seed(1),
                            frames=FRAMES, sample_frames=torch.arange(count).repeat_interleave(num_partitions),
                            orders="enumerate", num_orders=64, num_anchors=None, num_z=32, z_proposal="mixture")
    assert float(est.standard_error.max()) < 0.05
    return est.log_prob[0].view(count, -1).double()


def _ratios(drawn: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """REPEATS independent cheap estimates of each partition (REPEATS, P): their log values and stated errors."""
    tiled = PARTITIONS.repeat(REPEATS, 1)
    est = log_prob_estimate(GUIDE, X, tiled, generator=torch.Generator().manual_seed(2), frames=FRAMES,
                            drawn_frames=None if drawn is None else drawn.repeat(REPEATS, 1), **CHEAP)
    return est.log_prob[0].view(REPEATS, -1).double(), est.standard_error[0].view(REPEATS, -1).double()


@pytest.mark.parametrize("drawn_in", [[2], [0, 3], None])
def test_the_estimate_is_unbiased_for_the_frame_mixture(per_frame_log_q, drawn_in):
    """Whichever frames a partition was drawn in (or none given), the mean of exp(estimate) over 300
    independent estimates is q_F within 4 Monte-Carlo standard errors of that mean; the frames-0-and-1
    average the old estimator converged to is further from q_F than that for some partition (power)."""
    mixture = per_frame_log_q.logsumexp(0) - math.log(FRAMES.shape[0])
    drawn = None
    if drawn_in is not None:
        drawn = torch.zeros(*PARTITIONS.shape[:1], FRAMES.shape[0], dtype=torch.bool)
        drawn[:, drawn_in] = True
    log_q, _ = _ratios(drawn)
    ratio = (log_q - mixture).exp()  # unbiased: mean 1
    mean, standard_error = ratio.mean(0), ratio.std(0) / math.sqrt(REPEATS)
    tolerance = 4 * standard_error + 0.1  # + 2 of the reference's own (relative) errors
    assert ((mean - 1).abs() < tolerance).all(), (mean, standard_error)
    old_target = (per_frame_log_q[:2].logsumexp(0) - math.log(2) - mixture).exp()
    assert ((old_target - 1).abs() > tolerance).any(), (old_target, tolerance)


def test_stratifying_by_the_drawn_frames_cuts_the_error_and_states_it(per_frame_log_q):
    """Drawn where q is largest (the frame of each partition's highest q: where a sampler draws it most), the
    stratified estimate's spread in nats is below the unstratified one's, and its stated standard error is the
    spread it has (median within a factor 2 of the sd of the estimates)."""
    mixture = per_frame_log_q.logsumexp(0) - math.log(FRAMES.shape[0])
    drawn = torch.nn.functional.one_hot(per_frame_log_q.argmax(0), FRAMES.shape[0]).bool()
    stratified, stated = _ratios(drawn)
    unstratified, _ = _ratios(None)
    spread = (stratified - mixture).std(0)
    assert (spread < (unstratified - mixture).std(0)).all()
    median_stated = stated.nanmedian(0).values
    assert ((median_stated > spread / 2) & (median_stated < spread * 2)).all(), (median_stated, spread)


def test_the_batched_estimator_stratifies_each_data_set_as_alone():
    """log_prob_estimates with drawn frames for one data set of two (the other without frames): each estimate
    is the lone call's within float rounding."""
    other = torch.randn(4, 2, generator=torch.Generator().manual_seed(9))
    other_partitions = torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]])
    drawn = torch.zeros(PARTITIONS.shape[0], 4, dtype=torch.bool)
    drawn[:, 1] = True
    batched = log_prob_estimates(GUIDE, [X, other], [PARTITIONS, other_partitions],
                                 [torch.Generator().manual_seed(b) for b in range(2)], frames=[FRAMES, None],
                                 drawn_frames=[drawn, None], **CHEAP)
    alone = [log_prob_estimate(GUIDE, X, PARTITIONS, generator=torch.Generator().manual_seed(0), frames=FRAMES,
                               drawn_frames=drawn, **CHEAP),
             log_prob_estimate(GUIDE, other, other_partitions, generator=torch.Generator().manual_seed(1), **CHEAP)]
    for together, lone in zip(batched, alone, strict=True):
        torch.testing.assert_close(together.log_prob, lone.log_prob, rtol=0, atol=1e-4)
        torch.testing.assert_close(together.standard_error, lone.standard_error, rtol=0, atol=1e-4, equal_nan=True)


def test_the_stratified_mean_and_its_error_are_the_closed_forms():
    """Two groups; group 0 split into strata of weights 1/4 and 3/4, group 1 one stratum of weight 1 (then the
    plain mean and its error)."""
    values = torch.tensor([1.0, 3.0, 2.0, 6.0, 4.0, 5.0, 7.0], dtype=torch.float64)
    stratum = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    log_weight = torch.tensor([0.25, 0.75, 1.0, 1.0], dtype=torch.float64).log()
    group = torch.tensor([0, 0, 1, 1])
    log_mean, error = log_stratified_mean_and_error(values.log(), stratum, log_weight, group, 2)
    mean0 = 0.25 * 2.0 + 0.75 * 4.0
    var0 = 0.25**2 * 2.0 / 2 + 0.75**2 * 8.0 / 2  # w^2 s^2 / n per stratum, sample variances 2 and 8
    torch.testing.assert_close(log_mean[0], torch.tensor(math.log(mean0), dtype=torch.float64))
    torch.testing.assert_close(error[0], torch.tensor(math.sqrt(var0) / mean0, dtype=torch.float64))
    plain_mean, plain_error = log_mean_and_error(values[4:].log(), torch.zeros(3, dtype=torch.long), 1)
    torch.testing.assert_close(log_mean[1], plain_mean[0])
    torch.testing.assert_close(error[1], plain_error[0])
    _, lone = log_stratified_mean_and_error(values[:3].log(), torch.tensor([0, 0, 1]), log_weight[:2],
                                            group[:2], 1)
    assert lone.isnan().all()  # a stratum of one unit: no error estimate


def test_drawn_frames_reads_each_samples_frame_and_bad_masks_are_refused():
    """Sample s is drawn in frame s % F; a mask of the wrong shape or a partition drawn nowhere is an error."""
    inverse = torch.tensor([0, 1, 0, 2, 0, 1, 3])
    mask = drawn_frames(inverse, 4, FRAMES)
    assert mask.tolist() == [[True, False, True, False], [False, True, False, False],
                             [False, False, False, True], [False, False, True, False]]
    assert drawn_frames(inverse, 4, None) is None
    with pytest.raises(ValueError, match="drawn_frames must have shape"):
        log_prob_estimate(GUIDE, X, PARTITIONS, frames=FRAMES, drawn_frames=mask[:, :2], **CHEAP)
    with pytest.raises(ValueError, match="at least one frame"):
        log_prob_estimate(GUIDE, X, PARTITIONS, frames=FRAMES, drawn_frames=torch.zeros(4, 4, dtype=torch.bool),
                          **CHEAP)


def test_the_ordered_frame_sample_is_unbiased_and_so_is_its_variance():
    """Exact per-frame values q_f of one partition drawn in frame 0 of 5: over the 6 equally likely pairs of
    other frames, the stratified q_F-hat averages to q_F exactly, and its estimated variance averages to its
    true variance over the pairs (the finite-population estimator is unbiased); drawn in every frame, it is
    q_F itself with no error."""
    log_q = torch.tensor([-1.0, -3.0, -2.0, -6.0, -2.5], dtype=torch.float64)
    drawn = torch.tensor([[True, False, False, False, False]])
    exact = float(log_q.exp().mean())
    estimates = {}
    for seed in range(200):
        picked = sample_frames_to_score(drawn, torch.Generator().manual_seed(seed))
        assert picked.frame[~picked.other].tolist() == [0] and int(picked.other.sum()) == 2
        log_hat, error = frame_mixture(log_q[picked.frame], torch.zeros(picked.frame.shape[0]), picked)
        estimates[tuple(sorted(picked.frame[picked.other].tolist()))] = (float(log_hat.exp()),
                                                                        float((error * log_hat.exp()) ** 2))
    assert len(estimates) == 6  # every pair of the 4 other frames
    values = torch.tensor(list(estimates.values()), dtype=torch.float64)
    assert float(values[:, 0].mean()) == pytest.approx(exact, rel=1e-12)
    true_variance = float(((values[:, 0] - exact) ** 2).mean())
    assert float(values[:, 1].mean()) == pytest.approx(true_variance, rel=1e-9)
    everywhere = sample_frames_to_score(torch.ones(1, 5, dtype=torch.bool), torch.Generator().manual_seed(0))
    log_all, error_all = frame_mixture(log_q[everywhere.frame], torch.zeros(5), everywhere)
    assert float(log_all.exp()) == pytest.approx(exact, rel=1e-12) and float(error_all) == 0.0
    with pytest.raises(ValueError, match="other_frames"):  # scoring no other frame would drop their share
        sample_frames_to_score(drawn, other_frames=0)


def test_the_stated_error_never_exceeds_one_nat():
    """The delta-method error of a mean of R replicates is at most 1 nat, reached when one replicate holds all
    the mass (so a summary must call estimates unreliable below 1: pyro_acp.posteriors.summary)."""
    generator = torch.Generator().manual_seed(0)
    log_values = torch.randn(400, generator=generator, dtype=torch.float64) * 30  # wildly spread replicates
    group = torch.arange(400) // 4
    _, error = log_mean_and_error(log_values, group, 100)
    assert float(error.max()) <= 1.0 + 1e-9 and float(error.max()) > 0.99  # some group is dominated by one
    one_holds_all = torch.tensor([0.0, -1e4, -1e4, -1e4], dtype=torch.float64)
    _, ceiling = log_mean_and_error(one_holds_all, torch.zeros(4, dtype=torch.long), 1)
    assert float(ceiling) == pytest.approx(1.0, abs=1e-9)


def test_the_ordered_frame_sample_states_the_variance_of_noisy_frames():
    """Every frame's q_f = 1, estimated with lognormal noise of mean 1 (relative sd 0.31), a partition drawn
    in frame 0 of 6: over 20,000 draws of the 2 other frames and the noise, the mean stated variance is the
    empirical variance of q_F-hat within 15 % (the noise's own delta-method excess is 9 %); counting the other
    X"""
    count, sigma = 20_000, 0.3
    drawn = torch.zeros(count, 6, dtype=torch.bool)
    drawn[:, 0] = True
    picked = sample_frames_to_score(drawn, torch.Generator().manual_seed(0))
    noise = torch.randn(picked.frame.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_hat = sigma * noise - sigma**2 / 2
    relative_sd = math.sqrt(math.exp(sigma**2) - 1)
    log_q, error = frame_mixture(log_hat, torch.full_like(log_hat, relative_sd), picked)
    q = log_q.exp()
    stated = float(((error * q) ** 2).mean())
    empirical = float(q.var())
    assert float(q.mean()) == pytest.approx(1.0, abs=4 * math.sqrt(empirical / count))
    assert stated == pytest.approx(empirical, rel=0.15), (stated, empirical)


def test_drawn_frames_without_frames_or_with_sample_frames_is_refused():
    torch.manual_seed(0)
    guide = ACPS(2, hidden_dim=16).eval()
    x = torch.randn(6, 2)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]])
    frames = random_frames(2, 2, torch.Generator().manual_seed(0))
    drawn = torch.tensor([[True, False]])
    with pytest.raises(ValueError, match="needs frames= and no sample_frames="):
        log_prob_estimate(guide, x, labels, drawn_frames=drawn)
    with pytest.raises(ValueError, match="needs frames= and no sample_frames="):
        log_prob_estimate(guide, x, labels, frames=frames, sample_frames=torch.tensor([0]), drawn_frames=drawn)
    with pytest.raises(ValueError, match="data set 0 has drawn_frames but no frames"):
        log_prob_estimates(guide, [x], [labels[0]], [torch.Generator().manual_seed(0)], frames=[None],
                           drawn_frames=[drawn])
