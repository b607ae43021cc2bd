"""Where averaging over random frames (``infer``'s default for rotation-invariant models) gains, and where not.

The frame average q_sym(c | x) = E_Q q(c | Q x) is, by convexity, no further from the exact posterior than a
*typical* orientation of the data, but it can be further than a lucky one. Two measurements at N = 7 (2,000
samples each, shipped guide, TV to exact enumeration):

1. fresh simulated data sets (random orientation by construction): framed vs the data as given;
2. the hand-made close-cluster sets (axis-aligned, so their orientation is not random): framed vs the data
   as given in random orientations (mean over ``--rotations`` random rotations / reflections each).

    python benchmarks/frames_vs_orientation.py [--datasets 60] [--rotations 8]
"""

from __future__ import annotations

import argparse
import statistics

import torch

import pyro_acp
from pyro_acp.diagnostics.evaluation import close_cluster_sets
from pyro_acp.diagnostics.metrics import total_variation
from pyro_acp.inference.frames import random_frames
from pyro_acp.models import CRPGaussianMixture

NUM_SAMPLES = 2000


def tv(model, exact, x, seed: int, symmetrize: bool | None) -> float:
    post = pyro_acp.infer(model, x, num_samples=NUM_SAMPLES, seed=seed, symmetrize=symmetrize,
                          estimate_log_prob=False, progress_bar=False)
    return total_variation(exact, post.samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", type=int, default=60, help="fresh simulated N = 7 data sets (seeds 1..)")
    parser.add_argument("--rotations", type=int, default=8, help="random orientations per close-cluster set")
    args = parser.parse_args()
    model = CRPGaussianMixture()
    framed, as_given = [], []
    for seed in range(1, args.datasets + 1):
        x, _ = model.simulate(1, num_points=7, seed=seed).unpadded(0)
        exact = pyro_acp.exact_posterior(model, x)
        framed.append(tv(model, exact, x, 0, None))
        as_given.append(tv(model, exact, x, 0, False))
    gain = [a - f for a, f in zip(as_given, framed, strict=True)]
    print(f"{args.datasets} simulated sets: framed {statistics.mean(framed):.4f}, as given "
          f"{statistics.mean(as_given):.4f}, as given - framed {statistics.mean(gain):+.4f} "
          f"+- {statistics.stdev(gain) / len(gain) ** 0.5:.4f} (framed better on {sum(g > 0 for g in gain)})")
    framed, rotated = [], []
    for i, x in enumerate(close_cluster_sets(10)):
        exact = pyro_acp.exact_posterior(model, x)
        frames = random_frames(args.rotations, 2, generator=torch.Generator().manual_seed(100 + i))
        rotated.append(statistics.mean(tv(model, exact, x @ q.T, j, False) for j, q in enumerate(frames)))
        framed.append(tv(model, exact, x, i, None))
    print(f"10 close-cluster sets: framed {statistics.mean(framed):.4f}, as given in random orientations "
          f"{statistics.mean(rotated):.4f}; per set framed {[round(v, 3) for v in framed]}, rotated "
          f"{[round(v, 3) for v in rotated]}")


if __name__ == "__main__":
    main()
