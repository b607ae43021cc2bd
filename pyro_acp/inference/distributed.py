"""Data-parallel training on ``torch.distributed`` (``gloo`` on CPU, ``nccl`` on GPU), launched by torchrun.

Each of the P processes (ranks) simulates its own share of the global batch from its own seed stream
(``SeedStream(seed, rank)``), runs Pyro's SVI step on it, and the gradients are averaged over the ranks
before the optimiser step, so every rank applies the same update to the same weights and the global
batch is ``batch_size`` whatever P is. Rank 0 alone validates, draws the progress bar and writes the
checkpoint and its card.

**Why an explicit all-reduce and not DistributedDataParallel.** DDP averages gradients only during a
backward pass of an output of *its own* ``forward`` (``DDP.forward`` arms the reducer's hooks). Pyro's
``SVI.step`` runs the guide's model and guide programs inside the ELBO and calls ``backward`` itself, on a
surrogate loss that differs between ELBOs (the IWAE bound, its DReG surrogate, ``Trace_ELBO``'s score
terms), so there is no single ``forward`` to wrap without writing each ELBO's surrogate a second time. An
all-reduce right after the ELBO's backward (:meth:`DataParallel.loss_and_grads`) does what DDP's reducer
does — one ``torch.distributed.all_reduce`` of all gradients, here in one flat buffer — for every ELBO
unchanged, and leaves Pyro's parameter capture, gradient clipping, learning-rate schedule and optimiser
exactly as in one process. What it gives up is DDP's overlap of communication with the backward pass (a
speed-up for large models on many GPUs, not a change in the result).

The gradient of rank r's loss (a mean over its B_r data sets) is weighted by B_r / B before the sum, so
the update is the gradient of the mean over the global batch, also when B is not a multiple of P (the
first ``B % P`` ranks then simulate one data set more).

A rank that dies breaks its connections, and a rank that hangs stops answering: the others' all-reduce
then fails at once or after the process group's timeout, and :class:`ProcessLostError` ends training on
every rank with a message; the last checkpoint, written atomically, stays valid.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pyro_acp.validation import check_positive, check_positive_int

#: default seconds a rank waits for the others (a collective, a barrier) before the job is ended
DEFAULT_TIMEOUT_S = 300.0

_timeouts: dict[int, float] = {}  # id(process group) -> its timeout in seconds, when set up here


class ProcessLostError(RuntimeError):
    """Another training process died, or did not answer within the process group's timeout."""


def shard_sizes(batch_size: int, world_size: int) -> list[int]:
    """The global batch split over ``world_size`` ranks: ``batch_size // P`` data sets each, and one more on
    each of the first ``batch_size % P`` ranks (so the shares sum to ``batch_size``)."""
    batch_size = check_positive_int(batch_size, "batch_size")
    world_size = check_positive_int(world_size, "world_size")
    if batch_size < world_size:
        raise ValueError(f"batch_size={batch_size} is smaller than the {world_size} training processes: every "
                         "process needs at least one data set per step; raise batch_size or use fewer processes")
    base, extra = divmod(batch_size, world_size)
    return [base + (rank < extra) for rank in range(world_size)]


def is_data_parallel() -> bool:
    """Whether torch.distributed's default process group is set up with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda`` without an index becomes ``cuda:LOCAL_RANK`` (one GPU per process)."""
    if device.type == "cuda" and device.index is None:
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank() if dist.is_initialized() else 0))
        return torch.device("cuda", local % torch.cuda.device_count())
    return device


