"""Model-card figures of the shipped NIWGaussianMixture guides (issue 18): fresh simulations against collapsed
Gibbs, real tables against scikit-learn's Dirichlet-process Gaussian mixture, and total variation to the exact
posterior at N = 7.

- **Fresh simulations** (seeds 777000 + i, N in [30, 100)): mean AMI to the true partition of the MAP that
  ``infer`` returns (100 samples, ranked by the exact log joint) and of the collapsed Gibbs MAP (4 chains x 100
  sweeps after 50 warm-up, the sample with the highest exact log joint), each also refined by greedy ascent on
  the exact log joint (``post.refined_map()``: point moves and merges to a local mode). Target: the guide
  within 0.02.
- **Real tables** (sklearn.datasets, on disk): iris 4-D (D = 4); the first two principal components of the
  standardised iris and wine measurements (D = 2); each as given and multiplied by 1,000 and shifted. AMI of
  the ``infer`` MAP (200 samples, seed 0) to the true classes, against ``BayesianGaussianMixture`` (Dirichlet
  process, full covariance, 10 components, random_state 0) on the same table, and whether the guide's labels are
  identical under the scaling and shift; the refined MAP's AMI, and the model's exact log joint of the true
  classes, of the guide's MAPs and of scikit-learn's partition (which partition the model prefers). Collapsed
  Gibbs's MAP AMI is shown beside them (what the model itself gives).
- **Calibration of K** (``--parts calibration``): on ``--calibration-sets`` (100) data sets per N (7, 20, 60) drawn
  by the training simulator (seeds 4242 + N), the mean and standard error of E[K | data] - K, E by 200 ``infer``
  samples. The guide is trained on those simulations' labels, so its target, the posterior given the
  standardised data of the process that made them, has mean zero here; the model's exact posterior does not
  (``niw_standardization_calibration.py``: +1.69 at N = 7), so this is the one figure that checks the guide
  against what it learns, at any N.
- **Total variation at N = 7**: ``--tv-samples`` (20,000) samples of ``infer`` (raw, and ``reweight=True``)
  against exact enumeration on simulated data sets (seeds 9000 + i), beside the floor a perfect sampler would
  score with as many draws (the TV of i.i.d. exact draws; 0.17 at 2,000 draws, above the 0.15 target).

    python benchmarks/evaluate_niw_guides.py --dim 2 [--checkpoint PATH] [--update-card]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from evaluate_shipped_guide import mean, n7_distances
from sklearn.datasets import load_iris, load_wine
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.mixture import BayesianGaussianMixture

from pyro_acp import exact_posterior, infer, load_guide
from pyro_acp.data.partitions import canonicalize
from pyro_acp.diagnostics.metrics import total_variation
from pyro_acp.mcmc import gibbs
from pyro_acp.models import NIWGaussianMixture
from pyro_acp.pretrained.registry import find_guide

SCALE, SHIFT = 1000.0, 7.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ami(truth, labels) -> float:
    return float(adjusted_mutual_info_score(np.asarray(truth), np.asarray(labels)))


def gibbs_maps(model, x, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Collapsed Gibbs's MAP sample and the same refined by greedy ascent (``refined_map``)."""
    post = gibbs(model, x, num_samples=100, warmup_steps=50, num_chains=4, seed=seed, progress_bar=False)
    return post.map, post.refined_map()


def simulations(model, guide, count: int, parts: list[str], map_samples: int = 100, first: int = 0
                ) -> dict[str, Any]:
    """Mean AMI to the truth of the guide's MAP among ``map_samples`` samples and of its ``refined_map`` (and the
    same for Gibbs), with the paired standard error of the guide's gap to Gibbs when both ran, on simulations
    ``first`` .. ``first + count - 1``; ``sim_per_set`` keeps every set's AMI (runs over disjoint ranges pool)."""
    scores: dict[str, list[float]] = {}
    for i in range(first, first + count):
        x, labels = model.simulate(1, num_points=(30, 100), seed=777_000 + i).unpadded(0)
        maps = {}
        if "sim" in parts:
            post = infer(model, x, guide=guide, num_samples=map_samples, seed=i, progress_bar=False)
            maps["guide"], maps["guide_refined"] = post.map, post.refined_map()
        if "gibbs" in parts:
            maps["gibbs"], maps["gibbs_refined"] = gibbs_maps(model, x, i)
        for who, found in maps.items():
            scores.setdefault(who, []).append(ami(labels, found))
        log(f"simulation {i}: N = {len(x)}, " + ", ".join(f"{who} {v[-1]:.3f}" for who, v in scores.items()))
    figures = {f"sim_ami_map_{who}": mean(values) for who, values in scores.items()}
    if "guide" in scores and "gibbs" in scores and count > 1:
        gaps = np.array(scores["gibbs"]) - np.array(scores["guide"])
        figures["sim_ami_map_gap_se"] = float(gaps.std(ddof=1) / np.sqrt(count))
    figures["sim_per_set"] = {"first": first, **scores}
    return figures


