"""Sampling time of the shipped guide: S posterior samples of one data set (no log-probability estimates),
as N grows at a fixed number of clusters and as the number of clusters grows at fixed N.

A sample costs one round per cluster (finished samples drop out), and each round one pass of the join
network over the still-unassigned points, so time grows about linearly in N and in K.

    python benchmarks/bench_sampling.py [--num-samples 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from pyro_acp.inference.infer import resolve_guide
from pyro_acp.inference.sampling import sample_partitions
from pyro_acp.models import CRPGaussianMixture


def separated_clusters(num_points: int, num_clusters: int, seed: int = 0) -> torch.Tensor:
    """N points in K unit-variance clusters of equal size, centres spread over a disc (>= 6 sd apart)."""
    generator = torch.Generator().manual_seed(seed)
    side = math.ceil(math.sqrt(num_clusters))
    grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    centres = (grid[:num_clusters].float() - (side - 1) / 2) * 6.0
    labels = torch.arange(num_points) % num_clusters
    return centres[labels] + torch.randn(num_points, 2, generator=generator)


def median_time(guide, x: torch.Tensor, num_samples: int, repeats: int) -> tuple[float, float]:
    """(median seconds, mean K of the samples) over ``repeats`` calls after a warm-up."""
    sample_partitions(guide, x, num_samples, generator=torch.Generator().manual_seed(0))
    times, ks = [], []
    for r in range(repeats):
        began = time.perf_counter()
        labels = sample_partitions(guide, x, num_samples, generator=torch.Generator().manual_seed(r))[0]
        times.append(time.perf_counter() - began)
        ks.append(float((labels.max(-1).values + 1).float().mean()))
    return statistics.median(times), statistics.mean(ks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    guide = resolve_guide(CRPGaussianMixture(), train=False).eval()
    print(f"torch threads: {torch.get_num_threads()}, {args.num_samples} samples, median of {args.repeats}")
    print("growing N, 4 clusters:")
    for n in (200, 500, 1000, 2000):
        seconds, k = median_time(guide, separated_clusters(n, 4), args.num_samples, args.repeats)
        print(f"  N = {n:5d}: {seconds:6.3f} s  (mean K of the samples {k:.1f})", flush=True)
    print("growing K, N = 1000:")
    for clusters in (2, 5, 10, 20, 40):
        seconds, k = median_time(guide, separated_clusters(1000, clusters), args.num_samples, args.repeats)
        print(f"  K = {clusters:3d}: {seconds:6.3f} s  (mean K of the samples {k:.1f})", flush=True)


if __name__ == "__main__":
    main()
