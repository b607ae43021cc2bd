"""Does integrating out a location and a scale per dimension make the NIW posterior of standardised data calibrated?

``benchmarks/niw_standardization_calibration.py`` measured that the exact posterior given standardised data
z = (x - mean) / sd over-counts clusters on small tables: it treats z as a draw of the program, which it is
not. The posterior of the process that made z (draw x from the program, then standardise) is the posterior
given the maximal invariant of x under x_d -> a_d + b_d x_d. By Wijsman's representation its likelihood is,
up to a factor common to all partitions,

    L(partition | z) = int prod_d b_d^(N-2) da_d db_d  p(a + b * z | partition)
                     = int prod_d b_d^(N-1) da_d du_d  sum_j v_j prod_k m_j(a + b * z_k),   u = log b,

with m_j the NIW marginal of one cluster at scale node j (``models.niw``). The integral is taken here by a
tensor Gauss-Legendre rule on a in [-A, A]^D and u in [log b_lo, log b_hi]^D; every cluster's count, sum and
sum of outer products transform linearly at each node, so all nodes are one batched NIW marginal over the
2^N - 1 subsets of the points. This is a prototype of the cure for D = 2 and N <= 6 (the cost grows as
Bell(N) times the number of nodes): it is not the model's likelihood yet, nor trained against.

The check, as in the standardisation benchmark: over data sets drawn from the Pyro program and then
standardised, the mean of E[K | z] - K is zero for a calibrated posterior. ``--convergence`` reports the total
variation between grids on a few data sets instead.

    python benchmarks/niw_invariant_calibration.py --sizes 4 --sets 120 [--convergence]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import numpy as np
import pyro
import torch
from niw_standardization_calibration import mean_k, summary
from torch import Tensor

from pyro_acp import exact_posterior
from pyro_acp.data.partitions import enumerate_partitions
from pyro_acp.models import NIWGaussianMixture
from pyro_acp.models.niw import niw_log_marginal, standardize

#: (nodes in a, nodes in u, A, b_lo, b_hi): measured converged to TV <= 0.002 against (40, 24, 5, 0.002, 10)
DEFAULT_GRID = (24, 16, 5.0, 0.002, 10.0)


def gauss_legendre(lo: float, hi: float, size: int) -> tuple[Tensor, Tensor]:
    """Nodes (size,) and log weights of the Gauss-Legendre rule on [lo, hi]."""
    u, w = np.polynomial.legendre.leggauss(size)
    return torch.tensor(0.5 * (hi - lo) * u + 0.5 * (hi + lo)), torch.tensor(np.log(w * 0.5 * (hi - lo)))


def location_scale_nodes(dim: int, grid: tuple) -> tuple[Tensor, Tensor, Tensor]:
    """Locations a (G, D), log scales u (G, D) and log weights (G,) of the tensor rule over (a, u)."""
    size_a, size_u, bound, b_lo, b_hi = grid
    a, wa = gauss_legendre(-bound, bound, size_a)
    u, wu = gauss_legendre(math.log(b_lo), math.log(b_hi), size_u)
    nodes = torch.cartesian_prod(*([a] * dim + [u] * dim)).view(-1, 2 * dim)
    log_w = torch.cartesian_prod(*([wa] * dim + [wu] * dim)).view(-1, 2 * dim).sum(-1)
    return nodes[:, :dim], nodes[:, dim:], log_w


def subset_statistics(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Count (Q,), sum (Q, D) and sum of outer products (Q, D, D) of every non-empty subset of the points."""
    n = len(z)
    members = ((torch.arange(1, 2 ** n).unsqueeze(-1) >> torch.arange(n)) & 1).to(z.dtype)  # (Q, N)
    return members.sum(-1), members @ z, torch.einsum("qn,nd,ne->qde", members, z, z)


def subset_index(partitions: Tensor) -> Tensor:
    """(M, N) canonical labels -> (M, N) indices of each cluster's subset (Q = 2^N - 1 for an unused slot)."""
    n = partitions.shape[-1]
    bits = 2 ** torch.arange(n)
    slots = torch.stack([((partitions == k) * bits).sum(-1) for k in range(n)], -1) - 1
    return torch.where(slots < 0, 2 ** n - 1, slots)


def invariant_log_likelihood(model: NIWGaussianMixture, z: Tensor, partitions: Tensor, grid: tuple) -> Tensor:
    """log L(partition | z) (M,) of the module docstring, up to a constant common to all partitions."""
    a, u, log_w = location_scale_nodes(model.dim, grid)
    b = u.exp().unsqueeze(1)  # (G, 1, D)
    count, total, outer = subset_statistics(z)
    c = count.view(1, -1, 1)
    scaled = b * total  # (G, Q, D): sum of b * z over the subset
    loc = a.unsqueeze(1)
    total_y = c * loc + scaled
    outer_y = (b.unsqueeze(-1) * outer * b.unsqueeze(-2) + loc.unsqueeze(-1) * scaled.unsqueeze(-2)
               + scaled.unsqueeze(-1) * loc.unsqueeze(-2) + c.unsqueeze(-1) * loc.unsqueeze(-1) * loc.unsqueeze(-2))
    per = niw_log_marginal(count.expand(len(a), -1), total_y, outer_y, model.kappa, model.psi, model.nu0)
    nodes, scales, subsets = per.shape  # (G, S, Q)
    per = torch.cat([per.reshape(nodes * scales, subsets), per.new_zeros(nodes * scales, 1)], 1)
    node_w = (log_w + (len(z) - 1) * u.sum(-1)).unsqueeze(-1) + model.scale_log_weights.view(1, -1)
    index = subset_index(partitions)
    return torch.cat([torch.logsumexp(per[:, chunk].sum(-1) + node_w.reshape(-1, 1), 0)
                      for chunk in index.split(64)])


def invariant_posterior(model: NIWGaussianMixture, z: Tensor, grid: tuple) -> tuple[Tensor, Tensor]:
    """Every partition (M, N) of standardised z and its probability under the invariant likelihood."""
    partitions = enumerate_partitions(len(z))
    log_joint = model.partition_prior(len(z)).log_prob(partitions) + invariant_log_likelihood(
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
