"""Time ``infer`` with the shipped NOC guide: 100 samples of a 100-point ordered Gaussian catalog.

Reports the median wall time over ``--repeats`` calls (after one warm-up call) of
``pyro_acp.infer(OrderedGaussianCatalog(), x, num_samples=100)`` with its defaults (sampling in 16 random
frames, then the ordered log q of every distinct sample, :func:`pyro_acp.guides.noc.ordered_log_prob_estimate`,
computed in every frame), with ``estimate_log_prob=False`` (sampling and ordering only) and with
``symmetrize=False`` (the data as given: one frame, log q included).

    OMP_NUM_THREADS=1 python benchmarks/bench_ordered_infer.py [--guide CHECKPOINT]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import pyro_acp
from pyro_acp.models import OrderedGaussianCatalog
from pyro_acp.pretrained.checkpoint import load_guide

PRETRAINED = Path(pyro_acp.__file__).parent / "pretrained"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guide", type=Path, default=PRETRAINED / "ordered_gaussian_catalog_2d.pt")
    parser.add_argument("--num-points", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = OrderedGaussianCatalog()
    guide = load_guide(args.guide)[0]
    x, _ = model.simulate(1, num_points=args.num_points, seed=0).unpadded(0)
    variants = {"defaults": {}, "estimate_log_prob=False": {"estimate_log_prob": False},
                "symmetrize=False": {"symmetrize": False}}
    times = {name: [] for name in variants}
    for r in range(args.repeats + 1):
        for name, options in variants.items():
            began = time.perf_counter()
            pyro_acp.infer(model, x, guide=guide, num_samples=100, seed=r, progress_bar=False, check_prior=False,
                           **options)
            times[name].append(time.perf_counter() - began)
    print(f"N = {args.num_points}, 100 samples, one torch thread, median of {args.repeats} after a warm-up:")
    for name, seconds in times.items():
        print(f"infer, {name}: {statistics.median(seconds[1:]):.3f} s")

if __name__ == "__main__":
    main()
