"""Time to accuracy: ACP vs collapsed Gibbs vs NUTS on CRP Gaussian mixtures (issue 5).

For each N one data set is simulated from ``CRPGaussianMixture()`` (2-D defaults, fixed seed). A long
collapsed Gibbs run (several vectorised chains, ``pyro_acp.mcmc.gibbs``) gives the reference co-clustering
matrix; every method is then scored by ``pyro_acp.metrics.coclustering_error`` against it (mean over pairs
i < j of |P_ij - P_ref_ij|, the column ``compare`` reports) as a function of the wall time it spent:

- **Gibbs** (independent seed, C vectorised chains, sequential start): the running estimate after t sweeps
  averages the C chains over sweeps (t/2, t] (the first half is burn-in); its time is the wall time from
  the kernel's setup to the end of sweep t. Estimates are scored after the run, outside the clock.
- **ACP**: ``pyro_acp.infer(..., estimate_log_prob=False)`` with growing ``num_samples``, each call timed
  whole (sampling, each sample in its own random frame of the data, and the exact log joint for the MAP);
  the co-clustering needs no estimates of the guide's log-probability, so they are skipped, as a user
  wanting only co-clustering would skip them. The shipped guide is loaded once beforehand and one untimed
  warm-up call is made, so the times are *warm* (cold start excluded); the load time is reported separately
  and the summary also gives the ratio with it added (cold).
- **NUTS**: ``pyro_acp.mcmc.nuts`` with growing ``num_samples`` (warmup = samples), each call timed whole
  (JIT compilation included), at N <= ``--nuts-max-n`` only: at about a second per NUTS iteration
  already at N = 100 on this CPU, larger N does not fit the time budget (the table says so).

Time to accuracy: the first Gibbs time at which its error is <= the error ACP reaches with 100 samples,
divided by that ACP call's time (> 1: ACP is faster); the same for ACP's best error; and whether / when
ACP reaches Gibbs' final error. The shipped guide was trained on N in [2, 200): N = 1000 is beyond it, and
that data set (seed 0) has two clusters 2.6 sd apart, where the guide errs (its held-out MAP AMI on fresh
N in [500, 1000) is 0.96: benchmarks/evaluate_shipped_guide.py). ``--data-seeds`` runs every N on several
data sets (entries keyed "N" for seed 0, "N/seed S" otherwise), so one unlucky draw does not decide.

Run: python benchmarks/bench_time_to_accuracy.py [--sizes 100 200 1000] [--reference-sweeps 2000 1000 300]
         [--gibbs-sweeps 400 300 300] [--data-seeds 0] [--threads 1] [--quick] [--output results.json]
         [--figure fig.png] [--replot results.json]
The full run takes 10-20 minutes on a 2-core CPU (554 s last time; each extra N = 1000 data seed ~4 min);
``--quick`` is a smoke test of a few seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import pyro_acp
from pyro_acp.data.partitions import coclustering_matrix
from pyro_acp.diagnostics.metrics import coclustering_error
from pyro_acp.inference.infer import resolve_guide
from pyro_acp.mcmc import CollapsedGibbs
from pyro_acp.models import CRPGaussianMixture

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "time_to_accuracy.json"
DEFAULT_FIGURE = ROOT / "docs" / "time_to_accuracy.png"
DEFAULT_SIZES = (100, 200, 1000)
#: Sweeps per chain of the reference and of the timed Gibbs run, per N (sized for ~20 min in all, 1 thread).
REFERENCE_SWEEPS = {100: 2000, 200: 1000, 1000: 300}
GIBBS_SWEEPS = {100: 400, 200: 300, 1000: 300}
ACP_SAMPLES = (10, 30, 100, 300, 1000)
NUTS_SAMPLES = (10, 30)
NUTS_MAX_N = 200
TARGET_SAMPLES = 100  # the ACP run whose error Gibbs has to reach
DATA_SEED, REFERENCE_SEED, GIBBS_SEED, ACP_SEED, NUTS_SEED = 0, 12345, 1, 2, 3
QUICK = {"sizes": (30,), "reference_sweeps": 60, "gibbs_sweeps": 15, "acp_samples": (10, 30, 100),
         "nuts_samples": (5,), "nuts_max_n": 30}


# ---------------------------------------------------------------------------------------------- helpers
def _per_size(value: int | Sequence[int] | dict[int, int] | None, sizes: Sequence[int], default: dict[int, int],
              name: str) -> dict[int, int]:
    """One count per N: a dict, one number for all, one number per size, or None for the defaults."""
    if value is None:
        return {n: default.get(n, default[min(default, key=lambda m: abs(m - n))]) for n in sizes}
    if isinstance(value, dict):
        return {n: int(value[n]) for n in sizes}
    if isinstance(value, int):
        return dict.fromkeys(sizes, value)
    value = list(value)
    if len(value) == 1:
        return dict.fromkeys(sizes, int(value[0]))
    if len(value) != len(sizes):
        raise ValueError(f"{name} needs one value or one per size ({len(sizes)}), got {len(value)}")
    return {n: int(v) for n, v in zip(sizes, value, strict=True)}


def _mean_coclustering(labels: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(N, N) float64 co-clustering of partitions (S, N), in chunks (bounded memory at large S and N)."""
    total = torch.zeros(labels.shape[-1], labels.shape[-1], dtype=torch.float64)
    for part in labels.split(chunk):
        total += coclustering_matrix(part).to(torch.float64) * part.shape[0]
    return total / labels.shape[0]


