"""Does collapsed Gibbs reach the NIW posterior? The true partition of a simulated data set is a posterior draw.

For data simulated from the model, the partition that generated them is distributed as one draw from the
posterior given them, so posterior samples have log p(c, x) and K like the truth's (up to one draw's spread).
For each simulated NIW data set (seeds ``--seeds``, N = ``--num-points``) this prints the truth's K and
log p(c, x), the shipped guide's (100 samples) and each collapsed Gibbs chain's (4 chains, ``--warmup`` sweeps
then 200 kept; ``--split-merge`` adds a split-merge move per sweep), means over the samples.

    OMP_NUM_THREADS=1 python benchmarks/niw_gibbs_mixing.py [--dim 2] [--num-points 50] [--seeds 91 92 93]
        [--warmup 300] [--split-merge] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import warnings

import pyro_acp
from pyro_acp.models import NIWGaussianMixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--num-points", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[91, 92, 93])
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--split-merge", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the samples' own checks are what is measured
    model = NIWGaussianMixture(dim=args.dim)
    rows = []
    for seed in args.seeds:
        x, truth = model.simulate(1, num_points=args.num_points, seed=seed).unpadded(0)
        z = model.check_data(x).double()
        guide = pyro_acp.infer(model, x, num_samples=100, seed=0, progress_bar=False, estimate_log_prob=False,
                               check_samples=False)
        gibbs = pyro_acp.mcmc.gibbs(model, x, num_samples=200, warmup_steps=args.warmup, num_chains=4, seed=0,
                                    split_merge=args.split_merge, progress_bar=False)
        row = {"seed": seed, "truth": {"K": int(truth.max()) + 1, "log_joint": float(model.log_joint(z, truth[None]))},
               "guide": {"K": float(guide.num_clusters.double().mean()),
                         "log_joint": float(model.log_joint(z, guide.samples).mean())},
               "gibbs_chains": [{"K": float(gibbs.num_clusters[gibbs.chain == c].double().mean()),
                                 "log_joint": float(gibbs.log_joint[gibbs.chain == c].mean())} for c in range(4)]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"command": "OMP_NUM_THREADS=1 python benchmarks/niw_gibbs_mixing.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("json", "split_merge")
                and not isinstance(v, list)) + (" --split-merge" if args.split_merge else ""), "seeds": args.seeds,
                "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
