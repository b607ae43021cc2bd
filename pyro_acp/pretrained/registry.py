"""The registry that matches trained guides to models: shipped pretrained guides and the user's cache.

A guide's card records the ``config()`` of the model it was trained for and its data dimension; a guide
serves a model only when both match exactly. Guides trained on demand are cached under
``$PYRO_ACP_CACHE`` (or ``~/.cache/pyro_acp``), named by the model's class and a hash of its config.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from pyro_acp.guides import ClusterwiseGuide
from pyro_acp.pretrained.checkpoint import read_card


def cache_dir() -> Path:
    """Where guides trained on demand are kept (``$PYRO_ACP_CACHE`` or ``~/.cache/pyro_acp``)."""
    root = os.environ.get("PYRO_ACP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pyro_acp"
    )
    return Path(root)


def model_key(model) -> str:
    """Stable short hash of a model's config (type + hyperparameters)."""
    text = json.dumps(model.config(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pretrained_guides() -> list[Path]:
    """Weights files of the pretrained guides shipped inside the package."""
    folder = resources.files("pyro_acp.pretrained")
    return sorted(Path(str(p)) for p in folder.iterdir() if str(p).endswith(".pt"))


def find_guide(model) -> Path | None:
    """A shipped or cached guide trained for exactly this model, if any."""
    candidates = pretrained_guides() + sorted(cache_dir().glob(f"{type(model).__name__}-{model_key(model)}*.pt"))
    for path in candidates:
        try:
            card = read_card(path)
        except ValueError:
            continue
        if card.get("model") == model.config() and card["guide"].get("data_dim") == model.data_dim:
            return path
    return None


def check_guide_matches(model, guide: ClusterwiseGuide, card: dict[str, Any] | None = None) -> None:
    """Raise when a guide cannot serve this model (data dimension, or recorded model config)."""
    if guide.data_dim != model.data_dim:
        raise ValueError(f"the guide expects {guide.data_dim}-D points but the model's data are {model.data_dim}-D")
    if card is not None and card.get("model") not in (None, model.config()):
        raise ValueError(
            f"the guide was trained for {card['model']}, not for {model.config()}; "
            "train one for this model with pyro_acp.train or `pyro-acp train`"
        )
