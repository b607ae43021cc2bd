"""Data-parallel training on torch.distributed (issue 19 item 1), with 2 gloo processes on this CPU.

The processes are spawned by the tests (torch.multiprocessing, a free local port, the environment torchrun
would set). To compare 2 processes with 1 *exactly* (within floating point), both must see the same global
batch and the same random numbers: :class:`GlobalBatches` serves step t's fixed global batch whole to one
process and split (3 + 2 data sets: an uneven split, so the B_r / B weighting is checked too) to two, and the
guide's encoder q is a point mass (:class:`PointMassACPS`), which takes the particles' randomness out of the
bound (otherwise each process draws its own particles and the runs differ by Monte-Carlo noise, not rounding).

The tests that start processes are marked slow: each takes 10-40 s on this loaded 2-core machine, most of
it two Python processes importing torch and Pyro at once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch
import torch.multiprocessing as mp

from pyro_acp.guides import ACPS
from pyro_acp.inference.distributed import ProcessLostError, shard_sizes
from pyro_acp.inference.training import INITIAL_WEIGHTS, TRAINING_BATCHES, redraw_initial_weights, train
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.pretrained.checkpoint import load_guide, read_card
from pyro_acp.seeding import SeedStream

GLOBAL_BATCH, WORLD, SEED = 5, 2, 11
SETTINGS = {"batch_size": GLOBAL_BATCH, "num_particles": 1, "lr": 1e-2, "validate_every": 0, "progress_bar": False,
            "seed": SEED, "checkpoint_every": 2}


class PointMassACPS(ACPS):
    """ACPS whose encoder q(z | joins) is a point mass at its mean: a deterministic bound and gradient."""

    def posterior(self, enc):
        return dist.Delta(super().posterior(enc).loc)


class GlobalBatches:
    """A model that serves fixed global batches: step t's whole batch for rank 0's seed of step t at the
    global size, and rank r's share of it (``shard_sizes``) for rank r's seed of step t at the share's size."""

    data_dim = 2

    def __init__(self, steps: int = 4):
        self.base = CRPGaussianMixture()
        self.batches = [self.base.simulate(GLOBAL_BATCH, num_points=(3, 10), seed=100 + t) for t in range(steps)]
        self.owner = {SeedStream(SEED, r).seed_for(t, TRAINING_BATCHES): (r, t)
                      for r in range(WORLD) for t in range(steps)}

    def config(self):
        return self.base.config()

    def simulate(self, batch_size, *, seed, num_points=None):
        rank, step = self.owner[seed]
        if batch_size == GLOBAL_BATCH:
            return self.batches[step]
        shares = shard_sizes(GLOBAL_BATCH, WORLD)
        begin = sum(shares[:rank])
        assert batch_size == shares[rank]
        return self.batches[step].select(list(range(begin, begin + batch_size)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, folder: str, scenario: str, timeout_s: float) -> None:
    """One training process, set up as torchrun sets one up; writes its result or its error to ``folder``."""
    from pyro_acp.inference.distributed import process_group_from_environment

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    out = Path(folder)
    try:
        with process_group_from_environment(timeout_s=timeout_s):
            callback = None
            if scenario in ("die", "hang"):
                def callback(step, history):
                    if rank == 1 and step == 1:  # right after the checkpoint of step 2
                        if scenario == "die":
                            os._exit(3)
                        time.sleep(120)
            history = train(GlobalBatches(), PointMassACPS(2, 16), steps=2 if scenario == "same" else 4,
                            checkpoint=out / "guide.pt", callback=callback, resume=scenario == "resume", **SETTINGS)
            (out / f"loss{rank}.json").write_text(json.dumps(history.loss))
    except BaseException as err:  # noqa: BLE001 - reported to the test
        (out / f"error{rank}.txt").write_text(f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
        raise SystemExit(1) from None


def _run(folder: Path, scenario: str, timeout_s: float = 30.0, wait_s: float = 50.0) -> dict[int, int | None]:
    """Start 2 processes; wait for rank 0 (at most ``wait_s``); end the others; their exit codes."""
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(folder), scenario, timeout_s)) for r in range(WORLD)]
    for p in procs:
        p.start()
    procs[0].join(wait_s)
    codes = {}
    for rank, p in enumerate(procs):
        if rank:
            p.join(2.0)
        if p.is_alive():
            p.kill()
            p.join()
            codes[rank] = None
        else:
            codes[rank] = p.exitcode
    return codes


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """2 gloo processes train 2 steps on the global batches, writing a checkpoint."""
    folder = tmp_path_factory.mktemp("two")
    began = time.perf_counter()
    codes = _run(folder, "same")
    errors = [f.read_text() for f in folder.glob("error*.txt")]
    assert codes == {0: 0, 1: 0} and not errors, (codes, errors)
    return folder, time.perf_counter() - began


