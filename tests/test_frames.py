"""Random orthogonal frames: averaging the guide over rotations / reflections of rotation-invariant models."""

import pytest
import torch

import pyro_acp
from pyro_acp.data.partitions import enumerate_partitions
from pyro_acp.diagnostics.metrics import total_variation
from pyro_acp.guides import ACPS
from pyro_acp.inference.frames import frames_for, num_frames, random_frames, sample_frames
from pyro_acp.inference.log_prob import estimate_log_prob, log_prob_estimate
from pyro_acp.inference.sampling import sample_partitions
from pyro_acp.models import SBM, CRPGaussianMixture


def test_random_frames_are_orthogonal_and_include_reflections():
    frames = random_frames(400, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(400, 3, 3)
    assert torch.allclose(frames @ frames.transpose(-1, -2), eye, atol=1e-10)
    determinants = torch.linalg.det(frames)
    assert torch.allclose(determinants.abs(), torch.ones(400, dtype=torch.float64))
    # Haar on O(3): half the frames are reflections, and the first column is uniform on the sphere
    assert 150 < int((determinants < 0).sum()) < 250
    assert frames[:, :, 0].mean(0).abs().max() < 0.15


def test_frame_budget_and_policy():
    assert num_frames(7, 2000) == 16 and num_frames(1000, 100) == 4 and num_frames(200, 100) == 16
    assert num_frames(5000, 100) == 1 and num_frames(7, 3) == 3
    mixture = CRPGaussianMixture()
    assert frames_for(mixture, 7, 50).shape == (16, 2, 2)  # at most MAX_FRAMES
    assert frames_for(mixture, 7, 50, symmetrize=False) is None
    assert frames_for(mixture, 5000, 100) is None  # one frame fits: the data as given
    sbm = SBM()
    assert frames_for(sbm, 7, 50) is None  # not rotation invariant: never by default
    with pytest.raises(ValueError, match="rotation-invariant"):
        frames_for(sbm, 7, 50, symmetrize=True)
    assert sample_frames(7, random_frames(3, 2)).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert sample_frames(4, None).tolist() == [0, 0, 0, 0]


def test_identity_frames_change_nothing_and_wrong_frames_are_refused():
    torch.manual_seed(0)
    guide = ACPS(2, 16).eval()
    x = torch.randn(9, 2) * 3
    plain = sample_partitions(guide, x, 12, generator=torch.Generator().manual_seed(1))
    identity = sample_partitions(guide, x, 12, generator=torch.Generator().manual_seed(1),
                                 frames=torch.eye(2).expand(4, 2, 2))
    assert torch.equal(plain, identity)
    with pytest.raises(ValueError, match="frames must have shape"):
        sample_partitions(guide, x, 4, frames=torch.eye(3).expand(2, 3, 3))
    # each partition in a given identity frame: the same draws, the same estimate
    identity = torch.eye(2).expand(4, 2, 2)
    in_frame = estimate_log_prob(guide, x, plain[0], frames=identity, sample_frames=torch.arange(12) % 4,
                                 generator=torch.Generator().manual_seed(2))
    as_given = log_prob_estimate(guide, x, plain[0], generator=torch.Generator().manual_seed(2))
    assert torch.allclose(in_frame, as_given.log_prob, atol=1e-5)
    # the mixture over identity frames (its start frames drawn first: other draws) is q within the errors
    mixture = log_prob_estimate(guide, x, plain[0], frames=identity, generator=torch.Generator().manual_seed(2))
    combined = (mixture.standard_error.square() + as_given.standard_error.square()).sqrt().nan_to_num(1.0)
    assert ((mixture.log_prob - as_given.log_prob).abs() < 4 * combined + 0.05).all()


def test_each_sample_sees_its_own_frame():
    """Partition s is scored in frame s % F exactly as on the data rotated by that frame."""
    torch.manual_seed(0)
    guide = ACPS(2, 16).eval()
    x = torch.randn(8, 2) * 3
    frames = random_frames(3, 2, generator=torch.Generator().manual_seed(4))
    rotated = torch.stack([x @ frame.T for frame in frames])
    joint = sample_partitions(guide, x, 3, frames=frames, generator=torch.Generator().manual_seed(3))[0]
    for s in range(3):
        in_frame = estimate_log_prob(guide, x, joint[s:s + 1], num_anchors=None, num_z=1, num_orders=1,
                                     frames=frames, sample_frames=torch.tensor([s]),
                                     generator=torch.Generator().manual_seed(5))
        plain = estimate_log_prob(guide, rotated[s], joint[s:s + 1], num_anchors=None, num_z=1, num_orders=1,
                                  generator=torch.Generator().manual_seed(5))
        assert torch.allclose(in_frame, plain, atol=1e-5)


def test_framed_log_prob_estimates_sum_to_one_in_every_frame():
    """q(c | Q x) is a distribution over partitions for each frame Q: the in-frame estimates the importance
    weights use sum to 1 over all 52 partitions of N = 5, frame by frame."""
    torch.manual_seed(0)
    guide = ACPS(2, 16).eval()
    x = torch.randn(5, 2) * 3
    parts = enumerate_partitions(5)
    frames = random_frames(2, 2, generator=torch.Generator().manual_seed(1))
    for frame in range(2):
        log_q = estimate_log_prob(guide, x, parts, num_anchors=None, num_z=50, num_orders=20, frames=frames,
                                  sample_frames=torch.full((parts.shape[0],), frame),
                                  generator=torch.Generator().manual_seed(2))
        assert log_q.exp().sum().item() == pytest.approx(1.0, abs=0.05)


def test_symmetrized_infer_does_not_depend_on_the_orientation_of_the_data():
    """Three clusters 3 sd apart on a line (close set 3): the shipped guide's raw samples change a lot when
    the line is turned by 90 degrees (TV 0.82 between the two); averaged over frames they do not (0.10, the noise of
    two 2,000-sample histograms). By convexity of TV the frame average is no further from the exact posterior
    than the two orientations on average (measured 0.60 vs 0.63: this set stays hard for the guide)."""
    from pyro_acp.diagnostics.evaluation import close_cluster_sets

    model = CRPGaussianMixture()
    x = close_cluster_sets(10)[3]
    turned = x @ torch.tensor([[0.0, -1.0], [1.0, 0.0]]).T
    exact = pyro_acp.exact_posterior(model, x)
    runs = {}
    for symmetrize in (False, True):
        runs[symmetrize] = [
            pyro_acp.infer(model, data, num_samples=2000, seed=seed, symmetrize=symmetrize, train=False,
                           estimate_log_prob=False, progress_bar=False)
            for seed, data in ((0, x), (1, turned))
        ]
    gap = {s: total_variation(runs[s][0].samples, runs[s][1].samples) for s in runs}
    assert gap[True] < 0.15 and gap[False] > 0.5, gap  # 0.10 (Monte-Carlo noise) vs 0.82
    to_exact = {s: sum(total_variation(exact, post.samples) for post in runs[s]) / 2 for s in runs}
    assert to_exact[True] < to_exact[False] + 0.02, to_exact  # + Monte-Carlo slack


def test_infer_without_log_prob_estimates():
    model = CRPGaussianMixture()
    x, _ = model.simulate(1, num_points=30, seed=11).unpadded(0)
    full = pyro_acp.infer(model, x, num_samples=40, seed=3, train=False, progress_bar=False)
    fast = pyro_acp.infer(model, x, num_samples=40, seed=3, train=False, progress_bar=False,
                          estimate_log_prob=False)
    assert fast.log_prob is None and full.log_prob is not None
    assert torch.equal(fast.samples, full.samples)  # the estimates come after the samples
    assert torch.equal(fast.map, full.map)  # the MAP ranks by the exact log joint
    with pytest.raises(ValueError, match="estimate_log_prob"):
        pyro_acp.infer(model, x, reweight=True, estimate_log_prob=False, train=False)



def test_the_ordered_gaussian_catalog_is_rotation_invariant_as_it_declares():
    """Its exact posterior over ordered partitions is the same for the catalog and for the catalog rotated (or
    reflected), so infer may average the guide over frames; a model ordered by a direction would fail this."""
    from pyro_acp.models import OrderedGaussianCatalog
    from pyro_acp.reference.exact_ordered import exact_ordered_posterior

    model = OrderedGaussianCatalog(max_cluster_size=3)
    x = model.simulate(1, num_points=5, seed=3).unpadded(0)[0].double()
    assert model.rotation_invariant and frames_for(model, 5, 50).shape == (16, 2, 2)
    as_given = exact_ordered_posterior(model, x)
    for frame in random_frames(3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64):
        turned = exact_ordered_posterior(model, x @ frame.T)
        assert torch.equal(turned.partitions, as_given.partitions)
        assert torch.allclose(turned.probs, as_given.probs, atol=1e-3)
    # the check has power: shifting the catalog off the origin changes the order's probabilities
    shifted = exact_ordered_posterior(model, x + torch.tensor([8.0, 0.0], dtype=torch.float64))
    assert (shifted.probs - as_given.probs).abs().max() > 0.05
