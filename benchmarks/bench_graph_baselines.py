"""Community detection baselines in one table (issue 16, item 6): on the same held-out graphs from the
general-SBM prior (``SBM()`` at its defaults, N in [50, 300), graph i simulated with seed EVAL_SEED + i,
a range no training script uses), each method's mean AMI to the true partition and its mean time per graph.

- spectral clustering (scikit-learn ``SpectralClustering``, ``affinity="precomputed"``) with K chosen by the
  eigengap: the K in 2..``MAX_K`` after which the sorted eigenvalues of the symmetric normalised Laplacian
  jump the most (K = 1 is left out: on these dense graphs the gap after the trivial eigenvalue 0 is the
  largest on every graph, so allowing it gives one community and AMI 0 throughout);
- Louvain (``networkx.community.louvain_communities``, seeded, modularity resolution 1);
- this package's collapsed SBM Gibbs sampler (``pyro_acp.mcmc.gibbs``: 4 vectorised chains, 200 warm-up
  sweeps, 200 samples per chain), its MAP (the sample with the highest exact log joint);
- the ``asbm`` package's Bayesian SBM sampler (microcanonical SBM, merge-split moves), its MDL partition of
  one chain with 20 samples, when ``asbm`` is installed (``pip install asbm``: a benchmark extra, never a
  dependency of pyro_acp); otherwise its row says it was not installed;
- with ``--guide PATH`` (a trained ACP / ACP-S / CCP checkpoint with a graph encoder, for ``SBM()``):
  ``pyro_acp.infer`` with 100 samples, its MAP by exact log joint, and the most probable of 10 samples
  (``estimate_log_prob=False``: the MAP is ranked by the exact log joint, the guide's log-probability
  estimates are not needed for it), and that MAP climbed to a local mode of the exact posterior by
  ``post.refined_map()`` (point moves and merges on the exact log joint from the 4 best distinct samples; the
  time is infer's plus the ascent's). A checkpoint that a training run is still writing can be read: copy
  it (``.pt`` and its ``.json`` card) first.

Times are wall-clock seconds per graph after a warm-up call of each method on another graph; every method
runs in this one process, one after another, on one torch thread, so the times are comparable within a run.

    python benchmarks/bench_graph_baselines.py [--graphs 20] [--guide PATH] [--only spectral,louvain,...]
                                               [--json out.json] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import networkx as nx
import numpy as np
import torch
from sklearn.metrics import adjusted_mutual_info_score

import pyro_acp
from pyro_acp.models import SBM

EVAL_SEED = 9_000_000  # graph i of the table is SBM().simulate(1, (50, 300), seed=EVAL_SEED + i)
WARMUP_SEED = EVAL_SEED - 1
MAX_K = 20
METHODS = ("spectral", "louvain", "gibbs", "asbm", "acp")


def held_out_graph(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(adjacency (N, N) 0/1, true labels (N,)) of one graph from ``SBM()``'s prior, N in [50, 300)."""
    batch = SBM().simulate(1, num_points=(50, 300), seed=seed)
    n = int(batch.num_points[0])
    return batch.adjacency[0, :n, :n].numpy(), batch.labels[0, :n].numpy()


def eigengap_num_clusters(adjacency: np.ndarray, max_k: int = MAX_K) -> int:
    """K in 2..max_k maximising lambda_{K+1} - lambda_K over the ascending eigenvalues of
    L = I - D^-1/2 A D^-1/2 (isolated nodes: a zero row of D^-1/2 A D^-1/2)."""
    degree = adjacency.sum(1)
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0)
    laplacian = np.eye(len(degree)) - scale[:, None] * adjacency * scale[None, :]
    values = np.linalg.eigvalsh(laplacian)[: max_k + 1]
    return int(np.argmax(np.diff(values)[1:])) + 2


def spectral(adjacency: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    k = eigengap_num_clusters(adjacency)
    return SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed,
                              assign_labels="kmeans").fit_predict(adjacency)


def louvain(adjacency: np.ndarray, seed: int) -> np.ndarray:
    communities = nx.community.louvain_communities(nx.from_numpy_array(adjacency), seed=seed)
    labels = np.empty(len(adjacency), dtype=int)
    for k, nodes in enumerate(communities):
        labels[list(nodes)] = k
    return labels


def gibbs(adjacency: np.ndarray, seed: int) -> np.ndarray:
    post = pyro_acp.mcmc.gibbs(SBM(), torch.as_tensor(adjacency), num_samples=200, warmup_steps=200,
                               num_chains=4, seed=seed, progress_bar=False)
    return post.map.numpy()