def _close(a: PointMassACPS, b: PointMassACPS) -> None:
    """Equal weights within rounding (the weights move by ~2e-2 in these steps; rounding differences stay
    below 1e-5). Attention key biases are left out: their exact gradient is 0 (adding q.b_k to all of a
    query's logits leaves the softmax unchanged), so theirs is rounding noise, which Adam scales up to
    learning-rate-sized steps that differ from run to run (measured: 2e-4 to 1e-3 apart)."""
    a, b = a.state_dict(), b.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        if not name.endswith("fc_k.bias"):
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=2e-5, msg=name)


def test_shard_sizes_split_the_global_batch():
    assert shard_sizes(5, 2) == [3, 2] and shard_sizes(8, 4) == [2, 2, 2, 2] and sum(shard_sizes(33, 4)) == 33
    with pytest.raises(ValueError, match="smaller than the 3 training processes"):
        shard_sizes(2, 3)


@pytest.mark.slow
def test_two_processes_give_the_parameters_of_one_on_the_same_global_batch(two_processes):
    folder, _ = two_processes
    torch.set_num_threads(1)
    one = PointMassACPS(2, 16)
    history = train(GlobalBatches(), one, steps=2, **SETTINGS)
    two, card = load_guide(folder / "guide.pt", PointMassACPS(2, 16))
    assert card["training"]["world_size"] == 2 and card["training"]["completed_steps"] == 2
    _close(two, one)
    assert json.loads((folder / "loss0.json").read_text()) == pytest.approx(history.loss, rel=1e-5)
    assert json.loads((folder / "loss1.json").read_text()) == json.loads((folder / "loss0.json").read_text())
    start = PointMassACPS(2, 16)
    redraw_initial_weights(start, SeedStream(SEED).seed_for(0, INITIAL_WEIGHTS))
    moved = max((a - b).abs().max().item() for a, b in zip(
        start.state_dict().values(), one.state_dict().values(), strict=True))
    assert moved > 1e-2  # the weights did move: equal parameters are not just equal initial weights


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(two_processes, tmp_path):
    folder, _ = two_processes
    torch.set_num_threads(1)
    shutil.copy(folder / "guide.pt", tmp_path / "guide.pt")
    shutil.copy(folder / "guide.json", tmp_path / "guide.json")
    resumed = PointMassACPS(2, 16)
    history = train(GlobalBatches(), resumed, steps=4, checkpoint=tmp_path / "guide.pt", resume=True, **SETTINGS)
    straight = PointMassACPS(2, 16)
    reference = train(GlobalBatches(), straight, steps=4, **SETTINGS)
    assert history.steps == [0, 1, 2, 3]
    assert history.loss == pytest.approx(reference.loss, rel=1e-5)
    _close(resumed, straight)
    assert read_card(tmp_path / "guide.pt")["training"]["completed_steps"] == 4


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_in_two_processes(tmp_path):
    """2 steps in 1 process, 2 more in 2 processes: where 4 steps in 1 process end (rank 1, which the
    checkpoint holds no RNG state for, starts from its own stream)."""
    torch.set_num_threads(1)
    train(GlobalBatches(), PointMassACPS(2, 16), steps=2, checkpoint=tmp_path / "guide.pt", **SETTINGS)
    codes = _run(tmp_path, "resume")
    errors = [f.read_text() for f in tmp_path.glob("error*.txt")]
    assert codes == {0: 0, 1: 0} and not errors, (codes, errors)
    straight = PointMassACPS(2, 16)
    reference = train(GlobalBatches(), straight, steps=4, **SETTINGS)
    resumed, card = load_guide(tmp_path / "guide.pt", PointMassACPS(2, 16))
    assert card["training"]["completed_steps"] == 4 and card["training"]["world_size"] == 2
    assert json.loads((tmp_path / "loss0.json").read_text()) == pytest.approx(reference.loss, rel=1e-5)
    _close(resumed, straight)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["die", "hang"])
