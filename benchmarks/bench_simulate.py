"""Speed of simulating training batches, against a naive per-data-set Python loop in the same process.

Targets (2 CPU cores): 32 CRP-mixture data sets with N in [50, 200) plus every teacher-forcing mask
< 20 ms; 16 SBM graphs with N in [50, 300) plus their 20-D Laplacian positional encodings < 200 ms.

Run: python benchmarks/bench_simulate.py [--repeats 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import fields, replace

import torch

from pyro_acp.data.batch import Batch
from pyro_acp.models import SBM, CRPGaussianMixture
from pyro_acp.models.graphs import laplacian_positional_encoding


def _timings_ms(fn, repeats: int) -> tuple[float, float]:
    """(median, best) wall time in ms over ``repeats`` seeded calls after one warm-up call."""
    fn(0)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i + 1)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def _stack(batches: list[Batch]) -> Batch:
    """Pad single-data-set batches to a common size and concatenate them (the naive way)."""
    n = max(b.max_points for b in batches)
    k = max(b.max_clusters for b in batches)
    padded = [b.pad_to(n, k) for b in batches]
    merged = {f.name: torch.cat([getattr(b, f.name) for b in padded])
              for f in fields(Batch) if torch.is_tensor(getattr(padded[0], f.name))}
    return replace(padded[0], **merged)


def naive_mixture_batch(model: CRPGaussianMixture, batch_size: int, lo: int, hi: int, seed: int) -> Batch:
    """One data set at a time: prior draw at its own N, means, points, masks, then pad and stack."""
    torch.manual_seed(seed)
    out = []
    for _ in range(batch_size):
        n = int(torch.randint(lo, hi, ()))
        labels = model.partition_prior(n).sample()
        means = model.mean_scale * torch.randn(int(labels.max()) + 1, model.dim)
        x = means[labels] + model.sigma * torch.randn(n, model.dim)
        out.append(Batch.from_labels(x[None], labels[None]))
    return _stack(out)


def naive_sbm_batch(model: SBM, batch_size: int, lo: int, hi: int, seed: int) -> Batch:
    """One graph at a time: blocks, Beta probabilities, edges, an unpadded eigh, masks, then stack."""
    torch.manual_seed(seed)
    out = []
    for _ in range(batch_size):
        n = int(torch.randint(lo, hi, ()))
        labels = model.partition_prior(n).sample()
        k = int(labels.max()) + 1
        within = torch.distributions.Beta(*model.within).sample((k,))
        between = torch.distributions.Beta(*model.between).sample((k, k)).triu(1)
        probs = between + between.T + torch.diag(within)
        upper = (torch.rand(n, n) < probs[labels][:, labels]).triu(1)
        adjacency = (upper | upper.T).float()
        pe = laplacian_positional_encoding(adjacency, dim=20, sign_flip_generator=torch.Generator())
        out.append(Batch.from_labels(pe[None], labels[None], adjacency=adjacency[None]))
    return _stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    mixture, sbm = CRPGaussianMixture(), SBM()
    graph_repeats = max(args.repeats // 2, 3)
    rows = [
        ("CRP mixture, 32 sets, N in [50, 200)", 20.0,
         _timings_ms(lambda s: mixture.simulate(32, (50, 200), seed=s), args.repeats),
         _timings_ms(lambda s: naive_mixture_batch(mixture, 32, 50, 200, s), args.repeats)),
        ("SBM + PEs, 16 graphs, N in [50, 300)", 200.0,
         _timings_ms(lambda s: sbm.simulate(16, (50, 300), seed=s), graph_repeats),
         _timings_ms(lambda s: naive_sbm_batch(sbm, 16, 50, 300, s), graph_repeats)),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median (best) of {args.repeats} runs, "
          f"{graph_repeats} for graphs")
    print(f"{'batch':38s} {'ours ms':>15s} {'target':>10s} {'naive ms':>15s} {'speed-up':>9s}")
    for name, target, (ours, ours_best), (naive, naive_best) in rows:
        flag = "ok" if ours < target else "MISSED"
        print(f"{name:38s} {ours:7.1f} ({ours_best:5.1f}) {target:5.0f} {flag:>4s} {naive:7.1f} ({naive_best:5.1f}) "
              f"{naive / ours:8.1f}x")


if __name__ == "__main__":
    main()