def asbm_mdl(adjacency: np.ndarray, seed: int) -> np.ndarray:
    import asbm

    result = asbm.fit(asbm.Config(model="microcanonical_SBM", degree_correction=False),
                      nx.from_numpy_array(adjacency), num_chains=1, num_samples=20, seed=seed,
                      show_progress=False)
    return result.mdl_partition


def acp_methods(path: str) -> dict[str, Callable[[np.ndarray, int], np.ndarray]]:
    guide = pyro_acp.load_guide(path)[0].eval()

    def run(num_samples: int, refine: bool = False) -> Callable[[np.ndarray, int], np.ndarray]:
        def call(adjacency: np.ndarray, seed: int) -> np.ndarray:
            post = pyro_acp.infer(SBM(), torch.as_tensor(adjacency), guide=guide, num_samples=num_samples,
                                  seed=seed, progress_bar=False, estimate_log_prob=False)
            return (post.refined_map() if refine else post.map).numpy()
        return call

    return {"ACP guide, MAP of 100 samples": run(100), "ACP guide, MAP of 10 samples": run(10),
            "ACP guide, 100 samples + refined_map (greedy ascent)": run(100, refine=True)}


def methods(selected: tuple[str, ...], guide: str | None) -> dict[str, Callable | str]:
    """{row name: method(adjacency, seed) -> labels, or the reason it has no figures}."""
    table: dict[str, Callable | str] = {}
    if "spectral" in selected:
        table["spectral clustering, eigengap K (sklearn)"] = spectral
    if "louvain" in selected:
        table["Louvain (networkx)"] = louvain
    if "asbm" in selected:
        try:
            import asbm  # noqa: F401

            table["asbm microcanonical SBM, 1 chain x 20 samples, MDL"] = asbm_mdl
        except ImportError:
            table["asbm microcanonical SBM"] = "not installed (pip install asbm)"
    if "gibbs" in selected:
        table["collapsed SBM Gibbs, 4 x (200 + 200) sweeps, MAP"] = gibbs
    if "acp" in selected:
        if guide is None:
            table["ACP guide"] = "no trained guide given (--guide PATH)"
        else:
            table.update(acp_methods(guide))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=20)
    parser.add_argument("--guide", default=None, help="checkpoint of a trained graph guide for SBM()")
    parser.add_argument("--only", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--json", default=None, help="also write the per-graph figures here")
    parser.add_argument("--verbose", action="store_true", help="print every graph's AMI and time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    selected = tuple(args.only.split(","))
    unknown = set(selected) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    graphs = [held_out_graph(EVAL_SEED + i) for i in range(args.graphs)]
    sizes = [len(a) for a, _ in graphs]
    print(f"{args.graphs} graphs from SBM() (N {min(sizes)}..{max(sizes)}, mean {np.mean(sizes):.0f}; "
          f"seeds {EVAL_SEED}..{EVAL_SEED + args.graphs - 1})", flush=True)
    warm_adjacency, _ = held_out_graph(WARMUP_SEED)
    rows, record = [], {"sizes": sizes, "true_k": [int(y.max()) + 1 for _, y in graphs]}
    for name, method in methods(selected, args.guide).items():
        if isinstance(method, str):
            rows.append(f"| {name} | {method} | | |")
            print(rows[-1], flush=True)
            continue
        method(warm_adjacency, 0)
        amis, times, ks = [], [], []
        for i, (adjacency, truth) in enumerate(graphs):
            began = time.perf_counter()
            labels = method(adjacency, i)
            times.append(time.perf_counter() - began)
            amis.append(adjusted_mutual_info_score(truth, labels))
            ks.append(int(len(np.unique(labels))))
            if args.verbose:
                print(f"  graph {i} (N = {len(truth)}): AMI {amis[-1]:.3f} in {times[-1]:.2f} s", flush=True)
        record[name] = {"ami": amis, "seconds": times, "k": ks}
        k_error = np.mean(np.abs(np.array(ks) - np.array(record["true_k"])))
        rows.append(f"| {name} | {np.mean(amis):.3f} (sd {np.std(amis):.2f}) | {np.mean(times):.3f} s "
                    f"| {k_error:.1f} |")
        print(rows[-1], flush=True)
    print("\n| method | mean AMI of the partition | time per graph | mean abs(K - true K) |\n| --- | --- | --- | --- |")
    print("\n".join(rows))
    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
