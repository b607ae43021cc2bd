"""A posterior's samples as ArviZ data: which sample fills each (chain, draw) cell, and ``arviz.from_dict`` in
the form the installed ArviZ takes (0.x: ``InferenceData``; 1.x: an ``xarray.DataTree``)."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_acp.user_warnings import warn_user

__all__ = ["arviz_from_posterior", "draw_grid"]


def draw_grid(num_samples: int, weights: Tensor | None, chain: Tensor | None, num_draws: int | None,
              seed: int) -> Tensor:
    """(chains, draws) sample indices: the chains as given (cut to the shortest, with a warning), or for
    weighted samples one chain of ``num_draws`` (default max(S, 1000)) resampled by weight with ``seed``."""
    if weights is not None:
        count = num_draws or max(num_samples, 1000)
        generator = torch.Generator().manual_seed(seed)
        return torch.multinomial(weights, count, replacement=True, generator=generator)[None]
    chain = chain if chain is not None else torch.zeros(num_samples, dtype=torch.long)
    ids, rank, counts = chain.unique(return_inverse=True, return_counts=True)
    length = int(counts.min())
    if int(counts.max()) != length:
        warn_user(
            f"chains have unequal lengths {counts.tolist()}; keeping the first {length} draws of each"
        )
    order = rank.argsort(stable=True)
    starts = counts.cumsum(0) - counts
    position = torch.arange(num_samples) - starts[rank[order]]
    keep = position < length
    grid = torch.empty(ids.shape[0], length, dtype=torch.long)
    grid[rank[order][keep], position[keep]] = order[keep]
    return grid


def arviz_from_posterior(posterior: dict[str, np.ndarray], num_points: int, method: str) -> Any:
    """ArviZ data of the posterior variables (each (chain, draw, ...); ``labels`` over points too)."""
    import arviz as az  # imported on use: ArviZ is slow to import

    return _arviz_from_posterior(az, posterior, num_points, method)


def _arviz_from_posterior(az: Any, posterior: dict[str, np.ndarray], num_points: int, method: str) -> Any:
    """Call ``az.from_dict`` in the form of the installed ArviZ (0.x keywords, 1.x a dict of groups)."""
    coords = {"point": np.arange(num_points)}
    dims = {"labels": ["point"]}
    with warnings.catch_warnings():  # our log_likelihood is the total per draw, not loo's pointwise group
        warnings.filterwarnings("ignore", message="log_likelihood variable found in posterior")
        if "posterior" in inspect.signature(az.from_dict).parameters:  # arviz < 1.0: InferenceData
            data = az.from_dict(posterior=posterior, coords=coords, dims=dims)
        else:  # arviz >= 1.0: from_dict(groups) returns an xarray DataTree
            data = az.from_dict({"posterior": posterior}, coords=coords, dims=dims)
    data["posterior"].attrs["inference_method"] = method
    return data
