"""Does integrating out a location and a scale per dimension make the NIW posterior of standardised data calibrated?

``benchmarks/niw_standardization_calibration.py`` measured that the exact posterior given standardised data
z = (x - mean) / sd over-counts clusters on small tables: it treats z as a draw of the program, which it is
not. The posterior of the process that made z (draw x from the program, then standardise) is the posterior
given the maximal invariant of x under x_d -> a_d + b_d x_d. By Wijsman's representation its likelihood is,
up to a factor common to all partitions,

    L(partition | z) = int prod_d b_d^(N-2) da_d db_d  p(a + b * z | partition)
                     = int prod_d b_d^(N-1) da_d du_d  sum_j v_j prod_k m_j(a + b * z_k),   u = log b,

with m_j the NIW marginal of one cluster at scale node j (``models.niw``). The integral is taken here by the
tensor Gauss-Legendre rule of ``models/niw_invariant.py`` (``invariant_log_likelihood_grid``) on a in
[-A, A]^D and u in [log b_lo, log b_hi]^D; every cluster's count, sum and sum of outer products transform
linearly at each node, so all nodes are one batched NIW marginal over the 2^N - 1 subsets of the points.
The library's ``exact_posterior(model, x, invariant=True)`` takes the same integral by importance sampling,
for any D and N <= 8 (``tests/test_niw_invariant.py`` checks the two agree).

The check, as in the standardisation benchmark: over data sets drawn from the Pyro program and then
standardised, the mean of E[K | z] - K is zero for a calibrated posterior. ``--convergence`` reports the total
variation between grids on a few data sets instead.

    python benchmarks/niw_invariant_calibration.py --sizes 4 --sets 120 [--convergence]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import pyro
import torch
from niw_standardization_calibration import mean_k, summary
from torch import Tensor

from pyro_acp import exact_posterior
from pyro_acp.data.partitions import enumerate_partitions
from pyro_acp.models import NIWGaussianMixture
from pyro_acp.models.niw import standardize
from pyro_acp.models.niw_invariant import invariant_log_likelihood_grid

#: (nodes in a, nodes in u, A, b_lo, b_hi): measured converged to TV <= 0.002 against (40, 24, 5, 0.002, 10)
DEFAULT_GRID = (24, 16, 5.0, 0.002, 10.0)


def invariant_posterior(model: NIWGaussianMixture, z: Tensor, grid: tuple) -> tuple[Tensor, Tensor]:
    """Every partition (M, N) of standardised z and its probability under the invariant likelihood."""
    partitions = enumerate_partitions(len(z))
    log_joint = model.partition_prior(len(z)).log_prob(partitions) + invariant_log_likelihood_grid(
        model, z, partitions, grid)
    return partitions, torch.softmax(log_joint, 0)


def program_draw(model: NIWGaussianMixture, n: int, seed: int) -> tuple[Tensor, int]:
    """Standardised points of one draw of the model's Pyro program and its number of clusters."""
    pyro.set_rng_seed(seed)
    trace = pyro.poutine.trace(model.model).get_trace(num_points=n)
    return standardize(trace.nodes["x"]["value"].double()), int(trace.nodes["labels"]["value"].max()) + 1


def calibration(model: NIWGaussianMixture, n: int, sets: int, seed: int, grid: tuple) -> dict[str, float]:
    """Mean and standard error of E[K | z] - K, invariant and plain (``exact_posterior``), on the same draws."""
    invariant, plain = [], []
    for i in range(sets):
        z, k = program_draw(model, n, seed + i)
        partitions, probs = invariant_posterior(model, z, grid)
        invariant.append(float((probs * (partitions.max(-1).values + 1.0)).sum()) - k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the small-table warning this benchmark is about
            plain.append(mean_k(exact_posterior(model, z)) - k)
        print(f"N = {n}: {i + 1}/{sets}", file=sys.stderr, flush=True)
    return {"invariant": summary(invariant), "plain": summary(plain)}


def convergence(model: NIWGaussianMixture, n: int, sets: int, seed: int) -> list[dict]:
    """TV between coarser grids and a fine, wide one on ``sets`` draws."""
    fine = (40, 24, 5.0, 0.002, 10.0)
    rows = []
    for i in range(sets):
        z, _ = program_draw(model, n, seed + i)
        _, ref = invariant_posterior(model, z, fine)
        for grid in (DEFAULT_GRID, (32, 20, 4.0, 0.005, 5.0), (40, 24, 6.0, 0.001, 20.0), (12, 12, 4.0, 0.01, 4.0)):
            tv = 0.5 * float((invariant_posterior(model, z, grid)[1] - ref).abs().sum())
            rows.append({"set": i, "grid": list(grid), "tv_to_fine": tv})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4])
    parser.add_argument("--sets", type=int, default=120)
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--convergence", action="store_true")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    model = NIWGaussianMixture(dim=2)
    began = time.perf_counter()
    if args.convergence:
        result = {str(n): convergence(model, n, args.sets, args.seed) for n in args.sizes}
    else:
        result = {str(n): calibration(model, n, args.sets, args.seed, DEFAULT_GRID) for n in args.sizes}
    print(json.dumps({"grid": list(DEFAULT_GRID), "sets": args.sets, "seed": args.seed, "results": result,
                      "seconds": round(time.perf_counter() - began, 1)}, indent=1))


if __name__ == "__main__":
    main()
