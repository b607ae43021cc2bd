"""Simulation throughput of a traced Pyro program against the hand-written sampler of the same model, in one run.

The model: CRPGaussianMixture(dim=2) (CRP(0.7), means N(0, 10² I), unit noise), batches of 32 data sets with
N in [50, 200) (the built-in training range). Compared, in this process:

- ``hand-written``: the model's own batched ``simulate``;
- ``program, vectorised``: a user program of the same model written so that it vectorises (one-hot
  gather), run under the verified outer plate, one run per distinct N in the batch;
- ``program, vectorised, projective``: the same, one run at the largest N cut to each data set's N;
- ``program, per data set``: the same model written naively (``loc[labels]``), which does not vectorise:
  one program run per data set in this process (``workers=0``), and in 2 forked worker processes.

With ``--train-steps S`` it also trains the same guide for S steps on each simulator of the same 1-D model
(CRPGaussianMixture(dim=1, mean_scale=2) and a program of it, N in [2, 9)) and reports the total variation of
its posterior (all 203 partitions of an N = 6 data set scored by ``AmortizedPartition.log_prob``) to the exact
one: guides trained on the program's own simulations should be as good as on the hand-written sampler's.

It also times one training step (``pyro_acp.train``'s SVI step on the clusterwise IWAE bound) of the guide
``infer`` trains on demand (ACP-S, hidden 64, 8 particles) on such a batch, and reports each simulator's
share of a step (simulation / (simulation + step)).

Run: python benchmarks/bench_program_simulation.py [--repeats 10] [--threads 1] [--train-steps 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pyro
import pyro.distributions as dist
import torch

from pyro_acp.distributions import CRP
from pyro_acp.guides import ACPS
from pyro_acp.inference.elbo import ClusterwiseIWAE
from pyro_acp.inference.infer import ON_DEMAND_GUIDE, ON_DEMAND_TRAINING
from pyro_acp.models import CRPGaussianMixture, ProgramModel

RANGE = (50, 200)
BATCH = 32


def naive_program(num_points, x=None):
    """CRPGaussianMixture(dim=2) as a user would write it first: loc[labels] (does not vectorise)."""
    labels = pyro.sample("labels", CRP(0.7, num_points))
    with pyro.plate("clusters", num_points):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with pyro.plate("points", num_points):
        pyro.sample("x", dist.Normal(loc[labels], 1.0).to_event(1), obs=x)


def vectorised_program(num_points, x=None):
    """The same model with the cluster means gathered by a one-hot product, which broadcasts over copies."""
    labels = pyro.sample("labels", CRP(0.7, num_points))
    with pyro.plate("clusters", num_points):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    one_hot = torch.nn.functional.one_hot(labels, num_points).to(loc.dtype)
    mean = (one_hot @ loc.unsqueeze(-3)).squeeze(-3)
    with pyro.plate("points", num_points):
        pyro.sample("x", dist.Normal(mean, 1.0).to_event(1), obs=x)


def _median_ms(fn, repeats: int) -> float:
    fn(0)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i + 1)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _training_step_ms(model, repeats: int) -> float:
    """Median time of one SVI step (IWAE, on-demand settings) on a pre-simulated batch."""
    torch.manual_seed(0)
    guide = ACPS(model.data_dim, **ON_DEMAND_GUIDE)
    elbo = ClusterwiseIWAE(ON_DEMAND_TRAINING["num_particles"])
    optimizer = pyro.optim.Adam({"lr": ON_DEMAND_TRAINING["lr"]})
    batches = [model.simulate(BATCH, num_points=RANGE, seed=i) for i in range(repeats + 1)]
    with pyro.get_param_store().scope():
        svi = pyro.infer.SVI(guide.model, guide.guide, optimizer, elbo)
        return _median_ms(lambda i: svi.step(batches[i]), repeats)


def gaussian_program_1d(num_points, x=None):
    """CRPGaussianMixture(dim=1, alpha=0.7, mean_scale=2) as a program."""
    labels = pyro.sample("labels", CRP(0.7, num_points))
    with pyro.plate("clusters", num_points):
        loc = pyro.sample("loc", dist.Normal(0.0, 2.0).expand([1]).to_event(1))
    with pyro.plate("points", num_points):
        pyro.sample("x", dist.Normal(loc[..., labels, :], 1.0).to_event(1), obs=x)


def training_comparison(steps: int) -> dict[str, dict[str, float]]:
    """TV to the exact posterior at N = 6 of a guide trained ``steps`` steps on each simulator of one model."""
    from pyro_acp.distributions import AmortizedPartition
    from pyro_acp.inference.training import train
    from pyro_acp.models import as_clustering_model
    from pyro_acp.reference.exact import exact_posterior

    built_in = CRPGaussianMixture(dim=1, alpha=0.7, mean_scale=2.0)
    x, _ = built_in.simulate(1, num_points=6, seed=3).unpadded(0)
    exact = exact_posterior(built_in, x)
    out = {}
    for name, model in (("hand-written", built_in), ("program", as_clustering_model(gaussian_program_1d, x))):
        torch.manual_seed(0)
        guide = ACPS(1, hidden_dim=32)
        began = time.perf_counter()
        train(model, guide, steps=steps, batch_size=32, num_particles=8, lr=2e-3, seed=0, progress_bar=False,
              validate_every=0, num_points=(2, 9))
        seconds = time.perf_counter() - began
        pyro.set_rng_seed(0)
        q = AmortizedPartition(guide, x, num_anchors=None, num_z=8, num_orders=8).log_prob(exact.partitions)
        probs = q.double().exp() / q.double().exp().sum()
        out[name] = {"tv_to_exact": 0.5 * float((probs - exact.probs).abs().sum()), "train_seconds": seconds}
        print(f"guide trained {steps} steps on the {name} simulator: TV to the exact posterior (N = 6) "
              f"{out[name]['tv_to_exact']:.3f} ({seconds:.0f} s)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=0, help="also compare guides trained this long")
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    built_in = CRPGaussianMixture()
    simulators = {
        "hand-written": built_in,
        "program, vectorised": ProgramModel(vectorised_program, num_points_range=RANGE),
        "program, vectorised, projective": ProgramModel(vectorised_program, num_points_range=RANGE, projective=True),
        "program, per data set (1 process)": ProgramModel(naive_program, num_points_range=RANGE, workers=0),
        "program, per data set (2 workers)": ProgramModel(naive_program, num_points_range=RANGE, workers=2),
    }
    assert simulators["program, vectorised"].simulation_vectorised
    assert not simulators["program, per data set (1 process)"].simulation_vectorised
    step = _training_step_ms(built_in, args.repeats)
    results = {"batch": BATCH, "num_points": list(RANGE), "threads": args.threads, "training_step_ms": step,
               "simulators": {}}
    base = None
    print(f"{BATCH} data sets of CRPGaussianMixture(dim=2), N in [{RANGE[0]}, {RANGE[1]}), {args.threads} thread(s)")
    print(f"one training step (ACP-S hidden 64, IWAE, 8 particles): {step:.0f} ms")
    print(f"{'simulator':38s} {'ms/batch':>9s} {'data sets/s':>12s} {'x hand':>7s} {'share of step':>14s}")
    for name, model in simulators.items():
        ms = _median_ms(lambda i, m=model: m.simulate(BATCH, num_points=RANGE, seed=i), args.repeats)
        base = ms if base is None else base
        share = ms / (ms + step)
        results["simulators"][name] = {"ms_per_batch": ms, "slowdown": ms / base, "share_of_step": share}
        print(f"{name:38s} {ms:9.1f} {1e3 * BATCH / ms:12.0f} {ms / base:7.1f} {100 * share:13.0f}%")
    for model in simulators.values():
        if isinstance(model, ProgramModel):
            model.close()
    if args.train_steps:
        results["training"] = training_comparison(args.train_steps)
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
