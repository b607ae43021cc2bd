"""Train the graph guides of issue 16 (item 3 and CLUSTER) and write their model-card figures.

One guide per call, each a GatedGCN (4 layers, width 128) over 20 Laplacian eigenvectors, with ACP-S
(``--arch acp`` for ACP), trained by ``pyro_acp.train`` on the model's own simulations:

- ``sbm``: ``SBM()`` at its defaults (the paper's general SBM: CRP(0.7), Beta(6, 3) within, Beta(1, 5)
  between), N in [50, 300). Evaluation: mean AMI of the MAP on the held-out graphs of
  ``benchmarks/bench_graph_baselines.py`` (seeds 9,000,000 + i), and the time per graph.
- ``logdegree``: ``LogDegreeSBM(num_blocks=(2, 3, 4), a=(1, 30), b=(1, 10))``, N in [300, 600) (the paper's
  range). Evaluation: mean AMI over a grid of (a, b) for K = 2, N = 300 and K = 4, N = 600, with the
  exact-recovery threshold |sqrt(a) - sqrt(b)| = sqrt(K) drawn on the figure (``logdegree_grid.png``).
- ``cluster``: ``PlantedPartition()`` (the CLUSTER recipe), semi-supervised (``label_slots=6``: trained with
  the clusters labelled by their anchors). Evaluation: class-balanced accuracy (mean per-community recall)
  with one random labelled node per community and no further clusters, as Dwivedi et al.
- ``cluster-unsupervised``: the same model without labels. Evaluation: mean AMI of the MAP.

Training fits a wall-clock budget (``--train-minutes``, default 7, then the evaluation; one call stays under
9 minutes on a GPU): the script times a few probe steps, plans ``steps`` (and so the learning-rate schedule)
for what fits, and ``pyro_acp.train`` stops at the budget at the latest. The checkpoint (``.pt`` + JSON card
under ``--out``) is written every ``--checkpoint-every`` steps; a later call with ``--resume`` continues the
planned schedule from it (``--steps`` raises the plan) for another budget. Evaluation figures go into the
card's ``"evaluation"`` and a JSON file beside it; evaluation samples skip the guide's log-probability
estimates (the MAP is ranked by the exact log joint), so its times are those of ``estimate_log_prob=False``.
Training batches come from ``pyro_acp.train``'s seed
stream (seed ``--seed``), never from the evaluation seeds (``EVAL_SEED`` + i, as in the baseline table).

    python benchmarks/train_graph_guides.py --guide sbm --device cuda               # train 7 min + evaluate
    python benchmarks/train_graph_guides.py --guide sbm --device cuda --resume      # 7 more minutes
    python benchmarks/train_graph_guides.py --guide sbm --evaluate-only --device cuda
    python benchmarks/train_graph_guides.py --guide logdegree --dry-run --out /tmp/x  # seconds, on CPU

``--width``, ``--layers`` and ``--encoder`` change the architecture, ``--num-points`` the training range (a
curriculum: train on small graphs first, then ``--init-from`` that checkpoint on the full range, in another
``--out``). On a CPU the script first calls ``pyro_acp.nn.graph.keep_freed_memory`` (several times faster
GatedGCN steps, same results). A resumed call must repeat the options of the first (they shape the guide).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

import pyro_acp
from pyro_acp.guides import ACP, ACPS
from pyro_acp.models import SBM, LogDegreeSBM, PlantedPartition
from pyro_acp.nn.graph import keep_freed_memory
from pyro_acp.posteriors.graph import balanced_accuracy
from pyro_acp.pretrained.checkpoint import config_path, load_guide, read_payload, save_checkpoint
from pyro_acp.protocols import can_ascend_to_mode

ROOT = Path(__file__).resolve().parent.parent
EVAL_SEED = 9_000_000  # the held-out graphs of bench_graph_baselines.py; training never draws these


@dataclass(frozen=True)
class Setting:
    """What one guide is trained on, its architecture, and how it is evaluated."""

    model: object
    num_points: tuple[int, int] | None  # None: the model's recipe (PlantedPartition draws N itself)
    evaluation: str  # "ami", "grid" or "balanced_accuracy"
    guide: dict = field(default_factory=lambda: {"hidden_dim": 128, "encoder_layers": 4})
    eval_graphs: int = 20
    eval_samples: int = 100
    grid: tuple = ((2, 300), (4, 600))  # (K, N) of the log-degree grid
    grid_shape: tuple[int, int] = (6, 5)  # points along a in [1, 30] and b in [1, 10]
    grid_graphs: int = 2  # graphs per grid cell (the paper: 40 for K = 2, 10 for K = 4)


SETTINGS = {
    "sbm": Setting(SBM(), (50, 300), "ami"),
    "logdegree": Setting(LogDegreeSBM(num_blocks=(2, 3, 4), a=(1, 30), b=(1, 10)), (300, 600), "grid",
                         eval_samples=20),
    "cluster": Setting(PlantedPartition(), None, "balanced_accuracy",
                       guide={"hidden_dim": 128, "encoder_layers": 4, "label_slots": 6}),
    "cluster-unsupervised": Setting(PlantedPartition(), None, "ami"),
}

DRY_RUN = {"guide_width": 8, "layers": 1, "steps": 2, "batch_size": 2, "particles": 2, "eval_graphs": 2,
           "eval_samples": 3, "sbm_points": (10, 20), "logdegree_points": (160, 170), "grid": ((2, 160),),
           "grid_shape": (2, 2), "grid_graphs": 1}


def dry_run(setting: Setting) -> Setting:
    """A tiny version of ``setting`` that runs in seconds on a CPU (the script's test)."""
    guide = {**setting.guide, "hidden_dim": DRY_RUN["guide_width"], "encoder_layers": DRY_RUN["layers"]}
    points = setting.num_points
    if isinstance(setting.model, SBM):
        points = DRY_RUN["sbm_points"]
    elif isinstance(setting.model, LogDegreeSBM):
        points = DRY_RUN["logdegree_points"]
    return replace(setting, guide=guide, num_points=points, eval_graphs=DRY_RUN["eval_graphs"],
                   eval_samples=DRY_RUN["eval_samples"], grid=DRY_RUN["grid"], grid_shape=DRY_RUN["grid_shape"],
                   grid_graphs=DRY_RUN["grid_graphs"])


def build_guide(setting: Setting, arch: str, seed: int, encoder: str = "gatedgcn"):
    with pyro_acp.seeding.forked_rng(seed):
        return (ACP if arch == "acp" else ACPS)(setting.model.data_dim, encoder=encoder, **setting.guide)


def customised(setting: Setting, args: argparse.Namespace) -> Setting:
    """``setting`` with the command line's architecture, training sizes and evaluation size, where given."""
    guide = dict(setting.guide)
    if args.width is not None:
        guide["hidden_dim"] = args.width
    if args.layers is not None:
        guide["encoder_layers"] = args.layers
    changes: dict = {"guide": guide}
    if args.num_points is not None:
        low, high = args.num_points
        if not 2 <= low < high:
            raise SystemExit(f"--num-points needs 2 <= LOW < HIGH, got {low} {high}")
        changes["num_points"] = (low, high)
    if args.eval_graphs is not None:
        changes["eval_graphs"] = args.eval_graphs
    return replace(setting, **changes)


def seconds_per_step(setting: Setting, arch: str, options: dict, encoder: str = "gatedgcn", probes: int = 3
                     ) -> float:
    """Median wall time of a fresh guide's training steps after the first (warm-up) one."""
    guide = build_guide(setting, arch, seed=1, encoder=encoder)
    stamps: list[float] = []
    pyro_acp.train(setting.model, guide, steps=probes + 1, seed=1, progress_bar=False, validate_every=0,
                   callback=lambda step, history: stamps.append(time.perf_counter()), **options)
    return float(np.median(np.diff(stamps)))


def train(setting: Setting, args: argparse.Namespace, path: Path) -> dict:
    """Train (or resume) within the budget; returns the facts recorded in the card."""
    options = {"batch_size": args.batch_size, "num_particles": args.particles, "lr": args.lr,
               "num_points": setting.num_points, "device": args.device}
    guide = build_guide(setting, args.arch, args.seed, args.encoder)
    if args.init_from is not None and not args.resume:  # e.g. the fine-tune of a curriculum's earlier stage
        load_guide(args.init_from, guide)  # architecture checked; trained_for set, so train keeps the weights
    previous_minutes = 0.0
    if args.resume:
        card = json.loads(config_path(path).read_text())
        training = card["training"]
        planned = max(args.steps or 0, int(training.get("planned_steps", training["steps"])))
        previous_minutes = float(read_payload(path)["training"]["wall_time"]) / 60
        if training["completed_steps"] >= planned:
            print(f"{path} has finished its {planned} planned steps; pass --steps to plan more")
            return {"planned_steps": planned}
        steps = planned
    elif args.steps is not None:
        steps = args.steps
    else:
        per_step = seconds_per_step(setting, args.arch, options, args.encoder)
        steps = max(1, int(args.train_minutes * 60 / per_step))
        print(f"{per_step:.2f} s a step: planning {steps} steps for {args.train_minutes} min", flush=True)
    began = time.perf_counter()
    history = pyro_acp.train(
        setting.model, guide, steps=steps, seed=args.seed, checkpoint=path, resume=args.resume,
        checkpoint_every=args.checkpoint_every, max_minutes=previous_minutes + args.train_minutes,
        validate_every=args.validate_every, progress_bar=not args.dry_run,
        record={"command": "python benchmarks/train_graph_guides.py " + shlex.join(sys.argv[1:])}, **options)
    return {"planned_steps": steps, "steps_done": history.steps[-1] + 1 if history.steps else None,
            "this_call_seconds": round(time.perf_counter() - began, 1), "stopped": history.stopped,
            "last_validation_elbo": history.validation_elbo[-1] if history.validation_elbo else None}


def held_out(model, num_points, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    batch = model.simulate(1, num_points=num_points, seed=seed)
    n = int(batch.num_points[0])
    return batch.adjacency[0, :n, :n], batch.labels[0, :n].numpy()


def _infer(model, guide, adjacency, samples: int, seed: int, device: str, **kwargs):
    """The MAP is ranked by the exact log joint, so the guide's log-probability estimates are skipped."""
    return pyro_acp.infer(model, adjacency, guide=guide, num_samples=samples, seed=seed, progress_bar=False,
                          device=device, estimate_log_prob=False, **kwargs)


TABLE_GRAPHS = 6  # the held-out graphs of the baseline table in docs/graphs.md (seeds EVAL_SEED + 0..5)
TIMING_SEED = EVAL_SEED - 2  # the 300-node graph the time per graph at N = 300 is measured on


def evaluate_ami(setting: Setting, guide, device: str) -> dict:
    """Mean AMI of the MAP on ``eval_graphs`` held-out graphs (and on the baseline table's first six), and
    the time per graph: on those graphs and, when the setting's range reaches it, the median of three calls
    on one graph of N = 300 after a warm-up call. Where the model allows greedy ascent
    (``protocols.can_ascend_to_mode``), the same for ``post.refined_map()``, its time including infer's."""
    from sklearn.metrics import adjusted_mutual_info_score

    refine = can_ascend_to_mode(setting.model)
    timing = {}
    if setting.num_points is not None and setting.num_points[1] >= 300:
        adjacency = setting.model.simulate(1, num_points=300, seed=TIMING_SEED).adjacency[0]
        calls, ascents = [], []
        for call in range(4):
            began = time.perf_counter()
            post = _infer(setting.model, guide, adjacency, setting.eval_samples, call, device)
            calls.append(time.perf_counter() - began)
            if refine:
                post.refined_map()
                ascents.append(time.perf_counter() - began)
        timing["seconds_at_n300"] = round(float(np.median(calls[1:])), 3)
        if refine:
            timing["seconds_at_n300_with_refined_map"] = round(float(np.median(ascents[1:])), 3)
    amis, times, refined, refined_times = [], [], [], []
    for i in range(setting.eval_graphs):
        adjacency, truth = held_out(setting.model, setting.num_points, EVAL_SEED + i)
        began = time.perf_counter()
        post = _infer(setting.model, guide, adjacency, setting.eval_samples, i, device)
        times.append(time.perf_counter() - began)
        amis.append(adjusted_mutual_info_score(truth, post.map.numpy()))
        if refine:
            refined.append(adjusted_mutual_info_score(truth, post.refined_map().numpy()))
            refined_times.append(time.perf_counter() - began)
    result = {"mean_ami_of_map": round(float(np.mean(amis)), 4), "sd_ami": round(float(np.std(amis)), 4),
              "seconds_per_graph": round(float(np.mean(times)), 3), "graphs": setting.eval_graphs,
              "samples": setting.eval_samples, "seeds": f"{EVAL_SEED}..{EVAL_SEED + setting.eval_graphs - 1}",
              f"mean_ami_of_map_first_{TABLE_GRAPHS}": round(float(np.mean(amis[:TABLE_GRAPHS])), 4),
              "ami_per_graph": [round(float(a), 4) for a in amis], **timing}
    if refine:  # the MAP climbed to a local mode of the exact posterior (post.refined_map)
        result.update(mean_ami_of_refined_map=round(float(np.mean(refined)), 4),
                      sd_ami_refined=round(float(np.std(refined)), 4),
                      seconds_per_graph_with_refined_map=round(float(np.mean(refined_times)), 3),
                      **{f"mean_ami_of_refined_map_first_{TABLE_GRAPHS}":
                         round(float(np.mean(refined[:TABLE_GRAPHS])), 4)},
                      refined_ami_per_graph=[round(float(a), 4) for a in refined])
    return result


def ship(path: Path, dest: Path, note: str | None = None) -> Path:
    """Copy the evaluated checkpoint ``path`` to ``dest`` as a pretrained guide: weights only (no optimiser
    state), its card with model, training (``steps`` = the steps done, so the registry serves it as complete;
    ``planned_steps`` beside it when the run planned more), validation bound and evaluation."""
    guide, card = load_guide(path)
    if "evaluation" not in card:
        raise SystemExit(f"--ship: {path} has no evaluation in its card (evaluate it first)")
    training = dict(card["training"])
    done = int(training["completed_steps"])
    if done < int(training["steps"]):
        training.update(planned_steps=int(training.get("planned_steps", training["steps"])), steps=done,
                        stopped=training.get("stopped") or "snapshot of a run still training")
    metadata = {"model": card["model"], "training": training, "validation_elbo": card.get("validation_elbo"),
                "evaluation": card["evaluation"]}
    if note:
        metadata["note"] = note
    return save_checkpoint(dest, guide, metadata)


def one_label_per_community(truth: np.ndarray, seed: int) -> dict[int, int]:
    """{node: community}: one node of every community of ``truth``, drawn uniformly with ``seed`` (the
    CLUSTER evaluation's labelled nodes)."""
    rng = np.random.default_rng(seed)
    return {int(rng.choice(np.flatnonzero(truth == c))): int(c) for c in np.unique(truth)}


def evaluate_balanced_accuracy(setting: Setting, guide, device: str) -> dict:
    """One labelled node per community (drawn with the graph's seed), exactly one cluster per label: the
    class-balanced accuracy of the MAP and, where the model allows the ascent, of ``post.refined_map()``
    (the labelled nodes kept where they are), with the time per graph of each."""
    refine = can_ascend_to_mode(setting.model)
    scores, refined, times, refined_times = [], [], [], []
    for i in range(setting.eval_graphs):
        adjacency, truth = held_out(setting.model, setting.num_points, EVAL_SEED + i)
        labelled = one_label_per_community(truth, EVAL_SEED + i)
        began = time.perf_counter()
        post = _infer(setting.model, guide, adjacency, setting.eval_samples, i, device, labelled=labelled,
                      new_clusters=False)
        times.append(time.perf_counter() - began)
        scores.append(balanced_accuracy(post, truth.tolist()))
        if refine:
            refined.append(balanced_accuracy(post, truth.tolist(), post.refined_map()))
            refined_times.append(time.perf_counter() - began)
    result = {"balanced_accuracy": round(float(np.mean(scores)), 4), "sd": round(float(np.std(scores)), 4),
              "seconds_per_graph": round(float(np.mean(times)), 3), "graphs": setting.eval_graphs,
              "samples": setting.eval_samples, "labelled": "one random node per community; new_clusters=False"}
    if refine:
        result.update(balanced_accuracy_of_refined_map=round(float(np.mean(refined)), 4),
                      sd_refined=round(float(np.std(refined)), 4),
                      seconds_per_graph_with_refined_map=round(float(np.mean(refined_times)), 3))
    return result


def evaluate_grid(setting: Setting, guide, device: str, out: Path) -> dict:
    """Mean AMI of the MAP on ``grid_graphs`` graphs per (a, b) cell, for each (K, N) of ``grid``."""
    from sklearn.metrics import adjusted_mutual_info_score

    a_values = np.linspace(1, 30, setting.grid_shape[0])
    b_values = np.linspace(1, 10, setting.grid_shape[1])
    result = {"a": a_values.round(3).tolist(), "b": b_values.round(3).tolist(), "graphs_per_cell": setting.grid_graphs}
    for k, n in setting.grid:
        table = np.zeros((len(a_values), len(b_values)))
        for ia, a in enumerate(a_values):
            for ib, b in enumerate(b_values):
                model = LogDegreeSBM(num_blocks=k, a=float(a), b=float(b))
                scores = []
                for g in range(setting.grid_graphs):
                    seed = EVAL_SEED + 1000 * ia + 100 * ib + g
                    adjacency, truth = held_out(model, n, seed)
                    post = _infer(setting.model, guide, adjacency, setting.eval_samples, seed, device)
                    scores.append(adjusted_mutual_info_score(truth, post.map.numpy()))
                table[ia, ib] = np.mean(scores)
        result[f"K={k},N={n}"] = table.round(4).tolist()
    plot_grid(result, setting.grid, out)
    return result


def plot_grid(result: dict, grid, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grid), figsize=(5 * len(grid), 4), squeeze=False)
    a, b = np.array(result["a"]), np.array(result["b"])
    for ax, (k, n) in zip(axes[0], grid, strict=True):
        da, db = (a[1] - a[0]) / 2, (b[1] - b[0]) / 2  # cells centred on the grid's (a, b) values
        extent = (a[0] - da, a[-1] + da, b[0] - db, b[-1] + db)
        image = ax.imshow(np.array(result[f"K={k},N={n}"]).T, origin="lower", vmin=0, vmax=1, aspect="auto",
                          extent=extent, cmap="viridis")
        line = np.linspace(max(extent[0], 0.0), extent[1], 400)
        below = (np.sqrt(line) - math.sqrt(k)) ** 2  # b < a: sqrt a - sqrt b = sqrt K
        ax.plot(np.where(np.sqrt(line) > math.sqrt(k), line, np.nan), below, "w--",
                label="|sqrt a - sqrt b| = sqrt K")
        ax.plot(line, (np.sqrt(line) + math.sqrt(k)) ** 2, "w--")  # b > a: sqrt b - sqrt a = sqrt K
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set(xlabel="a", ylabel="b", title=f"mean AMI of the MAP, K = {k}, N = {n}")
        ax.legend(loc="upper left", fontsize=8)
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(setting: Setting, path: Path, device: str) -> dict:
    guide = load_guide(path, map_location=device)[0].eval()
    began = time.perf_counter()
    if setting.evaluation == "grid":
        result = evaluate_grid(setting, guide, device, path.with_name(path.stem + "_grid.png"))
    elif setting.evaluation == "balanced_accuracy":
        result = evaluate_balanced_accuracy(setting, guide, device)
    else:
        result = evaluate_ami(setting, guide, device)
    result["seconds"] = round(time.perf_counter() - began, 1)
    result["device"] = device
    card_file = config_path(path)
    card = json.loads(card_file.read_text())
    card["evaluation"] = result
    card_file.write_text(json.dumps(card, indent=2))
    path.with_name(path.stem + "_evaluation.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guide", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--arch", choices=("acps", "acp"), default="acps")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "graph_guides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-minutes", type=float, default=7.0, help="training budget of this call")
    parser.add_argument("--steps", type=int, default=None, help="planned steps (default: what fits the budget)")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint's planned schedule")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes: the script's own test (seconds)")
    parser.add_argument("--encoder", choices=("gatedgcn", "graphsage"), default="gatedgcn")
    parser.add_argument("--width", type=int, default=None, help="encoder and guide width (default 128)")
    parser.add_argument("--layers", type=int, default=None, help="encoder layers (default 4)")
    parser.add_argument("--num-points", type=int, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="train (and evaluate) on N in [LOW, HIGH) instead of the setting's range")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start from this checkpoint's weights (same architecture), e.g. a curriculum stage")
    parser.add_argument("--eval-graphs", type=int, default=None, help="held-out graphs to evaluate on")
    parser.add_argument("--skip-eval", action="store_true", help="train only")
    parser.add_argument("--ship", type=Path, default=None,
                        help="after the evaluation, write the guide (weights only, with its card) to this path")
    parser.add_argument("--note", default=None, help="with --ship: a note for the card")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        keep_freed_memory()  # the encoder's (E, H) edge tensors reuse heap memory (pyro_acp.nn.graph)
    setting = SETTINGS[args.guide]
    if args.dry_run:
        setting = dry_run(setting)
        args.steps = args.steps or DRY_RUN["steps"]
        args.batch_size, args.particles = DRY_RUN["batch_size"], DRY_RUN["particles"]
        args.validate_every, args.checkpoint_every = 0, 1
    setting = customised(setting, args)  # explicit options win over the dry run's sizes
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.guide}_{args.arch}_{args.encoder}.pt"
    if args.resume and not path.exists():
        parser.error(f"--resume: {path} does not exist")
    if not args.resume and not args.evaluate_only and path.exists():
        parser.error(f"{path} exists: pass --resume to continue it, or remove it to start again")
    report = {"guide": args.guide, "path": str(path)}
    if not args.evaluate_only:
        report["training"] = train(setting, args, path)
    if not args.skip_eval:
        report["evaluation"] = evaluate(setting, path, args.device)
    if args.ship is not None:
        if args.skip_eval:
            parser.error("--ship needs the evaluation (drop --skip-eval)")
        report["shipped"] = str(ship(path, args.ship, args.note))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
