"""Pooling rows over shared data sets (``pyro_acp.attention.pooled_by_dataset``): the grouped product
against gathering each row's copy of its data set's values, in the same process, at the shapes sampling
with random frames (few data sets, many rows, large N) and training (many data sets, a few rows each) use.

    python benchmarks/bench_pooling.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pyro_acp.attention import _attend_by_dataset

#: (name, data sets B, rows R, points N); heads 4 x width 32 as in the shipped guide (hidden 128)
SHAPES = [("sampling, 4 frames, N = 1,000", 4, 100, 1000), ("sampling, 20 frames, N = 200", 20, 100, 200),
          ("training batch, N < 200", 32, 160, 200)]


def gathered(weights: torch.Tensor, values: torch.Tensor, dataset: torch.Tensor) -> torch.Tensor:
    """The baseline: materialise values[dataset] (R, h, N, d)."""
    return torch.einsum("rhn,rhnd->rhd", weights, values[dataset])


def median_time(fn, *args, repeats: int) -> float:
    fn(*args)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}, median of {args.repeats}")
    for name, num_sets, num_rows, num_points in SHAPES:
        weights = torch.softmax(torch.randn(num_rows, 4, num_points, generator=generator), -1)
        values = torch.randn(num_sets, 4, num_points, 32, generator=generator)
        dataset = torch.randint(0, num_sets, (num_rows,), generator=generator)
        assert torch.allclose(_attend_by_dataset(weights, values, dataset), gathered(weights, values, dataset),
                              atol=1e-5)
        baseline = median_time(gathered, weights, values, dataset, repeats=args.repeats)
        grouped = median_time(_attend_by_dataset, weights, values, dataset, repeats=args.repeats)
        print(f"{name:<32} gather {baseline * 1e3:7.2f} ms, grouped {grouped * 1e3:7.2f} ms: "
              f"{baseline / grouped:.1f}x")


if __name__ == "__main__":
    main()
