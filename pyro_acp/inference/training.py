"""Training a guide on simulations of a generative model, with ``pyro.infer.SVI``.

Every step simulates a fresh batch from the model (seeded by (seed, step), so a resumed run sees the
same data), takes one SVI step with the per-step IWAE bound (or ``Trace_ELBO``), and reports the bound
in a tqdm bar. A fixed held-out batch gives a validation bound; checkpoints hold weights, optimiser and
RNG state so that resuming continues bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from tqdm.auto import tqdm

from pyro_acp.guides import ClusterwiseGuide
from pyro_acp.inference.elbo import ClusterwiseIWAE
from pyro_acp.pretrained.checkpoint import load_guide, read_payload, save_checkpoint

VALIDATION_SEED_OFFSET = 1_000_003


@dataclass
class TrainingHistory:
    """What happened during training: per-step losses and the validation bound over time."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    validation_steps: list[int] = field(default_factory=list)
    validation_elbo: list[float] = field(default_factory=list)
    wall_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _schedule(total_steps: int, warmup: int, final_fraction: float) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to ``final_fraction`` of the learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _batch(model, batch_size: int, num_points, seed: int, device) -> Any:
    kwargs = {} if num_points is None else {"num_points": tuple(num_points)}
    return model.simulate(batch_size, seed=seed, **kwargs).to(device)


def validation_elbo(model_fn, guide_fn, batch, num_particles: int) -> float:
    """Per-data-set IWAE bound of a fixed batch (higher is better)."""
    with torch.no_grad():
        return -ClusterwiseIWAE(num_particles).loss(model_fn, guide_fn, batch)


def train(
    model,
    guide: ClusterwiseGuide,
    steps: int,
    batch_size: int = 32,
    num_particles: int = 40,
    lr: float = 5e-4,
    device: str | torch.device | None = None,
    seed: int | None = None,
    *,
    loss: str = "iwae",
    dreg: bool = False,
    num_points: tuple[int, int] | None = None,
    clip_norm: float = 10.0,
    warmup_steps: int | None = None,
    final_lr_fraction: float = 0.05,
    validation_size: int = 64,
    validate_every: int = 100,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress_bar: bool = True,
    compile: bool = False,
    callback: Callable[[int, TrainingHistory], None] | None = None,
) -> TrainingHistory:
    """Train ``guide`` on simulations of ``model`` for ``steps`` SVI steps; returns the history.

    Args:
        model: a generative model from :mod:`pyro_acp.models` (anything with ``simulate`` and ``config``).
        guide: an ACP / ACPS / CCP guide whose ``data_dim`` matches the model's.
        loss: ``"iwae"`` (per-step importance-weighted bound, ``num_particles`` particles) or ``"elbo"``
            (``pyro.infer.Trace_ELBO`` with vectorised particles).
        checkpoint: path of a ``.pt`` file written every ``checkpoint_every`` steps and at the end
            (JSON card beside it); with ``resume=True`` training continues from it.
        compile: fuse the join network with ``torch.compile`` while training (about 1.3x faster steps on
            CPU after a few seconds of compiling; needs a C++ compiler, falls back with a warning otherwise).
        callback: called as ``callback(step, history)`` after every step (e.g. for evaluation).
    """
    if steps < 0 or batch_size < 1 or num_particles < 1:
        raise ValueError(f"need steps >= 0, batch_size >= 1, num_particles >= 1; got {steps}, {batch_size}, "
                         f"{num_particles}")
    if loss not in ("iwae", "elbo"):
        raise ValueError(f"loss must be 'iwae' or 'elbo', got {loss!r}")
    if guide.data_dim != model.data_dim:
        raise ValueError(f"the guide's data_dim={guide.data_dim} does not match the model's {model.data_dim}")
    device = torch.device(device or "cpu")
    seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed
    guide.to(device)
    pyro.clear_param_store()
    elbo = ClusterwiseIWAE(num_particles, dreg=dreg) if loss == "iwae" else Trace_ELBO(
        num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1
    )
    warmup = min(200, max(1, steps // 20)) if warmup_steps is None else max(1, warmup_steps)
    optimizer = pyro.optim.LambdaLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": lr},
         "lr_lambda": _schedule(steps, warmup, final_lr_fraction)},
        clip_args={"clip_norm": clip_norm},
    )
    svi = SVI(guide.model, guide.guide, optimizer, elbo)
    history, start = TrainingHistory(), 0
    settings = {"steps": steps, "batch_size": batch_size, "num_particles": num_particles, "lr": lr, "seed": seed,
                "loss": loss, "dreg": dreg, "num_points": num_points, "clip_norm": clip_norm}
    if resume:
        if checkpoint is None or not Path(checkpoint).exists():
            raise ValueError(f"cannot resume: checkpoint {checkpoint} does not exist")
        start, history = _restore(checkpoint, guide, optimizer, svi, device)
    validation = _batch(model, validation_size, num_points, seed + VALIDATION_SEED_OFFSET, device)
    if not resume:
        torch.manual_seed(seed)
    began = time.perf_counter() - history.wall_time
    guide.compile_join(compile)
    try:
        bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress_bar, desc="training guide")
        for step in bar:
            batch = _batch(model, batch_size, num_points, seed * 7919 + step, device)
            value = svi.step(batch)
            if not math.isfinite(value):
                raise RuntimeError(f"training diverged at step {step} (loss {value}); the last checkpoint is kept")
            optimizer.step()
            history.steps.append(step)
            history.loss.append(value)
            last = step + 1 == steps
            if validate_every and ((step + 1) % validate_every == 0 or last):
                history.validation_steps.append(step + 1)
                history.validation_elbo.append(validation_elbo(guide.model, guide.guide, validation, num_particles))
            history.wall_time = time.perf_counter() - began
            bar.set_postfix(elbo=f"{-value:.2f}", val=f"{history.validation_elbo[-1]:.2f}" if history.validation_elbo
                            else "-")
            if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or last):
                _save(checkpoint, guide, model, optimizer, history, settings, step + 1, device)
            if callback is not None:
                callback(step, history)
    finally:
        guide.compile_join(False)
    return history


def _save(path, guide, model, optimizer, history, settings, step, device) -> None:
    state = {
        "step": step,
        "optimizer": optimizer.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in history.to_dict().items()
                    if isinstance(v, list)},
        "wall_time": history.wall_time,
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    metadata = {
        "model": model.config(),
        "training": {**settings, "completed_steps": step, "wall_time_s": round(history.wall_time, 1),
                     "device": str(device)},
        "validation_elbo": history.validation_elbo[-1] if history.validation_elbo else None,
    }
    save_checkpoint(path, guide, metadata, state)


def _restore(path, guide, optimizer, svi, device) -> tuple[int, TrainingHistory]:
    """Load weights, optimiser and RNG state from a checkpoint written by :func:`train`."""
    load_guide(path, guide, map_location=device)
    payload = read_payload(path, map_location="cpu")
    if "training" not in payload:
        raise ValueError(f"checkpoint {path} holds weights only, no training state to resume from")
    state = payload["training"]
    optimizer.set_state(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    hist = state["history"]
    history = TrainingHistory(
        steps=[int(s) for s in hist["steps"].tolist()],
        loss=hist["loss"].tolist(),
        validation_steps=[int(s) for s in hist["validation_steps"].tolist()],
        validation_elbo=hist["validation_elbo"].tolist(),
        wall_time=float(state["wall_time"]),
    )
    return int(state["step"]), history
