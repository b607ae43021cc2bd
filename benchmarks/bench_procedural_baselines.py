"""NOC against the baselines for procedural catalogs (``ProceduralCatalog()`` at its defaults), one table.

Every method is scored by :func:`pyro_acp.diagnostics.ordered_metrics.ordered_scores` on the same fresh
simulations (default 100 catalogs of 35-50 tokens, seed 20261201; training batches come from the 63-bit seed
stream of ``pyro_acp.train(seed=0)``, so these catalogs were never trained on):

- **NOC**: the shipped guide (``pyro_acp/pretrained/procedural_catalog.pt``, or ``--guide``) through
  ``infer(model, tokens, num_samples=100)``, two readings of the same posterior: one posterior sample (the
  first; the sampled ordered partitions are all distinct on catalogs this size, so the "most frequent" one is
  just the first, and log q, which would rank them, costs 15 s per catalog) and its VI point estimate
  (clusters numbered by mean posterior position). The inference is timed in the first reading's row, the
  second's time is the point estimate's alone.
- **NOC, untrained**: the same architecture at its seeded initial weights, both readings (the floor that the
  training lifts).
- **ACP + pointer**: the clustering of the NOC guide without its cardinality cap (plain ACP sampling, same
  weights), read as NOC is (first sample, or the VI point estimate of the partition), ordered greedily by a
  pointer network trained separately on the ordering loss of true clusters
  (``benchmarks/bench_ordered_baselines.py: train_pointer``, ``--pointer-steps``).
  A separately trained ACP clustering would need a second training run as long as NOC's; on this 2-core
  CPU the clustering weights are shared instead, so the row isolates the pointer and the cap.
- **rule-aware heuristic**: :func:`pyro_acp.reference.catalog_heuristic.rule_heuristic_positions` (it reads
  the rules: the most probable section multiset that fits the colour counts, sections sorted by group).

Columns: compositional and structural score (a section of neither the current nor the next order group is
a violation), the share of wholly valid orders, V-measure, Kendall tau of the elements' positions and of
the matched clusters' order, seconds per catalog (shared CPU: a ratio within the run).

    OMP_NUM_THREADS=1 python benchmarks/bench_procedural_baselines.py [--guide CHECKPOINT] [--json OUT]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import torch
from bench_ordered_baselines import pointer_positions, timed_scores, train_pointer

import pyro_acp
from pyro_acp.data.partitions import canonicalize
from pyro_acp.guides.noc import NOC
from pyro_acp.models import ProceduralCatalog
from pyro_acp.pretrained.checkpoint import load_guide
from pyro_acp.reference.catalog_heuristic import rule_heuristic_positions

PRETRAINED = Path(pyro_acp.__file__).parent / "pretrained"
TEST_SEED = 20261201
COLUMNS = ("compositional", "structural", "valid_order", "v_measure", "element_tau", "cluster_order_tau",
           "seconds_per_set")


def noc_posteriors(model: ProceduralCatalog, guide: NOC, num_samples: int = 100, seed: int = 0):
    """tokens -> ``infer(model, tokens, guide=guide, ...)``, log q not estimated (no reading here needs it),
    each catalog's posterior kept (by its bytes) so that two readings of it cost one inference."""
    kept: dict[bytes, object] = {}

    def posterior(x: torch.Tensor):
        key = x.numpy().tobytes()
        if key not in kept:
            with warnings.catch_warnings():  # an untrained guide is served with a warning: meant here
                warnings.filterwarnings("ignore", "the NOC guide has no record", UserWarning)
                kept[key] = pyro_acp.infer(model, x, guide=guide, num_samples=num_samples, seed=seed,
                                           progress_bar=False, check_prior=False, estimate_log_prob=False)
        return kept[key]

    return posterior


def noc_predictor(posterior, estimate: str):
    """tokens -> positions (N,): the VI point estimate (``"point"``) or the first sample (``"sample"``) of
    ``posterior(tokens)`` (:func:`noc_posteriors`)."""
    if estimate not in ("point", "sample"):
        raise ValueError(f"estimate must be 'point' or 'sample', got {estimate!r}")
    return lambda x: posterior(x).point_estimate() if estimate == "point" else posterior(x).samples[0]