def real_tables(dim: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The real tables of width ``dim`` with their true classes."""
    def standardised(data):
        return (data.data - data.data.mean(0)) / data.data.std(0)

    iris, wine = load_iris(), load_wine()
    if dim == 4:
        return {"iris4d": (standardised(iris), iris.target)}
    if dim == 2:
        return {"iris_pca2": (PCA(2).fit_transform(standardised(iris)), iris.target),
                "wine_pca2": (PCA(2).fit_transform(standardised(wine)), wine.target)}
    return {}


def log_joint(model, x: np.ndarray, labels) -> float:
    """The model's exact log p(partition, z) of ``labels`` on the standardised table z."""
    canonical = canonicalize(torch.as_tensor(np.asarray(labels)).long())
    return float(model.log_joint(model.check_data(x), canonical))


def sklearn_dpgmm(x: np.ndarray) -> np.ndarray:
    return BayesianGaussianMixture(n_components=10, covariance_type="full", max_iter=1000, random_state=0,
                                   weight_concentration_prior_type="dirichlet_process").fit_predict(x)


def tables(model, guide, parts: list[str]) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name, (x, truth) in real_tables(model.dim).items():
        moved = SCALE * x + SHIFT
        if "tables" in parts:
            post = infer(model, x, guide=guide, num_samples=200, seed=0, progress_bar=False)
            a = post.map
            refined = post.refined_map()
            figures[f"{name}_ami_guide_refined"] = ami(truth, refined)
            b = infer(model, moved, guide=guide, num_samples=200, seed=0, progress_bar=False).map
            figures[f"{name}_ami_guide"] = ami(truth, a)
            figures[f"{name}_scaled_ami_guide"] = ami(truth, b)
            figures[f"{name}_guide_identical_under_scaling"] = bool(torch.equal(a, b))
            figures[f"{name}_num_clusters_guide"] = int(a.max()) + 1
            dpgmm = sklearn_dpgmm(x)
            figures[f"{name}_ami_sklearn_dpgmm"] = ami(truth, dpgmm)
            # which partition the model itself prefers: a MAP below another method's partition is a search gap
            for who, labels in (("truth", truth), ("guide_map", a), ("guide_refined_map", refined),
                                ("sklearn_dpgmm", dpgmm)):
                figures[f"{name}_log_joint_{who}"] = log_joint(model, x, labels)
            figures[f"{name}_scaled_ami_sklearn_dpgmm"] = ami(truth, sklearn_dpgmm(moved))
        if "gibbs" in parts:
            found, refined_gibbs = gibbs_maps(model, x, 0)
            figures[f"{name}_ami_gibbs"] = ami(truth, found)
            figures[f"{name}_ami_gibbs_refined"] = ami(truth, refined_gibbs)
        log(f"{name}: {figures}")
    return figures


def calibration(model, guide, count: int, sizes=(7, 20, 60)) -> dict[str, float]:
    """Mean and standard error of E[K | data] - K on ``count`` simulated data sets per N (see the docstring)."""
    figures: dict[str, float] = {}
    for n in sizes:
        batch = model.simulate(count, num_points=n, seed=4242 + n)
        errors = []
        for i in range(count):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the small-table warning: its bias is what this part measures
                post = infer(model, batch.x[i], guide=guide, num_samples=200, seed=i, progress_bar=False,
                             estimate_log_prob=False, check_prior=False)
            errors.append(float(post.num_clusters.double().mean()) - (int(batch.labels[i].max()) + 1))
        figures[f"k_error_n{n}"] = mean(errors)
        figures[f"k_error_n{n}_se"] = float(np.std(errors, ddof=1) / np.sqrt(count))
        log(f"calibration N = {n}: E[K | data] - K = {figures[f'k_error_n{n}']:+.2f} "
            f"+- {figures[f'k_error_n{n}_se']:.2f}")
    return figures


def n7_sets(model, count: int, first_seed: int = 9000) -> list[torch.Tensor]:
    """The cards' N = 7 data sets: simulations with seeds 9000 + i (another ``first_seed`` gives fresh ones)."""
    return [model.simulate(1, num_points=7, seed=first_seed + i).unpadded(0)[0] for i in range(count)]


def tv_n7(model, guide, count: int, num_samples: int) -> dict[str, float]:
    raw, reweighted, ess = n7_distances(model, guide, n7_sets(model, count), num_samples)
    return {"tv_n7_simulated": mean(raw), "tv_n7_simulated_reweighted": mean(reweighted),
            "tv_n7_max": max(raw), "reweighted_min_effective_sample_size": ess}


def tv_n7_iid(model, count: int, num_samples: int) -> dict[str, float]:
    """The Monte-Carlo floor: TV of ``num_samples`` i.i.d. draws from the exact posterior itself, on the same
    sets (what a perfect sampler would score with as many samples as the guide is given)."""
    tvs = []
    for i, x in enumerate(n7_sets(model, count)):
        exact = exact_posterior(model, x)
        tvs.append(total_variation(exact, exact.sample(num_samples, seed=i)))
    return {"tv_n7_iid_floor": mean(tvs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--checkpoint", help="guide to evaluate (default: the shipped one for --dim)")
    parser.add_argument("--simulations", type=int, default=12)
    parser.add_argument("--map-samples", type=int, default=100, help="infer samples the simulations' MAP is among")
    parser.add_argument("--first-simulation", type=int, default=0,
                        help="simulate sets first .. first + simulations - 1 (seeds 777000 + i): fresh ones to pool")
    parser.add_argument("--tv-sets", type=int, default=10)
    parser.add_argument("--calibration-sets", type=int, default=100)
    parser.add_argument("--tv-samples", type=int, default=20000,
                        help="guide samples per N = 7 data set (the i.i.d. floor is measured with as many draws)")
    parser.add_argument("--parts", default="sim,gibbs,tables,tv",
                        help="comma-separated: calibration (E[K | data] - K), sim (guide on simulations), "
                        "gibbs (Gibbs on simulations and tables), "
                        "tables (guide and sklearn on tables), tv (with tv_iid), tv_iid (the i.i.d. floor alone)")
    parser.add_argument("--update-card", action="store_true", help="write the figures into the card beside it")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = NIWGaussianMixture(dim=args.dim)
    path = Path(args.checkpoint) if args.checkpoint else find_guide(model)
    if path is None:
        raise SystemExit(f"no shipped guide for {model}; pass --checkpoint")
    guide, _ = load_guide(path)
    began = time.perf_counter()
    figures: dict[str, float] = {}
    parts = args.parts.split(",")
    if "sim" in parts or "gibbs" in parts:
        figures.update(simulations(model, guide, args.simulations, parts, args.map_samples, args.first_simulation))
    if "tables" in parts or "gibbs" in parts:
        figures.update(tables(model, guide, parts))
    if "calibration" in parts:
        figures.update(calibration(model, guide, args.calibration_sets))
    if "tv" in parts:
        figures.update(tv_n7(model, guide, args.tv_sets, args.tv_samples))
    if "tv" in parts or "tv_iid" in parts:
        figures.update(tv_n7_iid(model, args.tv_sets, args.tv_samples))
    if "sim_ami_map_guide" in figures and "sim_ami_map_gibbs" in figures:
        figures["sim_ami_map_gap"] = figures["sim_ami_map_gibbs"] - figures["sim_ami_map_guide"]
    evaluation = {
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()},
        "protocol": f"calibration: {args.calibration_sets} simulated data sets per N (7, 20, 60; seeds 4242+N), "
                    f"E[K | data] - K with E by 200 infer samples; simulations: {args.simulations} data sets "
                    f"from {args.first_simulation}, seeds 777000+i, N in [30, 100), infer MAP among "
                    f"{args.map_samples} samples ranked by the "
                    "exact log joint vs the collapsed Gibbs MAP (4 chains x 100 sweeps, "
                    "50 warm-up), AMI to the true partition; tables: iris 4-D standardised (D = 4), first two "
                    "principal components of standardised iris and wine (D = 2), as given and x 1000 + 7, infer "
                    "MAP among 200 samples (seed 0) vs sklearn BayesianGaussianMixture (dirichlet_process, full, "
                    f"10 components, random_state 0), AMI to the true classes; TV: {args.tv_sets} simulated data "
                    f"sets at N = 7 (seeds 9000+i), {args.tv_samples:,} infer samples (raw, and reweight=True) vs "
                    f"exact enumeration, beside the TV of {args.tv_samples:,} i.i.d. exact draws (tv_n7_iid_floor)",
        "command": f"python benchmarks/evaluate_niw_guides.py --dim {args.dim} --update-card",
        "wall_time_s": round(time.perf_counter() - began, 1),
    }
    print(json.dumps(evaluation, indent=2))
    if args.update_card:
        card_path = path.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["evaluation"] = {**card.get("evaluation", {}), **evaluation}
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
