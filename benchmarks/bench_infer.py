"""End-to-end ``pyro_acp.infer`` time with the shipped guide (after import and a warm-up call), and where
the time goes: sampling vs log-probability estimates (3 anchors per cluster, the default, against 10, the
previous default, in the same process), plus the spread of the log-probability estimates across repeats.

    python benchmarks/bench_infer.py [--sizes 50 200 1000] [--num-samples 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pyro_acp
from pyro_acp.infer import resolve_guide
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.sampling import estimate_log_prob


def median_infer_time(model, x, num_samples: int, num_anchors: int, repeats: int) -> float:
    times = []
    for seed in range(repeats):
        began = time.perf_counter()
        pyro_acp.infer(model, x, num_samples=num_samples, seed=seed, num_anchors=num_anchors)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = CRPGaussianMixture()
    guide = resolve_guide(model)
    print(f"torch threads: {torch.get_num_threads()}, {args.num_samples} samples, median of {args.repeats}")
    for n in args.sizes:
        x, _ = model.simulate(1, num_points=n, seed=n).unpadded(0)
        pyro_acp.infer(model, x, num_samples=args.num_samples, seed=0)  # warm-up
        timings = {a: median_infer_time(model, x, args.num_samples, a, args.repeats) for a in (3, 10)}
        post = pyro_acp.infer(model, x, num_samples=args.num_samples, seed=1)
        unique = post.samples.unique(dim=0)
        generator = torch.Generator().manual_seed(0)
        repeats = torch.stack([estimate_log_prob(guide, x, unique, num_anchors=3, generator=generator)[0]
                               for _ in range(4)])
        print(f"N={n:5d}: infer {timings[3]:.3f} s (3 anchors; 10 anchors {timings[10]:.3f} s, "
              f"{timings[10] / timings[3]:.1f}x slower); K of MAP {int(post.map.max()) + 1}; "
              f"log-prob estimate spread across repeats {repeats.std(0).mean():.1f} nats")


if __name__ == "__main__":
    main()