def uncapped(guide: NOC) -> NOC:
    """A copy of ``guide`` that samples as plain ACP: every joiner kept, no cardinality or size cap."""
    copied = copy.deepcopy(guide)
    copied.size_cap, copied.max_cluster_size = "model", None
    return copied


def acp_pointer_predictor(posterior, pointer: NOC, estimate: str):
    """tokens -> positions (N,): the partition of ``posterior(tokens)`` (the first sample's, or the VI point
    estimate's; its own order ignored) in the separately trained ``pointer``'s greedy order."""
    if estimate not in ("point", "sample"):
        raise ValueError(f"estimate must be 'point' or 'sample', got {estimate!r}")

    def predict(x: torch.Tensor) -> torch.Tensor:
        post = posterior(x)
        labels = post.unordered().point_estimate() if estimate == "point" else canonicalize(post.samples[0])
        return pointer_positions(pointer, x, labels)

    return predict


def untrained_like(guide: NOC, seed: int = 0) -> NOC:
    """A guide of the same class and config at the initial weights its constructor draws under ``seed``."""
    options = {k: v for k, v in guide.config.items() if k not in ("type", "data_dim")}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return type(guide)(guide.data_dim, **options).eval()


def run(guide: NOC, *, num_datasets: int = 100, pointer_steps: int = 1000, seed: int = TEST_SEED,
        num_samples: int = 100) -> dict:
    """The table (method -> scores) and the pointer's training time, on ``num_datasets`` catalogs of ``seed``."""
    model = ProceduralCatalog()
    options = {"num_datasets": num_datasets, "num_points": model.default_num_points, "seed": seed}
    began = time.perf_counter()
    pointer = train_pointer(model, pointer_steps)
    pointer_time = time.perf_counter() - began
    trained, untrained = noc_posteriors(model, guide, num_samples), noc_posteriors(model, untrained_like(guide),
                                                                                  num_samples)
    acp = noc_posteriors(model, uncapped(guide), num_samples)
    predictors = {  # the two readings of one posterior: the first pays the inference (seconds per catalog)
        "NOC (one sample)": noc_predictor(trained, "sample"),
        "NOC (point estimate)": noc_predictor(trained, "point"),
        "NOC untrained (one sample)": noc_predictor(untrained, "sample"),
        "NOC untrained (point estimate)": noc_predictor(untrained, "point"),
        "ACP + pointer (one sample)": acp_pointer_predictor(acp, pointer, "sample"),
        "ACP + pointer (point estimate)": acp_pointer_predictor(acp, pointer, "point"),
        "rule-aware heuristic": lambda x: rule_heuristic_positions(model, x),
    }
    table = {name: timed_scores(model, predict, **options) for name, predict in predictors.items()}
    return {"table": table, "pointer_training_s": pointer_time}


def markdown(table: dict[str, dict[str, float]]) -> str:
    """The table as Markdown, one row per method, the columns of :data:`COLUMNS`."""
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{scores[c]:.3f}" for c in COLUMNS) + " |" for name, scores in table.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guide", type=Path, default=PRETRAINED / "procedural_catalog.pt")
    parser.add_argument("--num-datasets", type=int, default=100)
    parser.add_argument("--pointer-steps", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    guide, card = load_guide(args.guide)
    record = run(guide, num_datasets=args.num_datasets, pointer_steps=args.pointer_steps,
                 num_samples=args.num_samples)
    print(markdown(record["table"]))
    steps = card.get("training", {}).get("completed_steps")
    print(f"(guide {args.guide}, {steps} training steps; pointer trained alone for {args.pointer_steps} steps in "
          f"{record['pointer_training_s']:.0f} s)")
    if args.json is not None:
        record.update(options={**vars(args), "guide": str(args.guide), "json": str(args.json)},
                      test_seed=TEST_SEED, guide_completed_steps=steps)
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
