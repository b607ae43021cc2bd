"""Training a guide on simulations of a generative model, with ``pyro.infer.SVI``.

Every step simulates a fresh batch from the model (seeded by ``SeedStream(seed, rank).seed_for(step)``, so
a resumed run sees the same data and data-parallel ranks see different data), takes one SVI step with the
per-step IWAE bound (or ``Trace_ELBO``), and reports the bound in a tqdm bar. A fixed held-out batch gives a
validation bound; checkpoints hold weights, optimiser and RNG state so that resuming continues bit for bit.
Under a torch.distributed process group of P > 1 processes training is data-parallel
(:mod:`pyro_acp.inference.distributed`).

No global state: training runs in a scope of its own of Pyro's parameter store (the user's own
``pyro.param`` s are put aside and restored, and nothing of the guide's is left behind: its weights live in
the module) and on a forked torch RNG (seeded from the seed stream, restored afterwards), so the global RNG
is left as it was. With an integer seed an untrained guide's initial weights come from the seed stream too
(:func:`redraw_initial_weights`), so a seeded run is reproducible from the guide's construction on.
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
from pyro_acp.inference.distributed import DataParallel, ProcessLostError
from pyro_acp.inference.elbo import ClusterwiseIWAE
from pyro_acp.models.base import SIZE_LAWS
from pyro_acp.models.program import as_clustering_model
from pyro_acp.pretrained.checkpoint import load_guide, read_payload, save_checkpoint
from pyro_acp.seeding import SeedStream, forked_rng, resolve_seed
from pyro_acp.user_warnings import warn_user
from pyro_acp.validation import check_choice, check_device, check_int, check_positive_int

# purposes of the seed stream (pyro_acp.seeding.SeedStream): one stream each, so they never overlap
TRAINING_BATCHES, VALIDATION_BATCH, PARTICLES, INITIAL_WEIGHTS = 0, 1, 2, 3


@dataclass
class TrainingHistory:
    """What happened during training: per-step losses and the validation bound over time."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    validation_steps: list[int] = field(default_factory=list)
    validation_elbo: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    stopped: str | None = None  # why training ended before its planned steps: "validation" or "time budget"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when the validation bound stops improving: after ``patience`` validation rounds none of which beats
    the best bound before them by more than ``min_delta`` nats per data set.

    The rule reads the recorded validation bounds alone (the validation batch and its particles are seeded),
    so a seeded run stops at the same step every time, and a resumed run where the uninterrupted one would.
    """

    patience: int = 5
    min_delta: float = 0.01

    def __post_init__(self) -> None:
        check_positive_int(self.patience, "early_stopping patience")
        if not (isinstance(self.min_delta, (int, float)) and math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ValueError(f"early_stopping min_delta must be a finite number >= 0, got {self.min_delta!r}")

    @classmethod
    def of(cls, value: EarlyStopping | dict | None) -> EarlyStopping | None:
        """``value`` as an EarlyStopping (a dict of its fields, e.g. from a card, or None for no early stopping)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"early_stopping must be an EarlyStopping, a dict of its fields or None, got "
                        f"{type(value).__name__}")

    def plateaued(self, bounds: list[float]) -> bool:
        """Whether the last ``patience`` bounds of ``bounds`` (in validation order) have stopped improving."""
        if len(bounds) <= self.patience:
            return False
        return max(bounds[-self.patience:]) < max(bounds[:-self.patience]) + self.min_delta


def _schedule(total_steps: int, warmup: int, final_fraction: float) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to ``final_fraction`` of the learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def simulate_batch(model, batch_size: int, num_points, seed: int, device, size_law: str = "uniform") -> Any:
    """``model.simulate`` of a training or validation batch on ``device``, N in ``num_points`` (None: the
    model's default) by ``size_law``."""
    kwargs = {} if num_points is None else {"num_points": tuple(num_points)}
    if size_law != "uniform":  # only then: a model of the ClusteringModel protocol need not know the keyword
        kwargs["size_law"] = size_law
    return model.simulate(batch_size, seed=seed, **kwargs).to(device)


