"""The registry that matches trained guides to models: shipped pretrained guides and the user's cache.

A guide's card records the ``config()`` of the model it was trained for and its data dimension; a guide
serves a model only when both match exactly. A guide object carries the same record in ``guide.trained_for``
(set by :func:`pyro_acp.train` and :func:`pyro_acp.load_guide`) and is checked the same way; a guide with no
record (fresh, untrained) is served with a ``UserWarning``. Guides trained on demand are cached under
``$PYRO_ACP_CACHE`` (or ``~/.cache/pyro_acp``), named by the model's class and a hash of its config (for a
Pyro program also its name; its config holds :func:`program_fingerprint`, so a changed program never finds the
guide of the old one); only complete ones (the card's ``training.completed_steps`` equal to its
``training.steps``) are served.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_acp.guides import ClusterwiseGuide
from pyro_acp.pretrained.checkpoint import read_card
from pyro_acp.user_warnings import warn_user


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


_LIBRARY_MODULES = ("pyro", "torch", "numpy", "scipy", "pyro_acp", "builtins", "math", "functools")
_FINGERPRINT_DEPTH = 4  # how deep helper functions a program calls are followed


def _describe(obj: Any, depth: int, seen: set[int]) -> Any:
    """A JSON-able description of a value a program depends on (its code for functions, its contents for data)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [type(obj).__name__, [_describe(v, depth, seen) for v in obj]]
    if isinstance(obj, dict):
        return ["dict", sorted((str(k), _describe(v, depth, seen)) for k, v in obj.items())]
    if torch.is_tensor(obj):
        data = obj.detach().cpu().contiguous()
        return ["tensor", str(data.dtype), list(data.shape), hashlib.sha256(data.numpy().tobytes()).hexdigest()
                if data.dtype != torch.bfloat16 else repr(data.tolist())]
    if isinstance(obj, np.ndarray):
        return ["ndarray", str(obj.dtype), list(obj.shape), hashlib.sha256(np.ascontiguousarray(obj).tobytes())
                .hexdigest()]
    if isinstance(obj, types.ModuleType):
        return ["module", obj.__name__]
    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    if module.split(".")[0] in _LIBRARY_MODULES and not isinstance(obj, types.MethodType):
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            return ["library", module, qualname]
    if id(obj) in seen or depth <= 0:
        return ["ref", module, qualname]
    seen = seen | {id(obj)}
    if isinstance(obj, types.MethodType):
        return ["method", _describe(obj.__func__, depth, seen), _describe(obj.__self__, depth - 1, seen)]
    if isinstance(obj, types.FunctionType):
        return ["function", module, qualname, _describe_code(obj.__code__),
                _describe(obj.__defaults__, depth, seen), _describe(obj.__kwdefaults__, depth, seen),
                [_describe(cell.cell_contents, depth - 1, seen) if cell.cell_contents is not obj else "self"
                 for cell in (obj.__closure__ or ())],
                sorted((name, _describe(obj.__globals__[name], depth - 1, seen))
                       for name in _global_names(obj.__code__) if name in obj.__globals__)]
    if callable(getattr(obj, "config", None)):  # a model: its config identifies it
        try:
            return ["configured", module, qualname, _describe(obj.config(), depth - 1, seen)]
        except Exception:  # a config that fails says nothing: fall through to the object's state
            pass
    if isinstance(obj, type):
        return ["class", module, qualname]
    state = getattr(obj, "__dict__", None)
    if isinstance(obj, torch.nn.Module):
        state = {"parameters": dict(obj.state_dict())}
    if state is not None:
        call = type(obj).__dict__.get("__call__")
        return ["object", module, qualname, _describe(call, depth - 1, seen) if call is not None else None,
                _describe(dict(state), depth - 1, seen)]
    return ["value", module, qualname, repr(obj)]


