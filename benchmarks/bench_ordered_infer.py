"""Time ``infer`` with the shipped NOC guide: 100 samples of a 100-point ordered Gaussian catalog.

Reports the median wall time over ``--repeats`` calls (after one warm-up call) of
``pyro_acp.infer(OrderedGaussianCatalog(), x, num_samples=100)`` with its defaults (sampling and ordering in 16
random frames; the ordered log q is deferred to its first read), the same followed by reading ``log_prob`` (the
ordered log q of every distinct sample, :func:`pyro_acp.guides.noc.ordered_log_prob_estimate`, in the frames it
was drawn in and two others), with ``estimate_log_prob=False``, and with ``symmetrize=False`` (the data as
given: one frame) followed by reading ``log_prob``. Then, for the distinct samples of one
call, the default estimate against the one in all 16 frames (``all_frames=True``, also timed): the gap's mean,
median and min, and the share within 2 combined standard errors.

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
from pyro_acp.inference.frames import frames_for
from pyro_acp.inference.log_prob import log_prob_settings
from pyro_acp.inference.sampling import sample_partitions
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
    variants = {"defaults (log q deferred, not read)": ({}, False),
                "defaults, then reading log_prob": ({}, True),
                "estimate_log_prob=False": ({"estimate_log_prob": False}, False),
                "symmetrize=False, then reading log_prob": ({"symmetrize": False}, True)}
    times = {name: [] for name in variants}
    for r in range(args.repeats + 1):
        for name, (options, read_log_prob) in variants.items():
            began = time.perf_counter()
            post = pyro_acp.infer(model, x, guide=guide, num_samples=100, seed=r, progress_bar=False,
                                  check_prior=False, **options)
            if read_log_prob:
                post.log_prob  # noqa: B018  (runs the deferred estimate)
            times[name].append(time.perf_counter() - began)
    print(f"N = {args.num_points}, 100 samples, one torch thread, median of {args.repeats} after a warm-up:")
    for name, seconds in times.items():
        print(f"infer, {name}: {statistics.median(seconds[1:]):.3f} s")
    compare_with_all_frames(model, guide, x)


def compare_with_all_frames(model, guide, x) -> None:
    """The stratified ordered log q of one call's samples against the all-frame one."""
    generator = torch.Generator().manual_seed(0)
    frames = frames_for(model, x.shape[0], 100, generator)
    labels = sample_partitions(guide, x, 100, generator=generator, frames=frames, ordered=True)[0]
    settings = log_prob_settings(x.shape[0])
    began = time.perf_counter()
    stratified = ordered_log_prob_estimate(guide, x, labels, frames, settings, torch.Generator().manual_seed(1))
    middle = time.perf_counter()
    every = ordered_log_prob_estimate(guide, x, labels, frames, settings, torch.Generator().manual_seed(2),
                                      all_frames=True)
    ended = time.perf_counter()
    inverse = labels.unique(dim=0, return_inverse=True)[1]
    index = torch.zeros(int(inverse.max()) + 1, dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(inverse.shape[0]), "amin", include_self=False)  # one sample per distinct one
    gap = (stratified.log_prob - every.log_prob)[index].double()
    combined = (stratified.standard_error.square() + every.standard_error.square())[index].double().sqrt()
    print(f"{index.numel()} distinct samples: stratified - all frames mean {float(gap.mean()):+.2f} nats, median "
          f"{float(gap.median()):+.2f}, min {float(gap.min()):+.2f}; within 2 combined errors "
          f"{float((gap.abs() <= 2 * combined).double().mean()):.0%}; {middle - began:.2f} s vs {ended - middle:.2f} s")

if __name__ == "__main__":
    main()
