"""The shipped graph guides' samples under infer's checks, and Gibbs chains started at them.

For SBM() and PlantedPartition() (the shipped guides with collapsed Gibbs references) on simulated graphs of
N = 40 / 60 / 150 / 200 nodes, unlabelled and with every 6th node's label known: the share of the 100 samples of
zero probability under the model (log p(c, x) = -inf; infer's ZeroProbabilityWarning), the stationarity check
of the others (one symmetric Gibbs sweep from 32: mean change, median, signed-rank p), and the same for Gibbs
chains started at the samples and run ``--sweeps`` + 1 sweeps (``pyro_acp.mcmc.gibbs(model, graph, init=posterior,
warmup_steps=sweeps, num_samples=1)``, which keeps the known labels and leaves impossible starts out), with the
mean K of both and their seconds.

    OMP_NUM_THREADS=1 python benchmarks/graph_stationarity.py [--sweeps 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import pyro_acp
from pyro_acp.diagnostics.stationarity import check_stationarity
from pyro_acp.models import SBM, PlantedPartition, to_networkx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweeps", type=int, default=10, help="warm-up sweeps (one more is kept)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the checks' own warnings are what is measured
    rows = []
    for model in (SBM(), PlantedPartition()):
        for num_points in (40, 60, 150, 200):
            batch = model.simulate(1, num_points=num_points, seed=5)
            graph, truth = to_networkx(batch.adjacency[0]), batch.labels[0]
            for labelled in (None, {node: int(truth[node]) for node in range(0, num_points, 6)}):
                began = time.perf_counter()
                post = pyro_acp.infer(model, graph, num_samples=100, seed=0, progress_bar=False,
                                      estimate_log_prob=False, labelled=labelled)
                row = {"model": repr(model), "N": num_points, "labelled": 0 if labelled is None else len(labelled),
                       "impossible_share": float((post.log_joint == -float("inf")).double().mean()),
                       "k_guide": float(post.num_clusters.double().mean()),
                       "seconds_guide": time.perf_counter() - began}
                if post.stationarity is not None:
                    check = post.stationarity
                    row.update(guide_change=check.mean_change, guide_se=check.standard_error,
                               guide_median=check.median_change, guide_rank_p=check.rank_p_value,
                               guide_passes=check.passes, guide_checked=check.num_samples)
                began = time.perf_counter()
                try:
                    started = pyro_acp.mcmc.gibbs(model, graph, init=post, warmup_steps=args.sweeps, num_samples=1,
                                                  seed=0, progress_bar=False)
                except ValueError as error:  # every sample impossible
                    row["started"] = str(error)
                else:
                    check = check_stationarity(model, graph, started.samples, **post.conditioning())
                    row.update(started_chains=started.samples.shape[0], started_change=check.mean_change,
                               started_se=check.standard_error, started_median=check.median_change,
                               started_rank_p=check.rank_p_value, started_passes=check.passes,
                               k_started=float(started.num_clusters.double().mean()),
                               seconds_started=time.perf_counter() - began)
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"command": f"OMP_NUM_THREADS=1 python benchmarks/graph_stationarity.py --sweeps {args.sweeps} "
                                  "--json <file>", "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
