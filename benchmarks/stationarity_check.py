"""Where the shipped guides' samples pass the stationarity check, and where they do not.

For each data set: the mean change of log p(c, x) after one collapsed Gibbs sweep started at 32 of the shipped
guide's samples (``infer``'s check, :mod:`pyro_acp.diagnostics.stationarity`) and at 32 draws of a long Gibbs
run (4 chains, ``--warmup`` sweeps, then every 25th sweep: the reference, which should be near zero), with
the posterior mean K of both. Data: simulations of each model in and beyond the guides' training range
(N < 200), and the real tables of ``evaluate_niw_guides.py`` (iris 4-D; the first two principal components of
iris and wine).

    OMP_NUM_THREADS=1 python benchmarks/stationarity_check.py [--warmup 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
from evaluate_niw_guides import real_tables

import pyro_acp
from pyro_acp.diagnostics.stationarity import check_stationarity
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the checks' own warnings are what is measured
    rows = []
    for name, model, x in data_sets():
        began = time.perf_counter()
        post = pyro_acp.infer(model, x, num_samples=100, seed=0, progress_bar=False, estimate_log_prob=False)
        guide = post.stationarity or check_stationarity(model, x, post.samples)
        gibbs = pyro_acp.mcmc.gibbs(model, x, num_samples=200, warmup_steps=args.warmup, num_chains=4, seed=0,
                                    progress_bar=False)
        thinned = gibbs.samples[torch.arange(0, gibbs.num_samples, 25)]
        reference = check_stationarity(model, x, thinned, num_samples=thinned.shape[0])
        row = {"data": name, "N": int(post.num_points),
               "guide_change": guide.mean_change, "guide_se": guide.standard_error, "guide_passes": guide.passes,
               "gibbs_change": reference.mean_change, "gibbs_se": reference.standard_error,
               "gibbs_passes": reference.passes,
               "k_guide": float(post.num_clusters.double().mean()),
               "k_gibbs": float(gibbs.num_clusters.double().mean()),
               "seconds": time.perf_counter() - began}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"command": "OMP_NUM_THREADS=1 python benchmarks/stationarity_check.py --json <file>",
                       "warmup": args.warmup, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
