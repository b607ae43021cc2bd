"""CLUSTER (``PlantedPartition()``, the recipe of Dwivedi et al.) in one table: the shipped guides against
baselines on the same held-out graphs (graph i simulated with seed 9,000,000 + i, N drawn by the recipe, as in
``benchmarks/train_graph_guides.py``'s evaluation; training never draws these seeds).

Unsupervised, mean AMI of the partition to the planted communities:

- spectral clustering told K = 6 (scikit-learn, ``affinity="precomputed"``);
- Louvain (networkx, seeded);
- the ``asbm`` package's microcanonical SBM (merge-split moves), its MDL partition, when installed: a generic
  Bayesian SBM that does not know the recipe (as in ``bench_graph_baselines.py``);
- this package's collapsed Gibbs for ``PlantedPartition`` (exact seating weights of its sized-blocks prior and
  the known p_in / p_out; 4 chains x (``--sweeps`` warm-up + ``--sweeps``) sweeps), its MAP;
- the shipped unsupervised guide: the MAP of 100 samples, and ``post.refined_map()``.

Semi-supervised (one random labelled node per community, drawn from the graph's seed; exactly one cluster per
label), class-balanced accuracy (mean per-community recall): the shipped semi-supervised guide's MAP and
``refined_map()`` (the labelled nodes kept in place).

Times are seconds per graph after a warm-up call of each method, one process, one torch thread, so they are
comparable within a run.

    python benchmarks/bench_cluster_baselines.py [--graphs 20] [--sweeps 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time

import numpy as np
import torch
from bench_graph_baselines import asbm_mdl, louvain
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_mutual_info_score
from train_graph_guides import EVAL_SEED, held_out, one_label_per_community

import pyro_acp
from pyro_acp.models import PlantedPartition
from pyro_acp.posteriors.graph import balanced_accuracy
from pyro_acp.pretrained.registry import find_guide


def held_out_graph(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(adjacency, communities) of the CLUSTER graph of ``seed``, as train_graph_guides evaluates on it."""
    adjacency, truth = held_out(PlantedPartition(), None, seed)
    return adjacency.numpy(), truth


def unsupervised_methods(guide_path, sweeps: int) -> dict:
    model = PlantedPartition()
    guide = None if guide_path is None else pyro_acp.load_guide(guide_path)[0].eval()

    def spectral(adjacency, seed):
        return SpectralClustering(n_clusters=model.num_blocks, affinity="precomputed",
                                  random_state=seed).fit_predict(adjacency)

    def gibbs(adjacency, seed):
        return pyro_acp.mcmc.gibbs(model, torch.as_tensor(adjacency), num_samples=sweeps, warmup_steps=sweeps,
                                   num_chains=4, seed=seed, progress_bar=False).map.numpy()

    def acp(refine):
        def call(adjacency, seed):
            post = pyro_acp.infer(model, torch.as_tensor(adjacency), guide=guide, num_samples=100, seed=seed,
                                  progress_bar=False, estimate_log_prob=False)
            return (post.refined_map() if refine else post.map).numpy()
        return call

    table = {"spectral clustering, K = 6 given (sklearn)": spectral, "Louvain (networkx)": louvain}
    if importlib.util.find_spec("asbm") is not None:  # a benchmark extra: pip install asbm
        table["asbm microcanonical SBM (does not know the recipe), 1 chain x 20 samples, MDL"] = asbm_mdl
    else:
        print("asbm is not installed: its row is left out (pip install asbm)")
    table[f"collapsed Gibbs, 4 x ({sweeps} + {sweeps}) sweeps, MAP"] = gibbs
    if guide is not None:
        table["unsupervised guide, MAP of 100 samples"] = acp(False)
        table["unsupervised guide, 100 samples + refined_map"] = acp(True)
    return table


def semi_supervised_methods(guide_path) -> dict:
    model = PlantedPartition()
    guide = pyro_acp.load_guide(guide_path)[0].eval()

    def acp(refine):
        def call(adjacency, truth, seed):  # seed -1: the warm-up graph
            post = pyro_acp.infer(model, torch.as_tensor(adjacency), guide=guide, num_samples=100, seed=max(seed, 0),
                                  progress_bar=False, labelled=one_label_per_community(truth, EVAL_SEED + seed),
                                  new_clusters=False)
            return balanced_accuracy(post, truth.tolist(), post.refined_map() if refine else None)
        return call

    return {"semi-supervised guide, MAP of 100 samples": acp(False),
            "semi-supervised guide, 100 samples + refined_map": acp(True)}


def guide_path(semi_supervised: bool, given: str | None):
    return given if given is not None else find_guide(PlantedPartition(), semi_supervised=semi_supervised)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=20)
    parser.add_argument("--sweeps", type=int, default=100, help="Gibbs warm-up sweeps and samples per chain")
    parser.add_argument("--guide", default=None, help="unsupervised guide (default: the shipped one)")
    parser.add_argument("--semi-guide", default=None, help="semi-supervised guide (default: the shipped one)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    graphs = [held_out_graph(EVAL_SEED + i) for i in range(args.graphs)]
    warm = held_out_graph(EVAL_SEED - 1)
    rows, record = [], {"sizes": [len(a) for a, _ in graphs]}
    print(f"{args.graphs} CLUSTER graphs, N {min(record['sizes'])}..{max(record['sizes'])}", flush=True)
    unsupervised = unsupervised_methods(guide_path(False, args.guide), args.sweeps)
    semi_path = guide_path(True, args.semi_guide)
    semi = semi_supervised_methods(semi_path) if semi_path is not None else {}
    for name, method in [*unsupervised.items(), *semi.items()]:
        is_semi = name in semi
        if is_semi:
            method(*warm, -1)
        else:
            method(warm[0], 0)
        scores, times = [], []
        for i, (adjacency, truth) in enumerate(graphs):
            began = time.perf_counter()
            if is_semi:
                scores.append(method(adjacency, truth, i))
            else:
                scores.append(adjusted_mutual_info_score(truth, method(adjacency, i)))
            times.append(time.perf_counter() - began)
        record[name] = {"scores": scores, "seconds": times}
        metric = "balanced accuracy" if is_semi else "AMI"
        rows.append(f"| {name} | {metric} {np.mean(scores):.3f} (sd {np.std(scores):.2f}) | {np.mean(times):.2f} s |")
        print(rows[-1], flush=True)
    print("\n| method | mean score | time per graph |\n| --- | --- | --- |\n" + "\n".join(rows))
    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
