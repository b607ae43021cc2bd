"""GPU self-check: the device-sensitive parts run on CUDA, compared with CPU results, and timed.

    python benchmarks/gpu_check.py [--output benchmarks/results/gpu_check.json]   # on a machine with CUDA
    python benchmarks/gpu_check.py --dry-run [--output FILE]                       # the same checks, CPU only

Checks (each PASS / FAIL; the exit status is 1 when one fails):

- **training gradients**: the guide's bound and its gradients on one fixed batch, on CPU and on the device,
  from the same weights, with the encoder q made a point mass so that the bound is deterministic: equal
  within float32 rounding (rtol 1e-3);
- **training steps**: ``pyro_acp.train`` on the device, finite losses; data sets per second and peak memory,
  against the same steps on CPU;
- **sampling** (``sample_partitions``), **log-probability estimates** (``estimate_log_prob``), **collapsed
  Gibbs** and **infer**: random streams differ between devices, so device and CPU results are compared
  against the Monte-Carlo yardstick of two CPU runs with different seeds: the device's distance to CPU must
  be at most twice the CPU-to-CPU distance plus a small floor (co-clustering: max abs difference; log q:
  mean abs difference over the same partitions);
- **infer timing**: ``pyro_acp.infer`` at N = 200 with 100 samples, warm, device against CPU.

Without CUDA the script says so and exits 0 having run nothing. ``--dry-run`` runs every check with the CPU
standing in for the device (smaller sizes), so the script itself is tested (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

SIZES = {"full": {"points": 200, "samples": 1000, "train_steps": 20, "batch": 32, "hidden": 128, "gibbs": 400,
                  "infer_points": 200, "small_points": 7},
         "dry": {"points": 30, "samples": 200, "train_steps": 2, "batch": 4, "hidden": 16, "gibbs": 30,
                 "infer_points": 30, "small_points": 6}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    _sync(device)
    began = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - began


def _data(num_points: int, seed: int):
    from pyro_acp.models import CRPGaussianMixture

    model = CRPGaussianMixture()
    x, _ = model.simulate(1, num_points=(num_points, num_points + 1), seed=seed).unpadded(0)
    return model, x


def _within_yardstick(device_gap: float, cpu_gap: float, floor: float) -> bool:
    return device_gap <= 2 * cpu_gap + floor


def _against_cpu(device, run: Callable[[torch.device, int], torch.Tensor], distance: Callable[[torch.Tensor], float]
                 ) -> tuple[float, float, dict[str, torch.Tensor]]:
    """``run(where, seed)`` on CPU with seeds 0 and 1 and on the device with seed 0: (device-to-CPU distance,
    CPU-to-CPU distance: the Monte-Carlo yardstick, the three results)."""
    cpu = torch.device("cpu")
    runs = {name: run(where, seed).cpu() for name, where, seed in (("cpu0", cpu, 0), ("cpu1", cpu, 1),
                                                                    ("device", device, 0))}
    return distance(runs["device"] - runs["cpu0"]), distance(runs["cpu0"] - runs["cpu1"]), runs


def _max_abs(t: torch.Tensor) -> float:
    return t.abs().max().item()


def check_training_gradients(device, sizes) -> dict:
    import pyro
    import pyro.distributions as dist

    from pyro_acp.guides import ACPS
    from pyro_acp.inference.elbo import ClusterwiseIWAE
    from pyro_acp.models import CRPGaussianMixture

    class PointMass(ACPS):
        def posterior(self, enc):
            return dist.Delta(super().posterior(enc).loc)

    batch = CRPGaussianMixture().simulate(sizes["batch"], num_points=(20, 60), seed=0)
    torch.manual_seed(0)
    reference = PointMass(2, hidden_dim=sizes["hidden"])
    results = []
    for where in (torch.device("cpu"), device):
        guide = PointMass(2, hidden_dim=sizes["hidden"])
        guide.load_state_dict(reference.state_dict())
        guide.to(where)
        with pyro.get_param_store().scope():
            loss = ClusterwiseIWAE(1).differentiable_loss(guide.model, guide.guide, batch.to(where))
            loss.backward()
        results.append((loss.item(), {n: p.grad.detach().cpu() for n, p in guide.named_parameters()
                                      if p.grad is not None}))
    (cpu_loss, cpu_grads), (dev_loss, dev_grads) = results
    worst = max(((dev_grads[n] - g).abs().max() / (g.abs().max() + 1e-12)).item() for n, g in cpu_grads.items())
    loss_gap = abs(dev_loss - cpu_loss) / abs(cpu_loss)
    return {"passed": loss_gap < 1e-4 and worst < 1e-3 and cpu_grads.keys() == dev_grads.keys(),
            "details": f"bound {cpu_loss:.5f} (CPU) vs {dev_loss:.5f}; worst gradient difference {worst:.1e} of "
                       "its largest entry"}


def check_training_steps(device, sizes) -> dict:
    from pyro_acp.guides import ACPS
    from pyro_acp.inference.training import train
    from pyro_acp.models import CRPGaussianMixture

    model = CRPGaussianMixture()
    options = {"steps": sizes["train_steps"], "batch_size": sizes["batch"], "num_particles": 40 if
               sizes is SIZES["full"] else 4, "num_points": (50, 200) if sizes is SIZES["full"] else (10, 30),
               "seed": 0, "validate_every": 0, "progress_bar": False}
    rates, losses = {}, {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for where in dict.fromkeys([torch.device("cpu"), device]):
        history, seconds = _timed(lambda w=where: train(model, ACPS(2, hidden_dim=sizes["hidden"]), device=w,
                                                        **options), where)
        rates[str(where)] = options["steps"] * options["batch_size"] / seconds
        losses[str(where)] = history.loss
    finite = all(torch.isfinite(torch.tensor(v)).all() for v in losses.values())
    memory = f"; peak memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if device.type == "cuda" \
        else ""
    return {"passed": bool(finite), "datasets_per_second": rates,
            "details": ", ".join(f"{k}: {v:.1f} data sets/s" for k, v in rates.items()) + memory}


def _shipped_guide(device):
    from pyro_acp.inference.infer import resolve_guide
    from pyro_acp.models import CRPGaussianMixture

    return resolve_guide(CRPGaussianMixture(), train=False, device=device, progress_bar=False).eval()


def _coclustering(labels: torch.Tensor) -> torch.Tensor:
    from pyro_acp.data.partitions import coclustering_matrix

    return coclustering_matrix(labels.cpu())


def check_sampling(device, sizes) -> dict:
    from pyro_acp.inference.sampling import sample_partitions

    _, x = _data(sizes["points"], seed=1)

    def run(where, seed):
        generator = torch.Generator(device=where).manual_seed(seed)
        return _coclustering(sample_partitions(_shipped_guide(where), x.to(where).unsqueeze(0), sizes["samples"],
                                               generator=generator)[0])

    device_gap, cpu_gap, _ = _against_cpu(device, run, _max_abs)
    return {"passed": _within_yardstick(device_gap, cpu_gap, 0.01),
            "details": f"co-clustering max |device - CPU| {device_gap:.3f}, CPU seed 0 vs 1 {cpu_gap:.3f}"}


def check_log_prob(device, sizes) -> dict:
    from pyro_acp.data.partitions import enumerate_partitions
    from pyro_acp.inference.log_prob import estimate_log_prob

    _, x = _data(sizes["small_points"], seed=2)
    cpu = torch.device("cpu")
    every = enumerate_partitions(x.shape[0]).unsqueeze(0)

    def run(where, seed, labels):
        return estimate_log_prob(_shipped_guide(where), x.to(where).unsqueeze(0), labels.to(where),
                                 generator=torch.Generator(device=where).manual_seed(seed))[0]

    # compared on the 50 likeliest partitions (the improbable ones' estimates are noisy by nats)
    likely = every[:, run(cpu, 2, every).topk(50).indices]
    device_gap, cpu_gap, _ = _against_cpu(device, lambda where, seed: run(where, seed, likely),
                                          lambda gap: gap.abs().mean().item())
    return {"passed": _within_yardstick(device_gap, cpu_gap, 1e-3),
            "details": f"the 50 likeliest of all {every.shape[1]} partitions of N = {x.shape[0]}: mean |log q "
                       f"device - CPU| {device_gap:.4f}, CPU seed 0 vs 1 {cpu_gap:.4f}"}


def check_gibbs(device, sizes) -> dict:
    import pyro_acp

    model, x = _data(sizes["points"], seed=3)

    def run(where, seed):
        return pyro_acp.mcmc.gibbs(model, x.to(where), num_samples=sizes["gibbs"], warmup_steps=sizes["gibbs"] // 4,
                                   num_chains=2, seed=seed, progress_bar=False).coclustering()

    device_gap, cpu_gap, _ = _against_cpu(device, run, _max_abs)
    return {"passed": _within_yardstick(device_gap, cpu_gap, 0.02),
            "details": f"co-clustering max |device - CPU| {device_gap:.3f}, CPU seed 0 vs 1 {cpu_gap:.3f}"}


def check_infer(device, sizes) -> dict:
    import pyro_acp

    model, x = _data(sizes["infer_points"], seed=4)
    seconds: dict[str, float] = {}

    def run(where, seed):
        pyro_acp.infer(model, x, num_samples=2, seed=seed, device=where, train=False)  # warm
        post, seconds[f"{where}:{seed}"] = _timed(
            lambda: pyro_acp.infer(model, x, num_samples=100, seed=seed, device=where, train=False), where)
        return post.coclustering()

    device_gap, cpu_gap, _ = _against_cpu(device, run, _max_abs)
    device_s, cpu_s = seconds[f"{device}:0"], seconds["cpu:0"]
    return {"passed": _within_yardstick(device_gap, cpu_gap, 0.02), "seconds": seconds,
            "details": f"N = {x.shape[0]}, 100 samples: {device_s:.3f} s on {device} vs {cpu_s:.3f} s on CPU; "
                       f"co-clustering max |device - CPU| {device_gap:.3f}, CPU seed 0 vs 1 {cpu_gap:.3f}"}


CHECKS = {"training gradients": check_training_gradients, "training steps": check_training_steps,
          "sampling": check_sampling, "log-probability estimates": check_log_prob, "collapsed Gibbs": check_gibbs,
          "infer": check_infer}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="run every check with the CPU as the device")
    parser.add_argument("--device", default="cuda", help="the device under test (default cuda)")
    parser.add_argument("--output", default=None,
                        help="JSON results (default benchmarks/results/gpu_check.json on a GPU, none for --dry-run)")
    args = parser.parse_args(argv)
    if args.dry_run:
        device, sizes = torch.device("cpu"), SIZES["dry"]
    else:
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
            print(f"gpu_check: torch {torch.__version__} ({build}) finds no CUDA device: nothing was run. Run it on a "
                  "machine with a GPU, or pass --dry-run for a CPU-only run of the script itself.")
            return 0
        device, sizes = torch.device(args.device), SIZES["full"]
    output = args.output or (None if args.dry_run else "benchmarks/results/gpu_check.json")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"gpu_check on {name}, torch {torch.__version__}")
    results = {}
    for label, check in CHECKS.items():
        began = time.perf_counter()
        try:
            result = check(device, sizes)
        except Exception as err:  # noqa: BLE001 - a failing check is reported, the others still run
            result = {"passed": False, "details": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc()}
        result["seconds_total"] = round(time.perf_counter() - began, 2)
        results[label] = result
        print(f"{'PASS' if result['passed'] else 'FAIL'}  {label:26s} {result['details']} "
              f"({result['seconds_total']:.1f} s)", flush=True)
    failed = [label for label, r in results.items() if not r["passed"]]
    print(f"{len(results) - len(failed)} of {len(results)} checks passed" + (f"; failed: {', '.join(failed)}"
                                                                              if failed else ""))
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps({"device": name, "torch": torch.__version__, "dry_run": args.dry_run,
                                            "checks": results}, indent=2, default=str))
        print(f"written to {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