def _checkpoints(num_sweeps: int, dense: int = 10, factor: float = 1.2) -> list[int]:
    """Sweep counts at which the running Gibbs estimate is scored: every sweep up to ``dense``, then geometric."""
    points = set(range(1, min(dense, num_sweeps) + 1))
    t = float(dense)
    while t < num_sweeps:
        t *= factor
        points.add(min(num_sweeps, round(t)))
    points.add(num_sweeps)
    return sorted(points)


def machine_info() -> dict[str, Any]:
    """What the timings were taken on (they only compare within one run of this script)."""
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "processor": platform.processor(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


# ---------------------------------------------------------------------------------------------- the methods
def reference(model: Any, x: torch.Tensor, sweeps: int, chains: int, split_merge: bool) -> tuple[torch.Tensor, dict]:
    """The reference co-clustering from a long Gibbs run, and facts about it (its own split-half noise floor:
    the error between the co-clustering of the first and of the second half of its chains)."""
    warmup = max(10, sweeps // 10)
    post = pyro_acp.mcmc.gibbs(model, x, num_samples=sweeps, warmup_steps=warmup, num_chains=chains,
                               seed=REFERENCE_SEED, split_merge=split_merge, progress_bar=False)
    cc = _mean_coclustering(post.samples)
    half = post.chain < chains // 2
    floor = coclustering_error(_mean_coclustering(post.samples[half]), _mean_coclustering(post.samples[~half]))
    row = pyro_acp.compare({"reference": post}).rows[0]
    info = {"sweeps": sweeps, "warmup": warmup, "chains": chains, "split_merge": split_merge,
            "wall_time": post.wall_time, "K_mean": row["K_mean"], "K_sd": row["K_sd"], "rhat_K": row["rhat_K"],
            "ess_K": row["ess_K"], "split_half_error": floor}
    return cc, info


def gibbs_curve(model: Any, x: torch.Tensor, ref_cc: torch.Tensor, sweeps: int, chains: int) -> list[dict]:
    """Error of the running Gibbs estimate against wall time, at the sweeps of :func:`_checkpoints`."""
    began = time.perf_counter()
    kernel = CollapsedGibbs(model, num_chains=chains, seed=GIBBS_SEED)
    kernel.setup(0, x)
    params = kernel.initial_params
    labels, times = [], []
    for _ in range(sweeps):
        params = kernel.sample(params)
        labels.append(kernel.labels.clone())
        times.append(time.perf_counter() - began)
    # Scoring, off the clock: cumulative sums of the per-sweep co-clustering, kept only at the window starts.
    checkpoints = _checkpoints(sweeps)
    starts = {t: t // 2 for t in checkpoints}
    needed = set(starts.values())
    snapshots = {0: torch.zeros_like(ref_cc)}
    running = torch.zeros_like(ref_cc)
    curve = []
    for t in range(1, sweeps + 1):
        running += coclustering_matrix(labels[t - 1]).to(torch.float64)
        if t in needed:
            snapshots[t] = running.clone()
        if t in starts:
            lo = starts[t]
            estimate = (running - snapshots[lo]) / (t - lo)
            curve.append({"sweeps": t, "time": times[t - 1], "error": coclustering_error(estimate, ref_cc)})
            for key in [k for k in snapshots if k < lo]:
                del snapshots[key]
    return curve


def acp_curve(model: Any, x: torch.Tensor, ref_cc: torch.Tensor, guide: Any, sample_sizes: Sequence[int]
              ) -> list[dict]:
    """Error of ``pyro_acp.infer`` against the wall time of the whole call, for each ``num_samples``."""
    curve = []
    for s in sample_sizes:
        began = time.perf_counter()
        post = pyro_acp.infer(model, x, num_samples=s, guide=guide, seed=ACP_SEED, progress_bar=False,
                              estimate_log_prob=False)
        elapsed = time.perf_counter() - began
        curve.append({"samples": s, "time": elapsed, "error": coclustering_error(post.coclustering(), ref_cc),
                      "K_mean": float(post.num_clusters.double().mean()), "distinct": int(post.unique()[0].shape[0])})
    return curve


def nuts_curve(model: Any, x: torch.Tensor, ref_cc: torch.Tensor, sample_sizes: Sequence[int]) -> list[dict]:
    """Error of ``pyro_acp.mcmc.nuts`` (warmup = samples) against the wall time of the whole call."""
    curve = []
    for s in sample_sizes:
        began = time.perf_counter()
        post = pyro_acp.mcmc.nuts(model, x, num_samples=s, warmup_steps=s, seed=NUTS_SEED, progress_bar=False)
        elapsed = time.perf_counter() - began
        curve.append({"samples": s, "warmup": s, "time": elapsed,
                      "error": coclustering_error(post.coclustering(), ref_cc),
                      "K_mean": float(post.num_clusters.double().mean())})
    return curve


# ---------------------------------------------------------------------------------------------- time to accuracy
def time_to_error(curve: Sequence[dict], target: float) -> float | None:
    """The first time on ``curve`` at which the error is <= ``target`` (None: never within the run)."""
    for point in sorted(curve, key=lambda p: p["time"]):
        if point["error"] <= target:
            return point["time"]
    return None


def summarize(acp: Sequence[dict], gibbs: Sequence[dict], load_time: float) -> dict[str, Any]:
    """Gibbs' time to ACP's error at 100 samples and at its best, as ratios to ACP's time; ACP's time to
    Gibbs' final error. ``bound`` = "lower": Gibbs never got there (ratio >= value); ``gibbs_first_estimate``:
    Gibbs was already there after one sweep, its earliest estimate."""
    by_samples = {p["samples"]: p for p in acp}
    target = by_samples.get(TARGET_SAMPLES, min(acp, key=lambda p: abs(p["samples"] - TARGET_SAMPLES)))
    best = min(acp, key=lambda p: (p["error"], p["time"]))
    gibbs_end = gibbs[-1]["time"]
    out: dict[str, Any] = {"load_time": load_time}
    for name, point in (("target", target), ("best", best)):
        t_gibbs = time_to_error(gibbs, point["error"])
        reached = t_gibbs is not None
        t_gibbs = t_gibbs if reached else gibbs_end
        out[name] = {"acp_samples": point["samples"], "acp_error": point["error"], "acp_time": point["time"],
                     "gibbs_time": t_gibbs, "gibbs_reached": reached, "ratio": t_gibbs / point["time"],
                     "gibbs_first_estimate": reached and t_gibbs == gibbs[0]["time"],
                     "ratio_cold": t_gibbs / (point["time"] + load_time), "bound": None if reached else "lower"}
    final = gibbs[-1]["error"]
    out["gibbs_final"] = {"error": final, "time": gibbs_end, "acp_time": time_to_error(acp, final)}
    return out


# ---------------------------------------------------------------------------------------------- the benchmark
def run_benchmark(
    sizes: Sequence[int] = DEFAULT_SIZES,
    reference_sweeps: int | Sequence[int] | dict[int, int] | None = None,
    gibbs_sweeps: int | Sequence[int] | dict[int, int] | None = None,
    acp_samples: Sequence[int] = ACP_SAMPLES,
    nuts_samples: Sequence[int] = NUTS_SAMPLES,
    nuts_max_n: int = NUTS_MAX_N,
    reference_chains: int = 8,
    gibbs_chains: int = 4,
    split_merge: bool = False,
    threads: int | None = 1,
    log: Callable[[str], None] = print,
    data_seeds: Sequence[int] = (DATA_SEED,),
) -> dict[str, Any]:
    """Run every method at every N (on the data set of each of ``data_seeds``); returns a JSON-able dict
    (machine, settings, per-data-set curves and summary, keyed "N" for the data seed 0, else "N/seed S").

    ``threads``: torch threads for the whole run, the same for every method (restored afterwards); one
    thread keeps these small-op workloads from fighting other jobs for the two cores. None: leave as is.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(sizes, reference_sweeps, gibbs_sweeps, acp_samples, nuts_samples, nuts_max_n, reference_chains,
                    gibbs_chains, split_merge, log, data_seeds)
    finally:
        torch.set_num_threads(previous)


def _run(sizes: Sequence[int], reference_sweeps: Any, gibbs_sweeps: Any, acp_samples: Sequence[int],
         nuts_samples: Sequence[int], nuts_max_n: int, reference_chains: int, gibbs_chains: int, split_merge: bool,
         log: Callable[[str], None], data_seeds: Sequence[int]) -> dict[str, Any]:
    ref_sweeps = _per_size(reference_sweeps, sizes, REFERENCE_SWEEPS, "reference_sweeps")
    run_sweeps = _per_size(gibbs_sweeps, sizes, GIBBS_SWEEPS, "gibbs_sweeps")
    model = CRPGaussianMixture()
    began = time.perf_counter()
    guide = resolve_guide(model, train=False)
    load_time = time.perf_counter() - began
    # Untimed warm-ups (first-call costs of torch and of the kernels), so no method pays them in its curve.
    warm_x = model.simulate(1, num_points=20, seed=DATA_SEED + 1).unpadded(0)[0]
    pyro_acp.infer(model, warm_x, num_samples=4, guide=guide, seed=0, progress_bar=False)
    warm = CollapsedGibbs(model, num_chains=gibbs_chains, seed=0)
    warm.setup(0, warm_x)
    warm.sample(warm.initial_params)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {"model": model.config(), "data_seeds": list(data_seeds), "reference_chains": reference_chains,
                     "gibbs_chains": gibbs_chains, "split_merge_reference": split_merge,
                     "acp_samples": list(acp_samples), "nuts_samples": list(nuts_samples), "nuts_max_n": nuts_max_n,
                     "target_samples": TARGET_SAMPLES, "guide_trained_on_num_points": [2, 200],
                     "acp_times": "warm (guide preloaded, one untimed warm-up call); load time reported apart",
                     "acp_call": "infer(..., estimate_log_prob=False): samples in random frames, exact MAP",
                     "gibbs_estimate": "chains pooled over sweeps (t/2, t]; time from kernel setup to end of sweep t"},
        "guide_load_time": load_time,
        "sizes": {},
    }
    for n, data_seed in ((n, d) for n in sizes for d in data_seeds):
        x, truth = model.simulate(1, num_points=n, seed=data_seed).unpadded(0)
        entry: dict[str, Any] = {"num_points": n, "data_seed": data_seed, "true_K": int(truth.max()) + 1}
        log(f"N={n}: reference Gibbs, {reference_chains} chains x {ref_sweeps[n]} sweeps ...")
        ref_cc, entry["reference"] = reference(model, x, ref_sweeps[n], reference_chains, split_merge)
        log(f"N={n}: reference took {entry['reference']['wall_time']:.1f} s; Gibbs curve ({run_sweeps[n]} sweeps) ...")
        entry["gibbs"] = gibbs_curve(model, x, ref_cc, run_sweeps[n], gibbs_chains)
        log(f"N={n}: ACP ...")
        entry["acp"] = acp_curve(model, x, ref_cc, guide, acp_samples)
        if n <= nuts_max_n and nuts_samples:
            log(f"N={n}: NUTS ...")
            entry["nuts"] = nuts_curve(model, x, ref_cc, nuts_samples)
        else:
            entry["nuts"] = None
            entry["nuts_skipped"] = (f"N={n} > --nuts-max-n={nuts_max_n}: NUTS costs ~1 s per iteration at N=100 "
                                     "on this CPU and grows with N, beyond the time budget")
        entry["summary"] = summarize(entry["acp"], entry["gibbs"], load_time)
        result["sizes"][entry_key(n, data_seed)] = entry
    result["total_time"] = time.perf_counter() - began
    return result


# ---------------------------------------------------------------------------------------------- output
def entry_key(num_points: int, data_seed: int) -> str:
    """Key of one data set's results: "N" for the default data seed, "N/seed S" for the others."""
    return str(num_points) if data_seed == DATA_SEED else f"{num_points}/seed {data_seed}"


def table_rows(result: dict[str, Any], all_gibbs: bool = False) -> list[dict[str, Any]]:
    """Rows (N, method, setting, time, error); Gibbs rows thinned to sweeps ~2^k unless ``all_gibbs``."""
    rows = []
    for entry in result["sizes"].values():
        n = entry["num_points"]
        ref = entry["reference"]
        rows.append({"N": n, "method": "reference split-half", "setting": f"{ref['chains'] // 2} vs "
                     f"{ref['chains'] - ref['chains'] // 2} chains x {ref['sweeps']}", "time": ref["wall_time"],
                     "error": ref["split_half_error"]})
        gibbs = entry["gibbs"]
        keep = {p["sweeps"] for p in gibbs if all_gibbs or (p["sweeps"] & (p["sweeps"] - 1)) == 0}
        keep.add(gibbs[-1]["sweeps"])
        for p in gibbs:
            if p["sweeps"] in keep:
                rows.append({"N": n, "method": "gibbs", "setting": f"{p['sweeps']} sweeps",
                             "time": p["time"], "error": p["error"]})
        for p in entry["acp"]:
            rows.append({"N": n, "method": "acp", "setting": f"{p['samples']} samples", "time": p["time"],
                         "error": p["error"]})
        if entry["nuts"] is None:
            rows.append({"N": n, "method": "nuts", "setting": "skipped (time budget)", "time": None, "error": None})
        else:
            for p in entry["nuts"]:
                rows.append({"N": n, "method": "nuts", "setting": f"{p['samples']}+{p['warmup']} warmup",
                             "time": p["time"], "error": p["error"]})
    return rows


def format_table(result: dict[str, Any]) -> str:
    """The table and one summary line per N, as printed."""
    lines = [f"{'N':>5}  {'method':<21} {'setting':<26} {'time (s)':>9} {'cc error':>9}"]
    lines.append("-" * len(lines[0]))
    for row in table_rows(result):
        time_s = "-" if row["time"] is None else f"{row['time']:.3g}"
        error = "-" if row["error"] is None else f"{row['error']:.4f}"
        lines.append(f"{row['N']:>5}  {row['method']:<21} {row['setting']:<26} {time_s:>9} {error:>9}")
    lines.append(f"(ACP times warm; loading the shipped guide took {result['guide_load_time']:.2f} s once; "
                 f"the guide was trained on N < 200)")
    for key, entry in result["sizes"].items():
        s = entry["summary"]
        parts = []
        for name in ("target", "best"):
            p = s[name]
            gibbs = f"{p['gibbs_time']:.3g} s" if p["gibbs_reached"] else f"> {p['gibbs_time']:.3g} s (never)"
            if p.get("gibbs_first_estimate"):
                gibbs += " (its first estimate, after 1 sweep)"
            sign = ">= " if p["bound"] else ""
            parts.append(f"ACP-{p['acp_samples']} error {p['acp_error']:.4f} in {p['acp_time']:.3g} s, Gibbs {gibbs}"
                         f" -> {sign}{p['ratio']:.3g}x ({sign}{p['ratio_cold']:.3g}x cold)")
        final = s["gibbs_final"]
        acp_final = "never" if final["acp_time"] is None else f"{final['acp_time']:.3g} s"
        lines.append(f"N={key}: " + "; ".join(parts) + f"; Gibbs final error {final['error']:.4f} at "
                     f"{final['time']:.3g} s, ACP reaches it: {acp_final}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str | Path) -> None:
    """Error against log wall time, one panel per N (reference split-half error as a dotted floor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = list(result["sizes"].values())
    fig, axes = plt.subplots(1, len(entries), figsize=(4.6 * len(entries), 3.8), squeeze=False)
    for ax, entry in zip(axes[0], entries, strict=True):
        g = entry["gibbs"]
        ax.plot([p["time"] for p in g], [p["error"] for p in g], "-", color="tab:blue",
                label=f"Gibbs ({result['settings']['gibbs_chains']} chains)")
        a = entry["acp"]
        ax.plot([p["time"] for p in a], [p["error"] for p in a], "o-", color="tab:red", label="ACP (warm)")
        for p in a:
            ax.annotate(str(p["samples"]), (p["time"], p["error"]), textcoords="offset points", xytext=(3, 3),
                        fontsize=7, color="tab:red")
        if entry["nuts"]:
            nu = entry["nuts"]
            ax.plot([p["time"] for p in nu], [p["error"] for p in nu], "s--", color="tab:green", label="NUTS")
        ax.axhline(entry["reference"]["split_half_error"], color="gray", ls=":", label="reference split-half")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("wall time (s)")
        extrapolates = entry["num_points"] > max(result["settings"]["guide_trained_on_num_points"])
        seed = entry.get("data_seed", DATA_SEED)
        ax.set_title(f"N = {entry['num_points']}" + ("" if seed == DATA_SEED else f", data seed {seed}")
                     + (" (guide extrapolates)" if extrapolates else ""))
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("co-clustering error vs long Gibbs")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _clean(value: Any) -> Any:
    """JSON-able copy: NaN / inf floats become None."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of points N")
    parser.add_argument("--reference-sweeps", type=int, nargs="+", default=None,
                        help="sweeps per chain of the reference: one value or one per size")
    parser.add_argument("--gibbs-sweeps", type=int, nargs="+", default=None,
                        help="sweeps of the timed Gibbs run: one value or one per size")
    parser.add_argument("--reference-chains", type=int, default=8)
    parser.add_argument("--gibbs-chains", type=int, default=4)
    parser.add_argument("--split-merge", action="store_true", help="add split-merge moves to the reference")
    parser.add_argument("--acp-samples", type=int, nargs="+", default=None)
    parser.add_argument("--nuts-samples", type=int, nargs="*", default=None)
    parser.add_argument("--nuts-max-n", type=int, default=None)
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[DATA_SEED],
                        help="simulate one data set per seed at every N (default: seed 0 only)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (same for every method)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of a few seconds")
    parser.add_argument("--output", default=None, help=f"JSON path (default {DEFAULT_OUTPUT.relative_to(ROOT)}; "
                        "none with --quick)")
    parser.add_argument("--replot", default=None, metavar="JSON",
                        help="redraw table and figure (with --output, the JSON too) from a saved result; runs nothing")
    parser.add_argument("--figure", default=None, help=f"PNG path (default {DEFAULT_FIGURE.relative_to(ROOT)}; "
                        "none with --quick)")
    args = parser.parse_args(argv)
    if args.replot:
        result = json.loads(Path(args.replot).read_text())
        for entry in result["sizes"].values():  # summaries are recomputed from the stored curves
            entry["summary"] = summarize(entry["acp"], entry["gibbs"], result["guide_load_time"])
        print(format_table(result))
        plot(result, args.figure or DEFAULT_FIGURE)
        print(f"wrote {args.figure or DEFAULT_FIGURE}")
        if args.output:
            Path(args.output).write_text(json.dumps(_clean(result), indent=1))
            print(f"wrote {args.output}")
        return result
    preset = QUICK if args.quick else {"sizes": DEFAULT_SIZES, "reference_sweeps": None, "gibbs_sweeps": None,
                                       "acp_samples": ACP_SAMPLES, "nuts_samples": NUTS_SAMPLES,
                                       "nuts_max_n": NUTS_MAX_N}
    result = run_benchmark(
        sizes=args.sizes or preset["sizes"],
        reference_sweeps=args.reference_sweeps or preset["reference_sweeps"],
        gibbs_sweeps=args.gibbs_sweeps or preset["gibbs_sweeps"],
        acp_samples=args.acp_samples or preset["acp_samples"],
        nuts_samples=preset["nuts_samples"] if args.nuts_samples is None else args.nuts_samples,
        nuts_max_n=preset["nuts_max_n"] if args.nuts_max_n is None else args.nuts_max_n,
        reference_chains=args.reference_chains, gibbs_chains=args.gibbs_chains, split_merge=args.split_merge,
        threads=args.threads, data_seeds=args.data_seeds,
    )
    print(format_table(result))
    print(f"total {result['total_time']:.0f} s, {result['machine']['torch_threads']} torch thread(s), "
          f"{result['machine']['cpu_count']} CPUs (shared with other jobs: timings are noisy)")
    output = args.output or (None if args.quick else DEFAULT_OUTPUT)
    figure = args.figure or (None if args.quick else DEFAULT_FIGURE)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(_clean({**result, "table": table_rows(result, all_gibbs=True)}),
                                           indent=1))
        print(f"wrote {output}")
    if figure:
        plot(result, figure)
        print(f"wrote {figure}")
    return result


if __name__ == "__main__":
    main()
