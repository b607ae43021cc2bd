"""``pyro_acp.infer_many`` over many small data sets against calling ``pyro_acp.infer`` in a loop, in one run.

Data sets: ``--num-datasets`` simulations of the shipped guide's model CRPGaussianMixture() with N drawn
uniformly from [``--low``, ``--high``). ``infer_many`` runs over all of them (in memory, and streamed to a
temporary folder with point estimates); the ``infer`` loop runs over the first ``--loop-subset`` of them
(the same calls a user would make: ``infer(model, x, seed=...)``, the shipped guide resolved each call) and is
extrapolated to all of them by its per-data-set time (and again handed the loaded guide, ``guide=``, to
separate loading the guide once from batching), and its samples are checked equal to infer_many's for those
data sets (and its log-probability estimates compared). Each variant of the options (``--variants``) is timed
both ways.

    python benchmarks/bench_infer_many.py [--num-datasets 1000] [--loop-subset 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import torch

import pyro_acp
from pyro_acp.inference.infer import resolve_guide
from pyro_acp.inference.many import dataset_seed
from pyro_acp.models import CRPGaussianMixture


def with_log_prob(posterior):
    """``posterior`` after reading its ``log_prob``: ``infer`` defers the estimate to that first read, while
    ``infer_many`` makes it in its batches, so the loop is timed with it for a like-for-like comparison."""
    posterior.log_prob  # noqa: B018
    return posterior


VARIANTS = {
    "default": {},
    "no log-prob estimates": {"estimate_log_prob": False},
    "data as given, no log-prob": {"estimate_log_prob": False, "symmetrize": False},
}


def simulate(model, count: int, low: int, high: int, seed: int) -> list[np.ndarray]:
    """``count`` data sets of the model, N uniform in [low, high) (one batched simulation, cut to size)."""
    batch = model.simulate(count, num_points=(low, high), seed=seed)
    return [batch.unpadded(i)[0].numpy() for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-datasets", type=int, default=1000)
    parser.add_argument("--loop-subset", type=int, default=50, help="data sets the infer loop is timed on")
    parser.add_argument("--low", type=int, default=10)
    parser.add_argument("--high", type=int, default=50)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--batch-points", type=int, default=None)
    parser.add_argument("--no-stream", action="store_true", help="skip the streamed run (to disk)")
    parser.add_argument("--loss", default="vi", choices=("vi", "binder", "none"),
                        help="the streamed run's point estimate (none: the MAP alone, no search)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = CRPGaussianMixture()
    guide = resolve_guide(model)  # loaded once before timing (file caches warm for both sides)
    xs = simulate(model, args.num_datasets, args.low, args.high, seed=2026)
    subset = xs[: args.loop_subset]
    sizes = np.array([len(x) for x in xs])
    print(f"{len(xs)} data sets, N in [{sizes.min()}, {sizes.max()}] (mean {sizes.mean():.1f}), "
          f"{args.num_samples} samples each; torch threads {torch.get_num_threads()}; infer loop timed on "
          f"{len(subset)} of them and extrapolated")
    options = {"num_samples": args.num_samples, "progress_bar": False}
    pyro_acp.infer_many(model, xs[:4], seed=0, **options)  # warm-up (prior-check ranges of a few sizes, caches)
    for name in args.variants:
        variant = {**options, **VARIANTS[name]}
        began = time.perf_counter()
        loop = [with_log_prob(pyro_acp.infer(model, x, seed=dataset_seed(0, i), **variant))
                for i, x in enumerate(subset)]
        per_loop = (time.perf_counter() - began) / len(subset)
        began = time.perf_counter()  # the same loop handed the loaded guide: what batching adds beyond loading once
        for i, x in enumerate(subset):
            with_log_prob(pyro_acp.infer(model, x, seed=dataset_seed(0, i), guide=guide, **variant))
        per_loaded = (time.perf_counter() - began) / len(subset)
        began = time.perf_counter()
        batched = pyro_acp.infer_many(model, xs, seed=0, batch_points=args.batch_points, **variant)
        many_time = time.perf_counter() - began
        streamed = float("nan")
        if not args.no_stream:
            with tempfile.TemporaryDirectory() as folder:
                began = time.perf_counter()
                pyro_acp.infer_many(model, xs, seed=0, output=folder, batch_points=args.batch_points,
                                    loss=None if args.loss == "none" else args.loss, **variant)
                streamed = time.perf_counter() - began
        equal = sum(torch.equal(a.samples, b.samples) for a, b in zip(loop, batched, strict=False))
        gaps = [float((a.log_prob - b.log_prob).abs().max()) for a, b in zip(loop, batched, strict=False)
                if a.log_prob is not None and torch.equal(a.samples, b.samples)]
        agreement = f"; log q within {max(gaps):.1e} nats of infer's" if gaps else ""
        loop_total = per_loop * len(xs)
        print(f"[{name}] infer loop {per_loop * 1e3:.1f} ms/data set (x {len(xs)} = {loop_total:.1f} s, "
              f"extrapolated); infer_many {many_time:.1f} s in memory ({len(xs) / many_time:.1f} data sets/s, "
              f"{loop_total / many_time:.2f}x), {streamed:.1f} s streamed to disk (point estimate: {args.loss}) "
              f"({loop_total / streamed:.2f}x); infer loop handed the loaded guide {per_loaded * 1e3:.1f} ms/data set "
              f"({per_loaded * len(xs) / many_time:.2f}x); samples equal to infer's on {equal} of {len(loop)}"
              f"{agreement}",
              flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
