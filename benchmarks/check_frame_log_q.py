"""Does infer's log q estimate the density its samples came from? Its estimate against the all-frame mixture.

``infer`` samples in F = 16 random frames, so its samples come from q_F(c) = (1 / F) sum_f q(c | Q_f x). Where a
partition gets fewer replicates than frames (N > 40: 2 sampled orders), the estimator
(:func:`pyro_acp.inference.log_prob.log_prob_estimate`) stratifies the frames into those the partition was drawn
in and the rest (``drawn_frames``, as infer passes it). This script computes, for the shipped
``CRPGaussianMixture()`` guide's distinct samples of simulated data sets, that estimate ("stratified"), the
same without the drawn frames (frames in turn from a random start: "unstratified"), the stratified estimate
with reweight=True's settings ("stratified, reweight settings": what is left when each unit is accurate), and
the reference: each partition estimated in every frame (``sample_frames``) with the reweight settings,
log-mean-exp over frames, with its delta-method error. It prints, per N, the gap estimate - reference (mean,
median, min), the median stated standard error, the share of partitions whose gap is within 2 combined
standard errors, and the time of each estimate.

    OMP_NUM_THREADS=1 python benchmarks/check_frame_log_q.py [--sizes 30 100] [--seeds 11 12 13]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import pyro_acp
import pyro_acp.inference.infer  # noqa: F401  (imports the guides before the estimator)
from pyro_acp.inference.frames import drawn_frames, frames_for
from pyro_acp.inference.log_prob import LogProbEstimate, log_prob_estimate, log_prob_settings
from pyro_acp.inference.log_space import log_mean_and_error
from pyro_acp.inference.sampling import sample_partitions
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.pretrained.checkpoint import load_guide

PRETRAINED = Path(pyro_acp.__file__).parent / "pretrained"


def all_frame_reference(guide, x, unique, frames, settings, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log q_F of every partition from an estimate in each of the F frames, with its delta-method error."""
    count = frames.shape[0]
    every = log_prob_estimate(guide, x, unique.repeat(count, 1), generator=torch.Generator().manual_seed(seed),
                              frames=frames, sample_frames=torch.arange(count).repeat_interleave(unique.shape[0]),
                              **settings)
    per_frame = every.log_prob[0].view(count, -1).double()
    mixture = per_frame.logsumexp(0) - math.log(count)
    share = (per_frame - mixture).exp() / count
    error = (share.square() * every.standard_error[0].view(count, -1).double().square()).sum(0).sqrt()
    return mixture, error


def frames_zero_and_one(guide, x, unique, frames, settings, seed: int):
    """The estimator as it was at N > 40: one sampled order in frame 0 and one in frame 1, averaged."""
    count = unique.shape[0]
    est = log_prob_estimate(guide, x, unique.repeat(2, 1), generator=torch.Generator().manual_seed(seed),
                            frames=frames, sample_frames=torch.arange(2).repeat_interleave(count),
                            **{**settings, "num_orders": 1, "orders": "sample"})
    mixture, error = log_mean_and_error(est.log_prob[0], torch.arange(count).repeat(2), count)  # as it stated
    return LogProbEstimate(mixture.unsqueeze(0), error.unsqueeze(0), est.orders_enumerated[0][:count].unsqueeze(0))


def main(sizes: tuple[int, ...] = (30, 100), seeds: tuple[int, ...] = (11, 12, 13), num_samples: int = 40) -> None:
    torch.set_num_threads(1)
    guide = load_guide(PRETRAINED / "crp_gaussian_mixture_2d.pt")[0]
    model = CRPGaussianMixture()
    for n in sizes:
        default, accurate = log_prob_settings(n), log_prob_settings(n, reweight=True)
        accurate.pop("refine_to")
        prior = {**default, "num_z": 1, "z_proposal": "prior"}  # the N > 40 setting before
        names = ("stratified", "unstratified", "stratified, reweight settings", "stratified, 1 z from the prior",
                 "before: frames 0 and 1, 1 z from the prior")
        gaps: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        covered: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        errors: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        seconds = dict.fromkeys(names, 0.0)
        for seed in seeds:
            x, _ = model.simulate(1, num_points=n, seed=seed).unpadded(0)
            generator = torch.Generator().manual_seed(seed)
            frames = frames_for(model, n, num_samples, generator)
            samples = sample_partitions(guide, x, num_samples, generator=generator, frames=frames)[0]
            unique, inverse = pyro_acp.data.partitions.canonicalize(samples).unique(dim=0, return_inverse=True)
            reference, reference_error = all_frame_reference(guide, x, unique, frames, accurate, seed + 100)
            drawn = drawn_frames(inverse, unique.shape[0], frames)
            variants = {names[0]: (drawn, default), names[1]: (None, default), names[2]: (drawn, accurate),
                        names[3]: (drawn, prior)}
            if n > 40:
                variants[names[4]] = ("before", prior)
            for name, (mask, settings) in variants.items():
                began = time.perf_counter()
                if isinstance(mask, str):
                    est = frames_zero_and_one(guide, x, unique, frames, settings, seed + 200)
                else:
                    est = log_prob_estimate(guide, x, unique, generator=torch.Generator().manual_seed(seed + 200),
                                            frames=frames, drawn_frames=mask, **settings)
                seconds[name] += time.perf_counter() - began
                gap = est.log_prob[0].double() - reference
                combined = (est.standard_error[0].double().square() + reference_error.square()).sqrt()
                gaps[name].append(gap)
                errors[name].append(est.standard_error[0].double())
                covered[name].append((gap.abs() <= 2 * combined).double())
        for name in gaps:
            if not gaps[name]:
                continue
            gap = torch.cat(gaps[name])
            print(f"N = {n}, {name} ({gap.numel()} distinct partitions of {len(seeds)} data sets): "
                  f"estimate - all-frame mixture mean {float(gap.mean()):+.2f} nats, median "
                  f"{float(gap.median()):+.2f}, min {float(gap.min()):+.2f}; stated standard error median "
                  f"{float(torch.cat(errors[name]).nanmedian()):.2f}; within 2 combined errors "
                  f"{float(torch.cat(covered[name]).mean()):.0%}; {seconds[name] / len(seeds):.2f} s per data set")
        print(f"  default settings {default}; reweight settings and reference {accurate}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    args = parser.parse_args()
    main(tuple(args.sizes), tuple(args.seeds))
