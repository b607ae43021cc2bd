"""Held-out accuracy of a guide: MAP partitions of fresh simulations against the true partitions."""

from __future__ import annotations

import torch
from sklearn.metrics import adjusted_mutual_info_score

from pyro_acp.guides import ClusterwiseGuide
from pyro_acp.sampling import estimate_log_prob, sample_partitions


@torch.no_grad()
def map_partitions(guide: ClusterwiseGuide, x, mask, num_samples: int = 20, seed: int = 0, **estimate) -> torch.Tensor:
    """MAP (highest estimated probability among ``num_samples`` draws) of each padded data set: (B, N)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    samples = sample_partitions(guide, x, num_samples, mask=mask, generator=generator)
    log_prob = estimate_log_prob(guide, x, samples, mask=mask, generator=generator, **estimate)
    best = log_prob.argmax(-1)
    return samples[torch.arange(samples.shape[0]), best]


def heldout_ami(
    model, guide: ClusterwiseGuide, num_datasets: int = 50, num_points=None, seed: int = 123_456,
    num_samples: int = 20,
) -> float:
    """Mean AMI between the MAP and the truth on ``num_datasets`` fresh simulations (seeds never trained on)."""
    device = next(guide.parameters()).device
    kwargs = {} if num_points is None else {"num_points": tuple(num_points)}
    batch = model.simulate(num_datasets, seed=seed, **kwargs).to(device)
    was_training = guide.training
    guide.eval()
    best = map_partitions(guide, batch.x, batch.mask, num_samples=num_samples, seed=seed).cpu()
    guide.train(was_training)
    labels, mask = batch.labels.cpu(), batch.mask.cpu()
    scores = [adjusted_mutual_info_score(labels[b][mask[b]].numpy(), best[b][mask[b]].numpy())
              for b in range(num_datasets)]
    return float(sum(scores) / len(scores))
