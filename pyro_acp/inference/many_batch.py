"""The batched part of ``infer_many``: chunks of data sets sampled in one run of the guide and their
log-probability estimates computed in one batched call, every data set on its own random stream.

Jobs are sorted by size and cut into chunks that fill a budget of work (:func:`chunks`). A chunk is sampled
by :func:`~pyro_acp.inference.sampling.sample_partitions` seeing one data set per thread (:class:`ThreadView`:
the encodings are computed once per data row, a data set in one frame, and every draw is routed to its data
set's generator, :class:`~pyro_acp.inference.streams.PerDataSetDraws`); its distinct partitions are then
estimated by :func:`~pyro_acp.inference.log_prob.log_prob_estimates`, one call per estimator setting, again
each data set from its own generator (:func:`estimate_chunk`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pyro_acp.guides import ClusterwiseGuide
from pyro_acp.inference.frames import drawn_frames, framed, is_rotation_invariant, num_frames
from pyro_acp.inference.infer import per_sample, refine_target
from pyro_acp.inference.log_prob import LogProbEstimate, log_prob_estimates, log_prob_settings
from pyro_acp.inference.many_sources import Entry
from pyro_acp.inference.sampling import sample_partitions
from pyro_acp.inference.streams import PerDataSetDraws

#: default budget of work per chunk (padded width x (threads + ROW_COST x data rows)), by device type. On a CPU
#: the work is arithmetic and chunks past its caches only add memory traffic (benchmarks/bench_infer_many.py);
#: the CUDA figure is a guess, untested here
BATCH_POINTS = {"cpu": 2**16, "cuda": 2**22}
#: a data row (a data set in one frame) costs this many threads: it is encoded in full, and its keys and values
#: are projected again every round, where a thread only pools and scores its own candidates
ROW_COST = 16


@dataclass
class Job:
    """A checked data set ready for sampling: its data on the device, its generator and frames."""

    entry: Entry
    x: Tensor  # (N, D) on the device, default dtype
    seed: int
    generator: torch.Generator
    frames: Tensor | None
    notes: list[str]  # warnings raised for this data set (prior check, importance weights)

    @property
    def num_points(self) -> int:
        return self.x.shape[0]


class ThreadView:
    """A guide seen by :func:`sample_partitions` as one data set per thread (one sample each), while the work is
    done on the chunk's distinct data rows (one per data set and frame, as ``infer`` encodes them): encodings
    are computed once per row, each thread reads its row, and every round's draws are routed per data set."""

    def __init__(self, guide: ClusterwiseGuide, x_rows: Tensor, mask_rows: Tensor, row: Tensor, owner: Tensor,
                 draws: PerDataSetDraws):
        self.guide, self.x_rows, self.mask_rows, self.row, self.owner, self.draws = (
            guide, x_rows, mask_rows, row, owner, draws)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.guide, name)

    def encode_data(self, x: Tensor, mask: Tensor):
        return self.guide.encode_data(self.x_rows, self.mask_rows)

    def cluster_summaries(self, cluster_points: Tensor, dataset: Tensor, members: Tensor) -> Tensor:
        return self.guide.cluster_summaries(cluster_points, self.row[dataset], members)

    def sample_step(self, state, generator=None, sample_z: bool = True, sample_joins: bool = True) -> Tensor:
        with self.draws.rows(self.owner[state.thread]):
            return self.guide.sample_step(dataclasses.replace(state, dataset=self.row[state.dataset]),
                                          generator=generator, sample_z=sample_z, sample_joins=sample_joins)

    def order_clusters(self, clusters, generator=None) -> Tensor:
        with self.draws.rows(self.owner[clusters.dataset], points=False):
            return self.guide.order_clusters(dataclasses.replace(clusters, dataset=self.row[clusters.dataset]),
                                             generator=generator)


def padded_width(jobs: list[Job], guide: ClusterwiseGuide) -> int:
    """The chunk's point width: its largest N, moved past every other size a guide's draws may have (its
    config's integers), so the routing recognises the point dimension (extra padding is masked: exact)."""
    taken = {value for value in guide.config.values() if isinstance(value, int) and not isinstance(value, bool)}
    width = max(job.num_points for job in jobs)
    while width in taken:
        width += 1
    return width