def _describe_code(code: types.CodeType) -> list:
    return [code.co_code.hex(), list(code.co_names), list(code.co_varnames),
            [_describe_code(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]]


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def program_fingerprint(program: Any, *, name: str | None = None, version: str | None = None) -> str:
    """A short hash that changes whenever ``program`` would: its code (bytecode, constants, names), defaults,
    the values its closure holds and the globals it reads (numbers, tensors, arrays, models by their config,
    helper functions followed a few calls deep; library functions by name). With ``name`` and ``version`` the
    fingerprint is theirs alone (the user says when the program changed)."""
    if version is not None:
        text = json.dumps(["named", name or getattr(program, "__qualname__", repr(program)), str(version)])
    else:
        text = json.dumps(_describe(program, _FINGERPRINT_DEPTH, set()), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pretrained_guides() -> list[Path]:
    """Weights files of the pretrained guides shipped inside the package."""
    folder = resources.files("pyro_acp.pretrained")
    return sorted(Path(str(p)) for p in folder.iterdir() if str(p).endswith(".pt"))


def _cache_stem(model) -> str:
    """``<class>-<config hash>``; a wrapped Pyro program adds its name (``ProgramModel-my_model-<hash>``), and its
    config holds the program's fingerprint, so a changed program gets a new file, never the stale guide."""
    name = getattr(model, "program_name", None)
    label = "".join(c if c.isalnum() or c in "_." else "_" for c in name)[:40] if isinstance(name, str) else None
    return "-".join(part for part in (type(model).__name__, label, model_key(model)) if part)


def on_demand_path(model) -> Path:
    """Where the guide trained on demand for ``model`` is cached."""
    return cache_dir() / f"{_cache_stem(model)}.pt"


def _as_json(config: Any) -> Any:
    """A config as its JSON card stores it (tuples become lists), so recorded and live configs compare."""
    return json.loads(json.dumps(config, sort_keys=True))


def training_progress(card: dict[str, Any]) -> tuple[int, int] | None:
    """(completed steps, planned steps) of the training a card records; None when it records none."""
    training = card.get("training")
    if not isinstance(training, dict) or "steps" not in training or "completed_steps" not in training:
        return None
    return int(training["completed_steps"]), int(training["steps"])


def is_complete(card: dict[str, Any]) -> bool:
    """Whether the checkpoint finished the training it planned (cards that record none count as complete)."""
    progress = training_progress(card)
    return progress is None or progress[0] >= progress[1]


def serves(card: dict[str, Any], model) -> bool:
    """Whether a card records a guide trained for exactly this model and its data dimension."""
    return (card.get("model") is not None and _as_json(card["model"]) == _as_json(model.config())
            and card["guide"].get("data_dim") == model.data_dim)


def reads_labels(card: dict[str, Any]) -> bool:
    """Whether a card's guide was built to read known labels (``label_slots`` > 0: trained semi-supervised)."""
    return int(card.get("guide", {}).get("label_slots", 0) or 0) > 0


def training_range(card: dict[str, Any], model) -> tuple[int, int] | None:
    """[lo, hi) of the numbers of points a card's guide was trained on: the recorded pair, or the model's
    ``default_num_points`` where the card records none (on-demand training uses it); None when the record is
    malformed (not two integers 0 <= lo < hi), so that the card is skipped rather than trusted."""
    training = card.get("training")
    recorded = training.get("num_points") if isinstance(training, dict) else None
    if recorded is None:
        recorded = getattr(model, "default_num_points", None)
        if recorded is None:
            return 0, 2 ** 62  # a model with no default size range: the guide is for every size
    if (not isinstance(recorded, (list, tuple)) or len(recorded) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in recorded)
            or not 0 <= recorded[0] < recorded[1]):
        return None
    return int(recorded[0]), int(recorded[1])


def _range_preference(span: tuple[int, int], num_points: int | None) -> tuple:
    """Sort key among guides that serve one model: for a data set of ``num_points``, a guide trained on that N
    first, the narrowest such range before wider ones (a specialist before a generalist), else the range
    nearest N; without N, the widest range (the guide meant for every size)."""
    lo, hi = span
    if num_points is None:
        return (-(hi - lo),)
    return (max(lo - num_points, num_points - (hi - 1), 0), hi - lo)


@dataclass(frozen=True)
class ServingGuide:
    """A complete guide file that serves one model: its path, training range of N and whether it reads labels."""

    path: Path
    span: tuple[int, int]
    reads_labels: bool


def serving_guides(model) -> list[ServingGuide]:
    """Every shipped or cached guide trained (to the end of its planned steps) for exactly this model, shipped
    ones first (the order that breaks ties in :func:`best_guide`); each card is read once here."""
    candidates = pretrained_guides() + sorted(cache_dir().glob(f"{_cache_stem(model)}*.pt"))
    found = []
    for path in candidates:
        try:
            card = read_card(path)
            span = training_range(card, model) if serves(card, model) and is_complete(card) else None
        except (ValueError, TypeError, AttributeError, KeyError):
            continue
        if span is not None and path.exists():
            found.append(ServingGuide(path, span, reads_labels(card)))
    return found


def best_guide(found: list[ServingGuide], *, semi_supervised: bool = False,
               num_points: int | None = None) -> Path | None:
    """The path :func:`find_guide` picks among ``found`` (:func:`serving_guides`), without reading any card."""
    ranked = sorted(range(len(found)), key=lambda i: (found[i].reads_labels != semi_supervised,
                                                      *_range_preference(found[i].span, num_points), i))
    return found[ranked[0]].path if ranked else None


def find_guide(model, *, semi_supervised: bool = False, num_points: int | None = None) -> Path | None:
    """A shipped or cached guide trained (to the end of its planned steps) for exactly this model, if any.

    Where several serve the model, one whose training matches the use comes first: a guide that reads labels
    (:func:`reads_labels`) when ``semi_supervised`` (known labels given), one that does not otherwise (a
    semi-supervised guide was trained with every cluster labelled, so without labels it is off its training
    distribution); the other kind is the fallback. Then by the numbers of points it was trained on
    (:func:`training_range`): given ``num_points``, a guide trained on that N, the narrowest range first, else
    the range nearest N; without it, the widest. A card whose range is malformed is skipped."""
    return best_guide(serving_guides(model), semi_supervised=semi_supervised, num_points=num_points)


DEFAULT_MODEL_TYPE = "NIWGaussianMixture"


def default_model_for_width(width: int) -> Any:
    """The default model for real data of ``width`` values per point: the :class:`NIWGaussianMixture` of a
    shipped, complete guide with that data dimension (the model its card records), or None when none ships."""
    from pyro_acp.models import model_from_config

    for path in pretrained_guides():
        try:
            card = read_card(path)
        except ValueError:
            continue
        recorded = card.get("model") or {}
        if (recorded.get("type") == DEFAULT_MODEL_TYPE and recorded.get("dim") == width
                and card["guide"].get("data_dim") == width and is_complete(card)):
            return model_from_config(recorded)
    return None


def find_incomplete_guide(model) -> tuple[Path, dict[str, Any]] | None:
    """The on-demand guide for this model whose training was interrupted (path, card), if one is cached."""
    path = on_demand_path(model)
    if not path.exists():
        return None
    try:
        card = read_card(path)
    except ValueError:
        return None
    if serves(card, model) and not is_complete(card):
        return path, card
    return None


def warn_if_incomplete(path, card: dict[str, Any]) -> None:
    """A ``UserWarning`` when the checkpoint at ``path`` stopped before the end of its planned training."""
    progress = training_progress(card)
    if progress is not None and progress[0] < progress[1]:
        warn_user(f"checkpoint {path} records {progress[0]} of {progress[1]} planned training steps (its "
                  "training was interrupted?); finish it with pyro_acp.train(..., checkpoint=path, resume=True)",
                  UserWarning)


class ShortTrainingWarning(UserWarning):
    """A guide whose training a time budget cut short of its full schedule is being used: its posteriors may be
    far from the model's."""


def budget_shortfall(card: dict[str, Any], on_demand: int | None = None) -> tuple[int, int, float | None] | None:
    """(steps trained, steps of the full schedule, the budget in minutes) of a guide whose training a time
    budget cut short: the budget planned fewer steps than the schedule (``training.schedule_steps``, recorded
    by on-demand training; for a cached on-demand guide whose card predates it, ``on_demand``, the steps of
    the on-demand schedule, stand in when the card records a budget), or stopped the run before its planned
    steps (``training.stopped == "time budget"``). None otherwise: a run that early stopping ended (the
    validation bound stopped improving) is finished."""
    training = card.get("training")
    if not isinstance(training, dict) or "completed_steps" not in training:
        return None
    full = int(training.get("schedule_steps") or 0)
    if not full and on_demand is not None and training.get("max_minutes") is not None:
        full = on_demand
    if training.get("stopped") == "time budget":
        full = max(full, int(training.get("planned_steps") or 0))
    done = int(training["completed_steps"])
    if training.get("stopped") == "validation" or full <= done:
        return None
    return done, full, training.get("max_minutes")


def warn_if_cut_short(path, card: dict[str, Any], on_demand: int | None = None) -> None:
    """A :class:`ShortTrainingWarning` when the checkpoint at ``path`` was trained within a time budget that
    cut it short of its full schedule (:func:`budget_shortfall`); ``on_demand``: it is the model's cached
    on-demand guide, whose schedule has that many steps."""
    short = budget_shortfall(card, on_demand)
    if short is None:
        return
    done, full, minutes = short
    budget = f"a {minutes:g}-minute budget" if minutes is not None else "a time budget"
    remedy = ("delete it (and its .json) and call again with a larger train_minutes (infer(..., "
              "train_minutes=...), pyro-acp infer --train-minutes) to train a new one" if on_demand is not None
              else "train it for longer (pyro_acp.train with a larger max_minutes)")
    warn_user(f"the guide at {path} was trained for {done:,} of the {full:,} steps of its schedule ({budget}): "
              f"its posteriors may be far from the model's; {remedy}", ShortTrainingWarning)


def check_guide_matches(model, guide: ClusterwiseGuide, card: dict[str, Any] | None = None) -> None:
    """Raise when a guide cannot serve this model (data dimension, or the model config it was trained for).

    The record is the card's ``model`` when a card is given, else the guide's ``trained_for``; a guide with no
    record (a fresh, untrained guide) is let through with a ``UserWarning``.
    """
    if guide.data_dim != model.data_dim:
        raise ValueError(f"the guide expects {guide.data_dim}-D points but the model's data are {model.data_dim}-D")
    recorded = card.get("model") if card is not None else getattr(guide, "trained_for", None)
    if recorded is None:
        warn_user(
            f"the {type(guide).__name__} guide has no record of the model it was trained for (a fresh, untrained "
            f"guide?): its posterior for {model!r} may mean nothing; train it with pyro_acp.train(model, guide, "
            "steps=...) or pass a trained one",
            UserWarning
        )
    elif _as_json(recorded) != _as_json(model.config()):
        raise ValueError(
            f"the guide was trained for {recorded}, not for {model.config()}; "
            "train one for this model with pyro_acp.train or `pyro-acp train` (or drop guide= to let infer "
            "find or train one)"
        )
