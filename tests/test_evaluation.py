"""Held-out accuracy of a guide: the MAP among its samples against the simulated truth."""

import torch

from pyro_acp import heldout_ami
from pyro_acp.diagnostics.evaluation import map_partitions
from pyro_acp.guides import ACPS
from pyro_acp.inference.infer import resolve_guide
from pyro_acp.models import CRPGaussianMixture


def test_shipped_guide_recovers_fresh_simulations():
    """The model card's held-out figure, small: 12 fresh data sets, N in [50, 120)."""
    model = CRPGaussianMixture()
    guide = resolve_guide(model, train=False)
    framed = heldout_ami(model, guide, num_datasets=12, num_points=(50, 120), num_samples=40)
    as_given = heldout_ami(model, guide, num_datasets=12, num_points=(50, 120), num_samples=40, symmetrize=False)
    by_guide = heldout_ami(model, guide, num_datasets=12, num_points=(50, 120), num_samples=20, rank_by_guide=True)
    assert framed > 0.9 and as_given > 0.9 and by_guide > 0.85, (framed, as_given, by_guide)


def test_map_is_the_best_sample_under_the_exact_log_joint():
    """An untrained guide's MAP is its sample of highest p(c, x), whatever the frames; padding stays -1."""
    torch.manual_seed(0)
    model = CRPGaussianMixture()
    guide = ACPS(2, 16).eval()
    batch = model.simulate(3, num_points=(6, 10), seed=4)
    best = map_partitions(guide, batch.x, batch.mask, num_samples=30, seed=1, model=model)
    assert torch.equal(best == -1, ~batch.mask)
    for b in range(3):
        x, _ = batch.unpadded(b)
        mine = model.log_joint(x, best[b][batch.mask[b]])
        again = map_partitions(guide, batch.x, batch.mask, num_samples=30, seed=1, model=model)[b]
        assert torch.equal(again, best[b])  # seeded
        random_labels = torch.randint(0, 3, (50, x.shape[0]), generator=torch.Generator().manual_seed(b))
        assert (model.log_joint(x, random_labels) <= mine + 1e-6).float().mean() > 0.9
