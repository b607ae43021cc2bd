"""Data-parallel training throughput: 1 process against P processes (torch.distributed, gloo), same global batch.

Each configuration runs in fresh processes started here (torch.multiprocessing, a free local port, the
environment torchrun sets), all training the same guide on the same global batch size with
``pyro_acp.train``; throughput is global data sets per second over the steps after ``--warmup`` steps
(timed on rank 0 by a callback; start-up, imports and the first steps are left out). Also timed: one
all-reduce of the guide's gradient buffer between the P processes (the communication each step adds).

    python benchmarks/bench_distributed.py [--steps 12] [--warmup 3] [--batch-size 16] [--hidden-dim 64]
        [--num-particles 10] [--num-points 20 60] [--nproc 2] [--output benchmarks/results/distributed.json]

Configurations: 1 process with 1 thread, 1 process with ``cpu_count`` threads, P processes with
``cpu_count // P`` threads each. On a machine with C cores, P processes can at best match one process that
uses all C cores well; they win where one process's threads do not scale (small tensors, Python overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, nproc: int, threads: int, port: int, settings: dict, out: str) -> None:
    import torch.distributed as dist

    from pyro_acp.guides import ACPS
    from pyro_acp.inference.distributed import process_group_from_environment
    from pyro_acp.inference.training import train
    from pyro_acp.models import CRPGaussianMixture

    torch.set_num_threads(threads)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    stamps: list[float] = []
    with process_group_from_environment(timeout_s=600):
        guide = ACPS(2, hidden_dim=settings["hidden_dim"])
        train(CRPGaussianMixture(), guide, steps=settings["steps"], batch_size=settings["batch_size"],
              num_particles=settings["num_particles"], num_points=tuple(settings["num_points"]), seed=0,
              validate_every=0, progress_bar=False, callback=lambda step, history: stamps.append(time.perf_counter()))
        allreduce_ms = None
        if nproc > 1:
            buffer = torch.randn(sum(p.numel() for p in guide.parameters()) + 1)
            dist.barrier()
            began = time.perf_counter()
            for _ in range(20):
                dist.all_reduce(buffer)
            allreduce_ms = (time.perf_counter() - began) / 20 * 1e3
            dist.barrier()  # nobody takes the group down while another still uses it
    if rank == 0:
        warm = settings["warmup"]
        per_step = (stamps[-1] - stamps[warm - 1]) / (len(stamps) - warm)
        Path(out).write_text(json.dumps({"seconds_per_step": per_step,
                                         "datasets_per_second": settings["batch_size"] / per_step,
                                         "allreduce_ms": allreduce_ms,
                                         "parameters": sum(p.numel() for p in guide.parameters())}))


def run(nproc: int, threads: int, settings: dict, folder: Path) -> dict:
    out = folder / f"p{nproc}_t{threads}.json"
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, nproc, threads, port, settings, str(out))) for r in range(nproc)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"a benchmark process failed: exit codes {[p.exitcode for p in procs]}")
    return {"processes": nproc, "threads_per_process": threads, **json.loads(out.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--num-particles", type=int, default=10)
    parser.add_argument("--num-points", type=int, nargs=2, default=(20, 60))
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/results/distributed.json")
    args = parser.parse_args()
    if not 1 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and below --steps")
    settings = {"steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size,
                "hidden_dim": args.hidden_dim, "num_particles": args.num_particles, "num_points": args.num_points}
    cores = os.cpu_count() or 1
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    configs = [(1, 1), (1, cores), (args.nproc, max(1, cores // args.nproc))]
    rows = []
    for nproc, threads in configs:
        with tempfile.TemporaryDirectory() as folder:
            row = run(nproc, threads, settings, Path(folder))
        rows.append(row)
        print(f"{nproc} process{'es' if nproc > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}: "
              f"{row['datasets_per_second']:.1f} data sets/s ({row['seconds_per_step']:.3f} s/step)"
              + (f", one gradient all-reduce {row['allreduce_ms']:.2f} ms" if row["allreduce_ms"] else ""))
    base = rows[0]["datasets_per_second"]
    for row in rows:
        row["speedup_vs_1x1"] = row["datasets_per_second"] / base
    print("speed-up against 1 process x 1 thread: "
          + ", ".join(f"{r['processes']}x{r['threads_per_process']}: {r['speedup_vs_1x1']:.2f}" for r in rows))
    load = os.getloadavg()[0]
    Path(args.output).write_text(json.dumps({"settings": settings, "cpu_count": cores, "load_average_1min": load,
                                             "torch": torch.__version__, "results": rows}, indent=2))
    print(f"(1-minute load average {load:.1f} on {cores} cores) written to {args.output}")


if __name__ == "__main__":
    main()
