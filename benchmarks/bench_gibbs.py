"""Collapsed Gibbs throughput: C chains vectorised in one kernel state against a single chain.

A sweep updates every point once. With C chains in one state, each point update is one set of tensor ops
on (C, K) arrays, so C chains cost about as much as one while the per-op overhead dominates. The figure
of merit is chain-sweeps per second (C × sweeps/s); the ratio to the single chain is what vectorising
buys (running C chains one after another would give ratio 1).

Also the sequential start (``kernel.setup``: every point seated from its predictive given those before it),
with the prior's seating weights read from the kernel's lookup tables against calling the prior for every
point, in the same process (tables from the prior's closed form; see ``pyro_acp.reference.seating``).

Run: python benchmarks/bench_gibbs.py [--sizes 200 1000] [--chains 8] [--sweeps 5] [--repeats 3]
         [--threads 1] [--model crp|sbm] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from pyro_acp.mcmc import CollapsedGibbs
from pyro_acp.models import SBM, CRPGaussianMixture
from pyro_acp.reference import gibbs_kernel


def _data(model_name: str, num_points: int, device: str):
    if model_name == "sbm":
        model = SBM()
        data = model.simulate(1, num_points=num_points, seed=0).adjacency[0]
    else:
        model = CRPGaussianMixture()
        data = model.simulate(1, num_points=num_points, seed=0).unpadded(0)[0]
    return model, data.to(device)


def _sweeps_per_second(model, data, num_chains: int, sweeps: int, repeats: int) -> tuple[float, float]:
    """Median sweeps per second (after one untimed sweep from the sequential start) and the mean K."""
    kernel = CollapsedGibbs(model, num_chains=num_chains, seed=0)
    kernel.setup(0, data)
    params = kernel.sample(kernel.initial_params)
    rates = []
    for _ in range(repeats):
        if data.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(sweeps):
            params = kernel.sample(params)
        if data.is_cuda:
            torch.cuda.synchronize()
        rates.append(sweeps / (time.perf_counter() - start))
    mean_k = float((kernel.labels.max(-1).values + 1).double().mean())
    return statistics.median(rates), mean_k


def _start_seconds(model, data, num_chains: int, repeats: int, tables: bool) -> float:
    """Median wall time of the sequential start; ``tables=False`` makes it call the prior for every point."""
    serves = gibbs_kernel.seating_tables_for
    if not tables:
        gibbs_kernel.seating_tables_for = lambda *args: None
    try:
        times = []
        for seed in range(repeats + 1):  # the first one is a warm-up
            kernel = CollapsedGibbs(model, num_chains=num_chains, seed=seed)
            start = time.perf_counter()
            kernel.setup(0, data)
            if data.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])
    finally:
        gibbs_kernel.seating_tables_for = serves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--sweeps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", choices=["crp", "sbm"], default="crp")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"collapsed Gibbs, {args.model}, {args.device}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'N':>6} {'mean K':>7} {'1 chain sweeps/s':>17} {f'{args.chains} chains sweeps/s':>18} "
          f"{'chain-sweeps/s ratio':>21} {'start s, tables / direct':>25}")
    for n in args.sizes:
        model, data = _data(args.model, n, args.device)
        single, k1 = _sweeps_per_second(model, data, 1, args.sweeps, args.repeats)
        multi, k2 = _sweeps_per_second(model, data, args.chains, args.sweeps, args.repeats)
        ratio = args.chains * multi / single
        start_tables = _start_seconds(model, data, args.chains, args.repeats, tables=True)
        start_direct = _start_seconds(model, data, args.chains, args.repeats, tables=False)
        rows.append({"num_points": n, "single_chain_sweeps_per_s": single, "num_chains": args.chains,
                     "vectorised_sweeps_per_s": multi, "chain_sweeps_ratio": ratio, "mean_K": (k1 + k2) / 2,
                     "start_seconds_tables": start_tables, "start_seconds_direct": start_direct})
        print(f"{n:>6} {(k1 + k2) / 2:>7.1f} {single:>17.2f} {multi:>18.2f} {ratio:>20.1f}x "
              f"{f'{start_tables:.3f} / {start_direct:.3f} ({start_direct / start_tables:.1f}x)':>25}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
