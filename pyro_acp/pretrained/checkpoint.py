"""Checkpoints: a ``state_dict`` file (.pt, loaded with ``weights_only=True``) plus a JSON config beside it.

Writes are atomic (temporary file, read back and checked, then ``os.replace``), so an interrupted or
diverged run never replaces a good checkpoint with a broken one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from pyro_acp.guides import GUIDES, ClusterwiseGuide
from pyro_acp.seeding import forked_rng

FORMAT_VERSION = 1


def config_path(path: str | Path) -> Path:
    """The JSON file that sits beside the weights file ``path``."""
    return Path(path).with_suffix(".json")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(
    path: str | Path,
    guide: ClusterwiseGuide,
    metadata: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Save guide weights (+ optional optimiser / RNG state) and a JSON card; returns the weights path."""
    path = Path(path)
    state = {name: t.detach().cpu() for name, t in guide.state_dict().items()}
    bad = [name for name, t in state.items() if not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"refusing to save a checkpoint with non-finite weights ({bad[0]}, ...)")
    payload = {"format_version": FORMAT_VERSION, "guide": state}
    if training_state is not None:
        payload["training"] = training_state
    card = {"format_version": FORMAT_VERSION, "guide": guide.config, **metadata}

    def write_weights(tmp: str) -> None:
        torch.save(payload, tmp)
        torch.load(tmp, weights_only=True, map_location="cpu")  # read back before it replaces anything

    _atomic_write(path, write_weights)
    _atomic_write(config_path(path), lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2, default=_jsonable)))
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (tuple, set)):
        return list(value)
    if torch.is_tensor(value):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to a checkpoint card")


def check_weights_file(path: str | Path) -> Path:
    """``path`` as a Path when it is an existing weights file; else a ValueError that says what is missing."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory, not a weights (.pt) file")
    if not path.exists():
        card = config_path(path)
        beside = f" (its card {card.name} is there, but not the weights)" if card.exists() and card != path else ""
        raise ValueError(f"checkpoint {path} does not exist{beside}")
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    """The JSON card of a checkpoint; ValueError when missing or corrupt."""
    card_file = config_path(path)
    if not card_file.exists():
        raise ValueError(f"checkpoint config {card_file} is missing (expected beside {Path(path).name})")
    try:
        card = json.loads(card_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"corrupt checkpoint config {card_file}: {err}") from None
    if not isinstance(card, dict) or "guide" not in card or "type" not in card.get("guide", {}):
        raise ValueError(f"corrupt checkpoint config {card_file}: no guide architecture recorded")
    return card


def read_payload(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The tensor payload of a checkpoint, loaded safely (``weights_only=True``)."""
    path = check_weights_file(path)
    try:
        payload = torch.load(path, weights_only=True, map_location=map_location)
    except Exception as err:  # torch raises many types for truncated / foreign files
        raise ValueError(f"corrupt checkpoint {path}: {type(err).__name__}: {str(err)[:200]}") from None
    if not isinstance(payload, dict) or "guide" not in payload:
        raise ValueError(f"corrupt checkpoint {path}: no guide weights inside")
    return payload


def build_guide(config: dict[str, Any]) -> ClusterwiseGuide:
    """Instantiate a guide from its recorded architecture (its initial weights, about to be overwritten by a
    checkpoint's, are drawn on a forked RNG: loading a guide leaves torch's global RNG as it was)."""
    config = dict(config)
    kind = config.pop("type")
    if kind not in GUIDES:
        raise ValueError(f"unknown guide architecture {kind!r}; known: {sorted(GUIDES)}")
    with forked_rng(0):
        return GUIDES[kind](**config)


def load_guide(
    path: str | Path, guide: ClusterwiseGuide | None = None, map_location: str | torch.device = "cpu"
) -> tuple[ClusterwiseGuide, dict[str, Any]]:
    """Load (guide, card). Into ``guide`` when given (its architecture must match), else a new one.

    The guide's ``trained_for`` is set to the model config its card records (None when it records none)."""
    check_weights_file(path)
    card = read_card(path)
    payload = read_payload(path, map_location)
    if guide is None:
        guide = build_guide(card["guide"])
    elif guide.config != card["guide"]:
        raise ValueError(
            f"checkpoint {Path(path).name} holds a {card['guide']['type']} with {card['guide']}, "
            f"which does not match this {guide.config['type']} with {guide.config}"
        )
    try:
        guide.load_state_dict(payload["guide"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {Path(path).name} does not fit the architecture it records: {err}") from None
    guide.trained_for = card.get("model")
    return guide.to(map_location), card
