"""Sampling speed of the partition priors against a plain sequential per-partition Python baseline.

The baseline seats the points of one partition after another in plain Python (the textbook Chinese
restaurant / Pitman-Yor restaurant, ``random.random`` and lists), the way one would write it without tensors.
Our samplers draw all partitions at once: the CRP with no loop at all (copy pointers resolved by pointer
jumping), Pitman-Yor and MFM with one short loop over the points, vectorised over the partitions. Both run in
this process on the same machine; the figure of merit is the ratio baseline time / our time (these machines
are noisy, so medians of several repeats are reported).

Run: python benchmarks/bench_distributions.py [--num-points 200] [--batch 32] [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch

from pyro_acp.distributions import CRP, MixtureOfFiniteMixtures, PitmanYor


def python_restaurant(alpha: float, discount: float, num_points: int, rng: random.Random) -> list[int]:
    """One Pitman-Yor partition by sequential seating in plain Python (discount 0: the CRP)."""
    counts: list[int] = []
    labels = []
    for i in range(num_points):
        u = rng.random() * (alpha + i)
        threshold = alpha + len(counts) * discount
        if u < threshold or not counts:
            counts.append(1)
            labels.append(len(counts) - 1)
            continue
        u -= threshold
        for table, size in enumerate(counts):
            u -= size - discount
            if u < 0 or table == len(counts) - 1:
                counts[table] += 1
                labels.append(table)
                break
    return labels


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (caches, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-points", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    n, b = args.num_points, args.batch

    rows = []
    for name, dist, params in [
        ("CRP(0.7)", CRP(0.7, n), (0.7, 0.0)),
        ("PitmanYor(0.7, 0.25)", PitmanYor(0.7, 0.25, n), (0.7, 0.25)),
        ("MFM(rate 3, gamma 1)", MixtureOfFiniteMixtures(n), None),
    ]:
        ours = median_ms(lambda dist=dist: dist.sample((b,)), args.repeats)
        if params is None:
            rows.append((name, ours, None))
            continue
        base = median_ms(lambda params=params: [python_restaurant(*params, n, rng) for _ in range(b)],
                         max(3, args.repeats // 4))
        rows.append((name, ours, base))

    print(f"sampling {b} partitions of {n} points, median of {args.repeats} runs, {args.threads} thread(s)")
    print(f"{'prior':24s} {'ours (ms)':>10s} {'python loop (ms)':>17s} {'speed-up':>9s}")
    for name, ours, base in rows:
        if base is None:
            print(f"{name:24s} {ours:10.2f} {'-':>17s} {'-':>9s}")
        else:
            print(f"{name:24s} {ours:10.2f} {base:17.2f} {base / ours:8.1f}x")


if __name__ == "__main__":
    main()