def redraw_initial_weights(guide: ClusterwiseGuide, seed: int) -> None:
    """Give ``guide`` the initial weights its constructor draws when torch's RNG is seeded with ``seed``.

    The guide is built again from its ``config`` on a forked RNG and its weights copied in (in place: the
    parameter tensors stay the same objects), so every parameter gets its architecture's own initialisation,
    including those that no ``reset_parameters`` covers (attention seeds). A guide class that its config
    does not rebuild falls back to ``reset_parameters()`` of every submodule that has one, with a warning
    naming the parameters that none covers (they keep their values).
    """
    options = {key: value for key, value in guide.config.items() if key != "type"}
    with forked_rng(seed):
        try:
            fresh = type(guide)(**options)
        except TypeError:
            fresh = None
        if fresh is not None and _same_layout(fresh, guide):
            with torch.no_grad():
                guide.load_state_dict(fresh.state_dict())
            return
        covered: set[int] = set()
        for module in guide.modules():
            if module is not guide and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                covered.update(id(p) for p in module.parameters())
    missed = [name for name, p in guide.named_parameters() if id(p) not in covered]
    if missed:
        warn_user(f"{type(guide).__name__}(**config) does not rebuild this guide, and no reset_parameters "
                  f"covers {len(missed)} of its parameters ({', '.join(missed[:3])}, ...): those keep their "
                  "initial values, which the seed does not fix", UserWarning)


