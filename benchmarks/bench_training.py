"""Training throughput at the published configuration (width 128, 40 importance samples, batch 32,
2-D CRP mixtures with N in [50, 200)): data sets per second and peak memory, per guide variant, against a
baseline that loops over clusters the way the published code does, in the same run.

The baseline uses the very same networks (same weights, same bound) with the published code's structure:
one Python iteration per cluster step (finished data sets dropped, the data encoder re-run each time, G
accumulated step by step), the join network's first layer applied to the concatenation (point, context, z)
of every importance sample and candidate point. Ours: all steps of all data sets in one pass, joins only for
candidate points, the first layer split into point / context / z parts computed once each.

With ``--compile`` ours is also timed with the join network fused by ``torch.compile`` (``train(compile=True)``,
``pyro-acp train --compile``); the ratio to the baseline then uses the faster of the two.

    python benchmarks/bench_training.py [--steps 5] [--device cpu] [--guides ACPS ACP CCP] [--no-baseline]
        [--compile]
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import pyro
import torch
from torch.nn import functional as F

from pyro_acp.data.batch import Batch
from pyro_acp.guides import ACP, GUIDES, ClusterwiseGuide
from pyro_acp.guides.clusterwise import StepEncoding
from pyro_acp.inference.elbo import ClusterwiseIWAE
from pyro_acp.nn.encoders import anchor_rows

NUM_PARTICLES = 40


def concatenated_join_log_lik(guide: ClusterwiseGuide, points, context, z, available, targets):
    """Σ_i log Bernoulli(b_i | ρ) over each step's candidates, ρ's first layer applied to the concatenation
    (point, context, z) of every (particle, candidate) pair, as the published code does: (P, S)."""
    row, point = available.nonzero(as_tuple=True)
    weight = torch.cat([guide.join_point.weight, guide.join_context.weight, guide.join_z.weight], 1)
    p, m = z.shape[0], row.shape[0]
    inputs = torch.cat([points[row, point].expand(p, m, -1), context[row].expand(p, m, -1), z[:, row]], -1)
    logits = guide.join_head(guide.join_act(F.linear(inputs, weight, guide.join_point.bias))).squeeze(-1)
    terms = -F.binary_cross_entropy_with_logits(
        logits, targets[row, point].expand_as(logits).to(logits.dtype), reduction="none")
    return terms.new_zeros(p, available.shape[0]).index_add(1, row, terms)


def padded_step_encodings(guide: ClusterwiseGuide, enc, feats, dataset, anchor, available):
    """ACP's step encodings as the published code computes them: the set blocks over all N points of every
    step, masked (ours packs each step's anchor + available points into size buckets first)."""
    if not isinstance(guide, ACP):
        return guide.step_encodings(enc, feats, dataset, anchor, available)
    points = guide.step_isab(enc[dataset], anchor | available)
    anchor_code = anchor_rows(points, anchor)
    paired = guide.anchor_pair(points, anchor_code.unsqueeze(-2))
    return points, anchor_code, guide.summarize(guide.pool_unassigned, paired, available)


def loop_over_clusters_loss(guide: ClusterwiseGuide, batch: Batch, num_particles: int):
    """The importance-weighted clusterwise bound, one Python iteration per cluster step (published style):
    finished data sets are dropped from each step, as in the published masked training code."""
    cluster_code = batch.x.new_zeros(batch.batch_size, guide.hidden_dim)
    total = batch.x.new_zeros(())
    for k in range(batch.max_clusters):
        dataset = batch.step_mask[:, k].nonzero(as_tuple=True)[0]
        data = guide.encode_data(batch.x[dataset], batch.mask[dataset])
        local = torch.arange(dataset.shape[0], device=batch.x.device)
        anchor, available = batch.anchor[dataset, k], batch.available[dataset, k]
        targets = available & batch.members[dataset, k]
        points, anchor_code, unassigned = padded_step_encodings(guide, data.enc, data.feats, local, anchor,
                                                                available)
        context = torch.cat([anchor_code, unassigned, cluster_code[dataset]], -1)
        enc = StepEncoding(local, available, points, context, anchor_code, cluster_code[dataset], targets,
                           guide.shares_points)
        prior, posterior = guide.prior(context), guide.posterior(enc)
        z = posterior.rsample((num_particles,))
        log_lik = concatenated_join_log_lik(guide, points, context, z, available, targets)
        log_w = prior.log_prob(z).sum(-1) + log_lik - posterior.log_prob(z).sum(-1)
        total = total - (log_w.logsumexp(0) - math.log(num_particles)).sum()
        summary = guide.cluster_summaries(data.cluster_points, local, batch.members[dataset, k])
        cluster_code = cluster_code.index_add(0, dataset, summary)
    return total / batch.batch_size


def time_steps(step, batches, device) -> float:
    step(batches[0])  # warm-up
    began = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - began) / (len(batches) - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--guides", nargs="+", default=["ACPS", "ACP", "CCP"])
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time ours with the join network compiled")
    args = parser.parse_args()
    from pyro_acp.models import CRPGaussianMixture

    model = CRPGaussianMixture()
    batches = [model.simulate(32, num_points=(50, 200), seed=s).to(args.device) for s in range(args.steps + 1)]
    for name in args.guides:
        pyro.clear_param_store()
        torch.manual_seed(0)
        guide = GUIDES[name](2, hidden_dim=128).to(args.device)
        svi = pyro.infer.SVI(guide.model, guide.guide, pyro.optim.Adam({"lr": 1e-4}), ClusterwiseIWAE(NUM_PARTICLES))
        ours = time_steps(svi.step, batches, args.device)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        line = f"{name:5s} ours {ours:6.2f} s/step {32 / ours:6.1f} data sets/s (peak RSS so far {peak:.0f} MiB)"
        if args.compile:
            guide.compile_join()
            svi.step(batches[0])  # compiles (a few seconds), not timed
            compiled = time_steps(svi.step, batches, args.device)
            guide.compile_join(False)
            line += f" | compiled join {compiled:6.2f} s/step {32 / compiled:6.1f} data sets/s"
            ours = min(ours, compiled)
        if not args.no_baseline:
            optimizer = torch.optim.Adam(guide.parameters(), lr=1e-4)

            def baseline_step(batch, guide=guide, optimizer=optimizer):
                optimizer.zero_grad()
                loop_over_clusters_loss(guide, batch, NUM_PARTICLES).backward()
                optimizer.step()

            base = time_steps(baseline_step, batches, args.device)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            line += f" | loop-over-clusters baseline {base:6.2f} s/step -> {base / ours:.1f}x (peak RSS {peak:.0f} MiB)"
        print(line, flush=True)
    print("(published code, measured separately on this 2-core machine: 3.9 s/step, 8.2 data sets/s)")


if __name__ == "__main__":
    main()
