"""Training throughput of NOC against its clustering guide alone, measured in the same run.

Each round trains, for ``--steps`` SVI steps each, on ``OrderedGaussianCatalog()`` simulations: NOC-S (ACP-S +
cardinality head + pointer network, all weights trained), ACP-S alone (the same clustering guide and bound,
no heads: the baseline) and NOC-S with its clustering frozen (the heads-only fine-tuning that
benchmarks/train_noc.py ships, one particle). Rounds alternate the three so that a shared machine's load
falls on all alike; reported: the median seconds per step of each and the ratios to ACP-S.

    OMP_NUM_THREADS=1 python benchmarks/bench_ordered_training.py [--steps 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pyro_acp
from pyro_acp.guides import ACPS
from pyro_acp.guides.noc import NOCS
from pyro_acp.models import OrderedGaussianCatalog


def seconds_per_step(model, guide, steps: int, num_particles: int, batch_size: int, seed: int) -> float:
    began = time.perf_counter()
    pyro_acp.train(model, guide, steps=steps, batch_size=batch_size, num_particles=num_particles,
                   num_points=(2, 100), lr=5e-4, seed=seed, validate_every=0, validation_size=2, progress_bar=False,
                   reinitialize=False)
    return (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-particles", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = OrderedGaussianCatalog()
    torch.manual_seed(0)
    guides = {"ACP-S (baseline)": ACPS(2, args.hidden_dim, center=True),
              "NOC-S": NOCS(2, args.hidden_dim, center=True, max_cluster_size=model.max_cluster_size),
              "NOC-S heads only": NOCS(2, args.hidden_dim, center=True, max_cluster_size=model.max_cluster_size)}
    frozen = guides["NOC-S heads only"]
    for name, parameter in frozen.named_parameters():
        parameter.requires_grad_(name.startswith(frozen.HEAD_PREFIXES))
    times: dict[str, list[float]] = {name: [] for name in guides}
    for r in range(args.rounds):
        for name, guide in guides.items():
            particles = 1 if guide is frozen else args.num_particles
            times[name].append(seconds_per_step(model, guide, args.steps, particles, args.batch_size, seed=r))
    base = statistics.median(times["ACP-S (baseline)"])
    print(f"batch {args.batch_size}, {args.num_particles} particles (heads only: 1), N in [2, 100), hidden "
          f"{args.hidden_dim}, {args.rounds} rounds of {args.steps} steps")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:18s} {median:.3f} s/step  ({median / base:.2f}x ACP-S)")


if __name__ == "__main__":
    main()
