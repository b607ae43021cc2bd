"""Which noisy log q estimates reweighting should refine: all of them, or only those that carry weight.

``infer(..., reweight=True)`` estimates log q of every distinct sample and re-estimates, with 8x the z draws,
those whose standard error exceeds 0.25 nats. Three rules, on the same samples (same seed) of each data set:

- ``all``: every partition above the threshold (the rule before ``REWEIGHT_REFINE_MASS``);
- ``by weight`` (the default): of those, only the fewest that leave the rest carrying at most
  ``REWEIGHT_REFINE_MASS`` of sum_p w_p SE_p (:func:`pyro_acp.inference.log_prob.refinement_choice`);
- ``none``: no refinement.

For each: TV to the exact posterior, effective sample size and wall time at N = 7 (close-cluster sets and
simulated ones, ``--samples`` each), and on two points 0.5 sd apart (P(split) = 0.0145 exactly, 20,000
samples, the case refinement was made for) the weighted P(split) over the truth per seed.

    OMP_NUM_THREADS=1 python benchmarks/refine_by_weight.py [--samples 1000] [--rare-seeds 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import torch

import pyro_acp
import pyro_acp.inference.log_prob as log_prob
import pyro_acp.inference.log_prob_settings as log_prob_settings
from pyro_acp.diagnostics.evaluation import close_cluster_sets
from pyro_acp.diagnostics.metrics import total_variation
from pyro_acp.models import CRPGaussianMixture

RULES = {"all": (0.25, 0.0), "by weight": (0.25, None), "none": (math.inf, None)}


def with_rule(rule: str, run):
    """``run()`` under refinement rule ``rule`` (threshold, mass), restoring the defaults after."""
    threshold, mass = RULES[rule]
    saved = log_prob_settings.REWEIGHT_REFINE_TO, log_prob.REWEIGHT_REFINE_MASS
    log_prob_settings.REWEIGHT_REFINE_TO = threshold
    log_prob.REWEIGHT_REFINE_MASS = saved[1] if mass is None else mass
    try:
        return run()
    finally:
        log_prob_settings.REWEIGHT_REFINE_TO, log_prob.REWEIGHT_REFINE_MASS = saved


def n7_rows(model: CRPGaussianMixture, num_samples: int) -> list[dict]:
    sets = [(f"close {i}", close_cluster_sets(10)[i]) for i in (1, 3, 5, 7)]
    sets += [(f"simulated {s}", model.simulate(1, num_points=7, seed=s).unpadded(0)[0]) for s in (1, 3, 9000, 9001)]
    rows = []
    for name, x in sets:
        exact = pyro_acp.exact_posterior(model, x)
        row = {"set": name}
        for rule in RULES:
            began = time.perf_counter()
            post = with_rule(rule, lambda x=x: pyro_acp.infer(model, x, num_samples=num_samples, seed=0,
                                                              reweight=True, progress_bar=False))
            row[rule] = {"tv": total_variation(post, exact), "ess": post.effective_sample_size,
                         "seconds": time.perf_counter() - began}
        row["raw_tv"] = total_variation(post.samples, exact)
        row["floor_tv"] = total_variation(exact.sample(num_samples, seed=1), exact)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def rare_rows(model: CRPGaussianMixture, seeds: int) -> list[dict]:
    x = torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    exact = pyro_acp.exact_posterior(model, x)
    truth = float(exact.weights[exact.samples[:, 1] == 1].sum())
    rows = []
    for seed in range(seeds):
        row = {"seed": seed}
        for rule in RULES:
            post = with_rule(rule, lambda seed=seed: pyro_acp.infer(model, x, num_samples=20000, seed=seed,
                                                                    reweight=True, progress_bar=False))
            row[rule] = float(post.sample_weights[post.samples[:, 1] == 1].sum()) / truth
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rare-seeds", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # collapsed-weight warnings on the close sets are expected and measured
    model = CRPGaussianMixture()
    n7, rare = n7_rows(model, args.samples), rare_rows(model, args.rare_seeds)
    summary = {rule: {"mean_tv": sum(r[rule]["tv"] for r in n7) / len(n7),
                      "seconds": sum(r[rule]["seconds"] for r in n7),
                      "rare_ratio_range": [min(r[rule] for r in rare), max(r[rule] for r in rare)]}
               for rule in RULES}
    summary["mean_raw_tv"] = sum(r["raw_tv"] for r in n7) / len(n7)
    summary["mean_floor_tv"] = sum(r["floor_tv"] for r in n7) / len(n7)
    result = {"command": "OMP_NUM_THREADS=1 python benchmarks/refine_by_weight.py --json <file>",
              "samples": args.samples, "n7": n7, "rare": rare, "summary": summary}
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
