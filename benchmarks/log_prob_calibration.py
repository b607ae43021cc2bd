"""Calibration of ``posterior.log_prob``: does exp(log_prob) match the guide's own sampling frequencies?

For simulated data sets of the shipped guide's model at N = 5, 7 and 10, draw many samples with ``infer`` (the
frame-averaged guide, as ``infer`` samples), and estimate log q of every distinct partition drawn with each
estimator setting. A calibrated estimate has sum_s exp(log_prob) <= 1 (close to 1 minus the mass never drawn) and
log_prob close to the log of the sampling frequency (the frequency itself is noisy: for a partition drawn with
frequency f among S samples, the sd of log f is about sqrt((1 - f) / (S f)); only partitions with f >= 0.02 are
compared, where that is at most 0.11 nats at S = 4,000). "old default" is the setting before issue 15 (3 anchors,
one z from the prior, one size-biased order, each partition in the frame it was first drawn in).

    python benchmarks/log_prob_calibration.py [--sizes 5 7 10] [--datasets 10] [--samples 4000]
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from exact_sweep import sweep_main  # benchmarks/exact_sweep.py, beside this script

import pyro_acp
from pyro_acp.inference.frames import frames_for
from pyro_acp.inference.infer import resolve_guide
from pyro_acp.inference.log_prob import log_prob_estimate
from pyro_acp.models import CRPGaussianMixture

OLD_DEFAULT = {"num_anchors": 3, "num_z": 1, "num_orders": 1, "z_proposal": "prior", "orders": "sample"}
SETTINGS = {
    "old default": {**OLD_DEFAULT, "frames": "first draw"},
    "old, fresh frames": {**OLD_DEFAULT, "frames": "fresh"},
    "new default": {"frames": "fresh"},  # infer's defaults for the data set's size
    "exact orders, 32 z": {"num_anchors": None, "num_z": 32, "num_orders": 16, "frames": "fresh"},
}
RESULTS = Path(__file__).parent / "results" / "log_prob_calibration.json"


def estimate(guide, model, x, unique, first_frames, all_frames, setting, seed):
    """log q estimates (U,) and standard errors of the distinct partitions under one setting."""
    from pyro_acp.inference.infer import log_prob_settings

    options = dict(setting)
    frames_mode = options.pop("frames")
    if not options:
        options = log_prob_settings(x.shape[0])
    generator = torch.Generator().manual_seed(seed)
    if frames_mode == "first draw":
        est = log_prob_estimate(guide, x, unique, frames=all_frames, sample_frames=first_frames,
                                generator=generator, **options)
    else:
        fresh = frames_for(model, x.shape[0], options.get("num_orders", 16), generator)
        est = log_prob_estimate(guide, x, unique, frames=fresh, generator=generator, **options)
    return est.log_prob[0], est.standard_error[0]


def run(sizes, num_datasets, num_samples):
    model = CRPGaussianMixture()
    guide = resolve_guide(model, train=False)
    rows = []
    for num_points in sizes:
        batch = model.simulate(num_datasets, num_points=num_points, seed=77_000 + num_points)
        for d in range(num_datasets):
            x, _ = batch.unpadded(d)
            generator = torch.Generator().manual_seed(d)
            frames = frames_for(model, num_points, num_samples, generator)
            post = pyro_acp.infer(model, x, num_samples=num_samples, seed=d, train=False, progress_bar=False,
                                  estimate_log_prob=False, check_prior=False)
            samples = post.samples
            unique, inverse, counts = samples.unique(dim=0, return_inverse=True, return_counts=True)
            order = torch.arange(num_samples)
            first = torch.full((unique.shape[0],), num_samples).scatter_reduce(0, inverse, order, "amin")
            first_frames = first % (1 if frames is None else frames.shape[0])
            freq = counts.double() / num_samples
            common = freq >= 0.02
            for name, setting in SETTINGS.items():
                began = time.perf_counter()
                log_q, error = estimate(guide, model, x, unique, first_frames, frames, setting, seed=1000 + d)
                seconds = time.perf_counter() - began
                gap = (log_q.double() - freq.log())[common].abs()
                rows.append({
                    "N": num_points, "dataset": d, "setting": name, "distinct": int(unique.shape[0]),
                    "sum_exp": float(log_q.double().exp().sum()), "above_zero": int((log_q > 0).sum()),
                    "mean_gap": float(gap.mean()), "max_gap": float(gap.max()),
                    "mean_error": float(error[common].nanmean()) if error[common].isfinite().any() else math.nan,
                    "seconds": seconds,
                })
    return rows


def summarise(rows):
    lines = ["| N | setting | sum exp(log_prob) (mean, range) | estimates > 0 | mean / max gap to log freq (nats) |"
             " mean reported SE | time per set (s) |",
             "|---|---|---|---|---|---|---|"]
    for num_points in sorted({r["N"] for r in rows}):
        for name in SETTINGS:
            sel = [r for r in rows if r["N"] == num_points and r["setting"] == name]
            sums = [r["sum_exp"] for r in sel]
            lines.append(
                f"| {num_points} | {name} | {sum(sums) / len(sums):.2f} ({min(sums):.2f}-{max(sums):.2f}) | "
                f"{sum(r['above_zero'] for r in sel)} | {sum(r['mean_gap'] for r in sel) / len(sel):.2f} / "
                f"{max(r['max_gap'] for r in sel):.2f} | "
                f"{sum(r['mean_error'] for r in sel) / len(sel):.2f} | "
                f"{sum(r['seconds'] for r in sel) / len(sel):.2f} |")
    return "\n".join(lines)


def main() -> None:
    sweep_main(__doc__, run, summarise, RESULTS, sizes=[5, 7, 10], datasets=10, samples=4000)


if __name__ == "__main__":
    main()