def test_a_rank_that_dies_or_hangs_ends_the_job_with_a_message_and_the_checkpoint_stays(tmp_path, scenario):
    began = time.perf_counter()
    codes = _run(tmp_path, scenario, timeout_s=4.0)
    elapsed = time.perf_counter() - began
    assert codes[0] == 1, codes  # rank 0 ended by itself, with an error (the test ends only rank 1)
    message = (tmp_path / "error0.txt").read_text().splitlines()[0]
    assert message.startswith(f"{ProcessLostError.__name__}: rank 0 of 2 lost contact"), message
    assert "(at step 2)" in message and "after 2 steps, is kept" in message, message
    if scenario == "hang":
        assert "4 s" in message, message
    assert elapsed < 45, elapsed
    _, card = load_guide(tmp_path / "guide.pt", PointMassACPS(2, 16))  # the last checkpoint is whole
    assert card["training"]["completed_steps"] == 2
    assert not list(tmp_path.glob(".guide.pt.*"))  # no half-written temporary left


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(c) for c in task.read_text().split()]
    return found


LAUNCH = [sys.executable, "-m", "pyro_acp.cli", "train", "--nproc", "2", "--hidden-dim", "16", "--batch-size", "4",
          "--num-particles", "2", "--num-points", "3", "10", "--validate-every", "0"]


@pytest.mark.slow
def test_the_launcher_trains_with_two_processes(tmp_path):
    """``pyro-acp train --nproc 2`` end to end (torch's elastic launcher starts the two processes)."""
    done = subprocess.run([*LAUNCH, "--steps", "2", "--output", str(tmp_path / "a.pt")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained 2 steps") == 1, done.stdout  # rank 0 alone reports
    assert read_card(tmp_path / "a.pt")["training"]["world_size"] == 2


@pytest.mark.slow
def test_the_launcher_reports_a_killed_rank_and_keeps_the_checkpoint(tmp_path):
    """A worker killed (SIGKILL) mid-run: the job ends with one line naming it, the checkpoint stays whole."""
    command = [*LAUNCH, "--steps", "100000", "--checkpoint-every", "2", "--output", str(tmp_path / "b.pt")]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:  # a file, not a pipe: the progress bar never blocks on a full pipe
        run = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=stderr)
        try:
            deadline = time.time() + 90
            while not (tmp_path / "b.json").exists() and time.time() < deadline:
                time.sleep(0.2)
            workers = _children(run.pid)
            assert len(workers) == 2, workers
            os.kill(workers[1], 9)
            run.wait(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
    err = log.read_text()
    assert run.returncode == 2, err
    # the last words (after the killed processes' progress bar, which may end without a newline)
    last = err[err.rindex("pyro-acp train: error: "):].strip()
    assert last.startswith("pyro-acp train: error: training process rank") and "SIGKILL" in last, err[-2000:]
    assert "\n" not in last and "Traceback" not in err, err[-2000:]
    _, card = load_guide(tmp_path / "b.pt")
    assert card["training"]["completed_steps"] % 2 == 0 and card["training"]["completed_steps"] >= 2


@pytest.mark.parametrize("argv, message", [
    (["--nproc", "0"], "--nproc must be a positive integer"),
    (["--nproc", "3", "--batch-size", "2"], "batch_size=2 is smaller than the 3 training processes"),
    (["--nproc", "2", "--timeout", "0"], "--timeout must be a positive number"),
])
def test_train_nproc_is_checked_before_any_process_starts(tmp_path, capsys, monkeypatch, argv, message):
    import pyro_acp
    from pyro_acp.cli import main
    from pyro_acp.inference import distributed

    def reached(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(distributed, "launch", reached)
    monkeypatch.setattr(pyro_acp, "train", reached)
    assert main(["train", "--steps", "2", "--output", str(tmp_path / "g.pt"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-acp train: error:") and message in err and "\n" not in err, err
    monkeypatch.setenv("WORLD_SIZE", "2")  # started by torchrun: --nproc would start processes twice
    assert main(["train", "--steps", "2", "--output", str(tmp_path / "g.pt"), "--nproc", "2"]) == 2
    assert "leave --nproc out" in capsys.readouterr().err
