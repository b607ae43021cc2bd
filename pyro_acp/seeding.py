"""One seeding rule for every entry point, and seed streams that can carry a process rank.

The rule: an integer ``seed`` makes a call reproducible and leaves torch's global RNG exactly as it was;
``seed=None`` draws a fresh seed from the global RNG (one draw, so ``pyro.set_rng_seed`` still makes
unseeded calls reproducible). Code draws from its own ``torch.Generator``; samplers that take no generator
(Pyro's MCMC, ``Distribution.sample``) run inside :func:`forked_rng`, which seeds the global RNG for the
block and restores it after.

:class:`SeedStream` derives independent seeds for (step, rank) pairs from one root seed with numpy's
``SeedSequence`` (a well-kept hash for exactly this), so data-parallel ranks simulate distinct data and a
resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pyro_acp.validation import check_int, check_seed

_SEED_BOUND = 2**62


def resolve_seed(seed: int | None) -> int:
    """``seed`` checked, or a fresh one drawn from torch's global RNG when None."""
    seed = check_seed(seed)
    return int(torch.randint(0, _SEED_BOUND, ())) if seed is None else seed


def make_generator(seed: int | None, device: str | torch.device | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded by the rule above."""
    device = torch.device("cpu" if device is None else device)
    return torch.Generator(device=device).manual_seed(resolve_seed(seed))


def _cuda_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def forked_rng(seed: int, device: str | torch.device | None = None) -> Iterator[None]:
    """Run the block on torch's global RNG (CPU, and ``device`` when CUDA) seeded with ``seed``; restore after."""
    device = torch.device("cpu" if device is None else device)
    cuda = _cuda_devices(device)
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        yield


@contextlib.contextmanager
def generator_rng(generator: torch.Generator) -> Iterator[None]:
    """:func:`forked_rng` seeded by one draw from ``generator`` (reproducible through the generator)."""
    seed = int(torch.randint(0, _SEED_BOUND, (), generator=generator, device=generator.device))
    with forked_rng(seed, generator.device):
        yield


@dataclass(frozen=True)
class SeedStream:
    """Independent 63-bit seeds for each (purpose, step) of one run on one process ``rank``.

    ``SeedStream(seed, rank).seed_for(step)`` differs across steps and ranks and depends on nothing else, so
    rank r of P processes simulates its own data, and step t is the same whether or not the run was resumed.
    ``purpose`` separates streams of one run (training batches, the validation batch, ...).
    """

    root: int
    rank: int = 0

    def __post_init__(self) -> None:
        check_int(self.root, "seed", minimum=0)
        check_int(self.rank, "rank", minimum=0)

    def seed_for(self, step: int, purpose: int = 0) -> int:
        words = np.random.SeedSequence([self.root, purpose, self.rank, check_int(step, "step", minimum=0)])
        return int(words.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
