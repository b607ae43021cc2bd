"""One home for checking what users pass in: integers, numbers, data arrays, labels, weights and seeds.

Every check returns the value in the form the library uses (an ``int``, a ``float``, a tensor) or raises a
``ValueError`` / ``TypeError`` whose message names the argument and says what was expected and what came.
Nothing here imports the rest of the package, so every module can use it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_acp.user_warnings import warn_user

PAD_LABEL = -1


# ---------------------------------------------------------------------------------------------- numbers
def _as_python_int(value: Any) -> Any:
    """0-dim integer tensors and numpy integers as Python ints; anything else unchanged."""
    if torch.is_tensor(value) and value.dim() == 0 and not value.dtype.is_floating_point and value.dtype != torch.bool:
        return int(value.item())
    if isinstance(value, np.integer):
        return int(value)
    return value


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as an int (Python or numpy integer, or a 0-dim integer tensor; not a bool), >= ``minimum``."""
    value = _as_python_int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1, else ValueError naming ``name``."""
    value = _as_python_int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_scalar(value: Any, name: str) -> float:
    """A finite real scalar (Python number or 1-element 0-dim tensor) as a float."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if torch.is_tensor(value):
        if value.numel() != 1 or value.dim() > 0:
            raise ValueError(f"{name} must be a scalar (only scalar hyperparameters are supported), "
                             f"got shape {tuple(value.shape)}")
        value = value.item()
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def check_positive(value: Any, name: str) -> float:
    """``value`` as a finite float > 0, else ValueError naming ``name``."""
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a positive number, got {value!r}") from err
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def check_beta_pair(value: Any, name: str) -> tuple[float, float]:
    """A pair of positive Beta parameters (a, b)."""
    try:
        a, b = value
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair (a, b) of Beta parameters, got {value!r}") from err
    return check_positive(a, f"{name}[0]"), check_positive(b, f"{name}[1]")


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (case-insensitive), lower-cased."""
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value.lower()


def check_seed(seed: Any) -> int | None:
    """An integer seed (>= 0) or None."""
    if seed is None:
        return None
    seed = _as_python_int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed}")
    return seed


def check_device(device: Any) -> torch.device:
    """``device`` (None = CPU, a string such as ``"cpu"`` / ``"cuda"`` / ``"cuda:0"``, or a ``torch.device``) as
    a ``torch.device`` this machine has; ValueError when it names no device or one torch cannot find."""
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be None, a string such as 'cpu' or 'cuda', or a torch.device, got {device!r}")
    try:
        parsed = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {device!r} is not a device torch knows; use 'cpu', 'cuda' or 'cuda:<index>'") \
            from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
            raise ValueError(f"device {str(parsed)!r} was asked for but torch finds no CUDA device (torch "
                             f"{torch.__version__}, {build}); use device='cpu'")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {str(parsed)!r} was asked for but torch finds {count} CUDA device"
                             f"{'' if count == 1 else 's'} (indices 0..{count - 1})")
        return parsed
    if parsed.type == "mps" and torch.backends.mps.is_available():
        return parsed
    raise ValueError(f"device {str(parsed)!r} is not available here; use 'cpu' or 'cuda'")


# ---------------------------------------------------------------------------------------------- data
def check_vectors(x: Any, dim: int, name: str = "x", min_points: int = 1) -> Tensor:
    """One data set of vectors as a float tensor (N, dim), validated (shape, finiteness, size); with dim = 1
    a flat (N,) array is read as N points.

    Floating arrays keep their precision: a float64 tensor or numpy array (or any array-like with
    ``__array__``, e.g. a pandas frame) stays float64, so exact computations see the values as given (float
    types torch lacks, e.g. ``np.longdouble``, become float64). Integer or boolean data and plain Python
    lists become the default dtype. A numpy input is always copied, never shared. Callers that need one
    dtype (the guides) convert themselves.
    """
    if not torch.is_tensor(x):
        try:
            array = np.asarray(x)
            if hasattr(x, "__array__") and array.dtype.kind == "f":
                keep = array.dtype.newbyteorder("=") if array.dtype.itemsize <= 8 else np.dtype(np.float64)
                x = torch.from_numpy(np.array(array, dtype=keep))  # a copy: never a view of the caller's data
            else:
                x = torch.as_tensor(np.asarray(array, dtype=np.float64), dtype=torch.get_default_dtype())
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a tensor or array of shape (N, {dim})") from err
    if not x.dtype.is_floating_point:
        x = x.to(torch.get_default_dtype())
    if dim == 1 and x.dim() == 1:  # one value per point, given as a flat (N,) array
        x = x.unsqueeze(-1)
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}) for this model, got {tuple(x.shape)}")
    if x.shape[0] < min_points:
        raise ValueError(f"{name} has {x.shape[0]} points; at least {min_points} needed")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


# ---------------------------------------------------------------------------------------------- partitions
def check_labels(labels: Any, name: str = "labels") -> Tensor:
    """``labels`` as a LongTensor (..., N) of cluster labels >= 0 (or -1 for padding)."""
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point:
        if not torch.isfinite(labels).all():
            raise ValueError(f"{name} contains NaN or inf")
        if (labels != labels.round()).any():
            raise ValueError(f"{name} must hold integer cluster labels, got non-integer values")
    if labels.dtype == torch.bool or labels.dim() == 0:
        raise ValueError(f"{name} must be an integer tensor of shape (..., N), got {tuple(labels.shape)}")
    labels = labels.long()
    if labels.shape[-1] == 0:
        raise ValueError(f"{name} is empty: a partition needs at least one point")
    if (labels < PAD_LABEL).any():
        raise ValueError(f"{name} must be non-negative (or {PAD_LABEL} for padding)")
    return labels


def check_partition_rows(samples: Any, name: str = "samples") -> Tensor:
    """(S, N) unpadded labellings on the CPU, one partition per row (not yet canonical)."""
    if isinstance(samples, (list, tuple)) and len(samples) == 0:
        raise ValueError(f"{name} is empty: at least one partition is needed")
    try:
        samples = torch.as_tensor(np.asarray(samples) if not isinstance(samples, Tensor) else samples)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an integer array of shape (S, N): {err}") from err
    if samples.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D of shape (S, N) (one partition per row), got shape {tuple(samples.shape)}"
            + ("; use samples[None] for a single partition" if samples.dim() == 1 else "")
        )
    if samples.shape[0] == 0:
        raise ValueError(f"{name} is empty: at least one partition is needed")
    samples = check_labels(samples.cpu(), name)
    if (samples < 0).any():
        raise ValueError(f"{name} contains negative labels; posterior partitions cannot be padded")
    return samples


# ---------------------------------------------------------------------------------------------- per-sample values
def check_vector(value: Any, name: str, length: int, allow_neg_inf: bool = False,
                 allow_nan: bool = False) -> Tensor | None:
    """Optional (length,) float64 vector with no NaN unless ``allow_nan`` (and no inf unless ``allow_neg_inf``
    permits -inf)."""
    if value is None:
        return None
    value = torch.as_tensor(value).detach().cpu()
    if value.dtype == torch.bool or value.dtype.is_complex:
        raise TypeError(f"{name} must be a real-valued vector, got dtype {value.dtype}")
    value = value.to(torch.float64)
    if value.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},) to match the samples, got {tuple(value.shape)}")
    if torch.isnan(value).any() and not allow_nan:
        raise ValueError(f"{name} contains NaN")
    bad = torch.isposinf(value) | (torch.isneginf(value) & (not allow_neg_inf))
    if bad.any():
        raise ValueError(f"{name} contains inf")
    return value


def check_weights(weights: Any, length: int, name: str = "weights") -> Tensor | None:
    """Optional non-negative (length,) weights, returned normalised to sum to one."""
    weights = check_vector(weights, name, length)
    if weights is None:
        return None
    if (weights < 0).any():
        raise ValueError(f"{name} must be non-negative")
    total = weights.sum()
    if not total > 0:
        raise ValueError(f"{name} sum to zero")
    return weights / total


def check_chain(chain: Any, length: int) -> Tensor | None:
    """Optional (length,) non-negative integer chain indices."""
    if chain is None:
        return None
    chain = torch.as_tensor(chain).cpu()
    if chain.dtype.is_floating_point or chain.dtype == torch.bool:
        raise TypeError(f"chain must hold integer chain indices, got dtype {chain.dtype}")
    if chain.shape != (length,):
        raise ValueError(f"chain must have shape ({length},) to match the samples, got {tuple(chain.shape)}")
    if (chain < 0).any():
        raise ValueError("chain indices must be non-negative")
    return chain.long()


def data_warnings(model: Any, x: Tensor) -> list[str]:
    """What ``model.data_warnings(x)`` says about validated data ``x``; nothing for a model without the hook."""
    hook = getattr(model, "data_warnings", None)
    return list(hook(x)) if callable(hook) else []


def warn_about_data(model: Any, x: Tensor) -> None:
    """Issue, once, each of the model's :func:`data_warnings` for data ``x`` as a ``UserWarning``.

    Called by the entry points that take a user's data, not by ``check_data``, which internal steps repeat.
    """
    for message in data_warnings(model, x):
        warn_user(message, UserWarning)
