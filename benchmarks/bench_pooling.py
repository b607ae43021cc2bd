"""Pooling rows over shared data sets (``pyro_acp.nn.attention.pooled_by_dataset``): the grouped product
against gathering each row's copy of its data set's values, in the same process, at the shapes sampling
with random frames (few data sets, many rows, large N) and training (many data sets, a few rows each) use.
Also the join network's candidate gather (``ClusterwiseGuide.join_logits``): picking (data set, point)
rows with two index tensors against one flat ``index_select``.

    python benchmarks/bench_pooling.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pyro_acp.nn.attention import _attend_by_dataset

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
    compare_candidate_gathers(args.repeats)


def two_dim_gather(table: torch.Tensor, steps: torch.Tensor, dataset: torch.Tensor, available: torch.Tensor
                   ) -> torch.Tensor:
    """The baseline: table[dataset[s], n] + steps[s] for every candidate (s, n)."""
    step_index, point_index = available.nonzero(as_tuple=True)
    return table[dataset[step_index], point_index] + steps[step_index]


def flat_gather(table: torch.Tensor, steps: torch.Tensor, dataset: torch.Tensor, available: torch.Tensor
                ) -> torch.Tensor:
    """As join_logits does it: one flat index_select per operand, added in place."""
    step_index, point_index = available.nonzero(as_tuple=True)
    rows = dataset.index_select(0, step_index) * table.shape[1] + point_index
    hidden = steps.index_select(0, step_index)
    hidden += table.flatten(0, 1).index_select(0, rows)
    return hidden


def compare_candidate_gathers(repeats: int) -> None:
    generator = torch.Generator().manual_seed(1)
    for num_sets, num_points in ((4, 1000), (20, 200)):
        table = torch.randn(num_sets, num_points, 128, generator=generator)
        steps = torch.randn(100, 128, generator=generator)
        available = torch.rand(100, num_points, generator=generator) < 0.8
        dataset = torch.arange(100) % num_sets
        args = (table, steps, dataset, available)
        assert torch.equal(two_dim_gather(*args), flat_gather(*args))
        baseline = median_time(two_dim_gather, *args, repeats=repeats)
        flat = median_time(flat_gather, *args, repeats=repeats)
        print(f"candidate gather, {num_sets} frames, N = {num_points:<5} two-index {baseline * 1e3:7.2f} ms, "
              f"flat {flat * 1e3:7.2f} ms: {baseline / flat:.1f}x")


if __name__ == "__main__":
    main()
