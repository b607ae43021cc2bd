"""Held-out accuracy of a guide: the MAP among its samples against the simulated truth."""

import pytest
import torch

from pyro_acp import heldout_ami
from pyro_acp.diagnostics.evaluation import map_partitions
from pyro_acp.guides import ACPS
from pyro_acp.inference.infer import resolve_guide
from pyro_acp.models import CRPGaussianMixture


@pytest.mark.slow
def test_shipped_guide_recovers_fresh_simulations():
    """The model card's held-out figure, small: 12 fresh data sets, N in [50, 120)."""
    model = CRPGaussianMixture()
    guide = resolve_guide(model, train=False)
    framed = heldout_ami(model, guide, num_datasets=12, num_points=(50, 120), num_samples=40)
    as_given = heldout_ami(model, guide, num_datasets=12, num_points=(50, 120), num_samples=40, symmetrize=False)
    by_guide = heldout_ami(model, guide, num_datasets=12, num_points=(50, 120), num_samples=20, rank_by_guide=True)
    assert framed > 0.9 and as_given > 0.9 and by_guide > 0.85, (framed, as_given, by_guide)


def test_map_is_the_best_sample_under_the_exact_log_joint(monkeypatch):
    """An untrained guide's MAP is its sample of highest p(c, x), whatever the frames; padding stays -1."""
    import pyro_acp.diagnostics.evaluation as evaluation

    drawn = []
    draw = evaluation.sample_partitions

    def recorded(*args, **kwargs):  # keep the draws map_partitions ranks, to rank them here independently
        drawn.append(draw(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(evaluation, "sample_partitions", recorded)
    torch.manual_seed(0)
    model = CRPGaussianMixture()
    guide = ACPS(2, 16).eval()
    batch = model.simulate(3, num_points=(6, 10), seed=4)
    best = map_partitions(guide, batch.x, batch.mask, num_samples=30, seed=1, model=model)
    assert torch.equal(best == -1, ~batch.mask)
    samples = drawn[0]
    assert samples.shape == (3, 30, batch.max_points)
    for b in range(3):
        x, _ = batch.unpadded(b)
        mine = model.log_joint(x, best[b][batch.mask[b]])
        again = map_partitions(guide, batch.x, batch.mask, num_samples=30, seed=1, model=model)[b]
        assert torch.equal(again, best[b])  # seeded
        scores = model.log_joint(x, samples[b][:, batch.mask[b]])
        assert float(mine) == pytest.approx(float(scores.max()), rel=1e-9)  # the highest p(c, x) of the 30
        assert (samples[b] == best[b]).all(-1).any()  # and one of the draws
        assert scores.min() < scores.max() - 1  # the draws differ: picking the wrong one would show
