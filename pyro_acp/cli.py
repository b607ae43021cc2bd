"""The ``pyro-acp`` command: ``demo`` (the main job), ``train`` and ``infer``.

Errors are reported as one line on stderr (exit status 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from pyro_acp.cli_checks import (
    INFER_OUTPUTS,
    CommandError,
    check_counts,
    check_device_option,
    check_input_file,
    check_minutes_option,
    check_output_file,
    check_output_folder,
    check_train_numbers,
    check_train_output,
    read_points,
)
from pyro_acp.cli_models import DEFAULT_MODEL, build_model, folder_width, infer_model, program_model

GUIDE_NAMES = ("ACP", "ACPS", "CCP")
#: pyro_acp.models.base.SIZE_LAWS, named here so that --help needs no torch
SIZE_LAWS = ("uniform", "log-uniform", "mixed")


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    width = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(width[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(width[k]) for k in keys) for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------- commands


#: sweeps of the demo's Gibbs chains started at the guide's samples (one chain per sample)
DEMO_STARTED_SWEEPS = 10


def cmd_demo(args) -> None:
    import pyro_acp
    from pyro_acp.diagnostics.metrics import coclustering_error
    from pyro_acp.models import CRPGaussianMixture

    check_counts(args, {"--num-points": 2, "--num-samples": 1, "--gibbs-samples": 0})
    out = check_output_file(args.output)
    model = CRPGaussianMixture()
    batch = model.simulate(1, num_points=args.num_points, seed=args.seed)
    x, truth = batch.unpadded(0)
    print(f"simulated {x.shape[0]} 2-D points in {int(truth.max()) + 1} clusters "
          f"(CRPGaussianMixture, seed {args.seed})")
    pyro_acp.infer(model, x, num_samples=2, seed=0, train=False)  # load and warm up the shipped guide
    post = pyro_acp.infer(model, x, num_samples=args.num_samples, seed=args.seed, train=False)
    rows = [_summary_row("ACP (shipped guide)", post, truth, None)]
    if args.gibbs_samples > 0:
        began = time.perf_counter()  # chains started at the guide's samples: the amortized start of a short MCMC run
        started = pyro_acp.mcmc.gibbs(model, x, init=post, warmup_steps=DEMO_STARTED_SWEEPS - 1, num_samples=1,
                                      seed=args.seed, progress_bar=False)
        started_time = post.wall_time + time.perf_counter() - began
        began = time.perf_counter()
        gibbs = pyro_acp.mcmc.gibbs(model, x, num_samples=args.gibbs_samples, warmup_steps=args.gibbs_samples // 2,
                                    num_chains=2, seed=args.seed, progress_bar=False)
        gibbs_time = time.perf_counter() - began
        rows.append(_summary_row(f"ACP + {DEMO_STARTED_SWEEPS} Gibbs sweeps", started, truth, started_time))
        rows.append(_summary_row("collapsed Gibbs", gibbs, truth, gibbs_time))
        reference = gibbs.coclustering()
        for row, posterior in zip(rows, (post, started), strict=False):
            row["coclustering error vs Gibbs"] = f"{coclustering_error(posterior.coclustering(), reference):.4f}"
        rows[-1]["coclustering error vs Gibbs"] = "0"
    print(_table(rows))
    post.plot(path=out)
    print(f"figure written to {out}")


def _summary_row(name, post, truth, wall_time) -> dict:
    from pyro_acp.diagnostics.metrics import adjusted_mutual_info

    k = post.num_clusters.float()
    return {
        "method": name,
        "AMI(MAP, truth)": f"{adjusted_mutual_info(truth, post.map):.3f}",
        "K true": int(truth.max()) + 1,
        "K (post. mean)": f"{k.mean():.2f}",
        "time (s)": f"{post.wall_time if wall_time is None else wall_time:.2f}",
    }


def initial_guide(model, init: str):
    """The guide of checkpoint ``init``, to fine-tune: it must suit ``model``; its file is never written
    (:func:`check_train_output` has made sure ``--output`` is another file)."""
    from pyro_acp.pretrained.checkpoint import load_guide
    from pyro_acp.pretrained.registry import check_guide_matches

    guide, card = load_guide(init)
    check_guide_matches(model, guide, card)
    return guide


#: the train subparser's architecture defaults, applied when a new run does not give them
TRAIN_GUIDE_DEFAULTS = {"--guide": "ACPS", "--hidden-dim": 128}


def resumed_guide(model, output: str, given: dict[str, object]):
    """A new guide of the architecture the card of checkpoint ``output`` records (its weights are loaded by
    ``train(resume=True)``), after checking that the card's model is ``model`` and that the architecture
    options the user gave (``given``: flag -> value, None when not given) agree with the card."""
    from pyro_acp.pretrained.checkpoint import build_guide, config_path, read_card
    from pyro_acp.pretrained.registry import check_guide_matches

    card = read_card(output)
    architecture = card["guide"]
    recorded = {"--guide": architecture.get("type"), "--hidden-dim": architecture.get("hidden_dim")}
    clashes = [f"{flag} {value}" for flag, value in given.items() if value is not None and value != recorded[flag]]
    if clashes:
        raise CommandError(
            f"--resume continues the {recorded['--guide']} guide with hidden_dim {recorded['--hidden-dim']} that "
            f"{config_path(output)} records, but {' and '.join(clashes)} {'was' if len(clashes) == 1 else 'were'} "
            "given: drop them (the architecture comes from the checkpoint) or train a new --output")
    guide = build_guide(architecture)
    try:
        check_guide_matches(model, guide, card)
    except ValueError as err:
        raise CommandError(f"cannot resume {output}: {err}") from None
    return guide


def cmd_train(args) -> None:
    import os

    import pyro_acp
    from pyro_acp.guides import GUIDES
    from pyro_acp.inference import distributed

    given = {"--guide": args.guide, "--hidden-dim": args.hidden_dim}  # None: not on the command line
    args.guide = TRAIN_GUIDE_DEFAULTS["--guide"] if args.guide is None else args.guide
    args.hidden_dim = TRAIN_GUIDE_DEFAULTS["--hidden-dim"] if args.hidden_dim is None else args.hidden_dim
    check_train_numbers(args)
    check_counts(args, {"--nproc": 1})
    if not (args.timeout > 0 and np.isfinite(args.timeout)):
        raise CommandError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if under_torchrun and args.nproc > 1:
        raise CommandError("--nproc starts its own processes, but this one was started by torchrun "
                           f"(WORLD_SIZE={os.environ['WORLD_SIZE']}): leave --nproc out, torchrun sets the count")
    if args.nproc > 1:
        distributed.shard_sizes(args.batch_size, args.nproc)  # the global batch must give every process a share
    check_device_option(args.device)
    check_minutes_option(args.train_minutes)
    if args.train_minutes is not None and args.nproc > 1:
        raise CommandError("--train-minutes stops a single process; data-parallel training runs --steps")
    completed = check_train_output(args)
    if args.program is not None:
        model = program_model(args)
    else:
        if args.data_dim is not None or args.labels_site != "labels" or args.obs_site != "x":
            raise CommandError("--data-dim, --labels-site and --obs-site configure a --program")
        model = build_model(args.model or DEFAULT_MODEL, args.model_option or [])
    if args.init:
        guide = initial_guide(model, args.init)
    elif args.resume:
        guide = resumed_guide(model, args.output, given)
    else:
        try:  # the architecture's own checks (e.g. a width the attention heads divide), before any training
            guide = GUIDES[args.guide](model.data_dim, hidden_dim=args.hidden_dim)
        except ValueError as err:
            raise CommandError(f"--guide {args.guide} --hidden-dim {args.hidden_dim}: {err}") from None
    if args.nproc > 1:  # everything is checked: start the processes, each runs this command with --nproc 1
        distributed.launch([*args.argv, "--nproc", "1"], args.nproc)
        return
    num_points = tuple(args.num_points) if args.num_points else None
    settings = {"batch_size": args.batch_size, "num_particles": args.num_particles, "lr": args.lr,
                "loss": args.loss, "dreg": args.dreg, "num_points": num_points, "validate_every": args.validate_every}
    if args.size_law != "uniform":  # only then: the time estimate's and on-demand settings stay as they were
        settings["size_law"] = args.size_law
    steps, budget = args.steps, {}
    if args.train_minutes is not None and args.resume:  # the time spent before counts towards the budget
        budget = {"max_minutes": args.train_minutes}
    elif args.train_minutes is not None:  # plan the schedule for the steps that fit
        from pyro_acp.inference.on_demand import measure_training_time

        estimate = measure_training_time(model, settings, device=args.device, guide=guide)
        saves = math.ceil(args.steps / args.checkpoint_every) + 1  # every --checkpoint-every steps, and the last
        steps = min(args.steps, estimate.steps_within(60 * args.train_minutes, args.validate_every, saves))
        seconds = estimate.seconds(steps, args.validate_every, args.checkpoint_every)
        budget = {"max_minutes": args.train_minutes, "record": {"estimated_seconds": round(seconds, 1)}}
        print(f"a budget of {args.train_minutes:g} min fits {steps} of {args.steps} steps "
              f"({1e3 * estimate.step_seconds:.0f} ms a step, measured after warm-up)")
    with distributed.process_group_from_environment(args.device, args.timeout):
        history = pyro_acp.train(
            model, guide, steps=steps, device=args.device, seed=args.seed, checkpoint=args.output,
            checkpoint_every=args.checkpoint_every, resume=args.resume, compile=args.compile, **settings,
            **budget)
    if distributed.environment_rank() != 0:  # rank 0 reports for all
        return
    total = history.steps[-1] + 1 if history.steps else steps
    done = total - completed
    trained = f"trained {done} more step{'' if done == 1 else 's'} ({total} in all)" if completed else \
        f"trained {total} steps"
    if history.stopped is not None:
        trained += f" (stopped early: {history.stopped})"
    print(f"{trained} in {history.wall_time / 60:.1f} min; final validation ELBO "
          f"{history.validation_elbo[-1] if history.validation_elbo else float('nan'):.3f}; saved {args.output}")


#: ``--reweight``: what ``infer``'s ``reweight`` becomes
REWEIGHT_CHOICES = {"exact": True, "invariant": "invariant"}


def cmd_infer(args) -> None:
    import pyro_acp

    check_counts(args, {"--num-samples": 1, "--gibbs-sweeps": 0})
    check_device_option(args.device)
    if args.gibbs_sweeps and args.reweight:
        raise CommandError("--gibbs-sweeps runs chains on from the samples, where their weights no longer apply: "
                           "give one of --gibbs-sweeps and --reweight")
    if Path(args.input).is_dir():  # every data file of the folder, batched and resumable (pyro_acp.infer_many)
        from pyro_acp.inference.many import RESULT_FILES

        if args.gibbs_sweeps:
            raise CommandError("--gibbs-sweeps applies to a single input file; for a folder, run "
                               "pyro_acp.mcmc.gibbs(model, x, init=posterior, ...) on the data sets that need it")
        if args.guide is not None:
            check_input_file(args.guide, "--guide checkpoint")
        out = Path(args.output)
        before = set() if args.overwrite or not out.is_dir() else {p.parent for p in out.glob(f"*/{RESULT_FILES[-1]}")}
        if args.train_minutes is not None:
            raise CommandError("--train-minutes applies to a single input file; for a folder, train the guide "
                               "first with `pyro-acp train` and pass it with --guide")
        model = infer_model(args, lambda: folder_width(args.input))  # the first file's: infer_many checks the rest
        folders = pyro_acp.infer_many(model, args.input,
                                      output=out,
                                      num_samples=args.num_samples, guide=args.guide, seed=args.seed,
                                      train=not args.no_train, device=args.device, loss=args.loss,
                                      figures=args.figures, overwrite=args.overwrite,
                                      reweight=REWEIGHT_CHOICES.get(args.reweight, False))
        resumed = sum(folder in before for folder in folders)
        files = ", ".join(RESULT_FILES) + (", posterior.png" if args.figures else "")
        print(f"{len(folders)} data sets from {args.input}: {len(folders) - resumed} clustered now"
              + (f", {resumed} already finished" if resumed else "") + f"; results in {out}/<name>/ ({files})")
        return
    check_input_file(args.input, "input")
    if args.guide is not None:
        check_input_file(args.guide, "--guide checkpoint")
    out = check_output_folder(args.output, args.overwrite)
    check_minutes_option(args.train_minutes)
    from pyro_acp.posteriors.posterior import INVARIANT_METHODS
    from pyro_acp.protocols import can_ascend_to_mode

    points = read_points(args.input)
    model = infer_model(args, lambda: points.shape[1] if points.ndim == 2 else 1)
    if args.gibbs_sweeps and not can_ascend_to_mode(model):
        raise CommandError(f"--gibbs-sweeps needs a model with collapsed Gibbs statistics; {type(model).__name__} "
                           f"has none")
    smallest = int(getattr(model, "plain_posterior_from_points", 0))
    if args.gibbs_sweeps and len(points) < smallest:
        raise CommandError(f"--gibbs-sweeps samples the model's plain posterior, but below {smallest} points the "
                           f"guides of {type(model).__name__} target another one (data drawn, then standardised): "
                           f"use --reweight invariant")
    post = pyro_acp.infer(model, points, num_samples=args.num_samples, guide=args.guide, seed=args.seed,
                          train=not args.no_train, device=args.device, train_minutes=args.train_minutes,
                          reweight=REWEIGHT_CHOICES.get(args.reweight, False), check_samples=not args.gibbs_sweeps)
    if args.gibbs_sweeps:
        from pyro_acp.inference.infer import check_samples_are_stationary

        post = pyro_acp.mcmc.gibbs(model, points, init=post, warmup_steps=args.gibbs_sweeps - 1, num_samples=1,
                                   seed=args.seed, progress_bar=False)
        check_samples_are_stationary(model, post)  # the chains' end points, checked as infer checks its samples
    out.mkdir(parents=True, exist_ok=True)
    labels_file, summary_file, figure_file = (out / name for name in INFER_OUTPUTS)
    columns = {"map": post.map, "point_estimate": post.point_estimate(loss=args.loss)}
    if can_ascend_to_mode(model) and post.method not in INVARIANT_METHODS:  # the MAP climbed to a mode of p(c | x)
        columns["refined_map"] = post.refined_map()
    np.savetxt(labels_file, np.stack([labels.numpy() for labels in columns.values()], 1), fmt="%d", delimiter=",",
               header=",".join(columns), comments="")
    summary = post.summary()
    summary_file.write_text(json.dumps({"model": model.config(), **dataclasses.asdict(summary)}, indent=2,
                                       default=str))
    post.plot(path=figure_file)
    print(summary)
    print(f"wrote {labels_file}, {summary_file}, {figure_file}")


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-acp", description="Fast amortized Bayesian clustering (ACP) on Pyro.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulate a data set, infer with the shipped guide, run Gibbs from its "
                                       "samples and afresh")
    demo.add_argument("--num-points", type=int, default=150, help="points in the simulated data set (default 150)")
    demo.add_argument("--num-samples", type=int, default=100, help="ACP posterior samples (default 100)")
    demo.add_argument("--gibbs-samples", type=int, default=200, help="Gibbs samples per chain; 0 skips Gibbs")
    demo.add_argument("--seed", type=int, default=2026)
    demo.add_argument("--output", default="pyro_acp_demo.png", help="figure path (default pyro_acp_demo.png)")
    demo.set_defaults(run=cmd_demo)

    train = sub.add_parser("train", help="train a guide on simulations of a built-in model or of a Pyro program")
    train.add_argument("--model", default=None,
                       help="a registered model of points (default CRPGaussianMixture)")
    train.add_argument("--program", metavar="MODULE:FUNCTION",
                       help="a Pyro program program(num_points, x=None) with a partition site and an observed "
                            "site (MODULE: an import path or a .py file), instead of --model")
    train.add_argument("--labels-site", default="labels", help="--program: the partition site (default labels)")
    train.add_argument("--obs-site", default="x", help="--program: the observed site (default x)")
    train.add_argument("--data-dim", type=int, default=None,
                       help="--program: values per point (default: read from the program)")
    train.add_argument("--train-minutes", type=float, default=None,
                       help="a wall-clock budget: the steps that fit it (at most --steps, measured after warm-up) "
                            "are planned and training stops at the budget")
    train.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                       help="model hyperparameter, e.g. --model-option alpha=0.5 --model-option dim=3")
    train.add_argument("--guide", default=None, choices=GUIDE_NAMES,
                       help="guide architecture (default ACPS; with --resume the checkpoint's)")
    train.add_argument("--hidden-dim", type=int, default=None,
                       help="width of the guide's networks (default 128; with --resume the checkpoint's)")
    train.add_argument("--steps", type=int, default=5000)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--num-particles", type=int, default=40)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--loss", default="iwae", choices=("iwae", "elbo"))
    train.add_argument("--dreg", action="store_true", help="DReG gradients for the encoder q")
    train.add_argument("--num-points", type=int, nargs=2, metavar=("LO", "HI"), help="N range [LO, HI)")
    train.add_argument("--size-law", choices=SIZE_LAWS, default="uniform",
                       help="how each data set's N is drawn in that range: uniform (default), log-uniform "
                       "(P(N = n) about 1/n: small tables get as much of the loss as large ones) or mixed (each "
                       "data set by one or the other, with probability 1/2)")
    train.add_argument("--device", default=None, help="cpu (default) or cuda")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output", default="guide.pt", help="checkpoint path (JSON card written beside it)")
    train.add_argument("--checkpoint-every", type=int, default=500)
    train.add_argument("--validate-every", type=int, default=100)
    train.add_argument("--resume", action="store_true",
                       help="continue training --output up to --steps steps in all (more than it has), with the "
                            "guide architecture its card records; any number of processes")
    train.add_argument("--overwrite", action="store_true",
                       help="replace an existing --output checkpoint (refused without it)")
    train.add_argument("--init", metavar="CHECKPOINT",
                       help="fine-tune: start from this guide's weights and architecture (--guide, --hidden-dim "
                            "ignored); the file itself is left untouched")
    train.add_argument("--compile", action="store_true",
                       help="fuse the join network with torch.compile (~1.3x faster on CPU; needs a C++ compiler)",
                       )
    train.add_argument("--nproc", type=int, default=1,
                       help="data-parallel training in this many processes on this machine (torch.distributed: "
                            "gloo on CPU, nccl with --device cuda); --batch-size is the global batch, split "
                            "among them. Or start this command under torchrun (docs/distributed.md)")
    train.add_argument("--timeout", type=float, default=300.0,
                       help="data-parallel training: seconds a process waits for the others before the job is "
                            "ended (default 300)")
    train.set_defaults(run=cmd_train)

    infer = sub.add_parser("infer", help="cluster points from a CSV or NPY file, or from a folder of them")
    infer.add_argument("input", help="(N, D) points: .npy or numeric .csv; or a folder of such files, one data set "
                                     "each, clustered in batches (results in --output/<file name>/, resumable)")
    infer.add_argument("--model", default=None,
                       help="a registered model of points (default: the model --guide was trained for; without "
                            "--guide, NIWGaussianMixture for the table's width, whose guide ships for 2 and 4 "
                            "columns and is trained on demand for others)")
    infer.add_argument("--model-option", action="append", metavar="KEY=VALUE")
    infer.add_argument("--guide", default=None, help="checkpoint path (default: the matching shipped guide)")
    infer.add_argument("--num-samples", type=int, default=100)
    infer.add_argument("--loss", default="vi", choices=("vi", "binder"), help="point-estimate loss")
    infer.add_argument("--reweight", default=None, choices=tuple(REWEIGHT_CHOICES),
                       help="weigh the samples by the exact log joint (exact) or, for NIWGaussianMixture, towards "
                            "the posterior of data drawn and then standardised (invariant; calibrated on small "
                            "tables)")
    infer.add_argument("--gibbs-sweeps", type=int, default=0,
                       help="run collapsed Gibbs chains on from the guide's samples for this many sweeps and report "
                            "those (one chain per sample; a single file, a model with collapsed Gibbs, no "
                            "--reweight): what the stationarity warning asks for")
    infer.add_argument("--no-train", action="store_true", help="fail instead of training a missing guide")
    infer.add_argument("--train-minutes", type=float, default=None,
                       help="a wall-clock budget for training a missing guide on demand")
    infer.add_argument("--device", default=None)
    infer.add_argument("--seed", type=int, default=0)
    infer.add_argument("--output", default="pyro_acp_out",
                       help=f"output folder for {', '.join(INFER_OUTPUTS)} (default pyro_acp_out)")
    infer.add_argument("--overwrite", action="store_true",
                       help="replace those files when the folder already holds them (refused without it); for a "
                            "folder input, redo every data set (without it a rerun resumes, and other options are "
                            "refused)")
    infer.add_argument("--figures", action="store_true",
                       help="for a folder input, also draw each data set's posterior.png (a single file always gets "
                            "its figure)")
    infer.set_defaults(run=cmd_infer)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what `train --nproc P` hands to the processes it starts
    try:
        args.run(args)
    except (CommandError, ValueError, TypeError, FileNotFoundError, NotImplementedError, RuntimeError) as err:
        print(f"pyro-acp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pyro-acp {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
