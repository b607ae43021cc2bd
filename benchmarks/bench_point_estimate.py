"""Cost and quality of ``ClusteringPosterior.point_estimate`` against the best-sample baseline.

The baseline scores every distinct sample with ``expected_loss`` and keeps the best one (what one does
without a search); the greedy search starts from the MAP and a few samples and moves points. Reported per
setting: seconds for each, their ratio, and the expected loss each reaches (lower is better).

Posteriors are synthetic: S samples of N points scattered around a random partition with K clusters,
each label resampled with probability ``flip``.

Run: python benchmarks/bench_point_estimate.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from pyro_acp.posteriors import ClusteringPosterior
from pyro_acp.posteriors.point_estimate import expected_loss

SETTINGS = [  # (N, S, K, flip)
    (200, 100, 6, 0.05),
    (200, 2000, 8, 0.1),
    (200, 1000, 20, 0.3),
    (300, 1000, 10, 0.1),
]


def _posterior(num_points: int, num_samples: int, k: int, flip: float, seed: int) -> ClusteringPosterior:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, k, (num_points,), generator=g)
    noise = torch.randint(0, k + 3, (num_samples, num_points), generator=g)
    keep = torch.rand(num_samples, num_points, generator=g) >= flip
    return ClusteringPosterior(torch.where(keep, base, noise))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'N':>4} {'S':>5} {'K':>3} {'flip':>5} {'loss':>6} | {'best sample':>18} | {'greedy search':>18} | ratio")
    for seed, (n, s, k, flip) in enumerate(SETTINGS):
        post = _posterior(n, s, k, flip, seed)
        uniq, weights = post.unique()
        for loss in ("vi", "binder"):
            began = time.perf_counter()
            baseline = expected_loss(uniq, uniq, loss, weights=weights.double()).min().item()
            t_base = time.perf_counter() - began
            began = time.perf_counter()
            estimate = post.point_estimate(loss)
            t_search = time.perf_counter() - began
            reached = expected_loss(estimate[None], post.samples, loss).item()
            print(
                f"{n:>4} {s:>5} {k:>3} {flip:>5} {loss:>6} | {baseline:8.4f} {t_base:7.2f} s | "
                f"{reached:8.4f} {t_search:7.2f} s | {t_search / t_base:6.2f}"
            )


if __name__ == "__main__":
    main()
