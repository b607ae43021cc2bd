"""Shared machinery of the generative models: config, validation, seeding, batched simulation.

A model is a plain Python object holding hyperparameters. Subclasses implement

- ``partition_prior(num_points)``: the distribution of the "labels" site at N points;
- ``_program(num_points, obs)``: the Pyro program (``model`` validates its arguments first);
- ``_simulate(sizes, mask, generator)``: padded draws for a whole batch, returning a dict with ``x``
  (B, N, D) guide inputs, ``labels`` (B, N) (-1 on padding) and optionally ``adjacency`` (B, N, N);
  the base class turns it into a :class:`~pyro_acp.data.Batch` with teacher-forcing masks. Graph models
  put the nodes in random order before drawing edges (``"shuffled": True``), which saves permuting the
  (B, N, N) adjacency afterwards.

Seeding: ``simulate(seed=s)`` builds a ``torch.Generator`` seeded with ``s`` and draws everything from it.
Samplers that accept no generator (Pyro/torch distributions' ``sample``, Beta/Gamma draws) run inside
:func:`generator_rng`, which seeds the global RNG from the generator in a ``fork_rng`` block, so the global
state is left untouched and the draw is still reproducible. ``seed=None`` draws the generator's seed from
the global RNG, so ``pyro.set_rng_seed`` makes unseeded simulations reproducible too.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.batch import Batch
from pyro_acp.seeding import generator_rng, make_generator
from pyro_acp.validation import check_choice, check_labels, check_positive_int, check_vectors

_REGISTRY: dict[str, type[GenerativeModel]] = {}

#: how ``simulate`` draws each data set's N in its range [lo, hi): "uniform" (every N alike), "log-uniform"
#: (P(N = n) proportional to log((n + 1) / n), about 1 / n: each size contributes about as many points, so the
#: small tables that a sum of per-data-set losses otherwise drowns get as much of the gradient as the large ones)
#: or "mixed" (each data set by one or the other with probability 1/2: small tables boosted, large ones kept at
#: half their uniform share)
SIZE_LAWS = ("uniform", "log-uniform", "mixed")


def draw_sizes(lo: int, hi: int, batch_size: int, law: str, generator: torch.Generator) -> Tensor:
    """(batch_size,) numbers of points in [lo, hi) drawn by ``law`` (one of :data:`SIZE_LAWS`)."""
    device = generator.device
    law = check_choice(law, "size_law", SIZE_LAWS)
    if law == "uniform":
        return torch.randint(lo, hi, (batch_size,), generator=generator, device=device)
    # floor(exp(U)) with U uniform on [log lo, log hi) puts mass log((n + 1) / n) / log(hi / lo) on n
    u = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
    sizes = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))).floor().long()
    sizes = sizes.clamp(lo, hi - 1)  # exp's rounding at the top edge
    if law == "mixed":
        uniform = torch.randint(lo, hi, (batch_size,), generator=generator, device=device)
        coin = torch.rand(batch_size, generator=generator, device=device) < 0.5
        sizes = torch.where(coin, uniform, sizes)
    return sizes


def registered_models() -> dict[str, type[GenerativeModel]]:
    """Every model class defined so far (built-in and users' subclasses), by class name."""
    return dict(_REGISTRY)


def model_from_config(config: dict) -> GenerativeModel:
    """Rebuild a model from its ``config()`` dict (used to match saved guides to models)."""
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError("a model config must be a dict with a 'type' entry")
    params = dict(config)
    name = params.pop("type")
    if name not in _REGISTRY:
        raise ValueError(f"unknown model type {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**params)


class GenerativeModel:
    """Base of every model: a Pyro program with a "labels" and an "x" site, plus a fast batch simulator."""

    data_kind: ClassVar[str] = "vector"
    ordered: ClassVar[bool] = False
    default_num_points: ClassVar[tuple[int, int]] = (50, 200)
    #: p(partition | Q x) = p(partition | x) for every orthogonal Q (lets samplers average over frames)
    rotation_invariant: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def __init__(self, **hyperparameters: Any):
        self._hyper = hyperparameters

    # ------------------------------------------------------------------ description
    @property
    def data_dim(self) -> int:
        """Width of the guide's per-point input."""
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-able {"type": class name, **hyperparameters}; ``model_from_config`` inverts it."""
        return {"type": type(self).__name__, **{k: list(v) if isinstance(v, tuple) else v
                                                for k, v in self._hyper.items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyper.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerativeModel) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(repr(self))

    # ------------------------------------------------------------------ the Pyro program
    def partition_prior(self, num_points: int):
        """The partition distribution of the "labels" site at ``num_points`` points."""
        raise NotImplementedError

    def prior(self, num_points: int):
        """Alias of :meth:`partition_prior`."""
        return self.partition_prior(num_points)

    def model(self, num_points: int | None = None, obs: Any = None) -> Tensor:
        """The Pyro program: sample "labels", then "x" (observed when ``obs`` is given)."""
        if obs is not None:
            obs = self.check_data(obs)
            n_obs = self.num_points_of(obs)
            if num_points is not None and check_positive_int(num_points, "num_points") != n_obs:
                raise ValueError(f"num_points={num_points} but obs has {n_obs} points")
            num_points = n_obs
        elif num_points is None:
            raise ValueError("give num_points or obs")
        return self._program(check_positive_int(num_points, "num_points"), obs)

    def __call__(self, num_points: int | None = None, obs: Any = None) -> Tensor:
        return self.model(num_points=num_points, obs=obs)

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        raise NotImplementedError

    def check_data(self, x: Any) -> Tensor:
        """One observed data set, validated and converted; ValueError/TypeError naming the problem."""
        return check_vectors(x, self.data_dim)

    @staticmethod
    def num_points_of(x: Tensor) -> int:
        """Number of points (or nodes) of a validated data set."""
        return int(x.shape[0])

    # ------------------------------------------------------------------ simulation
    def check_num_points_range(self, num_points: int | tuple[int, int] | None) -> tuple[int, int]:
        """(lo, hi) with 1 <= lo < hi from an int N (exactly N points) or a half-open range."""
        if num_points is None:
            return self.default_num_points
        if isinstance(num_points, (int, np.integer)) and not isinstance(num_points, bool):
            n = check_positive_int(num_points, "num_points")
            return n, n + 1
        try:
            lo, hi = num_points
        except (TypeError, ValueError) as err:
            raise ValueError(f"num_points must be an int or a range (lo, hi), got {num_points!r}") from err
        lo = check_positive_int(lo, "num_points lower bound")
        hi = check_positive_int(hi, "num_points upper bound")
        if hi <= lo:
            raise ValueError(f"num_points range (lo, hi) is half-open and needs hi > lo, got ({lo}, {hi})")
        return lo, hi

    def simulate(
        self,
        batch_size: int,
        num_points: int | tuple[int, int] | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        size_law: str = "uniform",
    ) -> Batch:
        """A training batch: ``batch_size`` data sets, N in [lo, hi) drawn by ``size_law`` (:data:`SIZE_LAWS`:
        ``"uniform"``, ``"log-uniform"`` or ``"mixed"``), with teacher-forcing masks."""
        batch_size = check_positive_int(batch_size, "batch_size")
        lo, hi = self.check_num_points_range(num_points)
        device = torch.device("cpu" if device is None else device)
        generator = make_generator(seed, device)
        sizes = draw_sizes(lo, hi, batch_size, size_law, generator)
        mask = torch.arange(int(sizes.max()), device=device) < sizes.unsqueeze(-1)
        parts = self._simulate(sizes, mask, generator)
        return Batch.from_labels(
            parts["x"], parts["labels"], mask=mask, adjacency=parts.get("adjacency"),
            ordered=self.ordered, shuffle=not parts.get("shuffled", False), generator=generator,
        )

    def _simulate(self, sizes: Tensor, mask: Tensor, generator: torch.Generator) -> dict[str, Any]:
        """Padded draws for the batch (see the module docstring); ``"shuffled": True`` in the result says
        the real points are already in a uniformly random order, so ``Batch.from_labels`` need not permute."""
        raise NotImplementedError

    def sample_prior(self, num_points: int, batch_size: int, generator: torch.Generator) -> Tensor:
        """(B, num_points) labels from the partition prior, reproducible through ``generator``."""
        with generator_rng(generator):
            return self.partition_prior(num_points).sample((batch_size,)).to(generator.device)


class ExactLikelihood:
    """Mixin of models with an exact p(data | partition): ``log_joint`` from ``log_marginal_likelihood``.

    Subclasses define ``log_marginal_likelihood(data, labels)`` and use :meth:`_check_data_labels`.
    """

    def _check_data_labels(self, data: Any, labels: Any) -> tuple[Tensor, Tensor]:
        """Validated data and labels (..., N) whose N matches the data's number of points."""
        data = self.check_data(data)
        labels = check_labels(labels)
        n = self.num_points_of(data)
        if labels.shape[-1] != n:
            raise ValueError(f"labels have {labels.shape[-1]} points but the data have {n}")
        return data, labels.to(data.device)

    @staticmethod
    def _without_point(labels: Tensor, index: int, num_clusters: int | None) -> tuple[Tensor, int]:
        """``labels`` with point ``index`` removed (label -1) and the number K of existing cluster slots."""
        n = labels.shape[-1]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise ValueError(f"index must be a point index in [0, {n}), got {index!r}")
        k = int(labels.max()) + 1 if num_clusters is None else check_positive_int(num_clusters, "num_clusters")
        if int(labels.max()) >= k:
            raise ValueError(f"labels use {int(labels.max()) + 1} cluster slots but num_clusters={k}")
        others = labels.clone()
        others[..., index] = -1
        return others, k

    def log_joint(self, data: Any, labels: Any) -> Tensor:
        """log p(partition) + log p(data | partition), shape (...,): the unnormalised exact posterior."""
        data, labels = self._check_data_labels(data, labels)
        prior = self.partition_prior(self.num_points_of(data)).log_prob(labels).to(data.device)
        return prior + self.log_marginal_likelihood(data, labels)
