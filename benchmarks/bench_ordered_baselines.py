"""NOC against the ordered-clustering baselines on one test set, and against the exact ordered posterior.

Methods, all scored by :func:`pyro_acp.diagnostics.ordered_metrics.ordered_scores` on the same fresh
simulations of ``OrderedGaussianCatalog()`` (default N in [5, 100), seed 20261201, unseen in training):

- **NOC**: the shipped guide (``pyro_acp/pretrained/ordered_gaussian_catalog_2d.pt``, or ``--guide``), the VI
  point estimate of ``infer(model, x, num_samples=100)``, clusters numbered by mean posterior position.
- **ACP + pointer**: the shipped ACP-S (``crp_gaussian_mixture_2d.pt``) clusters (the VI point estimate of
  ``infer`` under ``CRPGaussianMixture()``, 100 samples), ordered greedily by a pointer network trained
  separately, on the ordering loss alone (teacher-forced on true clusters; a small NOC whose clustering part
  is unused), ``--pointer-steps``.
- **ACP-S + NOC's pointer**: the same partitions in NOC's own pointer network's greedy order (the two pointer
  networks compared on the same clusters); and **NOC, its pointer's order**: NOC's point estimate so ordered.
- **DP-GMM two-stage**: scikit-learn's ``BayesianGaussianMixture`` (Dirichlet-process weights, concentration
  0.7 as the model's CRP, spherical covariances, up to 20 components), its hard assignments, clusters sorted
  by the distance of their centroid from the origin.

Columns: V-measure, Kendall tau of the elements' positions and of the matched clusters' order, cap adherence
(clusters of at most 30 points), seconds per data set, and NOC's paired differences to each baseline (same
sets). Then NOC's total variation to :func:`pyro_acp.exact_ordered_posterior` at N = 4, 5, 6 (``--tv-samples``
samples, ``--tv-sets`` data sets each), and the best V-measure any exchangeable method can reach on this test
distribution (:func:`oracle_v_measure`).

    OMP_NUM_THREADS=1 python benchmarks/bench_ordered_baselines.py [--guide CHECKPOINT] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pyro_acp
from pyro_acp.diagnostics.ordered_metrics import (
    guide_predictor,
    ordered_score_rows,
    ordered_total_variation,
    paired_difference,
    v_measure,
)
from pyro_acp.guides.clusterwise import FinishedClusters
from pyro_acp.guides.noc import NOC
from pyro_acp.models import CRPGaussianMixture, OrderedGaussianCatalog
from pyro_acp.pretrained.checkpoint import load_guide
from pyro_acp.reference.exact_ordered import exact_ordered_posterior

PRETRAINED = Path(pyro_acp.__file__).parent / "pretrained"
TEST_SEED = 20261201


def dpgmm_predictor(alpha: float, max_components: int = 20, seed: int = 0):
    """x -> positions (N,): DP Gaussian mixture clusters, sorted by their centroid's distance from the origin."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    def predict(x: torch.Tensor) -> torch.Tensor:
        data = x.double().numpy()
        mixture = BayesianGaussianMixture(
            n_components=min(max_components, len(data)), weight_concentration_prior_type="dirichlet_process",
            weight_concentration_prior=alpha, covariance_type="spherical", max_iter=500, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = mixture.fit_predict(data)
        used, labels = np.unique(labels, return_inverse=True)
        centroids = np.stack([data[labels == k].mean(0) for k in range(len(used))])
        rank = np.argsort(np.argsort(np.linalg.norm(centroids, axis=1), kind="stable"), kind="stable")
        return torch.as_tensor(rank[labels])

    return predict


def train_pointer(model: Any, steps: int, seed: int = 0, hidden_dim: int = 32, lr: float = 3e-3) -> NOC:
    """A pointer network trained alone: a small NOC on the ordering loss of simulated true clusters only
    (teacher-forced, batches of 16 at the model's default sizes); its clustering part is never used."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pointer = NOC(model.data_dim, hidden_dim=hidden_dim)
    optimizer = torch.optim.Adam(pointer.parameters(), lr=lr)
    for step in range(steps):
        batch = model.simulate(16, num_points=model.default_num_points, seed=seed * 100_000 + step)
        loss = -pointer.order_log_prob(batch).sum() / batch.batch_size
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pointer.sample_order = False  # greedy at prediction time
    return pointer.eval()


@torch.no_grad()
def pointer_positions(pointer: NOC, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """positions (N,): the clusters of ``labels`` (N,) (numbered 0..K-1) in the pointer's greedy order."""
    k = int(labels.max()) + 1
    data = pointer.encode_data(x.unsqueeze(0), torch.ones(1, x.shape[0], dtype=torch.bool))
    clusters = FinishedClusters(data, torch.zeros(1, dtype=torch.long), labels.unsqueeze(0),
                                torch.tensor([k]), torch.zeros(1, k, pointer.hidden_dim))
    order = pointer.order_clusters(clusters, greedy=True)[0]  # order[p]: the cluster placed p-th
    return order.argsort()[labels]


def acp_pointer_predictor(pointer: NOC, num_samples: int = 100, seed: int = 0):
    """x -> positions (N,): the shipped ACP-S point-estimate clusters, in ``pointer``'s greedy order (the
    separately trained pointer; or NOC's own, to compare the pointer networks on the same partitions)."""
    acps = load_guide(PRETRAINED / "crp_gaussian_mixture_2d.pt")[0]
    clustering = CRPGaussianMixture()

    def predict(x: torch.Tensor) -> torch.Tensor:
        labels = pyro_acp.infer(clustering, x, guide=acps, num_samples=num_samples, seed=seed,
                                progress_bar=False, check_prior=False).point_estimate()
        return pointer_positions(pointer, x, labels)

    return predict


def noc_pointer_predictor(model: Any, guide: NOC, num_samples: int = 100, seed: int = 0):
    """x -> positions (N,): NOC's VI point estimate (as for "NOC"), its clusters in the greedy order of NOC's own
    pointer network (the order's mode given that partition) instead of by mean posterior position."""
    def predict(x: torch.Tensor) -> torch.Tensor:
        post = pyro_acp.infer(model, x, guide=guide, num_samples=num_samples, seed=seed, progress_bar=False,
                              check_prior=False)
        labels = pyro_acp.ClusteringPosterior(post.point_estimate().unsqueeze(0)).samples[0]  # numbered 0..K-1
        return pointer_positions(guide, x, labels)

    return predict


def oracle_v_measure(model: OrderedGaussianCatalog, num_datasets: int = 500, seed: int = TEST_SEED,
                     generator_seed: int = 0) -> dict[str, float]:
    """The best V-measure a method that treats points exchangeably can reach on the test distribution: an oracle
    that knows the latent (unsplit) clusters, reporting them whole or dealt into the same number of random
    near-equal parts of at most ``max_cluster_size`` (the model's split is by point index, invisible in x).
    The latent clusters come from the same simulation with the split switched off (same random stream)."""
    import pyro_acp.models.catalogs as catalogs

    options = {"num_points": model.default_num_points, "seed": seed}
    batch = model.simulate(num_datasets, **options)
    split = catalogs.ordered_catalog_labels
    catalogs.ordered_catalog_labels = lambda labels, means, cap: split(labels, means, None)
    try:
        latent = model.simulate(num_datasets, **options)
    finally:
        catalogs.ordered_catalog_labels = split
    if not torch.equal(batch.x, latent.x):
        raise RuntimeError("the latent simulation did not reproduce the test set")
    generator = torch.Generator().manual_seed(generator_seed)
    dealt = torch.full_like(latent.labels, -1)
    for b in range(num_datasets):
        labels, cap = latent.labels[b], model.max_cluster_size
        offset = 0
        for k in range(int(labels.max()) + 1):
            members = (labels == k).nonzero().flatten()
            members = members[torch.randperm(members.numel(), generator=generator)]
            parts = -(-members.numel() // cap)
            dealt[b, members] = offset + torch.arange(members.numel()) % parts
            offset += parts
    has_split = batch.labels.max(1).values != latent.labels.max(1).values
    whole = v_measure(batch.labels, latent.labels)
    return {"share_with_split_cluster": float(has_split.double().mean()), "oracle_whole": float(whole.mean()),
            "oracle_random_parts": float(v_measure(batch.labels, dealt).mean())}


def timed_rows(model, predict, **options) -> tuple[dict[str, torch.Tensor], float]:
    """:func:`ordered_score_rows` and the mean seconds per data set."""
    began = time.perf_counter()
    rows = ordered_score_rows(model, predict, **options)
    return rows, (time.perf_counter() - began) / options["num_datasets"]


def mean_scores(rows: dict[str, torch.Tensor], seconds: float) -> dict[str, float]:
    """Each score's mean over the data sets that define it, with its standard error (``*_se``), and the seconds."""
    scores = {}
    for name, values in rows.items():
        kept = values[~values.isnan()]
        scores[name] = float(kept.mean())
        scores[f"{name}_se"] = float(kept.std() / kept.numel() ** 0.5) if kept.numel() > 1 else float("nan")
    return {**scores, "seconds_per_set": seconds}


def small_n_tv(model, guide, sizes=(4, 5, 6), num_sets: int = 10, num_samples: int = 1000) -> dict[str, float]:
    """Mean TV of NOC's samples to the exact ordered posterior at each N (data sets seeds 7000 + 100 N + i), raw
    and reweighted (``infer(..., reweight=True)``: the same samples weighted by p(x, ordered partition) / q), its
    standard error over the data sets (``_se``: the sets differ far more than the sampling noise), the max and
    the least effective sample size of the weights."""
    from pyro_acp.diagnostics.importance import ImportanceWeightWarning
    from pyro_acp.posteriors import OrderedClusteringPosterior

    result = {}
    for n in sizes:
        tvs: dict[str, list[float]] = {"tv": [], "tv_reweighted": []}
        ess = []
        for i in range(num_sets):
            x, _ = model.simulate(1, num_points=n, seed=7000 + 100 * n + i).unpadded(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ImportanceWeightWarning)  # the ESS is reported below
                post = pyro_acp.infer(model, x, guide=guide, num_samples=num_samples, seed=i, progress_bar=False,
                                      check_prior=False, reweight=True)
            exact = exact_ordered_posterior(model, x)
            tvs["tv"].append(ordered_total_variation(OrderedClusteringPosterior(post.samples), exact))
            tvs["tv_reweighted"].append(ordered_total_variation(post, exact))
            ess.append(post.effective_sample_size)
        for name, values in tvs.items():
            result[f"{name}_n{n}"] = float(np.mean(values))
            result[f"{name}_n{n}_se"] = (float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1
                                         else float("nan"))
            result[f"{name}_n{n}_max"] = float(np.max(values))
        result[f"min_effective_sample_size_n{n}"] = float(min(ess))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guide", type=Path, default=PRETRAINED / "ordered_gaussian_catalog_2d.pt")
    parser.add_argument("--num-datasets", type=int, default=50)
    parser.add_argument("--pointer-steps", type=int, default=400)
    parser.add_argument("--tv-sets", type=int, default=10)
    parser.add_argument("--tv-samples", type=int, default=1000, help="NOC samples per data set for the TV")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--size-cap", choices=("predicted", "model"), default=None,
                        help="override the guide's size_cap (NOC's sampling rule)")
    parser.add_argument("--tv-only", action="store_true", help="only the total variation to the exact posterior")
    parser.add_argument("--test-seed", type=int, default=TEST_SEED, help="seed of the test catalogs")
    parser.add_argument("--also", type=Path, default=None, metavar="GUIDE",
                        help="a second NOC guide (e.g. the shipped one), as a row and in the paired differences")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = OrderedGaussianCatalog()
    guide = load_guide(args.guide)[0]
    if args.size_cap is not None:
        guide.size_cap = guide.config["size_cap"] = args.size_cap
    if args.tv_only:
        tv = small_n_tv(model, guide, num_sets=args.tv_sets, num_samples=args.tv_samples)
        print("NOC TV to the exact ordered posterior:", {k: round(v, 3) for k, v in tv.items()})
        if args.json is not None:
            args.json.write_text(json.dumps({"tv": tv, "options": {**vars(args), "guide": str(args.guide),
                                                                   "json": str(args.json)}}, indent=2))
        return
    options = {"num_datasets": args.num_datasets, "num_points": model.default_num_points, "seed": args.test_seed}
    began = time.perf_counter()
    pointer = train_pointer(model, args.pointer_steps)
    pointer_time = time.perf_counter() - began
    predictors = {
        "NOC": guide_predictor(model, guide),
        "NOC, its pointer's order": noc_pointer_predictor(model, guide),
        "ACP + pointer": acp_pointer_predictor(pointer),
        "ACP-S + NOC's pointer": acp_pointer_predictor(guide),
        "DP-GMM two-stage": dpgmm_predictor(model.alpha),
    }
    if args.also is not None:
        predictors[f"NOC ({args.also.name})"] = guide_predictor(model, load_guide(args.also)[0])
    rows = {name: timed_rows(model, predict, **options) for name, predict in predictors.items()}
    table = {name: mean_scores(*found) for name, found in rows.items()}
    columns = ("v_measure", "element_tau", "cluster_order_tau", "cap_adherence", "seconds_per_set")
    print("| method | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, scores in table.items():
        print(f"| {name} | " + " | ".join(f"{scores[c]:.3f}" for c in columns) + " |")
    print(f"(pointer network trained alone for {args.pointer_steps} steps in {pointer_time:.0f} s)")
    paired = {f"NOC - {name}": paired_difference(rows["NOC"][0], rows[name][0]) for name in predictors
              if name != "NOC"}
    paired["NOC's pointer - the separate one, on ACP-S's partitions"] = paired_difference(
        rows["ACP-S + NOC's pointer"][0], rows["ACP + pointer"][0])
    for name, differences in paired.items():
        print(name, "(mean, paired SE):", {k: (round(m, 4), round(e, 4)) for k, (m, e) in sorted(differences.items())})
    tv = small_n_tv(model, guide, num_sets=args.tv_sets, num_samples=args.tv_samples) if args.tv_sets else {}
    print("NOC TV to the exact ordered posterior:", {k: round(v, 3) for k, v in tv.items()})
    oracle = {"table_sets": oracle_v_measure(model, args.num_datasets, seed=args.test_seed),
              "500_sets": oracle_v_measure(model)}
    print("best achievable V-measure:", {name: {k: round(v, 3) for k, v in values.items()}
                                          for name, values in oracle.items()})
    if args.json is not None:
        options = {**vars(args), "guide": str(args.guide), "json": str(args.json),
                   "also": None if args.also is None else str(args.also)}
        record = {"table": table, "paired_differences": paired, "tv": tv, "oracle": oracle, "options": options,
                  "test_seed": args.test_seed}
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
