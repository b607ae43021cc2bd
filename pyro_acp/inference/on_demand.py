"""Which guide ``infer`` uses, and training one on demand when none matches.

Guide resolution, in order: the ``guide=`` argument (a guide object or a checkpoint path); a pretrained
guide shipped with the package whose recorded model config equals ``model.config()`` and whose data
dimension matches (of several, the one trained on the data set's size: a small-table guide beside the one for
every size); a guide trained earlier for this exact model in the user cache; else (``train=True``)
a new guide trained on simulations of the model, then cached. A guide trained for another model or data
dimension is never used silently.

On-demand training is the one path for every model family: the guide's architecture is what the model
declares (:func:`pyro_acp.protocols.guide_options`: a NOC guide for an ordered model, a graph encoder for a
graph model), the run stops when the validation bound stops improving (:class:`EarlyStopping`), and
``train_minutes`` gives it a wall-clock budget; a guide that budget cut short of the schedule warns
(:class:`~pyro_acp.pretrained.registry.ShortTrainingWarning`) whenever it is loaded from its checkpoint to be
used (it is never replaced without being asked: delete it to train a new one). Before training, the time of a
step is measured on the model's own batches after a few warm-up steps (the first steps carry one-off costs:
worker processes, vectorisation probes, allocator warm-up), and the time of a validation round separately, so
the estimate printed up front and the steps planned for a budget come from what a step costs once training runs.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

from pyro_acp.guides import GUIDES, ClusterwiseGuide
from pyro_acp.inference.training import simulate_batch, validation_elbo
from pyro_acp.inference.training import train as run_training
from pyro_acp.models.program import as_clustering_model
from pyro_acp.pretrained.checkpoint import build_guide, load_guide, save_checkpoint
from pyro_acp.pretrained.registry import (
    check_guide_matches,
    find_guide,
    find_incomplete_guide,
    on_demand_path,
    training_progress,
    warn_if_cut_short,
    warn_if_incomplete,
)
from pyro_acp.protocols import ClusteringModel, guide_options
from pyro_acp.seeding import forked_rng

#: Architecture and schedule of guides trained on demand (sized for a CPU in minutes, not hours); the guide's
#: type and its model-specific options come from the model (:func:`pyro_acp.protocols.guide_options`).
ON_DEMAND_GUIDE = {"hidden_dim": 64}
ON_DEMAND_TRAINING = {"steps": 3000, "batch_size": 32, "num_particles": 8, "lr": 1e-3, "validate_every": 100,
                      "early_stopping": {"patience": 5, "min_delta": 0.01}}
#: steps run before the timed ones (one-off costs), and steps timed, by the up-front estimate
WARMUP_STEPS, TIMED_STEPS = 3, 8

#: settings a card records that a resumed on-demand run takes from it
_RECORDED = ("steps", "batch_size", "num_particles", "lr", "loss", "dreg", "num_points", "size_law", "clip_norm",
             "validate_every", "validation_size", "early_stopping", "max_minutes")

_UNORDERED_GUIDE = ("{model} orders its clusters, so its posterior needs a guide that learns the order (a pointer "
                    "network, NOC); {guide} only finds the clusters. Pass such a guide with guide=")


@dataclass(frozen=True)
class TimeEstimate:
    """Measured cost of on-demand training: seconds per step (after warm-up), per validation round and per
    checkpoint written (weights, optimiser moments and card, with the read-back that verifies them)."""

    step_seconds: float
    validation_seconds: float
    checkpoint_seconds: float = 0.0

    def seconds(self, steps: int, validate_every: int, checkpoint_every: int = 0) -> float:
        """Estimated wall time of ``steps`` steps with a validation round every ``validate_every`` (and last)
        and a checkpoint every ``checkpoint_every`` (and last)."""
        rounds = math.ceil(steps / validate_every) if validate_every else 0
        saves = math.ceil(steps / checkpoint_every) if checkpoint_every else 0
        return steps * self.step_seconds + rounds * self.validation_seconds + saves * self.checkpoint_seconds

    def steps_within(self, seconds: float, validate_every: int, checkpoints: int = 0) -> int:
        """The most steps (at least 1) whose estimated time, validation and ``checkpoints`` checkpoint writes
        included, fits in ``seconds``."""
        per_step = self.step_seconds + (self.validation_seconds / validate_every if validate_every else 0.0)
        return max(1, int((seconds - checkpoints * self.checkpoint_seconds) / per_step))


#: checkpoints an on-demand run writes (one every tenth of the run, and the last)
ON_DEMAND_CHECKPOINTS = 10


def on_demand_checkpoint_every(steps: int) -> int:
    """Steps between the checkpoints of an on-demand run of ``steps`` steps."""
    return max(1, steps // ON_DEMAND_CHECKPOINTS)


def new_guide(model: ClusteringModel, seed: int = 0, **overrides: Any) -> ClusterwiseGuide:
    """A fresh guide of the architecture ``model`` declares (:func:`~pyro_acp.protocols.guide_options`) with the
    on-demand width, its initial weights drawn from ``seed`` (global RNG untouched)."""
    options = {**ON_DEMAND_GUIDE, **guide_options(model), **overrides}
    kind = options.pop("type")
    if kind not in GUIDES:
        raise ValueError(f"{type(model).__name__} asks for a guide of type {kind!r}; known: {sorted(GUIDES)}")
    with forked_rng(seed):
        return GUIDES[kind](model.data_dim, **options)


def measure_training_time(model: ClusteringModel, settings: dict[str, Any], *, device: Any = None,
                          guide: ClusterwiseGuide | None = None, warmup_steps: int = WARMUP_STEPS,
                          timed_steps: int = TIMED_STEPS) -> TimeEstimate:
    """Seconds per training step and per validation round of a guide for ``model`` with ``settings``.

    The guide is a throwaway copy of ``guide``'s architecture (default: the on-demand guide the model
    declares, :func:`new_guide`); ``guide`` itself is not touched. Runs ``warmup_steps + timed_steps`` steps of
    it on the model's own batches (N drawn from the
    training range as in training; a step's cost follows the padded width, the largest N of its batch) and
    times the last ``timed_steps``; then times one validation round on a batch of ``validation_size`` data
    sets (after one untimed round). The real run's seed and RNG streams are not touched.
    """
    step_keys = ("batch_size", "num_particles", "num_points", "size_law", "loss", "dreg", "lr")
    probe = {key: settings[key] for key in step_keys if key in settings}

    def throwaway() -> ClusterwiseGuide:
        return new_guide(model) if guide is None else build_guide(guide.config)

    marks: list[float] = []
    run_training(model, throwaway(), steps=warmup_steps + timed_steps, device=device, seed=0, progress_bar=False,
          validate_every=0, callback=lambda step, history: marks.append(history.wall_time), **probe)
    step_seconds = (marks[-1] - marks[warmup_steps - 1]) / timed_steps if warmup_steps else marks[-1] / timed_steps
    validation_seconds = 0.0
    if settings.get("validate_every"):
        probe_guide = throwaway().to(device or "cpu")
        batch = simulate_batch(model, settings.get("validation_size", 64), settings.get("num_points"), 1,
                               device or "cpu", settings.get("size_law", "uniform"))
        particles = settings.get("num_particles", 40)
        with torch.random.fork_rng(), pyro.get_param_store().scope():
            validation_elbo(probe_guide.model, probe_guide.guide, batch, particles)
            began = time.perf_counter()
            validation_elbo(probe_guide.model, probe_guide.guide, batch, particles)
            validation_seconds = time.perf_counter() - began
    return TimeEstimate(step_seconds, validation_seconds, _checkpoint_seconds(throwaway()))


def _checkpoint_seconds(guide: ClusterwiseGuide) -> float:
    """Seconds to write and verify one checkpoint of ``guide``'s size (its weights and two Adam moments per
    weight, as training saves them), into a temporary folder."""
    weights = {name: t.detach().cpu() for name, t in guide.state_dict().items()}
    moments = {"exp_avg": dict(weights), "exp_avg_sq": dict(weights)}
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        save_checkpoint(Path(folder) / "probe.pt", guide, {}, {"optimizer": moments})
        return time.perf_counter() - began


def resolve_guide(model: ClusteringModel, guide: ClusterwiseGuide | str | Path | None = None, *, train: bool = True,
                  device: str | torch.device | None = None, seed: int | None = None,
                  progress_bar: bool = True, train_minutes: float | None = None,
                  semi_supervised: bool = False, num_points: int | None = None) -> ClusterwiseGuide:
    """The guide ``infer`` will use (see the module docstring for the order).

    A guide object must have been trained for this model (its ``trained_for``, set by ``pyro_acp.train`` and
    ``load_guide``, equals ``model.config()``): one trained for another model raises, and one with no record (a
    fresh, untrained guide) is used with a ``UserWarning``. From the cache only complete guides are served: one
    whose training was interrupted is resumed and finished when ``train`` is True, else a ValueError says so.
    ``train_minutes``: the wall-clock budget of a guide trained now (:func:`train_for_model`).
    ``semi_supervised``: known labels will be given, so a found guide that reads labels is preferred
    (:func:`~pyro_acp.pretrained.registry.find_guide`). ``num_points``: the size of the data set, so that a
    found guide trained on that size is preferred (the same function).
    """
    if isinstance(guide, ClusterwiseGuide):
        check_guide_matches(model, guide)
        return guide.to(device or "cpu").eval()
    if guide is not None:
        loaded, card = load_guide(guide, map_location=device or "cpu")
        check_guide_matches(model, loaded, card)
        warn_if_incomplete(guide, card)
        warn_if_cut_short(guide, card, on_demand=on_demand_schedule(model, guide))
        return loaded.eval()
    found = find_guide(model, semi_supervised=semi_supervised, num_points=num_points)
    if found is not None:
        loaded, card = load_guide(found, map_location=device or "cpu")
        warn_if_cut_short(found, card, on_demand=on_demand_schedule(model, found))
        return loaded.eval()
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
    return train_for_model(model, device=device, seed=seed, progress_bar=progress_bar,
                           train_minutes=train_minutes).eval()


def on_demand_schedule(model: ClusteringModel, path: str | Path) -> int | None:
    """The steps of the on-demand schedule when ``path`` is this model's cached on-demand guide (a card written
    before ``schedule_steps`` was recorded is judged against it), else None."""
    return int(ON_DEMAND_TRAINING["steps"]) if Path(path) == on_demand_path(model) else None


def _check_minutes(train_minutes: Any) -> float | None:
    if train_minutes is None:
        return None
    if isinstance(train_minutes, bool) or not isinstance(train_minutes, (int, float)) or \
            not (math.isfinite(train_minutes) and train_minutes > 0):
        raise ValueError(f"train_minutes must be a positive number of minutes, got {train_minutes!r}")
    return float(train_minutes)


def train_for_model(model: Any, *, device: str | torch.device | None = None, seed: int | None = None,
                    progress_bar: bool = True, resume: bool = False, resume_card: dict[str, Any] | None = None,
                    train_minutes: float | None = None, **overrides: Any) -> ClusterwiseGuide:
    """Train an on-demand guide for ``model`` (with an up-front time estimate) and cache it.

    The guide is the architecture the model declares (:func:`pyro_acp.protocols.guide_options`), with
    ``ON_DEMAND_GUIDE``'s width; the settings are ``ON_DEMAND_TRAINING`` with ``overrides``. Training stops
    early when the validation bound stops improving (``early_stopping``; ``early_stopping=None`` turns it off).
    ``train_minutes``: a wall-clock budget. The steps that fit it are planned from the measured time of a step
    and of a validation round (:func:`measure_training_time`), so the learning-rate schedule decays over the
    run that fits, and training stops at the budget in any case, with a complete cached guide whose card says
    so (``training.stopped``, ``training.planned_steps``).

    The cached checkpoint's card records ``training.completed_steps`` of ``training.steps`` and the estimate
    (``training.estimated_seconds``); ``resume=True`` continues an interrupted run from its last checkpoint,
    with the settings (seed, budget, early stopping) its card records, so it ends where the uninterrupted run
    would have (``resume_card``: that card, when the caller has read it). The initial weights are drawn from
    ``seed`` (0 when None).
    """
    model = as_clustering_model(model)
    train_minutes = _check_minutes(train_minutes)
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
        settings.update({key: recorded[key] for key in _RECORDED if key in recorded})
        if settings.get("num_points") is not None:
            settings["num_points"] = tuple(settings["num_points"])
        seed = recorded.get("seed", seed)
        guide = build_guide(card["guide"])
        done, planned = recorded["completed_steps"], settings["steps"]
        per_step = (recorded.get("wall_time_s") or 0.0) / max(1, done)
        print(f"pyro_acp: resuming the interrupted training of the cached guide for {model!r} ({done} of {planned} "
              f"steps done, about {per_step * (planned - done) / 60:.1f} min left), at {path}")
        record = {"schedule_steps": recorded["schedule_steps"]} if "schedule_steps" in recorded else {}
    else:
        guide = new_guide(model, seed)
        estimate = measure_training_time(model, settings, device=device)
        planned, every = settings["steps"], settings.get("validate_every") or 0
        budget = ""
        if train_minutes is not None:
            settings["steps"] = min(planned, estimate.steps_within(60 * train_minutes, every,
                                                                   ON_DEMAND_CHECKPOINTS + 1))
            settings["max_minutes"] = train_minutes
            budget = f"; a budget of {train_minutes:g} min fits {settings['steps']} of {planned} steps"
        seconds = estimate.seconds(settings["steps"], every, on_demand_checkpoint_every(settings["steps"]))
        record = {"estimated_seconds": round(seconds, 1), "measured_step_seconds": round(estimate.step_seconds, 4),
                  "measured_validation_seconds": round(estimate.validation_seconds, 4),
                  "measured_checkpoint_seconds": round(estimate.checkpoint_seconds, 4)}
        if settings["steps"] < planned:  # the card says the budget cut the schedule short (budget_shortfall)
            record["schedule_steps"] = planned
        stopping = " (or fewer: it stops when the validation bound stops improving)" \
            if settings.get("early_stopping") else ""
        print(f"pyro_acp: no guide for {model!r} yet; training a {guide.config['type']} guide: {settings['steps']} "
              f"steps{stopping}, about {seconds / 60:.1f} min on this machine ({1e3 * estimate.step_seconds:.0f} ms a "
              f"step after {WARMUP_STEPS} warm-up steps, {estimate.validation_seconds:.1f} s a validation round"
              f"{budget}), cached at {path}")
    history = run_training(model, guide, device=device, seed=seed, checkpoint=path,
                           checkpoint_every=on_demand_checkpoint_every(settings["steps"]),
                           progress_bar=progress_bar, resume=resume, record=record, **settings)
    if history.stopped is not None:
        reason = "the validation bound stopped improving" if history.stopped == "validation" else \
            "the time budget was reached"
        print(f"pyro_acp: training stopped after {history.steps[-1] + 1} steps ({history.wall_time / 60:.1f} min): "
              f"{reason}; the cached guide is complete")
    return guide
