"""Train the NOC guide shipped for OrderedGaussianCatalog() (or ProceduralCatalog()), resumably.

The ordered Gaussian guide is a :class:`~pyro_acp.guides.noc.NOCS` whose clustering part is the shipped ACP-S
of ``crp_gaussian_mixture_2d.pt`` (the same CRP(0.7) Gaussian clusters, sigma 1, means N(0, 10^2 I); trained
for 9,000 steps on a GPU), kept frozen, while the cardinality head and the pointer network are trained with
``pyro_acp.train`` on simulated ordered catalogs. Frozen, the clustering bound contributes no gradient, so one
particle suffices, and the heads' parameters are disjoint (each gets the gradient of its own term only), so
with Adam the loss weights lambda_o and lambda_k do not change the heads' updates. The procedural guide is a
NOC trained from scratch with the procedural weights (15, 0.1), at hidden width 64 (half the ordered guide's) so
that its 7,000 steps of 16 catalogs with 8 particles fit about an hour of one CPU core (0.3-0.6 s a step):

    OMP_NUM_THREADS=1 nohup nice -n 19 python benchmarks/train_noc.py --model procedural --output /tmp/h17/proc.pt &

Checkpoints (weights, optimiser and RNG state) are written every ``--checkpoint-every`` steps; ``--resume``
continues bit for bit. On this shared 2-core machine run it in the background at the lowest priority:

    OMP_NUM_THREADS=1 nohup nice -n 19 python benchmarks/train_noc.py --output /tmp/h17/noc.pt > /tmp/h17/train.log &

and ship after it finished with ``--ship EVALUATION_JSON`` (weights only, card with the training record, the
figures measured by ``benchmarks/bench_ordered_baselines.py --json`` (``bench_procedural_baselines.py`` for the
procedural guide) and ``--statements``, in ``pyro_acp/pretrained/``), e.g.

    python benchmarks/train_noc.py --model procedural --output /tmp/h17/proc.pt --ship table.json \
        --statements statements.json --size-cap predicted
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import pyro_acp
from pyro_acp.guides.noc import NOC, NOCS
from pyro_acp.models import OrderedGaussianCatalog, ProceduralCatalog
from pyro_acp.pretrained.checkpoint import load_guide, save_checkpoint

PRETRAINED = Path(pyro_acp.__file__).parent / "pretrained"
SOURCE = PRETRAINED / "crp_gaussian_mixture_2d.pt"
SETTINGS = {
    "ordered": {"steps": 2000, "batch_size": 16, "num_particles": 1, "lr": 1e-3, "num_points": (2, 100),
                "name": "ordered_gaussian_catalog_2d"},
    # the shipped ordered NOC fine-tuned end to end: the clustering learns from the catalogs themselves (their
    # over-cap splits included), so its bound has a gradient and needs particles
    "joint": {"steps": 2000, "batch_size": 16, "num_particles": 8, "lr": 1e-4, "num_points": (2, 100),
              "name": "ordered_gaussian_catalog_2d"},
    "procedural": {"steps": 7000, "batch_size": 16, "num_particles": 8, "lr": 1e-3, "num_points": (35, 51),
                   "name": "procedural_catalog"},
}
#: the script that measures a shipped guide's figures (its --json output is what --ship takes)
EVALUATION = {"ordered": "benchmarks/bench_ordered_baselines.py", "joint": "benchmarks/bench_ordered_baselines.py",
              "procedural": "benchmarks/bench_procedural_baselines.py"}
#: the procedural NOC's width: half the ordered guide's 128, so that 7,000 steps fit about an hour of one CPU core
PROCEDURAL_HIDDEN = 64


def build(kind: str, resume: bool, init: Path | None = None) -> tuple[object, torch.nn.Module]:
    """(model, guide) of a run: the ordered guide warm-started from the shipped ACP-S unless resuming; the
    joint run starts from an ordered NOC (``init``: a run of ``--model ordered``; default the shipped guide)
    with every parameter trained (its clustering too)."""
    if kind == "joint":
        return OrderedGaussianCatalog(), load_guide(init or PRETRAINED / f"{SETTINGS['ordered']['name']}.pt")[0]
    if kind == "ordered":
        model = OrderedGaussianCatalog()
        source = load_guide(SOURCE)[0]
        options = {k: v for k, v in source.config.items() if k not in ("type", "data_dim")}
        guide = NOCS(model.data_dim, **options, max_cluster_size=model.max_cluster_size)
        if not resume:
            guide.load_clustering(source)
        for name, parameter in guide.named_parameters():  # the clustering stays the shipped ACP-S's
            parameter.requires_grad_(name.startswith(guide.HEAD_PREFIXES))
        return model, guide
    model = ProceduralCatalog()
    max_size = model.rules.section_size[1]
    return model, NOC(model.data_dim, hidden_dim=PROCEDURAL_HIDDEN, ordering_weight=15.0, cardinality_weight=0.1,
                      max_cluster_size=max_size)


def ship(kind: str, checkpoint: Path, evaluation: Path, size_cap: str, statements: dict[str, str]) -> Path:
    """Weights only (no optimiser state) and the run's card, with the measured figures of ``evaluation`` (the
    JSON of benchmarks/bench_ordered_baselines.py) and the card's statements, into pyro_acp/pretrained/."""
    guide, card = load_guide(checkpoint)
    guide.size_cap = guide.config["size_cap"] = size_cap
    card = {k: v for k, v in card.items() if k not in ("format_version", "guide")}
    card["evaluation"] = {**json.loads(evaluation.read_text()),
                          "command": f"python {EVALUATION[kind]} --json <file>"}
    card["statements"] = statements
    if kind == "ordered":
        card["training"]["clustering"] = f"the ACP-S of {SOURCE.name}, frozen; heads trained here"
    elif kind == "joint":
        card["training"]["clustering"] = (f"the shipped {SETTINGS['ordered']['name']} (the ACP-S of {SOURCE.name} "
                                          "frozen, heads trained), then every parameter fine-tuned here")
    else:
        card["training"]["note"] = (f"NOC trained from scratch, hidden_dim {PROCEDURAL_HIDDEN} (half the ordered "
                                    "guide's 128, to fit a CPU run), 1 torch thread on the shared 2-core CPU, nice 19")
    card["reproduce"] = f"python benchmarks/train_noc.py --model {kind} --output {checkpoint.name}"
    if kind == "joint":
        card["reproduce"] = ("python benchmarks/train_noc.py --model ordered --output noc_ordered.pt (the frozen-"
                             "clustering guide), then python benchmarks/train_noc.py --model joint --init "
                             "noc_ordered.pt --output joint.pt (2,000 steps), then the same with --steps 5000 "
                             "--resume")
    return save_checkpoint(PRETRAINED / f"{SETTINGS[kind]['name']}.pt", guide, card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(SETTINGS), default="ordered")
    parser.add_argument("--output", type=Path, required=True, help="checkpoint .pt (card beside it)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the model's setting)")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--init", type=Path, default=None,
                        help="joint: the ordered NOC to start from (default: the shipped one)")
    parser.add_argument("--ship", type=Path, default=None, metavar="EVALUATION_JSON",
                        help="copy the finished checkpoint into pretrained/ with these measured figures")
    parser.add_argument("--size-cap", choices=("predicted", "model"), default="predicted")
    parser.add_argument("--statements", type=Path, default=None, help="JSON of the card's statements")
    args = parser.parse_args()
    if args.ship is not None:
        statements = {} if args.statements is None else json.loads(args.statements.read_text())
        print("shipped", ship(args.model, args.output, args.ship, args.size_cap, statements))
        return
    settings = dict(SETTINGS[args.model])
    settings.pop("name")
    for option in ("steps", "lr"):
        if getattr(args, option) is not None:
            settings[option] = getattr(args, option)
    torch.set_num_threads(1)  # small tensors on a shared machine: one thread each (benchmarks/bench_training.py)
    model, guide = build(args.model, args.resume, args.init)
    began = time.perf_counter()
    history = pyro_acp.train(model, guide, seed=0, checkpoint=args.output, checkpoint_every=args.checkpoint_every,
                             resume=args.resume, reinitialize=False, validate_every=250, validation_size=32,
                             progress_bar=False, callback=_report, **settings)
    print(f"done in {time.perf_counter() - began:.0f} s; validation bound {history.validation_elbo[-1:]}", flush=True)


def _report(step: int, history) -> None:
    if step % 25 == 0:
        print(f"step {step} loss {history.loss[-1]:.2f} {time.strftime('%H:%M:%S')}", flush=True)


if __name__ == "__main__":
    main()
