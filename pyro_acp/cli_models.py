"""Which model a ``pyro-acp`` command serves: a registered model of points built from ``--model`` and
``--model-option``, a Pyro program from ``--program``, or for ``infer`` the model a ``--guide`` card records or
the default model for the data's width.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path

from pyro_acp.cli_checks import CommandError

#: the model ``pyro-acp train`` builds when ``--model`` is not given
DEFAULT_MODEL = "CRPGaussianMixture"


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


def program_model(args):
    """The :class:`~pyro_acp.models.ProgramModel` of ``--program module:function`` with the site names,
    ``--data-dim`` and ``--num-points`` range the command gives (the data dimension is read from the program
    when not given)."""
    from pyro_acp.models.program import ProgramModel, load_program

    if args.model is not None or args.model_option:
        raise CommandError("--program names the model; drop --model / --model-option (a program's values are "
                           "in its code)")
    program = load_program(args.program)
    return ProgramModel(program, labels_site=args.labels_site, obs_site=args.obs_site, data_dim=args.data_dim,
                        num_points_range=tuple(args.num_points) if args.num_points else None)


def default_model(width: int):
    """The model ``pyro-acp infer`` uses when none is named: the shipped guide's model for data of ``width``
    values per point when the registry has one (``default_model_for_width``), else the default model for real
    data of that width, ``NIWGaussianMixture(dim=width)`` (in any units; its guide is trained on demand)."""
    from pyro_acp.models import NIWGaussianMixture
    from pyro_acp.pretrained import registry

    chooser = getattr(registry, "default_model_for_width", None)
    model = chooser(width) if callable(chooser) else None
    return model if model is not None else NIWGaussianMixture(dim=width)


def guide_model_config(path: str) -> dict:
    """The config of the model a ``--guide`` checkpoint's card records it was trained for, which ``pyro-acp
    infer`` uses when no model is named (a guide serves only the model it was trained for). A card recording no
    model, or a model that is not a registered model of points (a Pyro program, a graph model: use
    ``pyro_acp.infer`` in Python), is a CommandError."""
    from pyro_acp.pretrained.checkpoint import read_card

    try:
        recorded = read_card(path).get("model")
    except ValueError as err:
        raise CommandError(f"--guide {path}: {err}") from None
    if not isinstance(recorded, dict):
        raise CommandError(f"--guide {path}: its model card records no model; name it with --model")
    if recorded.get("type") not in point_models():
        raise CommandError(f"--guide {path} was trained for {recorded.get('type')!r}, which is not a registered "
                           f"model of points, the kind pyro-acp infer takes ({', '.join(sorted(point_models()))}); "
                           f"for this guide use pyro_acp.infer in Python")
    return recorded


def infer_model(args, width: Callable[[], int]):
    """The model of ``pyro-acp infer``: ``--model`` with its ``--model-option`` values; else the model the
    ``--guide`` card records, or :func:`default_model` for the data's ``width()``, with any ``--model-option``
    values put in place of its own."""
    if args.model is not None:
        return build_model(args.model, args.model_option or [])
    base = guide_model_config(args.guide) if args.guide is not None else default_model(width()).config()
    if not args.model_option:
        from pyro_acp.models.base import model_from_config

        try:
            return model_from_config(base)
        except (TypeError, ValueError) as err:
            raise CommandError(f"--guide {args.guide}: the model its card records cannot be built ({err}); "
                               f"name it with --model") from None
    recorded = [f"{key}={json.dumps(value)}" for key, value in base.items() if key != "type"]
    return build_model(base["type"], recorded + list(args.model_option))


def folder_width(folder: str) -> int:
    """The width of a folder's first data file: a folder gets the model a single file of that width gets
    (``infer_many`` refuses files of another width)."""
    from pyro_acp.inference.many_sources import entries, read_points_file

    first = next(entries(Path(folder), "vector")[0])
    points = read_points_file(first.path)
    return points.shape[1] if points.ndim == 2 else 1
