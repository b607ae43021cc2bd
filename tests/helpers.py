"""Small shared fixtures for the tests: a tiny CRP-mixture batch built without the models package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pyro_acp.data.batch import Batch


def shipped_guide(stem: str) -> tuple[Path, dict[str, Any]]:
    """The weights file of the pretrained guide named ``stem`` that ships in the package, and its card."""
    from pyro_acp.pretrained.registry import pretrained_guides

    path = next(p for p in pretrained_guides() if p.stem == stem)
    return path, json.loads(path.with_suffix(".json").read_text())


def crp_labels(num_points: int, alpha: float, generator: torch.Generator) -> list[int]:
    """One CRP draw by sequential seating (an independent reference, plain Python)."""
    counts: list[int] = []
    labels = []
    for _ in range(num_points):
        weights = torch.tensor([*counts, alpha], dtype=torch.float64)
        k = int(torch.multinomial(weights, 1, generator=generator))
        if k == len(counts):
            counts.append(0)
        counts[k] += 1
        labels.append(k)
    return labels


def tiny_batch(batch_size: int = 4, sizes: tuple[int, int] = (5, 12), dim: int = 2, seed: int = 0) -> Batch:
    """A batch of 2-D CRP(0.7) Gaussian mixtures with different N and K."""
    g = torch.Generator().manual_seed(seed)
    n_max = sizes[1]
    labels = torch.full((batch_size, n_max), -1)
    for b in range(batch_size):
        n = int(torch.randint(sizes[0], sizes[1] + 1, (1,), generator=g))
        labels[b, :n] = torch.tensor(crp_labels(n, 0.7, g))
    means = torch.randn(batch_size, n_max, dim, generator=g) * 5
    index = labels.clamp(min=0).unsqueeze(-1).expand(batch_size, n_max, dim)
    x = means.gather(1, index) + torch.randn(batch_size, n_max, dim, generator=g)
    return Batch.from_labels(x, labels, generator=g)


class StopTraining(Exception):
    """Raised by :func:`stop_after` to interrupt ``pyro_acp.train`` as a killed run would stop."""


def stop_after(steps: int):
    """A ``train`` callback that interrupts training once ``steps`` steps are done (checkpoints kept)."""

    def callback(step: int, history) -> None:
        if step + 1 >= steps:
            raise StopTraining

    return callback