def sample_chunk(guide: ClusterwiseGuide, jobs: list[Job], options: Any, ordered: bool) -> list[Tensor]:
    """Labels (S, N_b) of every data set of the chunk, from one batched run of the sampler."""
    device = jobs[0].x.device
    width, num_samples = padded_width(jobs, guide), options.num_samples
    x_rows, mask_rows, row_of_thread, count = [], [], [], 0
    for job in jobs:
        x = job.x.unsqueeze(0)
        if job.frames is not None:  # the data in each of its frames, rotated as infer rotates them
            index = torch.zeros(1, dtype=torch.long, device=device)
            x = framed(x, torch.ones(x.shape[:2], dtype=torch.bool, device=device), job.frames, index, index)[0]
        x_rows.append(torch.nn.functional.pad(x, (0, 0, 0, width - job.num_points)))
        mask_rows.append((torch.arange(width, device=device) < job.num_points).expand(x.shape[0], width))
        row_of_thread.append(count + torch.arange(num_samples, device=device) % x.shape[0])
        count += x.shape[0]
    x_rows, mask_rows = torch.cat(x_rows), torch.cat(mask_rows)
    owner = torch.arange(len(jobs), device=device).repeat_interleave(num_samples)
    row = torch.cat(row_of_thread)
    shared = torch.Generator(device=device).manual_seed(0)
    before = shared.get_state()
    draws = PerDataSetDraws(shared, [job.generator for job in jobs], [job.num_points for job in jobs], width)
    view = ThreadView(guide, x_rows, mask_rows, row, owner, draws)
    with draws:
        labels = sample_partitions(view, x_rows[row], 1, mask_rows[row], sample_z=options.sample_z,
                                   sample_joins=options.sample_joins, generator=shared, ordered=ordered)
    if not torch.equal(shared.get_state(), before):
        raise RuntimeError("a draw escaped the per-data-set random streams; call pyro_acp.infer per data set")
    labels = labels.view(len(jobs), num_samples, width)
    return [labels[b, :, : job.num_points] for b, job in enumerate(jobs)]


def frame_count(model: Any, num_points: int, options: Any) -> int:
    """The data rows (frames) :func:`~pyro_acp.inference.frames.frames_for` gives an N-point data set, known
    before its frames are drawn (1: the data as given)."""
    if options.symmetrize is False or not is_rotation_invariant(model):
        return 1
    return num_frames(num_points, options.num_samples)


def chunks(sizes: list[tuple[int, int]], budget: int, num_samples: int) -> Iterator[list[int]]:
    """Positions of data sets given as (points, data rows), sorted by size (stable) and cut greedily into chunks
    whose work, padded width x (threads + ROW_COST x data rows), is within ``budget`` (a data set over the
    budget gets a chunk of its own). The chunks depend on the sizes alone: a resumed run cuts the same ones."""
    chunk: list[int] = []
    load = 0
    for index in sorted(range(len(sizes)), key=lambda i: sizes[i][0]):
        points, rows = sizes[index]
        own = num_samples + ROW_COST * rows
        if chunk and (load + own) * points > budget:
            yield chunk
            chunk, load = [], 0
        chunk.append(index)
        load += own
    if chunk:
        yield chunk


def estimator_settings(job: Job, options: Any) -> dict[str, Any]:
    """The log q estimator's settings for a data set, as :func:`pyro_acp.infer` picks them for its size."""
    return log_prob_settings(job.num_points, reweight=options.reweight, num_anchors=options.num_anchors,
                             num_z=options.num_z, num_orders=options.num_orders)


def estimate_chunk(guide: ClusterwiseGuide, jobs: list[Job], samples: list[Tensor], options: Any,
                   model: Any = None) -> list[LogProbEstimate]:
    """The log q estimates of every sample of every data set of a chunk (canonical samples (S, N_b) each), as
    :func:`pyro_acp.infer` makes them: the distinct partitions of each data set, estimated with the settings
    for its size (one batched call per setting), every random number from the data set's own generator right
    after its sampling draws; with ``reweight=True``, refined where ``model``'s importance weights need it."""
    groups: dict[tuple, list[int]] = {}
    settings_of = []
    for b, job in enumerate(jobs):
        settings = estimator_settings(job, options)
        settings_of.append(settings)
        groups.setdefault(tuple(sorted(settings.items(), key=lambda item: item[0])), []).append(b)
    distinct = [s.unique(dim=0, return_inverse=True) for s in samples]
    out: list[LogProbEstimate | None] = [None] * len(jobs)
    for members in groups.values():
        drawn = [drawn_frames(distinct[b][1], distinct[b][0].shape[0], jobs[b].frames) for b in members]
        targets = None if options.reweight is not True else [
            refine_target(model, jobs[b].x, *distinct[b]) for b in members]
        estimates = log_prob_estimates(guide, [jobs[b].x for b in members], [distinct[b][0] for b in members],
                                       [jobs[b].generator for b in members], frames=[jobs[b].frames for b in members],
                                       drawn_frames=drawn, refine_targets=targets, **settings_of[members[0]])
        for b, estimate in zip(members, estimates, strict=True):
            out[b] = per_sample(estimate, distinct[b][1])
    return out
