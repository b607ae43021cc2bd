"""Checks of the ``pyro-acp`` command's arguments and files, and reading a points file: each problem is a
:class:`CommandError`, printed by the command as one line naming it (nothing the user had is overwritten)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class CommandError(Exception):
    """A user-facing error: printed as one line."""


def check_minutes_option(minutes: float | None, flag: str = "--train-minutes") -> None:
    if minutes is not None and not (minutes > 0 and np.isfinite(minutes)):
        raise CommandError(f"{flag} must be a positive number of minutes, got {minutes}")


def read_points(path: str) -> np.ndarray:
    """Points (N, D) from a .npy file or a numeric CSV (an optional header line is skipped)."""
    file = check_input_file(path, "input")
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


# ---------------------------------------------------------------------- checks made before any work

#: the files ``pyro-acp infer`` writes into its output folder
INFER_OUTPUTS = ("labels.csv", "summary.json", "posterior.png")


def check_counts(args, minimums: dict[str, int]) -> None:
    """Each integer option ``--flag`` (given as a key of ``minimums``) must be >= its minimum."""
    for flag, minimum in minimums.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None and value < minimum:
            expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise CommandError(f"{flag} must be {expected}, got {value}")


def check_device_option(device: str | None) -> None:
    """``--device`` must name a device this machine has (one line, before any work)."""
    from pyro_acp.validation import check_device

    check_device(device)


def check_input_file(path: str, what: str) -> Path:
    """An existing file (not a folder) to read."""
    file = Path(path)
    if not file.exists():
        raise CommandError(f"{what} file {path} does not exist")
    if file.is_dir():
        raise CommandError(f"{what} {path} is a folder; give a file")
    return file


def _check_parents(path: Path, flag: str) -> None:
    """The nearest existing folder above ``path`` must be a folder (else nothing can be written there)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CommandError(f"{flag} {path} cannot be written: {parent} is a file, not a folder")
            return


def check_output_file(path: str, flag: str = "--output") -> Path:
    """A file path that can be written: not a folder, under folders (made when missing), not files."""
    file = Path(path)
    if file.is_dir():
        raise CommandError(f"{flag} {path} is a folder; name a file")
    _check_parents(file, flag)
    return file


def check_output_folder(path: str, overwrite: bool) -> Path:
    """The folder ``infer`` writes into: not a file, and holding none of its files unless ``overwrite``."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"--output {path} is a file; infer writes a folder ({', '.join(INFER_OUTPUTS)}): "
                           "name a folder")
    _check_parents(folder, "--output")
    existing = [name for name in INFER_OUTPUTS if (folder / name).exists()]
    if existing and not overwrite:
        raise CommandError(f"--output {path} already holds {', '.join(existing)}; pass --overwrite to replace "
                           "them or name another folder")
    return folder


def check_train_output(args) -> int:
    """Check ``--output`` / ``--resume`` / ``--overwrite`` / ``--init`` before training; returns the steps the
    checkpoint already has (0 for a new run)."""
    from pyro_acp.pretrained.checkpoint import config_path, read_card

    if args.resume and args.overwrite:
        raise CommandError("--resume continues --output, --overwrite replaces it: pick one")
    if args.init:
        if args.resume:
            raise CommandError("--init starts a new run from other weights; --resume continues --output: pick one")
        check_input_file(args.init, "--init checkpoint")
        if Path(args.init).resolve() == Path(args.output).resolve():
            raise CommandError(f"--output {args.output} is the --init checkpoint; write the fine-tuned guide "
                               "elsewhere")
    weights = check_output_file(args.output)
    card = config_path(weights)
    if card == weights:
        raise CommandError(f"--output {args.output} ends in .json, the name of the checkpoint's card (written "
                           "beside the weights); name a .pt file")
    if card.is_dir():
        raise CommandError(f"the checkpoint's card {card} would be written over a folder; name another --output")
    if args.resume:
        if not weights.exists():
            raise CommandError(f"cannot resume: checkpoint {args.output} does not exist")
        completed = read_card(weights).get("training", {}).get("completed_steps")
        if not isinstance(completed, int):
            raise CommandError(f"cannot resume: the card {card} records no completed training steps")
        if args.steps <= completed:
            raise CommandError(f"checkpoint {args.output} already has {completed} completed steps; --steps is "
                               f"the total to reach with --resume, so it must exceed {completed} (got {args.steps})")
        return completed
    existing = [str(f) for f in (weights, card) if f.exists()]
    if existing and not args.overwrite:
        raise CommandError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass "
                           "--resume to continue training it, --overwrite to replace it, or another --output")
    return 0


def check_train_numbers(args) -> None:
    check_counts(args, {"--steps": 1, "--batch-size": 1, "--num-particles": 1, "--checkpoint-every": 1,
                        "--validate-every": 0})
    if args.hidden_dim < 1:
        raise CommandError(f"--hidden-dim must be a positive integer (the guide's hidden_dim), got {args.hidden_dim}")
    if args.num_points:
        lo, hi = args.num_points
        if not 1 <= lo < hi:
            raise CommandError(f"--num-points LO HI is the half-open range [LO, HI) with 1 <= LO < HI, got {lo} {hi}")
    if not (args.lr > 0 and np.isfinite(args.lr)):
        raise CommandError(f"--lr must be a positive number, got {args.lr}")
