"""Time ``infer`` with the shipped NOC guide: 100 samples of a 100-point ordered Gaussian catalog.

Reports the median wall time of ``pyro_acp.infer(OrderedGaussianCatalog(), x, num_samples=100)`` over
``--repeats`` calls (after one warm-up call), and separately that of
:func:`pyro_acp.guides.noc.ordered_log_prob_estimate` on the same samples with the estimator settings infer
uses at N = 100 (what an infer that estimates the ordered log q would add).

    OMP_NUM_THREADS=1 python benchmarks/bench_ordered_infer.py [--guide CHECKPOINT]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import pyro_acp
from pyro_acp.guides.noc import ordered_log_prob_estimate
from pyro_acp.inference.log_prob import log_prob_settings
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
    infer_times, log_q_times = [], []
    for r in range(args.repeats + 1):
        began = time.perf_counter()
        post = pyro_acp.infer(model, x, guide=guide, num_samples=100, seed=r, progress_bar=False, check_prior=False)
        infer_times.append(time.perf_counter() - began)
        began = time.perf_counter()
        estimate = ordered_log_prob_estimate(guide, x, post.samples, None, log_prob_settings(args.num_points),
                                             torch.Generator().manual_seed(r))
        log_q_times.append(time.perf_counter() - began)
    print(f"N = {args.num_points}, 100 samples, one torch thread, median of {args.repeats} after a warm-up:")
    print(f"infer {statistics.median(infer_times[1:]):.3f} s; ordered log q of the samples "
          f"{statistics.median(log_q_times[1:]):.3f} s (median standard error "
          f"{float(estimate.standard_error.nanmedian()):.3f} nats)")


if __name__ == "__main__":
    main()
