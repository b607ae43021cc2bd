"""Checking a hand-written sampler against its own Pyro program, and naming a program on the command line.

:func:`compare_sampler_with_program`: two-sample tests of summary statistics, the model's batched
``simulate`` against runs of its Pyro program (a sampler that draws from another distribution, or a program
that raises, is caught). :func:`load_program`: the callable named by ``"module:function"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.seeding import make_generator
from pyro_acp.validation import check_positive_int

from .program_trace import _SEED_BOUND, program_draws

__all__ = ["compare_sampler_with_program", "load_program"]


def _summaries(labels: Tensor, data: Tensor) -> dict[str, float]:
    """Summary statistics of one data set: labels (N,) and its data (N, F) (graphs: adjacency rows)."""
    labels = canonicalize(labels.long()) if labels.min() >= 0 else labels
    data = data.reshape(labels.shape[0], -1).double()
    sizes = torch.bincount(labels)
    means = torch.zeros(sizes.shape[0], data.shape[1], dtype=torch.float64).index_add_(0, labels, data)
    means = means / sizes.clamp(min=1).unsqueeze(-1)
    stats = {
        "num_clusters": float((sizes > 0).sum()),
        "largest_cluster": float(sizes.max()),
        "cluster_of_label_0": float(sizes[0]),
        "data_mean": float(data.mean()),
        "data_mean_square": float(data.square().mean()),
        "within_cluster_spread": float((data - means[labels]).square().sum(-1).mean()),
    }
    # rounded: a statistic that the model's data preparation fixes (the mean 0 and mean square 1 of
    # standardised data) must compare equal, not by its round-off
    return {key: round(value, 5) for key, value in stats.items()}  # float32 round-off is ~1e-7


def compare_sampler_with_program(model: Any, *, num_points: int, num_datasets: int = 300,
                                 seed: int = 0) -> dict[str, float]:
    """Two-sample Kolmogorov-Smirnov p-values: the model's hand-written ``simulate`` against its own Pyro program.

    ``num_datasets`` data sets of ``num_points`` points from each; per data set the number of clusters, the
    largest cluster's size, the size of the cluster labelled 0 (a size-biased pick; for ordered models the
    first cluster), and the mean, mean square and within-cluster spread of the data (graphs: adjacency rows).
    A sampler that draws from another distribution than the program gives small p-values (the tests state
    the power); a program that raises raises :class:`ProgramError`. Needs SciPy.
    """
    from scipy.stats import ks_2samp

    num_points = check_positive_int(num_points, "num_points")
    num_datasets = check_positive_int(num_datasets, "num_datasets")
    batch = model.simulate(num_datasets, num_points=num_points, seed=seed)
    data = batch.adjacency if batch.adjacency is not None else batch.x
    sampler = [_summaries(batch.labels[b], data[b]) for b in range(num_datasets)]

    def program(n: int, x: Tensor | None = None) -> Tensor:
        return model.model(num_points=n, obs=x)

    program.__qualname__ = f"{type(model).__name__}.model"
    seeds = torch.randint(0, _SEED_BOUND, (num_datasets,), generator=make_generator(seed + 1)).tolist()
    # the program draws raw data; the sampler gives data as the model prepares them (check_data: e.g.
    # NIWGaussianMixture standardises), so the program's draws are prepared the same way before comparing
    prepare = model.check_data if getattr(model, "data_kind", "vector") == "vector" else (lambda x: x)
    drawn = [_summaries(labels, prepare(x)) for labels, x in program_draws(program, num_points, seeds)]
    with warnings.catch_warnings():  # ties (discrete statistics): SciPy falls back to the asymptotic p-value
        warnings.simplefilter("ignore", RuntimeWarning)
        return {key: float(ks_2samp([row[key] for row in sampler], [row[key] for row in drawn]).pvalue)
                for key in sampler[0]}


# ---------------------------------------------------------------------------------------------- entry point


def load_program(spec: str) -> Callable:
    """The callable named by ``"module:function"`` (``pyro-acp train --program module:function``); the module
    may be a dotted import path or a ``.py`` file. ValueError naming what is missing."""
    import importlib
    import importlib.util
    from pathlib import Path

    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"a program is named 'module:function' (e.g. my_models:crp_mixture), got {spec!r}")
    module_name, attribute = spec.split(":")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"program file {module_name} does not exist")
        loader = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"cannot import the program's module {module_name!r}: {err}") from None
    program = module
    for part in attribute.split("."):
        if not hasattr(program, part):
            raise ValueError(f"module {module_name!r} has no {attribute!r}")
        program = getattr(program, part)
    if not callable(program):
        raise ValueError(f"{spec} is a {type(program).__name__}, not a callable Pyro program")
    return program
