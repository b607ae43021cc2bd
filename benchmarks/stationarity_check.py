"""Where the shipped guides' samples pass the stationarity check, where they do not, and what a few Gibbs
sweeps started at them repair.

For each data set, ``infer``'s check (:mod:`pyro_acp.diagnostics.stationarity`: one symmetric collapsed Gibbs
sweep from 32 samples; the mean change of log p(c, x), its median and the signed-rank p-value of its symmetry)
of three sample sets:

- the shipped guide's 100 samples;
- a long Gibbs run (4 chains, ``--warmup`` sweeps, then every 25th sweep: the reference, which should pass);
- Gibbs chains started at the guide's 100 samples, ``--sweeps`` + 1 sweeps each
  (``pyro_acp.mcmc.gibbs(model, x, init=posterior, warmup_steps=sweeps, num_samples=1)``),

with the posterior mean K, the mean co-clustering error against the long run, and the seconds of each.
Data: simulations of each model in and beyond the guides' training range (N < 200), and the real tables of
``evaluate_niw_guides.py`` (iris 4-D; the first two principal components of iris and wine).

    OMP_NUM_THREADS=1 python benchmarks/stationarity_check.py [--warmup 300] [--sweeps 10] [--skip TEXT ...]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
from evaluate_niw_guides import real_tables

import pyro_acp
from pyro_acp.diagnostics.metrics import coclustering_error
from pyro_acp.diagnostics.stationarity import StationarityCheck, check_stationarity
from pyro_acp.models import CRPGaussianMixture, NIWGaussianMixture


def data_sets() -> list[tuple[str, object, torch.Tensor]]:
    sets = []
    crp = CRPGaussianMixture()
    for n in (50, 150, 400):
        sets.append((f"CRP simulated N={n}", crp, crp.simulate(1, num_points=n, seed=31 + n).unpadded(0)[0]))
    for dim in (2, 4):
        model = NIWGaussianMixture(dim=dim)
        for n in (50, 150, 400):
            x = model.simulate(1, num_points=n, seed=41 + n).unpadded(0)[0]
            sets.append((f"NIW {dim}-D simulated N={n}", model, x))
        for name, (table, _) in real_tables(dim).items():
            sets.append((name, model, torch.as_tensor(table)))
    return sets


def check_fields(prefix: str, check: StationarityCheck) -> dict[str, object]:
    return {f"{prefix}_change": check.mean_change, f"{prefix}_se": check.standard_error,
            f"{prefix}_median": check.median_change, f"{prefix}_rank_p": check.rank_p_value,
            f"{prefix}_passes": check.passes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--sweeps", type=int, default=10,
                        help="warm-up sweeps of the chains started at the guide's samples (one more is kept)")
    parser.add_argument("--skip", nargs="*", default=[], help="leave out the data sets whose name contains any")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the checks' own warnings are what is measured
    rows = []
    for name, model, x in data_sets():
        if any(text in name for text in args.skip):
            continue
        began = time.perf_counter()
        post = pyro_acp.infer(model, x, num_samples=100, seed=0, progress_bar=False, estimate_log_prob=False)
        guide_seconds = time.perf_counter() - began
        guide = post.stationarity or check_stationarity(model, x, post.samples)
        began = time.perf_counter()
        started = pyro_acp.mcmc.gibbs(model, x, init=post, warmup_steps=args.sweeps, num_samples=1, seed=0,
                                      progress_bar=False)
        started_seconds = time.perf_counter() - began
        began = time.perf_counter()
        gibbs = pyro_acp.mcmc.gibbs(model, x, num_samples=200, warmup_steps=args.warmup, num_chains=4, seed=0,
                                    progress_bar=False)
        gibbs_seconds = time.perf_counter() - began
        thinned = gibbs.samples[torch.arange(0, gibbs.num_samples, 25)]
        reference = gibbs.coclustering()
        row = {"data": name, "N": int(post.num_points),
               **check_fields("guide", guide),
               **check_fields("gibbs", check_stationarity(model, x, thinned, num_samples=thinned.shape[0])),
               **check_fields("started", check_stationarity(model, x, started.samples)),
               "k_guide": float(post.num_clusters.double().mean()),
               "k_started": float(started.num_clusters.double().mean()),
               "k_gibbs": float(gibbs.num_clusters.double().mean()),
               "coclustering_error_guide": coclustering_error(post.coclustering(), reference),
               "coclustering_error_started": coclustering_error(started.coclustering(), reference),
               "seconds_guide": guide_seconds, "seconds_started": started_seconds, "seconds_gibbs": gibbs_seconds}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"command": "OMP_NUM_THREADS=1 python benchmarks/stationarity_check.py "
                                  + " ".join(f"--skip '{text}'" for text in args.skip) + " --json <file>",
                       "warmup": args.warmup, "sweeps": args.sweeps, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
