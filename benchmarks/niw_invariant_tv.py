"""How far is the shipped D = 2 NIW guide from the posterior it is trained for, at N = 7?

The model-card figure "TV at N = 7" compares the guide with ``exact_posterior``, the NIW posterior *given the
standardised table as if the program had drawn it*; the guide is trained on tables drawn and then standardised,
so its target is the posterior given the table's maximal invariant under x_d -> a_d + b_d x_d,
``exact_posterior(model, x, invariant=True)`` (``models/niw_invariant.py``, importance sampling; calibrated
where the plain one over-counts K: ``tests/test_niw_invariant.py``). This script measures, on the card's data
sets (seeds 9000 + i, as ``evaluate_niw_guides.py`` draws them):

- TV between the two references themselves (how much of the card's figure the reference's bias alone makes),
- the guide's raw samples against each reference, beside the floor of as many i.i.d. draws from each,
- the mean K of the references and of the guide,
- with ``--reweight``, the same samples weighted towards the invariant posterior (``infer(...,
  reweight="invariant")``) against it, with their effective sample size,
- on the first ``--grid-sets`` sets (D = 2 only), TV between the importance sampler and the tensor
  Gauss-Legendre rule of ``niw_invariant_calibration.py``, two independent computations of the same integral.

    OMP_NUM_THREADS=1 python benchmarks/niw_invariant_tv.py --dim 2 --sets 6 --samples 20000 [--reweight]
        [--first-seed 9000] [--checkpoint guide.pt] [--json out.json]

``--first-seed`` other than 9000 draws fresh data sets: a guide chosen by its score on the cards' sets is judged
on others.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from evaluate_niw_guides import n7_sets
from niw_invariant_calibration import DEFAULT_GRID

from pyro_acp import exact_posterior, infer
from pyro_acp.diagnostics.metrics import total_variation
from pyro_acp.models import NIWGaussianMixture
from pyro_acp.models.niw_invariant import invariant_log_likelihood_grid
from pyro_acp.pretrained.registry import find_guide


def grid_probabilities(model: NIWGaussianMixture, z: torch.Tensor, partitions: torch.Tensor) -> torch.Tensor:
    """Posterior probabilities of ``partitions`` (every partition of z) under the invariant likelihood by the
    tensor Gauss-Legendre rule (D <= 2)."""
    log_joint = model.partition_prior(len(z)).log_prob(partitions) + invariant_log_likelihood_grid(
        model, z, partitions, DEFAULT_GRID)
    return torch.softmax(log_joint, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--sets", type=int, default=6)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--draws", type=int, default=8192, help="importance draws of the invariant likelihood")
    parser.add_argument("--grid-sets", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=9000, help="data set i is simulated with seed first + i")
    parser.add_argument("--reweight", action="store_true", help="also weigh the samples towards the invariant "
                                                                "posterior (infer(..., reweight='invariant'))")
    parser.add_argument("--checkpoint", default=None, help="a guide file (default: the shipped D = 2 guide)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = NIWGaussianMixture(dim=args.dim)
    guide = args.checkpoint or find_guide(model)
    rows, began = [], time.perf_counter()
    for i, z in enumerate(n7_sets(model, args.sets, args.first_seed)):
        z = z.double()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the small-table warning this benchmark is about
            plain = exact_posterior(model, z)
        exact = exact_posterior(model, z, invariant=True, num_particles=args.draws, seed=i)
        partitions, invariant = exact.partitions, exact.probs
        if not torch.equal(partitions, plain.partitions):
            raise RuntimeError("the two enumerations list the partitions in different orders")
        posterior = infer(model, z, num_samples=args.samples, guide=guide, seed=i, progress_bar=False,
                          **({"reweight": "invariant"} if args.reweight else {"estimate_log_prob": False}))
        samples = posterior.samples  # the raw draws: with or without reweighting, the same from the same seed
        row = {
            "set": i,
            "tv_plain_to_invariant": total_variation((partitions, plain.probs), (partitions, invariant)),
            "tv_error_invariant": exact.tv_error,
            "tv_guide_to_plain": total_variation((partitions, plain.probs), samples),
            "tv_guide_to_invariant": total_variation((partitions, invariant), samples),
            "floor_plain": total_variation(plain, plain.sample(args.samples, seed=i)),
            "floor_invariant": total_variation(exact, exact.sample(args.samples, seed=i)),
            "mean_k_plain": float((plain.probs * (partitions.max(-1).values + 1.0)).sum()),
            "mean_k_invariant": float((invariant * (partitions.max(-1).values + 1.0)).sum()),
            "mean_k_guide": float((samples.max(-1).values + 1.0).mean()),
        }
        if args.reweight:
            row["tv_reweighted_to_invariant"] = total_variation((partitions, invariant), posterior)
            row["effective_sample_size"] = posterior.effective_sample_size
        if i < args.grid_sets and args.dim <= 2:
            row["tv_sampler_to_grid"] = total_variation((partitions, invariant),
                                                        (partitions, grid_probabilities(model, z, partitions)))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    keys = [k for k in rows[0] if k != "set"]
    means = {k: sum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in keys}
    result = {"dim": args.dim, "guide": Path(guide).name, "first_seed": args.first_seed, "grid": list(DEFAULT_GRID),
              "draws": args.draws, "samples": args.samples, "rows": rows,
              "means": means, "seconds": round(time.perf_counter() - began, 1)}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