def _same_layout(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def validation_elbo(model_fn, guide_fn, batch, num_particles: int) -> float:
    """Per-data-set IWAE bound of a fixed batch (higher is better)."""
    with torch.no_grad():
        return -ClusterwiseIWAE(num_particles).loss(model_fn, guide_fn, batch)


def train(
    model: Any,
    guide: ClusterwiseGuide,
    *,
    steps: int,
    batch_size: int = 32,
    num_particles: int = 40,
    lr: float = 5e-4,
    device: str | torch.device | None = None,
    seed: int | None = None,
    rank: int = 0,
    loss: str = "iwae",
    dreg: bool = False,
    num_points: tuple[int, int] | None = None,
    size_law: str = "uniform",
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
    reinitialize: bool | None = None,
    early_stopping: EarlyStopping | dict | None = None,
    max_minutes: float | None = None,
    record: dict[str, Any] | None = None,
) -> TrainingHistory:
    """Train ``guide`` on simulations of ``model`` for ``steps`` SVI steps; returns the history.

    Args:
        model: a clustering model (:class:`~pyro_acp.protocols.ClusteringModel`: ``simulate``, ``config``).
        guide: an ACP / ACPS / CCP guide whose ``data_dim`` matches the model's.
        device: ``None`` / ``"cpu"``, ``"cuda"`` or ``"cuda:<i>"``; a device this machine lacks is a ValueError
            before any work.
        seed: an integer makes the run reproducible (and leaves torch's global RNG as it was); None draws one.
            With an integer seed an untrained guide also gets its initial weights from the seed (see
            ``reinitialize``), so two calls on two freshly built guides give bit-identical losses and weights.
        rank: the process rank in data-parallel training: rank r simulates its own batches and particles
            from ``SeedStream(seed, r)``. Under a process group of P > 1 processes the group's rank is used
            (a different ``rank`` is an error); the validation batch is the same on every rank.
        loss: ``"iwae"`` (per-step importance-weighted bound, ``num_particles`` particles) or ``"elbo"``
            (``pyro.infer.Trace_ELBO`` with vectorised particles).
        num_points: the range [lo, hi) of N of the training data sets (None: the model's default).
        size_law: how each training data set's N is drawn in that range (``pyro_acp.models.base.SIZE_LAWS``):
            ``"uniform"``, ``"log-uniform"`` (P(N = n) about 1 / n, so every size contributes about as many
            points to the loss; for guides that must also be right on small tables) or ``"mixed"`` (each data
            set by one or the other with probability 1/2). Recorded in the card
            when it is not uniform; the validation batch is drawn by the same law.
        checkpoint: path of a ``.pt`` file written every ``checkpoint_every`` steps and at the end
            (JSON card beside it); with ``resume=True`` training continues from it.
        compile: fuse the join network with ``torch.compile`` while training (about 1.3x faster steps on
            CPU after a few seconds of compiling; needs a C++ compiler, falls back with a warning otherwise).
        callback: called as ``callback(step, history)`` after every step (e.g. for evaluation); on every
            rank in data-parallel training (an exception on one rank alone stops it, and the others then end
            with a ``ProcessLostError`` at their next step).
        reinitialize: whether the guide's weights are redrawn before training. ``None`` (default): when
            ``seed`` is an integer, the guide is untrained (``guide.trained_for is None``: no training
            recorded on it) and ``resume`` is False. The weights become those its constructor draws with
            torch's RNG seeded by ``SeedStream(seed).seed_for(0, INITIAL_WEIGHTS)`` (rank 0's stream on every
            rank, so all ranks start alike). A guide trained already (by ``train`` or loaded from a
            checkpoint) is never redrawn, so resuming stays bit for bit. Pass ``False`` to keep weights you
            loaded by hand into a fresh guide (or set its ``trained_for``), ``True`` to redraw them always.
        early_stopping: stop when the validation bound stops improving (:class:`EarlyStopping`: patience in
            validation rounds and a minimum improvement; needs ``validate_every`` > 0). Deterministic given
            the seed, and a resumed run stops where the uninterrupted one would.
        max_minutes: a wall-clock budget: training stops after the first step that ends past it, with one
            last validation round (the time a resumed run spent before counts). Plan ``steps`` (and so the
            learning-rate schedule) for what fits the budget; :func:`pyro_acp.inference.on_demand.train_for_model`
            measures that.
        record: JSON-able facts added to the card's ``training`` section (e.g. the up-front time estimate).

    A run that stops early (either rule) writes its last checkpoint as a complete one: the card's
    ``training.steps`` is the step it stopped at, with ``training.planned_steps`` and ``training.stopped``
    (the reason) beside it; ``history.stopped`` holds the reason.

    Data-parallel training: when torch.distributed's default process group has P > 1 processes (e.g.
    under ``torchrun``), every rank simulates its share of the global batch of ``batch_size`` data sets
    (``batch_size // P``, one more on the first ``batch_size % P`` ranks) and the gradients are combined as
    those of the global batch's mean loss (:mod:`pyro_acp.inference.distributed`), so every rank applies
    the same update. Rank 0 alone validates, shows the progress bar and writes the checkpoint (with every
    rank's RNG state: resuming with the same P continues bit for bit, with another P it continues from the
    same weights and optimiser). A rank that dies or stops answering ends training on every rank with a
    :class:`~pyro_acp.inference.distributed.ProcessLostError`; the last checkpoint stays valid.

    The guide's ``trained_for`` is set to ``model.config()``: :func:`pyro_acp.infer` then refuses it for
    another model, as it refuses a checkpoint whose card records another model.
    """
    model = as_clustering_model(model)  # a plain Pyro program becomes a model (pyro_acp.models.program)
    steps = check_int(steps, "steps", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    num_particles = check_positive_int(num_particles, "num_particles")
    loss = check_choice(loss, "loss", ("iwae", "elbo"))
    size_law = check_choice(size_law, "size_law", SIZE_LAWS)
    rank = check_int(rank, "rank", minimum=0)
    if reinitialize is not None and not isinstance(reinitialize, bool):
        raise ValueError(f"reinitialize must be None, True or False, got {reinitialize!r}")
    if guide.data_dim != model.data_dim:
        raise ValueError(f"the guide's data_dim={guide.data_dim} does not match the model's {model.data_dim}")
    early_stopping = EarlyStopping.of(early_stopping)
    if early_stopping is not None and not validate_every:
        raise ValueError("early_stopping needs validation rounds: pass validate_every > 0")
    if max_minutes is not None and not (isinstance(max_minutes, (int, float)) and max_minutes > 0
                                        and math.isfinite(max_minutes)):
        raise ValueError(f"max_minutes must be a positive number of minutes, got {max_minutes!r}")
    if resume and (checkpoint is None or not Path(checkpoint).exists()):
        raise ValueError(f"cannot resume: checkpoint {checkpoint} does not exist")
    device = check_device(device)
    parallel = DataParallel.current(batch_size, device)
    root = resolve_seed(seed)
    if parallel is not None:
        if rank not in (0, parallel.rank):
            raise ValueError(f"rank={rank} disagrees with this process's rank {parallel.rank} in the process group")
        if early_stopping is not None or max_minutes is not None:
            raise ValueError("early_stopping and max_minutes stop a single process; data-parallel ranks would "
                             "disagree on when to stop: train with a fixed number of steps")
        rank, device = parallel.rank, parallel.device
        root = parallel.broadcast_object(root, "the seed")  # seed=None draws differently on every rank
    stream = SeedStream(root, rank)
    settings = {"steps": steps, "batch_size": batch_size, "num_particles": num_particles, "lr": lr,
                "seed": stream.root, "loss": loss, "dreg": dreg, "num_points": num_points, "clip_norm": clip_norm}
    if size_law != "uniform":  # cards of uniform runs stay as they were
        settings["size_law"] = size_law
    settings.update(validate_every=validate_every, validation_size=validation_size, **(record or {}))
    if early_stopping is not None:
        settings["early_stopping"] = asdict(early_stopping)
    if max_minutes is not None:
        settings["max_minutes"] = max_minutes
    if parallel is not None:
        parallel.check_same({**settings, "model": model.config(), "guide": guide.config, "resume": resume,
                             "checkpoint_every": checkpoint_every, "warmup_steps": warmup_steps})
    settings["world_size"] = 1 if parallel is None else parallel.world_size
    if reinitialize or (reinitialize is None and seed is not None and guide.trained_for is None and not resume):
        redraw_initial_weights(guide, SeedStream(stream.root).seed_for(0, INITIAL_WEIGHTS))
    local_batch = batch_size if parallel is None else parallel.batch_size
    lead = parallel is None or parallel.rank == 0  # validates, shows progress, writes checkpoints
    guide.to(device)
    if parallel is not None and not resume:  # e.g. seed=None: every rank built its own initial weights
        parallel.broadcast_weights(guide)
    with pyro.get_param_store().scope(), forked_rng(stream.seed_for(0, PARTICLES), device):
        elbo = ClusterwiseIWAE(num_particles, dreg=dreg) if loss == "iwae" else Trace_ELBO(
            num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1
        )
        warmup = min(200, max(1, steps // 20)) if warmup_steps is None else max(1, warmup_steps)
        schedule = _schedule(steps, warmup, final_lr_fraction)
        optimizer = pyro.optim.LambdaLR(
            {"optimizer": torch.optim.Adam, "optim_args": {"lr": lr}, "lr_lambda": schedule},
            clip_args={"clip_norm": clip_norm},
        )
        if parallel is None:
            svi = SVI(guide.model, guide.guide, optimizer, elbo)
        else:
            svi = SVI(guide.model, guide.guide, optimizer, elbo.loss,
                      loss_and_grads=parallel.loss_and_grads(elbo.loss_and_grads, list(guide.parameters())))
        history, start = TrainingHistory(), 0
        if resume:
            start, history = _restore(checkpoint, guide, optimizer, device, stream, schedule)
        validation = None
        if lead and validate_every:
            validation = simulate_batch(model, validation_size, num_points,
                                        SeedStream(stream.root).seed_for(0, VALIDATION_BATCH), device, size_law)
        began, saved = time.perf_counter() - history.wall_time, start
        if start < steps:  # from now on the guide is this model's (infer refuses it for another model)
            guide.trained_for = model.config()
        guide.compile_join(compile)
        try:
            bar = tqdm(range(start, steps), initial=start, total=steps, disable=not (progress_bar and lead),
                       desc="training guide")
            for step in bar:
                batch = simulate_batch(model, local_batch, num_points, stream.seed_for(step, TRAINING_BATCHES),
                                       device, size_law)
                try:
                    value = svi.step(batch)
                except ProcessLostError as err:
                    raise ProcessLostError(f"{err} (at step {step}); {_kept(checkpoint, saved, checkpoint_every)}"
                                           ) from None
                if not math.isfinite(value):
                    raise RuntimeError(f"training diverged at step {step} (loss {value}); the last checkpoint "
                                       "is kept")
                optimizer.step()
                history.steps.append(step)
                history.loss.append(value)
                last = step + 1 == steps
                if not last and max_minutes is not None and time.perf_counter() - began >= 60 * max_minutes:
                    history.stopped, last = "time budget", True  # validated once more, as at the end of a run
                if validation is not None and ((step + 1) % validate_every == 0 or last):
                    history.validation_steps.append(step + 1)
                    history.validation_elbo.append(
                        validation_elbo(guide.model, guide.guide, validation, num_particles))
                    if not last and early_stopping is not None and early_stopping.plateaued(history.validation_elbo):
                        history.stopped = "validation"
                history.wall_time = time.perf_counter() - began
                if history.stopped is not None:  # the run ends here, its checkpoint complete
                    last = True
                    settings.update(steps=step + 1, planned_steps=steps, stopped=history.stopped)
                bar.set_postfix(elbo=f"{-value:.2f}",
                                val=f"{history.validation_elbo[-1]:.2f}" if history.validation_elbo else "-")
                if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or last):
                    rng_states = parallel.gather_rng_states() if parallel is not None else None
                    if lead:
                        _save(checkpoint, guide, model, optimizer, history, settings, step + 1, device, rng_states)
                    saved = step + 1
                if callback is not None:
                    callback(step, history)
                if history.stopped is not None:
                    break
            if parallel is not None:  # every rank returns once rank 0 has written the last checkpoint
                parallel.barrier("waiting for the last checkpoint")
        finally:
            guide.compile_join(False)
    return history


def _kept(checkpoint, saved: int, every: int) -> str:
    if checkpoint is None:
        return "no checkpoint was asked for"
    return f"the last checkpoint, {checkpoint} after {saved} steps, is kept" if saved else \
        f"no checkpoint was written yet (the first is due after {every} steps)"


_PYRO_SEPARATOR = "$$$"  # pyro.module names a module's parameters "<module name>$$$<parameter name>"


def _by_parameter_name(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """Optimiser states keyed by the guide's own parameter names, without the Pyro module name (unique per
    guide instance, so a checkpoint resumes into another instance; older checkpoints used a fixed name)."""
    return {key.split(_PYRO_SEPARATOR, 1)[-1]: value for key, value in optimizer_state.items()}


def _save(path, guide, model, optimizer, history, settings, step, device, rng_states=None) -> None:
    """``rng_states``: every rank's (CPU, CUDA or None) RNG states stacked by rank, in data-parallel training."""
    state = {
        "step": step,
        "optimizer": _by_parameter_name(optimizer.get_state()),
        "torch_rng": torch.get_rng_state(),
        "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in history.to_dict().items()
                    if isinstance(v, list)},
        "wall_time": history.wall_time,
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    if rng_states is not None:
        state["rank_rng"] = rng_states[0]
        if rng_states[1] is not None:
            state["rank_cuda_rng"] = rng_states[1]
    metadata = {
        "model": model.config(),
        "training": {**settings, "completed_steps": step, "wall_time_s": round(history.wall_time, 1),
                     "device": str(device)},
        "validation_elbo": history.validation_elbo[-1] if history.validation_elbo else None,
    }
    save_checkpoint(path, guide, metadata, state)


def _continue_schedule(state: dict[str, Any], schedule: Callable[[int], float]) -> dict[str, Any]:
    """One parameter's saved (scheduler, optimiser) state with the rate ``LambdaLR`` would set at its step
    (a state without a scheduler is returned as it is)."""
    scheduler = state.get("scheduler") if isinstance(state, dict) else None
    if scheduler is None or "optimizer" not in state:
        return state
    rates = [base * schedule(scheduler["last_epoch"]) for base in scheduler["base_lrs"]]
    scheduler["_last_lr"] = rates
    for group, rate in zip(state["optimizer"]["param_groups"], rates, strict=True):
        group["lr"] = rate
    return state


def _restore(path, guide, optimizer, device, stream: SeedStream, schedule: Callable[[int], float]
             ) -> tuple[int, TrainingHistory]:
    """Load weights, optimiser and RNG state from a checkpoint written by :func:`train`.

    The learning rate of the first resumed step is recomputed from this run's ``schedule`` (the checkpoint
    holds the rate its own schedule set, which differs when ``steps``, the total, was raised for the resume;
    for the same total it is the same number, so an interrupted run still resumes bit for bit).

    Rank r takes the RNG state rank r saved (rank 0's is the single-process one); a rank the checkpoint has
    none for (resuming with more processes) is seeded from its stream at the step it starts from."""
    load_guide(path, guide, map_location=device)
    payload = read_payload(path, map_location="cpu")
    if "training" not in payload:
        raise ValueError(f"checkpoint {path} holds weights only, no training state to resume from")
    state = payload["training"]
    optimizer.set_state({f"{guide.pyro_name}{_PYRO_SEPARATOR}{name}": _continue_schedule(value, schedule)
                         for name, value in _by_parameter_name(state["optimizer"]).items()})
    rank, start = stream.rank, int(state["step"])
    cpu_states = state.get("rank_rng", state["torch_rng"].unsqueeze(0))
    cuda_states = state.get("rank_cuda_rng", state["cuda_rng"].unsqueeze(0) if "cuda_rng" in state else None)
    if rank < len(cpu_states):
        torch.set_rng_state(cpu_states[rank])
    else:
        torch.manual_seed(stream.seed_for(start, PARTICLES))
    if device.type == "cuda":
        if cuda_states is not None and rank < len(cuda_states):
            torch.cuda.set_rng_state(cuda_states[rank], device)
        else:
            torch.cuda.manual_seed(stream.seed_for(start, PARTICLES))
    hist = state["history"]
    history = TrainingHistory(
        steps=[int(s) for s in hist["steps"].tolist()],
        loss=hist["loss"].tolist(),
        validation_steps=[int(s) for s in hist["validation_steps"].tolist()],
        validation_elbo=hist["validation_elbo"].tolist(),
        wall_time=float(state["wall_time"]),
    )
    return start, history
