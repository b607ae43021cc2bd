"""Graph guides: ``pyro_acp.infer`` on one 300-node SBM graph with 100 samples (after import and a warm-up
call), and one training step on 16 graphs with N in [50, 300), with time and peak memory, each against a
baseline in the same run: the same guide with an MLP encoder on 2-D points of the same sizes.

Each training variant runs in a fresh child process after a warm-up step on another batch; its peak memory
is the highest resident set size sampled every millisecond during the timed step minus the size just before
it (CPU), or ``torch.cuda.max_memory_allocated`` during the step minus the memory allocated before (CUDA).

    python benchmarks/bench_graphs.py [--device cpu|cuda] [--guide PATH] [--repeats 5] [--threads 1]
                                      [--only infer|training] [--encoders gatedgcn:64,graphsage:128]
                                      [--particles 8] [--steps 1] [--heap default|keep|both]

``--guide`` times a trained graph guide (a checkpoint of ACP/ACPS/CCP with a graph encoder, for SBM());
without it the guides are untrained ACP-S + 4 GatedGCN layers of width 64 (the size ``infer`` trains on
demand) and 128 (the shipped size). The time does not depend on the weights except through the number of
clusters drawn (one sampling round each): untrained guides draw more clusters than trained ones, so these
times are upper bounds on the sampling part.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import threading
import time

import torch

import pyro_acp
from pyro_acp.guides import ACPS
from pyro_acp.inference.elbo import ClusterwiseIWAE
from pyro_acp.models import SBM, CRPGaussianMixture
from pyro_acp.nn.graph import keep_freed_memory

ON_DEMAND_WIDTH = 64  # the width of the graph guides infer trains on demand
DEFAULT_ENCODERS = "gatedgcn:128,graphsage:128"  # --encoders: conv:width of the graph guides timed
BASELINE = "ACPS + MLP (2-D points, baseline)"


def training_variants(spec: str) -> dict[str, dict]:
    """{row name: guide options} for ``spec`` "conv:width,...", the 2-D point baseline last."""
    variants = {}
    for item in spec.split(","):
        conv, _, width = item.partition(":")
        if conv not in ("gatedgcn", "graphsage") or not width.isdigit():
            raise ValueError(f"--encoders items are conv:width with conv gatedgcn or graphsage, got {item!r}")
        variants[f"ACPS + {conv} width {width} (graphs)"] = {"encoder": conv, "hidden_dim": int(width)}
    variants[BASELINE] = {}
    return variants


def _median_time(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def bench_infer(device: str, guide_path: str | None, repeats: int) -> None:
    graph_model, point_model = SBM(), CRPGaussianMixture()
    graph_guides = {}
    if guide_path is None:
        for width in ON_DEMAND_WIDTH, 128:
            with pyro_acp.seeding.forked_rng(0):
                graph_guides[f"width {width}"] = ACPS(20, encoder="gatedgcn", hidden_dim=width)
            graph_guides[f"width {width}"].trained_for = graph_model.config()
    else:
        graph_guides["trained"] = pyro_acp.load_guide(guide_path, map_location=device)[0]
    with pyro_acp.seeding.forked_rng(0):
        point_guide = ACPS(2)
    point_guide.trained_for = point_model.config()
    graph_guides = {name: g.to(device).eval() for name, g in graph_guides.items()}
    point_guide = point_guide.to(device).eval()
    adjacency = graph_model.simulate(1, num_points=300, seed=0).adjacency[0]
    points, _ = point_model.simulate(1, num_points=300, seed=0).unpadded(0)
    cases = {}
    for name, graph_guide in graph_guides.items():
        cases[f"graph ({name}), log q in the call"] = (graph_model, adjacency, graph_guide,
                                                       {"estimate_log_prob": "now"})  # default: deferred
        cases[f"graph ({name}), no log-prob estimates"] = (graph_model, adjacency, graph_guide,
                                                           {"estimate_log_prob": False})
    cases.update({
        "points (baseline, width 128), log q in the call": (point_model, points, point_guide,
                                                            {"check_prior": False, "estimate_log_prob": "now"}),
        "points (baseline, width 128), no log-prob estimates": (point_model, points, point_guide,
                                                                {"check_prior": False, "estimate_log_prob": False}),
    })
    print(f"infer, N = 300, 100 samples, median of {repeats} after a warm-up call ({device}):")
    for name, (model, x, guide, options) in cases.items():
        def call(model=model, x=x, guide=guide, options=options):
            return pyro_acp.infer(model, x, guide=guide, num_samples=100, seed=0, progress_bar=False,
                                  device=device, **options)
        post = call()
        seconds = _median_time(call, repeats)
        print(f"  {name:55s} {seconds:7.3f} s   (mean K of the samples {post.num_clusters.double().mean():.1f})",
              flush=True)
    x, mask = adjacency.unsqueeze(0).to(device), torch.ones(1, 300, dtype=torch.bool, device=device)
    for name, graph_guide in graph_guides.items():
        with torch.no_grad():
            encode = _median_time(lambda g=graph_guide: g.encode_data(x, mask), repeats)
        print(f"  of which the graph encoding ({name}: Laplacian eigenvectors + 4 GatedGCN layers) {encode:.3f} s")


class _RSSSampler:
    """The peak of the process's resident set size above its size at start, sampled every millisecond
    (``/proc/self/statm``, Linux) by a background thread."""

    def __init__(self):
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._start = self._rss()
        self._peak = self._start
        self._running = True
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _watch(self) -> None:
        while self._running:
            self._peak = max(self._peak, self._rss())
            time.sleep(0.001)

    def stop(self) -> int:
        self._running = False
        self._thread.join()
        return max(self._peak, self._rss()) - self._start


def _training_step(name: str, options: dict, device: str, threads: int | None, particles: int, repeats: int,
                   keep_heap: bool, queue) -> None:
    """SVI-bound steps (forward + backward) of a fresh guide on a 16-graph batch, in a child process: the
    median time of ``repeats`` steps on one batch after a warm-up step on another, the peak memory of the first."""
    if threads is not None:
        torch.set_num_threads(threads)
    if keep_heap and not keep_freed_memory():
        raise RuntimeError("keep_freed_memory() did not take (not glibc?)")
    torch.manual_seed(0)
    model = SBM() if options else CRPGaussianMixture()
    guide = ACPS(model.data_dim, **options).to(device)
    loss = ClusterwiseIWAE(num_particles=particles)
    warm = model.simulate(16, num_points=(50, 300), seed=1, device=device)
    batch = model.simulate(16, num_points=(50, 300), seed=2, device=device)
    loss.differentiable_loss(guide.model, guide.guide, warm).backward()  # warm-up: allocator, lazy init
    guide.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    sampler = _RSSSampler()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        loss.differentiable_loss(guide.model, guide.guide, batch).backward()
        times.append(time.perf_counter() - began)
        guide.zero_grad()
        if len(times) == 1:
            rss_peak = sampler.stop()
    seconds = statistics.median(times)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak = rss_peak / 2**20
    queue.put((name, seconds, peak, int(batch.num_points.sum()), int(batch.num_clusters.sum())))


def bench_training(device: str, threads: int | None, encoders: str = DEFAULT_ENCODERS, particles: int = 8,
                   repeats: int = 1, heap: str = "both") -> None:
    """Each variant in a child process; ``heap``: "default" (glibc's malloc as it is), "keep"
    (:func:`keep_freed_memory` first) or "both" (one child each, one after the other, and their ratio)."""
    print(f"one training step (bound + gradients, {particles} particles, median of {repeats}), 16 data sets "
          f"with N in [50, 300) ({device}):")
    context = multiprocessing.get_context("spawn")
    modes = {"default": (False,), "keep": (True,), "both": (False, True)}[heap]
    memory = "peak allocated" if device == "cuda" else "peak RSS above start"
    for name, options in training_variants(encoders).items():
        times = {}
        for keep_heap in modes:
            queue = context.Queue()
            child = context.Process(target=_training_step,
                                    args=(name, options, device, threads, particles, repeats, keep_heap, queue))
            child.start()
            _, seconds, peak, points, steps = queue.get()
            child.join()
            times[keep_heap] = seconds
            label = f"{name}{', keep_freed_memory' if keep_heap else ''}"
            print(f"  {label:58s} {seconds:7.3f} s   {memory} {peak:8.1f} MiB   ({points} nodes, "
                  f"{steps} cluster steps)", flush=True)
        if len(times) == 2:
            print(f"    default / keep_freed_memory: {times[False] / times[True]:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--guide", default=None, help="checkpoint of a trained graph guide for SBM()")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--only", choices=("infer", "training"), default=None, help="run one part only")
    parser.add_argument("--encoders", default=DEFAULT_ENCODERS,
                        help="training part: graph encoders to time, conv:width,... (gatedgcn, graphsage)")
    parser.add_argument("--particles", type=int, default=8, help="training part: IWAE particles")
    parser.add_argument("--steps", type=int, default=1, help="training part: timed steps per variant (median)")
    parser.add_argument("--heap", choices=("default", "keep", "both"), default="both",
                        help="training part: glibc malloc as it is, after keep_freed_memory(), or both")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only != "training":
        bench_infer(args.device, args.guide, args.repeats)
    if args.only != "infer":
        bench_training(args.device, args.threads, args.encoders, args.particles, args.steps, args.heap)


if __name__ == "__main__":
    main()
