"""Reweighted posteriors (``infer(..., reweight=True)``) against exact enumeration, N = 2 ... 7.

For each N, data sets simulated from the shipped guide's model plus hand-made rare-partition cases (two points
0.5 sd apart, where P(separate) = 0.0145; close-cluster sets), compare raw and reweighted samples with the
exact posterior by total variation over partitions, and count how often the weights are flagged
(ImportanceWeightWarning). Per case also the total variation a perfect sampler would show with the same
effective number of draws (the Monte-Carlo floor, estimated by resampling the exact posterior).

    python benchmarks/reweight_vs_exact.py [--sizes 2 3 4 5 6 7] [--datasets 8] [--samples 2000]
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from exact_sweep import sweep_main  # benchmarks/exact_sweep.py, beside this script

import pyro_acp
from pyro_acp.diagnostics.evaluation import close_cluster_sets
from pyro_acp.diagnostics.importance import ImportanceWeightWarning
from pyro_acp.diagnostics.metrics import total_variation
from pyro_acp.models import CRPGaussianMixture

RESULTS = Path(__file__).parent / "results" / "reweight_vs_exact.json"


def cases(sizes, num_datasets):
    model = CRPGaussianMixture()
    for num_points in sizes:
        batch = model.simulate(num_datasets, num_points=num_points, seed=91_000 + num_points)
        for d in range(num_datasets):
            yield num_points, f"simulated {d}", batch.unpadded(d)[0]
    yield 2, "two points 0.5 sd apart", torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    for i, x in enumerate(close_cluster_sets(4)):
        yield 7, f"close clusters {i}", x


def run(sizes, num_datasets, num_samples):
    model = CRPGaussianMixture()
    rows = []
    for num_points, name, x in cases(sizes, num_datasets):
        exact = pyro_acp.exact_posterior(model, x)
        began = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            post = pyro_acp.infer(model, x, num_samples=num_samples, seed=0, reweight=True, train=False,
                                  progress_bar=False, check_prior=False)
        seconds = time.perf_counter() - began
        flagged = any(issubclass(w.category, ImportanceWeightWarning) for w in caught)
        floor_draws = exact.sample(num_samples, seed=1)
        rows.append({
            "N": num_points, "case": name, "tv_raw": float(total_variation(exact, post.samples)),
            "tv_reweighted": float(total_variation(exact, post)),
            "tv_floor": float(total_variation(exact, floor_draws)),
            "ess": post.effective_sample_size, "pareto_k": post.weight_diagnostics.pareto_k, "flagged": flagged,
            "max_log_q_error": float(post.log_prob_error.nan_to_num(0.0).max()), "seconds": seconds,
        })
        print(rows[-1], flush=True)
    return rows


def summarise(rows):
    lines = ["| N | cases | TV raw | TV reweighted | TV of exact draws (floor) | flagged | mean ESS | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for key in sorted({(r["N"], r["case"].split(" ")[0]) for r in rows}):
        sel = [r for r in rows if (r["N"], r["case"].split(" ")[0]) == key]

        def mean(field, sel=sel):
            return sum(r[field] for r in sel) / len(sel)

        lines.append(f"| {key[0]} | {len(sel)} {key[1]} | {mean('tv_raw'):.3f} | {mean('tv_reweighted'):.3f} | "
                     f"{mean('tv_floor'):.3f} | {sum(r['flagged'] for r in sel)} / {len(sel)} | {mean('ess'):.0f} | "
                     f"{mean('seconds'):.2f} |")
    return "\n".join(lines)


def main() -> None:
    sweep_main(__doc__, run, summarise, RESULTS, sizes=[2, 3, 4, 5, 6, 7], datasets=8, samples=2000)


if __name__ == "__main__":
    main()
