"""Is the NIW model's exact posterior calibrated against its own simulator? A check of the standardisation step.

For ``--sets`` data sets at each N, draw (partition, data) and compare the exact posterior's mean number of
clusters E[K | data] with the true K. For a posterior that is the posterior of the process that made the data,
the mean over data sets of E[K | data] - K is zero up to its Monte-Carlo error (the law of total expectation),
so a difference many standard errors from zero means the reference answers a different question.

Two ways, on the same model:

- **as infer sees data**: ``model.simulate`` (draws from the Pyro program, then each data set standardised),
  scored by ``exact_posterior`` (which standardises again: a no-op);
- **the likelihood alone**: the Pyro program's draws as they are, scored by the same exact enumeration without
  the standardisation step (``check_data`` replaced on this one instance by the shape checks alone).

    python benchmarks/niw_standardization_calibration.py [--sizes 4 7 9] [--sets 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import pyro
import torch

from pyro_acp import exact_posterior
from pyro_acp.models import NIWGaussianMixture
from pyro_acp.models.base import model_from_config
from pyro_acp.validation import check_vectors


def mean_k(post) -> float:
    return float((post.sample_weights * post.num_clusters).sum())


def summary(differences: list[float]) -> dict[str, float]:
    d = np.asarray(differences)
    return {"mean_posterior_k_minus_true_k": float(d.mean()), "standard_error": float(d.std(ddof=1) / np.sqrt(len(d)))}


def as_infer_sees(model, n: int, sets: int, seed: int) -> dict[str, float]:
    batch = model.simulate(sets, num_points=n, seed=seed)
    diffs = []
    for b in range(sets):
        x, labels = batch.unpadded(b)
        diffs.append(mean_k(exact_posterior(model, x)) - (int(labels.max()) + 1))
    return summary(diffs)


def likelihood_alone(model, n: int, sets: int, seed: int) -> dict[str, float]:
    raw = model_from_config(model.config())  # a copy, so that the patched check_data stays on it
    raw.check_data = lambda x: check_vectors(x, raw.dim)  # score the program's draws as they are
    pyro.set_rng_seed(seed)
    diffs = []
    for _ in range(sets):
        trace = pyro.poutine.trace(raw.model).get_trace(num_points=n)
        labels = trace.nodes["labels"]["value"]
        diffs.append(mean_k(exact_posterior(raw, trace.nodes["x"]["value"])) - (int(labels.max()) + 1))
    return summary(diffs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 7, 9])
    parser.add_argument("--sets", type=int, default=300)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the small-table warning of check_data: what this script measures
    model = NIWGaussianMixture(dim=args.dim)
    began = time.perf_counter()
    result = {}
    for n in args.sizes:
        result[f"n{n}"] = {"as_infer_sees_data": as_infer_sees(model, n, args.sets, args.seed),
                           "likelihood_alone": likelihood_alone(model, n, args.sets, args.seed)}
        print(n, result[f"n{n}"], file=sys.stderr, flush=True)  # progress; stdout is the JSON alone
    sizes = " ".join(map(str, args.sizes))
    result["command"] = f"python benchmarks/niw_standardization_calibration.py --sizes {sizes} --sets {args.sets}"
    result["wall_time_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
