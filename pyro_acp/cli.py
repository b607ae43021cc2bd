"""The ``pyro-acp`` command: ``demo`` (the main job), ``train`` and ``infer``.

Errors are reported as one line on stderr (exit status 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np

GUIDE_NAMES = ("ACP", "ACPS", "CCP")


class CommandError(Exception):
    """A user-facing error: printed as one line."""


# ---------------------------------------------------------------------- helpers


def point_models() -> dict[str, type]:
    """The registered models the commands can serve: data sets of points (``data_kind == "vector"``), built
    from keyword hyperparameters that all have defaults (so ``--model-option`` only changes some)."""
    from pyro_acp.models import registered_models

    def buildable(cls: type) -> bool:
        params = inspect.signature(cls).parameters.values()
        return all(p.default is not inspect.Parameter.empty or p.kind is p.VAR_KEYWORD for p in params)

    return {name: cls for name, cls in registered_models().items()
            if getattr(cls, "data_kind", None) == "vector" and buildable(cls)}


def build_model(name: str, options: list[str]):
    """Instantiate a registered point model from ``key=value`` options (values parsed as JSON when possible)."""
    known = point_models()
    if name not in known:
        raise CommandError(f"unknown model {name!r}; choose one of {', '.join(sorted(known))}")
    cls = known[name]
    accepted = set(inspect.signature(cls).parameters)
    kwargs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise CommandError(f"model option {option!r} must look like key=value")
        if key not in accepted:
            raise CommandError(f"{name} has no hyperparameter {key!r}; it takes {', '.join(sorted(accepted))}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
        if isinstance(kwargs[key], list):
            kwargs[key] = tuple(kwargs[key])
    return cls(**kwargs)


def read_points(path: str) -> np.ndarray:
    """Points (N, D) from a .npy file or a numeric CSV (an optional header line is skipped)."""
    file = Path(path)
    if not file.exists():
        raise CommandError(f"input file {path} does not exist")
    if file.suffix == ".npy":
        data = np.load(file, allow_pickle=False)
    else:
        try:
            data = np.loadtxt(file, delimiter=",", ndmin=2)
        except ValueError:
            try:
                data = np.loadtxt(file, delimiter=",", ndmin=2, skiprows=1)
            except ValueError as err:
                raise CommandError(f"{path} is not a numeric CSV: {err}") from None
    if data.dtype.kind not in "fiu":
        raise CommandError(f"{path} does not hold numbers (dtype {data.dtype})")
    return data.astype(np.float64)


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    width = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(width[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(width[k]) for k in keys) for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------- commands


def cmd_demo(args) -> None:
    import pyro_acp
    from pyro_acp.diagnostics.metrics import coclustering_error
    from pyro_acp.models import CRPGaussianMixture

    model = CRPGaussianMixture()
    batch = model.simulate(1, num_points=args.num_points, seed=args.seed)
    x, truth = batch.unpadded(0)
    print(f"simulated {x.shape[0]} 2-D points in {int(truth.max()) + 1} clusters "
          f"(CRPGaussianMixture, seed {args.seed})")
    pyro_acp.infer(model, x, num_samples=2, seed=0, train=False)  # load and warm up the shipped guide
    post = pyro_acp.infer(model, x, num_samples=args.num_samples, seed=args.seed, train=False)
    rows = [_summary_row("ACP (shipped guide)", post, truth, None)]
    if args.gibbs_samples > 0:
        began = time.perf_counter()
        gibbs = pyro_acp.mcmc.gibbs(model, x, num_samples=args.gibbs_samples, warmup_steps=args.gibbs_samples // 2,
                                    num_chains=2, seed=args.seed, progress_bar=False)
        gibbs_time = time.perf_counter() - began
        rows.append(_summary_row("collapsed Gibbs", gibbs, truth, gibbs_time))
        rows[0]["coclustering error vs Gibbs"] = f"{coclustering_error(post.coclustering(), gibbs.coclustering()):.4f}"
        rows[1]["coclustering error vs Gibbs"] = "0"
    print(_table(rows))
    out = Path(args.output)
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


def initial_guide(model, init: str, output: str, resume: bool):
    """The guide of checkpoint ``init``, to fine-tune: it must suit ``model``; its file is never written."""
    from pyro_acp.pretrained.checkpoint import load_guide
    from pyro_acp.pretrained.registry import check_guide_matches

    if resume:
        raise ValueError("--init starts a new run from other weights; --resume continues --output: pick one")
    if Path(init).resolve() == Path(output).resolve():
        raise ValueError(f"--output {output} is the --init checkpoint; write the fine-tuned guide elsewhere")
    guide, card = load_guide(init)
    check_guide_matches(model, guide, card)
    return guide


def cmd_train(args) -> None:
    import pyro_acp
    from pyro_acp.guides import GUIDES

    model = build_model(args.model, args.model_option or [])
    if args.init:
        guide = initial_guide(model, args.init, args.output, args.resume)
    else:
        guide = GUIDES[args.guide](model.data_dim, hidden_dim=args.hidden_dim)
    num_points = tuple(args.num_points) if args.num_points else None
    history = pyro_acp.train(
        model, guide, steps=args.steps, batch_size=args.batch_size, num_particles=args.num_particles, lr=args.lr,
        device=args.device, seed=args.seed, loss=args.loss, dreg=args.dreg, num_points=num_points,
        checkpoint=args.output, checkpoint_every=args.checkpoint_every, resume=args.resume,
        validate_every=args.validate_every, compile=args.compile,
    )
    print(f"trained {args.steps} steps in {history.wall_time / 60:.1f} min; final validation ELBO "
          f"{history.validation_elbo[-1] if history.validation_elbo else float('nan'):.3f}; saved {args.output}")


def cmd_infer(args) -> None:
    import pyro_acp

    model = build_model(args.model, args.model_option or [])
    points = read_points(args.input)
    post = pyro_acp.infer(model, points, num_samples=args.num_samples, guide=args.guide, seed=args.seed,
                          train=not args.no_train, device=args.device)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    estimate = post.point_estimate(loss=args.loss)
    np.savetxt(out / "labels.csv", np.stack([post.map.numpy(), estimate.numpy()], 1), fmt="%d", delimiter=",",
               header="map,point_estimate", comments="")
    summary = post.summary()
    (out / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2, default=str))
    post.plot(path=out / "posterior.png")
    print(summary)
    print(f"wrote {out / 'labels.csv'}, {out / 'summary.json'}, {out / 'posterior.png'}")


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-acp", description="Fast amortized Bayesian clustering (ACP) on Pyro.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulate a data set, infer with the shipped guide, compare with Gibbs")
    demo.add_argument("--num-points", type=int, default=150, help="points in the simulated data set (default 150)")
    demo.add_argument("--num-samples", type=int, default=100, help="ACP posterior samples (default 100)")
    demo.add_argument("--gibbs-samples", type=int, default=200, help="Gibbs samples per chain; 0 skips Gibbs")
    demo.add_argument("--seed", type=int, default=2026)
    demo.add_argument("--output", default="pyro_acp_demo.png", help="figure path (default pyro_acp_demo.png)")
    demo.set_defaults(run=cmd_demo)

    train = sub.add_parser("train", help="train a guide on simulations of a built-in model")
    train.add_argument("--model", default="CRPGaussianMixture",
                       help="a registered model of points (default CRPGaussianMixture)")
    train.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                       help="model hyperparameter, e.g. --model-option alpha=0.5 --model-option dim=3")
    train.add_argument("--guide", default="ACPS", choices=GUIDE_NAMES)
    train.add_argument("--hidden-dim", type=int, default=128)
    train.add_argument("--steps", type=int, default=5000)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--num-particles", type=int, default=40)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--loss", default="iwae", choices=("iwae", "elbo"))
    train.add_argument("--dreg", action="store_true", help="DReG gradients for the encoder q")
    train.add_argument("--num-points", type=int, nargs=2, metavar=("LO", "HI"), help="N range [LO, HI)")
    train.add_argument("--device", default=None, help="cpu (default) or cuda")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output", default="guide.pt", help="checkpoint path (JSON card written beside it)")
    train.add_argument("--checkpoint-every", type=int, default=500)
    train.add_argument("--validate-every", type=int, default=100)
    train.add_argument("--resume", action="store_true", help="continue from --output")
    train.add_argument("--init", metavar="CHECKPOINT",
                       help="fine-tune: start from this guide's weights and architecture (--guide, --hidden-dim "
                            "ignored); the file itself is left untouched")
    train.add_argument("--compile", action="store_true",
                       help="fuse the join network with torch.compile (~1.3x faster on CPU; needs a C++ compiler)",
                       )
    train.set_defaults(run=cmd_train)

    infer = sub.add_parser("infer", help="cluster points from a CSV or NPY file")
    infer.add_argument("input", help="(N, D) points: .npy or numeric .csv")
    infer.add_argument("--model", default="CRPGaussianMixture",
                       help="a registered model of points (default CRPGaussianMixture)")
    infer.add_argument("--model-option", action="append", metavar="KEY=VALUE")
    infer.add_argument("--guide", default=None, help="checkpoint path (default: the matching shipped guide)")
    infer.add_argument("--num-samples", type=int, default=100)
    infer.add_argument("--loss", default="vi", choices=("vi", "binder"), help="point-estimate loss")
    infer.add_argument("--no-train", action="store_true", help="fail instead of training a missing guide")
    infer.add_argument("--device", default=None)
    infer.add_argument("--seed", type=int, default=0)
    infer.add_argument("--output", default="pyro_acp_out", help="output folder")
    infer.set_defaults(run=cmd_infer)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
