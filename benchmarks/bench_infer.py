"""End-to-end ``pyro_acp.infer`` time with the shipped guide (after import and a warm-up call), and where
the time goes, each variant timed in the same process: the default (samples in random frames, log-probability
estimates with 3 anchors per cluster), the data as given (symmetrize=False), without log-probability
estimates (estimate_log_prob=False) and with 10 anchors (the previous default); plus the spread of the
log-probability estimates across repeats. ``infer`` defers the estimates to the first read of ``log_prob``:
each variant but "log_prob not read" reads it inside its timing, so those figures are of samples and estimates
together.

    python benchmarks/bench_infer.py [--sizes 50 200 1000] [--num-samples 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pyro_acp
from pyro_acp.inference.infer import resolve_guide
from pyro_acp.inference.log_prob import estimate_log_prob
from pyro_acp.models import CRPGaussianMixture

VARIANTS = {  # name: (infer's options, read log_prob inside the timing)
    "default": ({}, True),
    "default, log_prob not read": ({}, False),
    "data as given": ({"symmetrize": False}, True),
    "no log-prob estimates": ({"estimate_log_prob": False}, False),
    "10 anchors": ({"num_anchors": 10}, True),
}


def median_infer_time(model, x, num_samples: int, repeats: int, options: dict, read_log_prob: bool) -> float:
    times = []
    for seed in range(repeats):
        began = time.perf_counter()
        post = pyro_acp.infer(model, x, num_samples=num_samples, seed=seed, progress_bar=False, **options)
        if read_log_prob:
            post.log_prob  # noqa: B018  (the estimate is deferred to its first read: time it with the call)
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
        timings = {name: median_infer_time(model, x, args.num_samples, args.repeats, options, read)
                   for name, (options, read) in VARIANTS.items()}
        post = pyro_acp.infer(model, x, num_samples=args.num_samples, seed=1)
        unique = post.samples.unique(dim=0)
        generator = torch.Generator().manual_seed(0)
        repeats = torch.stack([estimate_log_prob(guide, x, unique, num_anchors=3, generator=generator)[0]
                               for _ in range(4)])
        variants = ", ".join(f"{name} {t:.3f} s ({t / timings['default']:.2f}x)" for name, t in timings.items())
        print(f"N={n:5d}: infer {variants}; K of MAP {int(post.map.max()) + 1}; "
              f"log-prob estimate spread across repeats {repeats.std(0).mean():.1f} nats")


if __name__ == "__main__":
    main()
