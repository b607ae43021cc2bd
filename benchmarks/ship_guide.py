"""Ship a trained guide: weights only (no optimiser state) and its run's card, with measured figures, into
pyro_acp/pretrained/.

    python benchmarks/ship_guide.py --checkpoint runs/niw2_small.pt --name niw_gaussian_mixture_2d_small \
        --evaluation figures.json --reproduce "pyro-acp train ..." [--note "..."]

``--evaluation`` is a JSON object of measured figures (each with the command that produced it); the card
refuses to be written without one, so no weights ship without their figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pyro_acp import load_guide
from pyro_acp.pretrained.checkpoint import save_checkpoint
from pyro_acp.pretrained.registry import is_complete

PRETRAINED = Path(__file__).resolve().parents[1] / "pyro_acp" / "pretrained"


def ship(checkpoint: Path, name: str, evaluation: dict, reproduce: str, note: str | None) -> Path:
    """Write ``name``.pt / .json into pyro_acp/pretrained/ (refusing to overwrite a shipped guide)."""
    target = PRETRAINED / f"{name}.pt"
    for path in (target, target.with_suffix(".json")):
        if path.exists():
            raise FileExistsError(f"{path} ships already; remove it first to replace it")
    if not evaluation or not any("command" in key for key in evaluation):
        raise ValueError("a shipped guide needs its measured figures and the commands that measured them "
                         "(--evaluation: a JSON object with at least one '...command' entry)")
    guide, card = load_guide(checkpoint)
    if not isinstance(card.get("training"), dict) or not is_complete(card):
        raise ValueError(f"{checkpoint} records no finished training: the registry would never serve it")
    card = {k: v for k, v in card.items() if k not in ("format_version", "guide")}
    if note:
        card["training"]["note"] = note
    card["reproduce"] = reproduce
    card["evaluation"] = evaluation
    return save_checkpoint(target, guide, card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--name", required=True, help="file stem under pyro_acp/pretrained/")
    parser.add_argument("--evaluation", type=Path, required=True, help="JSON object of measured figures")
    parser.add_argument("--reproduce", required=True, help="the commands that trained it")
    parser.add_argument("--note", default=None, help="how and where it was trained")
    args = parser.parse_args()
    print(ship(args.checkpoint, args.name, json.loads(args.evaluation.read_text()), args.reproduce, args.note))


if __name__ == "__main__":
    main()