@dataclass(frozen=True)
class DataParallel:
    """This process's part in data-parallel training over the default process group."""

    rank: int
    world_size: int
    global_batch_size: int
    batch_size: int  #: the data sets this rank simulates per step
    device: torch.device
    timeout_s: float | None

    @classmethod
    def current(cls, batch_size: int, device: torch.device) -> DataParallel | None:
        """This rank's share when the default process group has more than one process; None otherwise."""
        if not is_data_parallel():
            return None
        backend = dist.get_backend()
        if backend == "nccl" and device.type != "cuda":
            raise ValueError("the process group uses nccl, which moves CUDA tensors only: train with "
                             "device='cuda', or set up the group with the gloo backend for CPU training")
        rank, world_size = dist.get_rank(), dist.get_world_size()
        shares = shard_sizes(batch_size, world_size)
        return cls(rank, world_size, batch_size, shares[rank], local_device(device),
                   _timeouts.get(id(dist.group.WORLD)))

    @property
    def weight(self) -> float:
        """This rank's share of the global batch, B_r / B: the weight of its loss and gradients."""
        return self.batch_size / self.global_batch_size

    # ------------------------------------------------------------------ collectives
    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as err:  # gloo / nccl report a lost peer or a timeout as RuntimeError subclasses
            limit = f"{self.timeout_s:g} s" if self.timeout_s is not None else "the process group's timeout"
            raise ProcessLostError(
                f"rank {self.rank} of {self.world_size} lost contact with the other training processes while "
                f"{what}: one of them died or did not answer within {limit} "
                f"({type(err).__name__}: {' '.join(str(err).split())[:200]})"
            ) from None

    def broadcast_object(self, value: Any, what: str) -> Any:
        """Rank 0's ``value`` on every rank."""
        box = [value]
        with self._collective(f"agreeing on {what}"):
            dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def broadcast_weights(self, module: torch.nn.Module) -> None:
        """Copy rank 0's weights (and buffers) into ``module`` on every rank, in place."""
        with self._collective("sharing rank 0's initial weights"), torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def check_same(self, settings: dict[str, Any]) -> None:
        """Raise on every rank when the ranks were started with different training settings."""
        gathered: list[Any] = [None] * self.world_size
        with self._collective("comparing the training settings"):
            dist.all_gather_object(gathered, settings)
        for rank, other in enumerate(gathered):
            if other != gathered[0]:
                differ = sorted(k for k in set(other) | set(gathered[0]) if other.get(k) != gathered[0].get(k))
                raise ValueError(f"the training processes were started with different settings: rank {rank} "
                                 f"differs from rank 0 in {', '.join(differ)}; start every rank with the same "
                                 "arguments")

    def loss_and_grads(self, elbo_loss_and_grads: Callable[..., float], parameters: Sequence[torch.Tensor]
                       ) -> Callable[..., float]:
        """A ``loss_and_grads`` for ``pyro.infer.SVI``: the ELBO's own (loss and backward on this rank's
        share), then one all-reduce that leaves on every rank the global batch's loss and gradients,
        sum_r (B_r / B) x (rank r's). A parameter with no gradient on any rank keeps none (as in one
        process); one with a gradient on some rank gets the weighted sum (the others contributing 0)."""
        parameters = list(parameters)
        sizes = [p.numel() for p in parameters]

        def reduced(model, guide, *args, **kwargs) -> float:
            value = float(elbo_loss_and_grads(model, guide, *args, **kwargs))
            first = parameters[0]
            grads = [p.grad.reshape(-1) if p.grad is not None else first.new_zeros(p.numel()) for p in parameters]
            has_grad = first.new_tensor([float(p.grad is not None) for p in parameters])
            buffer = torch.cat([torch.cat(grads) * self.weight, first.new_tensor([value * self.weight]), has_grad])
            with self._collective("averaging gradients"):
                dist.all_reduce(buffer)
            flat, loss, present = buffer.split([sum(sizes), 1, len(parameters)])
            for p, grad, used in zip(parameters, flat.split(sizes), present.tolist(), strict=True):
                if used:
                    if p.grad is None:
                        p.grad = grad.view_as(p).clone()
                    else:
                        p.grad.copy_(grad.view_as(p))
            return float(loss)

        return reduced

    def gather_rng_states(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every rank's torch RNG state stacked by rank (P, L), and the CUDA ones when training on CUDA."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        gathered: list[Any] = [None] * self.world_size
        with self._collective("gathering the random states for the checkpoint"):
            dist.all_gather_object(gathered, (torch.get_rng_state(), cuda))
        cpu_states = torch.stack([state for state, _ in gathered])
        cuda_states = torch.stack([state for _, state in gathered]) if cuda is not None else None
        return cpu_states, cuda_states

    def barrier(self, what: str) -> None:
        """Wait for every rank (gloo's monitored barrier names the ranks that do not come)."""
        with self._collective(what):
            if dist.get_backend() == "gloo" and self.timeout_s is not None:
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=self.timeout_s))
            else:
                dist.barrier()

    def _object_device(self) -> torch.device | None:
        return self.device if dist.get_backend() == "nccl" else None


# ---------------------------------------------------------------------- setting up and launching


@contextlib.contextmanager
def process_group_from_environment(device: str | torch.device | None = None,
                                   timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[bool]:
    """Set up (and take down after the block) the default process group that torchrun describes in the
    environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): ``nccl`` for a CUDA device,
    else ``gloo``, with collectives that give up after ``timeout_s`` seconds. Yields whether the run is
    data-parallel (False, and nothing is set up, outside torchrun or with one process)."""
    timeout_s = check_positive(timeout_s, "timeout_s")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or dist.is_initialized():
        yield is_data_parallel()
        return
    cuda = torch.device(device).type == "cuda" if device is not None else False
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if cuda else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except RuntimeError as err:  # e.g. a rank that never came within the timeout
        raise ProcessLostError(
            f"rank {os.environ.get('RANK', '?')} could not set up the {backend} process group of {world_size} "
            f"processes within {timeout_s:g} s ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
        ) from None
    _timeouts[id(dist.group.WORLD)] = timeout_s
    try:
        yield True
    finally:
        _timeouts.pop(id(dist.group.WORLD), None)
        dist.destroy_process_group()


def environment_rank() -> int:
    """This process's global rank as torchrun sets it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def launch(module_args: Sequence[str], nproc: int, *, module: str = "pyro_acp.cli") -> None:
    """Run ``python -m module *module_args`` in ``nproc`` processes on this machine, as
    ``torchrun --standalone --nproc-per-node nproc -m module ...`` would (torch's elastic launcher: a
    rendezvous on a free local port, no restarts; when one process fails the others are stopped).

    ``module_args`` go to the processes as they are (not through torchrun's option parser, which would take
    e.g. ``--nproc`` for an abbreviation of its own ``--nproc-per-node``). Each process gets
    ``OMP_NUM_THREADS = cpu_count // nproc`` threads unless the variable is set. Raises a RuntimeError
    naming the first process that failed and how."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    nproc = check_positive_int(nproc, "nproc")
    args = get_args_parser().parse_args(["--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc),
                                         "--max-restarts", "0", "--module", module])
    # what torchrun does for --standalone: a c10d rendezvous store on a free local port
    args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = threads or str(max(1, (os.cpu_count() or 1) // nproc))
    quiet = logging.getLogger("torch.distributed.elastic")  # its banners; the failure is reported below
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        config, command, command_args = config_from_args(args)
        elastic_launch(config=config, entrypoint=command)(*command_args, *module_args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else \
            f"exited with status {failure.exitcode}"
        others = len(err.failures) - 1
        raise RuntimeError(f"training process rank {rank} (pid {failure.pid}) {how}"
                           f"{f' ({others} more failed or were stopped)' if others else ''}; the job was ended and "
                           "the last checkpoint written is kept") from None
    finally:
        quiet.setLevel(level)
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = threads
