"""Held-out accuracy of a guide: MAP partitions of fresh simulations against the true partitions."""

from __future__ import annotations

import torch

from pyro_acp.diagnostics.metrics import adjusted_mutual_info
from pyro_acp.guides import ClusterwiseGuide
from pyro_acp.inference.frames import frames_for, sample_frames
from pyro_acp.inference.log_prob import estimate_log_prob
from pyro_acp.inference.sampling import sample_partitions
from pyro_acp.protocols import ClusteringModel, exact_log_joint, has_collapsed_likelihood


@torch.no_grad()
def map_partitions(
    guide: ClusterwiseGuide, x: torch.Tensor, mask: torch.Tensor, *, num_samples: int = 20, seed: int = 0, model=None,
    rank_by_guide: bool = False, symmetrize: bool | None = None, **estimate
) -> torch.Tensor:
    """MAP among ``num_samples`` draws of each padded data set: (B, N), -1 on padding.

    Draws (unordered partitions) are ranked by the exact collapsed log p(partition, x) when ``model`` has one
    (as :func:`pyro_acp.infer` does), otherwise, or with ``rank_by_guide``, by the guide's log-probability
    estimate; an ordered model's exact joint of ordered partitions is not used here. As in ``infer``,
    draws are made in random frames of the data when ``model`` is rotation invariant (``symmetrize``).
    """
    generator = torch.Generator(device=x.device).manual_seed(seed)
    num_points = x.shape[-2]
    frames = None if model is None else frames_for(model, num_points, num_samples, generator, x.device, symmetrize)
    samples = sample_partitions(guide, x, num_samples, mask=mask, generator=generator, frames=frames)
    if rank_by_guide or not has_collapsed_likelihood(model):
        score = estimate_log_prob(guide, x, samples, mask=mask, generator=generator, frames=frames,
                                  sample_frames=sample_frames(num_samples, frames, x.device), **estimate)
    else:
        score = torch.stack([exact_log_joint(model, x[b][mask[b]], samples[b][:, mask[b]])
                             for b in range(x.shape[0])])
    return samples[torch.arange(samples.shape[0]), score.argmax(-1)]


def heldout_ami(
    model: ClusteringModel, guide: ClusterwiseGuide, *, num_datasets: int = 50, num_points=None, seed: int = 123_456,
    num_samples: int = 100, rank_by_guide: bool = False, symmetrize: bool | None = None,
) -> float:
    """Mean AMI between the MAP and the truth on ``num_datasets`` fresh simulations (seeds never trained on).

    The MAP is chosen as :func:`pyro_acp.infer` chooses it (exact log joint when the model has one);
    ``rank_by_guide=True`` ranks by the guide's own log-probability estimates instead; ``symmetrize`` as in
    ``infer`` (random frames for rotation-invariant models).
    """
    device = next(guide.parameters()).device
    kwargs = {} if num_points is None else {"num_points": tuple(num_points)}
    batch = model.simulate(num_datasets, seed=seed, **kwargs).to(device)
    was_training = guide.training
    guide.eval()
    best = map_partitions(guide, batch.x, batch.mask, num_samples=num_samples, seed=seed, model=model,
                          rank_by_guide=rank_by_guide, symmetrize=symmetrize).cpu()
    guide.train(was_training)
    labels, mask = batch.labels.cpu(), batch.mask.cpu()
    scores = [adjusted_mutual_info(labels[b][mask[b]], best[b][mask[b]]) for b in range(num_datasets)]
    return float(sum(scores) / len(scores))


def close_cluster_sets(count: int, *, num_points: int = 7, seed: int = 1) -> list[torch.Tensor]:
    """Hard small data sets for checking a guide: 2 or 3 unit-variance clusters whose centres lie 1.5 to 3
    standard deviations apart on a line, so that several partitions compete in the exact posterior."""
    generator = torch.Generator().manual_seed(seed)
    sets = []
    for i in range(count):
        k, separation = 2 + i % 2, 1.5 + 0.5 * (i % 4)
        centres = torch.stack([torch.tensor([separation * j, 0.0]) for j in range(k)])
        labels = torch.arange(num_points) % k
        sets.append(centres[labels] + torch.randn(num_points, 2, generator=generator))
    return sets
