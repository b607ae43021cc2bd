"""Does infer's log q estimate see every sampling frame? The default estimate against the all-frame mixture.

``infer`` samples in F = 16 random frames, so its samples come from q_F(c) = (1 / F) sum_f q(c | Q_f x). The
default estimate (:func:`pyro_acp.inference.log_prob.log_prob_estimate` with ``frames`` alone) runs replicate
r in frame r % F; where a partition gets fewer replicates than frames (N > 40: 2 sampled orders), it averages
q over frames 0 and 1 only. This script computes, for the shipped ``CRPGaussianMixture()`` guide's distinct
samples of one simulated data set per N, that default estimate and the mixture over all F frames (each
partition estimated in every frame with ``sample_frames``, then log-mean-exp over frames), and prints their
difference, the default's standard error and the spread of log q(c | Q_f x) across frames.

    OMP_NUM_THREADS=1 python benchmarks/check_frame_log_q.py
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

import pyro_acp
import pyro_acp.inference.infer  # noqa: F401  (imports the guides before the estimator)
from pyro_acp.inference.frames import random_frames
from pyro_acp.inference.log_prob import log_prob_estimate, log_prob_settings
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.pretrained.checkpoint import load_guide

PRETRAINED = Path(pyro_acp.__file__).parent / "pretrained"


def main(sizes: tuple[int, ...] = (30, 100), num_frames: int = 16, num_samples: int = 40) -> None:
    torch.set_num_threads(1)
    guide = load_guide(PRETRAINED / "crp_gaussian_mixture_2d.pt")[0]
    model = CRPGaussianMixture()
    for n in sizes:
        x, _ = model.simulate(1, num_points=n, seed=11).unpadded(0)
        post = pyro_acp.infer(model, x, guide=guide, num_samples=num_samples, seed=0, progress_bar=False,
                              estimate_log_prob=False)
        unique = post.samples.unique(dim=0)
        frames = random_frames(num_frames, model.data_dim, torch.Generator().manual_seed(1))
        settings = log_prob_settings(n)
        default = log_prob_estimate(guide, x, unique, generator=torch.Generator().manual_seed(2), frames=frames,
                                    **settings)
        every = log_prob_estimate(guide, x, unique.repeat(num_frames, 1), generator=torch.Generator().manual_seed(3),
                                  frames=frames, sample_frames=torch.arange(num_frames).repeat_interleave(
                                      unique.shape[0]), **settings)
        per_frame = every.log_prob[0].view(num_frames, -1)
        mixture = per_frame.logsumexp(0) - math.log(num_frames)
        gap = default.log_prob[0] - mixture
        spread = per_frame.max(0).values - per_frame.min(0).values
        print(f"N = {n} ({unique.shape[0]} distinct samples, settings {settings}): default - all-frame mixture "
              f"mean {float(gap.mean()):+.2f} nats (min {float(gap.min()):+.2f}); default standard error median "
              f"{float(default.standard_error[0].median()):.2f}; log q spread across frames median "
              f"{float(spread.median()):.1f} nats")


if __name__ == "__main__":
    main()
