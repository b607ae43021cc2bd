"""Which guide ``infer`` uses, and training one on demand when none matches.

Guide resolution, in order: the ``guide=`` argument (a guide object or a checkpoint path); a pretrained
guide shipped with the package whose recorded model config equals ``model.config()`` and whose data
dimension matches; a guide trained earlier for this exact model in the user cache; else (``train=True``)
a new guide trained on simulations of the model, then cached. A guide trained for another model or data
dimension is never used silently.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from pyro_acp.guides import ACPS, ClusterwiseGuide
from pyro_acp.pretrained.checkpoint import build_guide, load_guide
from pyro_acp.pretrained.registry import (
    check_guide_matches,
    find_guide,
    find_incomplete_guide,
    on_demand_path,
    training_progress,
    warn_if_incomplete,
)
from pyro_acp.protocols import ClusteringModel
from pyro_acp.seeding import forked_rng

#: Architecture and schedule of guides trained on demand (sized for a CPU in minutes, not hours).
ON_DEMAND_GUIDE = {"hidden_dim": 64}
ON_DEMAND_TRAINING = {"steps": 3000, "batch_size": 32, "num_particles": 8, "lr": 1e-3}

_UNORDERED_GUIDE = ("{model} orders its clusters, so its posterior needs a guide that learns the order (a pointer "
                    "network, NOC); {guide} only finds the clusters. Pass such a guide with guide=")


def resolve_guide(model: ClusteringModel, guide: ClusterwiseGuide | str | Path | None = None, *, train: bool = True,
                  device: str | torch.device | None = None, seed: int | None = None,
                  progress_bar: bool = True) -> ClusterwiseGuide:
    """The guide ``infer`` will use (see the module docstring for the order).

    A guide object must have been trained for this model (its ``trained_for``, set by ``pyro_acp.train`` and
    ``load_guide``, equals ``model.config()``): one trained for another model raises, and one with no record (a
    fresh, untrained guide) is used with a ``UserWarning``. From the cache only complete guides are served: one
    whose training was interrupted is resumed and finished when ``train`` is True, else a ValueError says so.
    """
    if isinstance(guide, ClusterwiseGuide):
        check_guide_matches(model, guide)
        return guide.to(device or "cpu").eval()
    if guide is not None:
        loaded, card = load_guide(guide, map_location=device or "cpu")
        check_guide_matches(model, loaded, card)
        warn_if_incomplete(guide, card, stacklevel=3)
        return loaded.eval()
    found = find_guide(model)
    if found is not None:
        return load_guide(found, map_location=device or "cpu")[0].eval()
    incomplete = find_incomplete_guide(model)
    if incomplete is not None:
        path, card = incomplete
        done, planned = training_progress(card)
        if not train:
            raise ValueError(
                f"the cached guide for {model!r} at {path} is incomplete ({done} of {planned} training steps: its "
                f"training was interrupted); call infer(..., train=True) to resume and finish it (from step "
                f"{done}), or delete {path} and its .json to start over"
            )
        return train_for_model(model, device=device, progress_bar=progress_bar, resume_card=card).eval()
    if not train:
        raise ValueError(
            f"no pretrained guide matches {model!r}; call infer(..., train=True), pass guide=, or run "
            f"`pyro-acp train` (or pyro_acp.train) for this model first"
        )
    return train_for_model(model, device=device, seed=seed, progress_bar=progress_bar).eval()


def train_for_model(model: ClusteringModel, *, device: str | torch.device | None = None, seed: int | None = None,
                    progress_bar: bool = True, resume: bool = False, resume_card: dict[str, Any] | None = None,
                    **overrides: Any) -> ClusterwiseGuide:
    """Train an on-demand guide for ``model`` (with an up-front time estimate) and cache it.

    The cached checkpoint's card records ``training.completed_steps`` of ``training.steps``; ``resume=True``
    continues an interrupted run from its last checkpoint, with the settings (and seed) its card records, so
    it ends where the uninterrupted run would have (``resume_card``: that card, when the caller has read it).
    The initial weights are drawn from ``seed`` (0 when None).
    """
    from pyro_acp.inference.training import train

    if getattr(model, "ordered", False):
        raise NotImplementedError(_UNORDERED_GUIDE.format(model=type(model).__name__, guide="ACPS (trained on demand)"))

    settings = {**ON_DEMAND_TRAINING, **overrides}
    seed = 0 if seed is None else seed
    path = on_demand_path(model)
    resume = resume or resume_card is not None
    if resume:
        card = resume_card
        if card is None:
            incomplete = find_incomplete_guide(model)
            if incomplete is None:
                raise ValueError(f"no interrupted training of a guide for {model!r} to resume at {path}")
            card = incomplete[1]
        recorded = card["training"]
        for key in ("steps", "batch_size", "num_particles", "lr", "loss", "dreg", "num_points", "clip_norm"):
            if key in recorded:
                settings[key] = recorded[key]
        if settings.get("num_points") is not None:
            settings["num_points"] = tuple(settings["num_points"])
        seed = recorded.get("seed", seed)
        guide = build_guide(card["guide"])
        done, planned = recorded["completed_steps"], settings["steps"]
        per_step = (recorded.get("wall_time_s") or 0.0) / max(1, done)
        print(f"pyro_acp: resuming the interrupted training of the cached guide for {model!r} ({done} of {planned} "
              f"steps done, about {per_step * (planned - done) / 60:.0f} min left), at {path}")
    else:
        timing = {key: settings[key] for key in ("batch_size", "num_particles", "num_points") if key in settings}
        with forked_rng(seed):
            guide = ACPS(model.data_dim, **ON_DEMAND_GUIDE)
        began = time.perf_counter()
        train(model, guide, steps=3, device=device, seed=0, progress_bar=False, validate_every=0, **timing)
        per_step = (time.perf_counter() - began) / 3
        print(f"pyro_acp: no guide for {model!r} yet; training one ({settings['steps']} steps, "
              f"about {per_step * settings['steps'] / 60:.0f} min on this machine), cached at {path}")
        with forked_rng(seed):
            guide = ACPS(model.data_dim, **ON_DEMAND_GUIDE)
    train(model, guide, device=device, seed=seed, checkpoint=path, checkpoint_every=max(1, settings["steps"] // 10),
          progress_bar=progress_bar, resume=resume, **settings)
    return guide
