"""log_prob_estimates: the estimates of several data sets in one padded batch, each on its own generator, are
those of each data set alone."""

import pytest
import torch

from pyro_acp.guides import ACPS
from pyro_acp.inference.frames import random_frames
from pyro_acp.inference.log_prob import log_prob_estimate, log_prob_estimates
from pyro_acp.seeding import forked_rng

with forked_rng(0):
    GUIDE = ACPS(2, hidden_dim=16, num_heads=2, num_inducing=4).eval()


def _case(num_points, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_points, 2, generator=generator) * 2
    labels = torch.randint(0, 5, (4, num_points), generator=generator)  # up to 5 clusters: sampled orders too
    return x, labels.unique(dim=0)


@pytest.mark.parametrize("options", [
    {"num_anchors": 2, "num_z": 2, "num_orders": 4, "z_proposal": "mixture"},
    {"num_anchors": None, "num_z": 3, "num_orders": 8, "z_proposal": "prior", "orders": "sample"},
])
def test_a_padded_batch_estimates_each_data_set_as_alone(options):
    """Sizes 9, 5, 7 (padding in the batch, the smallest in the middle), frames for two of them: every estimate,
    standard error and enumeration flag is the lone call's within float rounding, and every generator ends
    where the lone call leaves it (the same draws, no more)."""
    cases = [_case(n, seed) for seed, n in enumerate((9, 5, 7))]
    frames = [random_frames(3, 2, torch.Generator().manual_seed(7)), None, random_frames(2, 2)]
    batched_generators = [torch.Generator().manual_seed(10 + b) for b in range(3)]
    batched = log_prob_estimates(GUIDE, [x for x, _ in cases], [p for _, p in cases], batched_generators,
                                 frames=frames, **options)
    for b, ((x, partitions), own_frames) in enumerate(zip(cases, frames, strict=True)):
        generator = torch.Generator().manual_seed(10 + b)
        alone = log_prob_estimate(GUIDE, x, partitions, generator=generator, frames=own_frames, **options)
        assert batched[b].log_prob.shape == (1, partitions.shape[0])
        torch.testing.assert_close(batched[b].log_prob, alone.log_prob, rtol=0, atol=1e-4)
        torch.testing.assert_close(batched[b].standard_error, alone.standard_error, rtol=0, atol=1e-4,
                                   equal_nan=True)
        assert torch.equal(batched[b].orders_enumerated, alone.orders_enumerated)
        assert torch.equal(torch.rand(3, generator=batched_generators[b]), torch.rand(3, generator=generator))
    assert not all(est.orders_enumerated.all() for est in batched)  # sampled orders are exercised


def test_mismatched_inputs_are_refused():
    x, partitions = _case(5, 0)
    with pytest.raises(ValueError, match="as many data sets"):
        log_prob_estimates(GUIDE, [x, x], [partitions], [torch.Generator()], num_anchors=None, num_z=1,
                           num_orders=2, z_proposal="prior")
