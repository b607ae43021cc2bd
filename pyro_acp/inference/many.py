"""``pyro_acp.infer_many(model, datasets)``: posteriors of many data sets, batched on the device, streamed to disk.

Data sets of different sizes are sorted by size and cut into chunks that fill a budget of work (padded points
times sampler threads and encoded data rows, :func:`_chunks`); each chunk is sampled in one batched run of the guide
(:func:`~pyro_acp.inference.sampling.sample_partitions`, variable N with masks), and every data set then gets
what :func:`pyro_acp.infer` gives it: the log-probability estimates, the exact log joint, importance weights.

**A data set's answer does not depend on its batch-mates.** Each data set has its own seed, derived from the
root ``seed`` and its key (its index in a list or iterator, its name in a folder or mapping:
:func:`dataset_seed`), and its own ``torch.Generator``; every random number the guide draws for a data set's
threads comes from that generator, in the shapes ``infer`` would draw it in alone (:class:`_PerDataSetDraws`).
So ``infer_many(model, xs, seed=s)[i]`` has the samples of ``infer(model, xs[i], seed=dataset_seed(s, i))``
(equal up to the float rounding of a padded batch, which moves a join only when its uniform draw falls within
~1e-7 of its probability), and its log-probability estimates, computed per data set on the same generator,
are ``infer``'s.

**Streaming** (``output=DIR``): each finished data set gets a folder ``DIR/<name>/`` with

- ``posterior.npz``: ``samples`` (S, N) canonical labels, and ``log_prob``, ``log_prob_error``,
  ``log_joint``, ``weights`` (S,) where known;
- ``labels.csv``: the MAP and the point estimate (``loss``; its search is most of a streamed run's cost on
  small data sets), one row a point;
- ``summary.json``: the posterior's summary, the data set's seed, source file and any warnings;
- ``posterior.png`` with ``figures=True``.

Every file is written atomically (a temporary file, then ``os.replace``) and ``summary.json`` last, so a data
set is finished exactly when its summary exists. ``DIR/infer_many.json`` records the run's settings: a rerun
with the same settings skips finished data sets (an interrupted run resumes and ends with what an
uninterrupted one writes); other settings are refused unless ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from pyro_acp.data.partitions import canonicalize
from pyro_acp.diagnostics.importance import ImportanceWeightWarning, weight_diagnostics
from pyro_acp.diagnostics.prior_check import PriorPredictiveWarning, prior_predictive_check
from pyro_acp.guides import ClusterwiseGuide
from pyro_acp.inference.frames import framed, frames_for
from pyro_acp.inference.infer import _UNORDERED_GUIDE, _estimate_log_q, importance_weights, resolve_guide
from pyro_acp.inference.log_prob import AUTO, log_prob_settings
from pyro_acp.inference.sampling import sample_partitions
from pyro_acp.posteriors.ordered import OrderedClusteringPosterior
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.pretrained.checkpoint import _atomic_write, _jsonable
from pyro_acp.protocols import ClusteringModel, exact_log_joint, has_collapsed_likelihood
from pyro_acp.seeding import SeedStream, make_generator, resolve_seed
from pyro_acp.validation import check_choice, check_positive_int

__all__ = ["DATA_SUFFIXES", "MANIFEST", "RESULT_FILES", "dataset_seed", "infer_many", "read_points_file"]

#: files of point data a folder may hold (other files are refused, hidden ones ignored)
DATA_SUFFIXES = (".csv", ".npy")
#: what each data set's folder holds when finished (``summary.json``, written last, marks it finished)
RESULT_FILES = ("posterior.npz", "labels.csv", "summary.json")
FIGURE_FILE = "posterior.png"
#: the run's settings, in the output folder
MANIFEST = "infer_many.json"
#: default budget of work per chunk (padded width x (threads + ROW_COST x data rows)), by device type. On a CPU
#: the work is arithmetic and chunks past its caches only add memory traffic (benchmarks/bench_infer_many.py);
#: the CUDA figure is a guess, untested here
BATCH_POINTS = {"cpu": 2**16, "cuda": 2**22}
#: a data row (a data set in one frame) costs this many threads: it is encoded in full, and its keys and values
#: are projected again every round, where a thread only pools and scores its own candidates
ROW_COST = 16
#: data sets read (and checked) ahead of the work, and sorted by size into chunks, at a time
WINDOW = 4096
# SeedStream purposes of per-data-set seeds: by index (lists, iterators) and by name (folders, mappings)
_INDEX_PURPOSE, _NAME_PURPOSE = 19, 20


def dataset_seed(seed: int, key: int | str) -> int:
    """The seed of data set ``key`` in a run with root ``seed``: its index (lists and iterators) or its name
    (folders: the file's stem; mappings: the key). ``infer(model, x, seed=dataset_seed(seed, key))`` draws what
    ``infer_many`` draws for it, whichever data sets share its batch."""
    stream = SeedStream(seed)
    if isinstance(key, str):
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return stream.seed_for(int.from_bytes(digest, "little") >> 1, purpose=_NAME_PURPOSE)
    return stream.seed_for(key, purpose=_INDEX_PURPOSE)


def read_points_file(path: str | Path) -> np.ndarray:
    """Points (N, D) from a ``.npy`` file or a numeric CSV (an optional header line is skipped); a ValueError
    naming the file when it holds anything else."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"{path} is not a readable .npy array: {err}") from None
    else:
        data = None
        for skip in (0, 1):
            try:
                data = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=skip)
                break
            except ValueError as err:
                error = err
        if data is None:
            raise ValueError(f"{path} is not a numeric CSV: {error}")
    if data.dtype.kind not in "fiu":
        raise ValueError(f"{path} does not hold numbers (dtype {data.dtype})")
    return data.astype(np.float64)


# ---------------------------------------------------------------------------------------------- sources
@dataclass
class _Entry:
    """One data set: its position, name, seed key, and its data (or the file to read it from)."""

    index: int
    name: str
    key: int | str
    data: Any = None
    path: Path | None = None


def _entries(datasets: Any, data_kind: str) -> tuple[Iterator[_Entry], int | None]:
    """The data sets of a folder, a file, a mapping {name: data}, a sequence or an iterator, with their count
    when known. Folder and file names are checked here, before any work."""
    if isinstance(datasets, (str, os.PathLike)):
        return _folder_entries(Path(datasets), data_kind)
    if isinstance(datasets, Mapping):
        named = [(_check_name(name), data) for name, data in datasets.items()]
        return (_Entry(i, name, name, data) for i, (name, data) in enumerate(named)), len(named)
    if isinstance(datasets, (Tensor, np.ndarray)):
        raise TypeError("datasets must be a list (or iterator) of data sets, a mapping {name: data set} or a "
                        "folder; for one data set call pyro_acp.infer")
    if not isinstance(datasets, Iterable):
        raise TypeError(f"datasets must be a list, an iterator, a mapping or a folder, got {type(datasets).__name__}")
    count = len(datasets) if hasattr(datasets, "__len__") else None
    return (_Entry(i, f"{i:05d}", i, data) for i, data in enumerate(datasets)), count


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name \
            or name == MANIFEST:
        raise ValueError(f"data set name {name!r} cannot name an output folder: use a non-empty name without "
                         f"slashes, not starting with '.', other than {MANIFEST!r}")
    return name


def _folder_entries(path: Path, data_kind: str) -> tuple[Iterator[_Entry], int]:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if data_kind == "graph":
        raise NotImplementedError("batch inference of graphs (edge-list files) is not available yet: call "
                                  "pyro_acp.infer on each graph")
    files = [path] if path.is_file() else sorted(f for f in path.iterdir() if not f.name.startswith("."))
    for file in files:
        if file.is_dir() or file.suffix.lower() not in DATA_SUFFIXES:
            what = "a folder" if file.is_dir() else "not a data file"
            raise ValueError(f"{file} is {what}: {path} may hold only {' / '.join(DATA_SUFFIXES)} files of points "
                             "(move it out, or pass a list of data sets)")
    if not files:
        raise ValueError(f"{path} is a folder holding no {' / '.join(DATA_SUFFIXES)} files of points (one data set "
                         "each)")
    seen: dict[str, Path] = {}
    for file in files:
        if file.stem in seen:
            raise ValueError(f"{seen[file.stem]} and {file} would share the output folder {file.stem!r}: rename one")
        seen[file.stem] = file
    return (_Entry(i, f.stem, f.stem, path=f) for i, f in enumerate(files)), len(files)


@dataclass
class _Job:
    """A checked data set ready for sampling: its data on the device, its generator and frames."""

    entry: _Entry
    x: Tensor  # (N, D) on the device, default dtype
    seed: int
    generator: torch.Generator
    frames: Tensor | None
    notes: list[str]  # warnings raised for this data set (prior check, importance weights)

    @property
    def num_points(self) -> int:
        return self.x.shape[0]


def _describe(entry: _Entry) -> str:
    return str(entry.path) if entry.path is not None else f"data set {entry.name!r}"


def _prepare(model: ClusteringModel, entry: _Entry, root: int, options: _Options, device: torch.device) -> _Job:
    """Read and check one data set (errors name it), run the prior check, seed its generator, draw its frames
    (in ``infer``'s order: frames first, from the data set's own generator)."""
    try:
        raw = read_points_file(entry.path) if entry.path is not None else entry.data
        x = model.check_data(raw)
        if model.num_points_of(x) < 2:
            raise ValueError(f"data has {model.num_points_of(x)} point(s); clustering needs at least 2")
    except (ValueError, TypeError) as err:
        raise type(err)(f"{_describe(entry)}: {err}") from None
    notes = []
    if options.check_prior:
        check = prior_predictive_check(model, x)
        if check is not None and check.outside:
            notes.append(f"{PriorPredictiveWarning.__name__}: {check.message(model)}")
    seed = dataset_seed(root, entry.key)
    generator = make_generator(seed, device)
    x = x.to(device=device, dtype=torch.get_default_dtype())
    frames = frames_for(model, x.shape[0], options.num_samples, generator, device, options.symmetrize)
    return _Job(entry, x, seed, generator, frames, notes)


# ---------------------------------------------------------------------------------------------- batched sampling
class _PerDataSetDraws(TorchFunctionMode):
    """Serve every draw on ``shared`` (the generator the sampler hands the guide) from each data set's own
    generator, in the shape ``infer`` would draw it in for that data set alone.

    The guide draws with ``torch.rand`` / ``randn`` / ``multinomial`` / ``bernoulli``, one row per running
    thread. Before each round :meth:`rows` says which data set each row belongs to (rows of one data set are
    contiguous and in sample order, as ``infer`` runs them); the rows of data set b are drawn from b's generator
    with the point dimension (the chunk's padded width ``width``, chosen unlike every other dimension a draw
    has) cut to b's N, then padded back. No torch sampler takes a generator per row, hence this routing; one
    shared generator would make each data set's answer depend on its batch-mates.
    """

    _SHAPED = (torch.rand, torch.randn)
    _MULTINOMIAL = (torch.multinomial, Tensor.multinomial)
    _ELEMENTWISE = (torch.bernoulli, Tensor.bernoulli)

    def __init__(self, shared: torch.Generator, generators: list[torch.Generator], sizes: list[int], width: int):
        super().__init__()
        self.shared, self.generators, self.sizes, self.width = shared, generators, sizes, width
        self.owner: list[tuple[int, int]] = []  # (data set, row count) runs of the next draws' rows
        self.points = True  # draws have a point dimension (sampling rounds), or none (ordering clusters)

    def rows(self, owner: Tensor, points: bool = True) -> _PerDataSetDraws:
        present, counts = torch.unique_consecutive(owner, return_counts=True)
        self.owner, self.points = list(zip(present.tolist(), counts.tolist(), strict=True)), points
        return self

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if kwargs.get("generator") is not self.shared:
            if any(arg is self.shared for arg in args):
                raise NotImplementedError(f"the guide passed the generator to {func.__name__} positionally; "
                                          "infer_many routes only generator= keywords")
            return func(*args, **kwargs)
        if func in self._SHAPED:
            size = kwargs.pop("size", None)
            if size is None:
                size = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
            size = tuple(size)
            return self._route(size, size, lambda gen, rows, cut, shape: func(shape, **{**kwargs, "generator": gen}),
                               pad=1.0 if func is torch.rand else 0.0)  # padding: a uniform that never joins
        if func in self._MULTINOMIAL or func in self._ELEMENTWISE:
            source, rest = args[0], args[1:]
            out = None if func in self._MULTINOMIAL else tuple(source.shape)
            return self._route(tuple(source.shape), out, lambda gen, rows, cut, shape: func(
                source[rows][cut], *rest, **{**kwargs, "generator": gen}))
        raise NotImplementedError(
            f"infer_many gives each data set its own random stream, but the guide drew with {func.__name__}, which "
            "it cannot route (torch.rand, randn, multinomial and bernoulli only); call pyro_acp.infer per data set")

    def _route(self, shape: tuple[int, ...], out_shape: tuple[int, ...] | None, draw, pad: float = 0.0) -> Tensor:
        """``draw(generator, rows, cut, shape)`` per data set, assembled into one (T, ...) tensor: ``out_shape``
        with the cut dimensions padded with ``pad``, or (None) the parts' own trailing shape."""
        total = sum(count for _, count in self.owner)
        if shape[0] != total:
            raise NotImplementedError(f"infer_many routes draws with one row per running thread ({total} rows), but "
                                      f"the guide drew {shape}; call pyro_acp.infer per data set")
        out, start = None, 0
        for b, count in self.owner:
            rows = slice(start, start + count)
            cut = tuple(slice(0, self.sizes[b]) if self.points and d == self.width else slice(None) for d in shape[1:])
            own = (count, *(self.sizes[b] if self.points and d == self.width else d for d in shape[1:]))
            part = draw(self.generators[b], rows, (slice(None), *cut), own)
            if out is None:
                out = part.new_full(out_shape if out_shape is not None else (total, *part.shape[1:]), pad)
            if out_shape is not None:
                out[(rows, *cut)] = part
            else:
                out[rows] = part
            start += count
        return out


class _ThreadView:
    """A guide seen by :func:`sample_partitions` as one data set per thread (one sample each), while the work is
    done on the chunk's distinct data rows (one per data set and frame, as ``infer`` encodes them): encodings
    are computed once per row, each thread reads its row, and every round's draws are routed per data set."""

    def __init__(self, guide: ClusterwiseGuide, x_rows: Tensor, mask_rows: Tensor, row: Tensor, owner: Tensor,
                 draws: _PerDataSetDraws):
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


def _padded_width(jobs: list[_Job], guide: ClusterwiseGuide) -> int:
    """The chunk's point width: its largest N, moved past every other size a guide's draws may have (its
    config's integers), so the routing recognises the point dimension (extra padding is masked: exact)."""
    taken = {value for value in guide.config.values() if isinstance(value, int) and not isinstance(value, bool)}
    width = max(job.num_points for job in jobs)
    while width in taken:
        width += 1
    return width


def _sample_chunk(guide: ClusterwiseGuide, jobs: list[_Job], options: _Options, ordered: bool) -> list[Tensor]:
    """Labels (S, N_b) of every data set of the chunk, from one batched run of the sampler."""
    device = jobs[0].x.device
    width, num_samples = _padded_width(jobs, guide), options.num_samples
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
    draws = _PerDataSetDraws(shared, [job.generator for job in jobs], [job.num_points for job in jobs], width)
    view = _ThreadView(guide, x_rows, mask_rows, row, owner, draws)
    with draws:
        labels = sample_partitions(view, x_rows[row], 1, mask_rows[row], sample_z=options.sample_z,
                                   sample_joins=options.sample_joins, generator=shared, ordered=ordered)
    if not torch.equal(shared.get_state(), before):
        raise RuntimeError("a draw escaped the per-data-set random streams; call pyro_acp.infer per data set")
    labels = labels.view(len(jobs), num_samples, width)
    return [labels[b, :, : job.num_points] for b, job in enumerate(jobs)]


def _chunks(jobs: list[_Job], budget: int, num_samples: int) -> Iterator[list[_Job]]:
    """Jobs sorted by size, cut greedily into chunks whose work, padded width x (threads + ROW_COST x data rows),
    is within ``budget`` (a data set over the budget gets a chunk of its own)."""
    chunk: list[_Job] = []
    load = 0
    for job in sorted(jobs, key=lambda job: job.num_points):  # stable: equal sizes keep their order
        own = num_samples + ROW_COST * (1 if job.frames is None else job.frames.shape[0])
        if chunk and (load + own) * job.num_points > budget:
            yield chunk
            chunk, load = [], 0
        chunk.append(job)
        load += own
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------------------------- per data set
@dataclass(frozen=True)
class _Options:
    """The options of a run that decide its results (recorded in the output folder's manifest)."""

    num_samples: int
    sample_z: bool
    sample_joins: bool
    num_anchors: Any
    num_z: Any
    num_orders: Any
    reweight: bool
    symmetrize: bool | None
    estimate_log_prob: bool
    check_prior: bool
    loss: str | None
    figures: bool


def _posterior_of_samples(model: ClusteringModel, guide: ClusterwiseGuide, job: _Job, labels: Tensor,
                         options: _Options, ordered: bool, wall_time: float) -> ClusteringPosterior:
    """What ``infer`` makes of one data set's sampled labels (S, N): canonical samples, the guide's log q
    estimates (on the data set's own generator, right after its sampling draws, as in ``infer``), the exact
    log joint, importance weights when reweighting."""
    samples = labels if ordered else canonicalize(labels)
    estimate = weights = diagnostics = None
    if options.estimate_log_prob and not ordered:
        settings = log_prob_settings(job.num_points, reweight=options.reweight, num_anchors=options.num_anchors,
                                     num_z=options.num_z, num_orders=options.num_orders)
        estimate = _estimate_log_q(guide, job.x, samples, job.frames, settings, job.generator)
    log_joint = exact_log_joint(model, job.x, samples)
    if options.reweight:
        weights = importance_weights(log_joint, estimate.log_prob).cpu()
        diagnostics = weight_diagnostics(log_joint - estimate.log_prob)
    cpu = {name: None if value is None else value.cpu() for name, value in (
        ("log_prob", None if estimate is None else estimate.log_prob),
        ("log_prob_error", None if estimate is None else estimate.standard_error), ("log_joint", log_joint))}
    posterior_type = OrderedClusteringPosterior if ordered else ClusteringPosterior
    return posterior_type(samples.cpu(), weights=weights, weight_diagnostics=diagnostics, wall_time=wall_time,
                          method="acp+is" if options.reweight else "acp", x=job.x.cpu(), model=model, **cpu)


def _finish(model, guide, job: _Job, labels: Tensor, options: _Options, ordered: bool,
            share: float) -> ClusteringPosterior:
    """:func:`_posterior_of_samples`, with the warnings it raises kept as the data set's notes (reported once
    for the run, not once per data set)."""
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        posterior = _posterior_of_samples(model, guide, job, labels, options, ordered, 0.0)
    job.notes.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    posterior.wall_time = share + time.perf_counter() - began
    return posterior


def _write_result(folder: Path, job: _Job, posterior: ClusteringPosterior, options: _Options) -> Path:
    """The data set's files, each written atomically, ``summary.json`` last (it marks the data set finished)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # left by a run killed mid-write
        stale.unlink()
    arrays = {"samples": posterior.samples.numpy()}
    for name in ("log_prob", "log_prob_error", "log_joint", "weights"):
        value = getattr(posterior, name, None)
        if value is not None:
            arrays[name] = value.numpy()

    def write_arrays(tmp: str) -> None:
        with open(tmp, "wb") as file:
            np.savez(file, **arrays)

    _atomic_write(folder / RESULT_FILES[0], write_arrays)
    columns, header = [posterior.map.numpy()], "map"
    if options.loss is not None:
        columns.append(posterior.point_estimate(loss=options.loss).numpy())
        header += f",point_estimate_{options.loss}"
    _atomic_write(folder / RESULT_FILES[1], lambda tmp: np.savetxt(
        tmp, np.stack(columns, 1), fmt="%d", delimiter=",", header=header, comments=""))
    if options.figures:
        import matplotlib.pyplot as plt

        def write_figure(tmp: str) -> None:
            figure = posterior.plot(loss=options.loss or "vi")
            figure.savefig(tmp, format="png")
            plt.close(figure)

        _atomic_write(folder / FIGURE_FILE, write_figure)
    record = {"name": job.entry.name, "index": job.entry.index, "source": None if job.entry.path is None else
              str(job.entry.path), "seed": job.seed, "num_points": job.num_points, "warnings": job.notes,
              "summary": dataclasses.asdict(posterior.summary())}
    _atomic_write(folder / RESULT_FILES[2], lambda tmp: Path(tmp).write_text(
        json.dumps(record, indent=2, default=_json_value)))
    return folder


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return _jsonable(value) if isinstance(value, (tuple, set, Tensor)) else str(value)


# ---------------------------------------------------------------------------------------------- the output folder
def _guide_identity(guide: ClusterwiseGuide) -> dict[str, Any]:
    """The guide's architecture and a hash of its weights: a resumed run must use the same guide."""
    digest = hashlib.sha256()
    for name, tensor in sorted(guide.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"config": guide.config, "weights_sha256": digest.hexdigest()}


def _open_output(output: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """Check (or start) the output folder; returns the settings it runs with (a recorded root seed is reused
    when the call passed none, so a resumed unseeded run draws what the interrupted one drew)."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"output {output} is a file; infer_many writes a folder: name a folder")
    manifest = output / MANIFEST
    if manifest.exists() and not overwrite:
        try:
            recorded = json.loads(manifest.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{manifest} is corrupt ({err}); pass overwrite=True to start the run again") from None
        if settings["seed"] is None:
            settings = {**settings, "seed": recorded.get("seed")}
        differ = [key for key in sorted(set(settings) | set(recorded)) if settings.get(key) != recorded.get(key)]
        if differ:
            raise ValueError(f"{output} holds the results of a run with other settings ({', '.join(differ)} differ); "
                             "pass overwrite=True to redo them, or name another output folder")
        return settings
    if output.exists() and any(output.iterdir()) and not manifest.exists() and not overwrite:
        raise ValueError(f"{output} is not empty and holds no {MANIFEST} (it is not an infer_many output); name a "
                         "new or empty folder, or pass overwrite=True")
    if settings["seed"] is None:
        settings = {**settings, "seed": resolve_seed(None)}
    _atomic_write(manifest, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=2, default=_json_value)))
    return settings


def _finished(folder: Path, seed: int) -> bool:
    """Whether a data set's results are complete: its summary exists and records its seed."""
    try:
        return json.loads((folder / RESULT_FILES[2]).read_text()).get("seed") == seed
    except (OSError, json.JSONDecodeError):
        return False


# ---------------------------------------------------------------------------------------------- infer_many
def infer_many(
    model: ClusteringModel,
    datasets: Any,
    *,
    output: str | Path | None = None,
    num_samples: int = 100,
    guide: ClusterwiseGuide | str | Path | None = None,
    train: bool = True,
    device: str | torch.device | None = None,
    seed: int | None = None,
    sample_z: bool = True,
    sample_joins: bool = True,
    num_anchors: int | None | str = AUTO,
    num_z: int | str = AUTO,
    num_orders: int | str = AUTO,
    reweight: bool = False,
    symmetrize: bool | None = None,
    estimate_log_prob: bool = True,
    check_prior: bool = True,
    figures: bool = False,
    loss: str | None = "vi",
    overwrite: bool = False,
    batch_points: int | None = None,
    progress_bar: bool = True,
) -> list[ClusteringPosterior] | list[Path]:
    """Posteriors of many data sets under ``model``, batched on the device (see the module docstring).

    Args:
        model: a generative model of points (``data_kind == "vector"``).
        datasets: a list or iterator of data sets ((N, D) arrays or tensors, N may differ), a mapping
            {name: data set}, or a folder of ``.csv`` / ``.npy`` files of points (one data set each; any other
            file is refused before any work, hidden files are ignored), or one such file.
        output: None returns the posteriors (a list in input order). A folder streams each data set's results
            to ``output/<name>/`` as it finishes and returns those folders in input order: a rerun with the same
            settings skips the finished data sets (so an interrupted run resumes); other settings are refused
            unless ``overwrite``, which redoes everything.
        num_samples, guide, train, device, sample_z, sample_joins, num_anchors, num_z, num_orders, reweight,
            symmetrize, estimate_log_prob, check_prior: as in :func:`pyro_acp.infer`, for every data set.
        seed: the root seed; data set ``key`` (its index, or its name for folders and mappings) runs on
            :func:`dataset_seed` (seed, key), whichever data sets it is batched with. None draws a root seed (a
            streamed run records it, and a rerun into the same folder reuses it).
        figures: also write each data set's ``posterior.png`` (streamed runs).
        loss: the point estimate written to ``labels.csv`` ("vi" or "binder"; None: the MAP alone, which skips
            the point estimate's search, 0.1-0.2 s a data set at N < 50 on a CPU).
        batch_points: the most work per batched chunk, padded points x (sampler threads + :data:`ROW_COST` x
            data rows); default by device (:data:`BATCH_POINTS`). It changes speed and memory, never the results.
        progress_bar: a tqdm bar over the data sets.

    Data sets are read and checked :data:`WINDOW` at a time, ahead of the work on them: a bad one (unreadable,
    NaN, the wrong width, fewer than 2 points) raises a ValueError naming it, before any work on its window;
    results streamed earlier stay on disk. Warnings about single data sets (the prior predictive check, weight
    collapse) are recorded in their summaries and reported in one warning per kind at the end.
    """
    from tqdm.auto import tqdm

    if getattr(model, "data_kind", "vector") == "graph":
        raise NotImplementedError("batch inference of graphs is not available yet: call pyro_acp.infer on each graph")
    options = _Options(
        check_positive_int(num_samples, "num_samples"), bool(sample_z), bool(sample_joins), num_anchors, num_z,
        num_orders, bool(reweight), symmetrize, bool(estimate_log_prob), bool(check_prior),
        None if loss is None else check_choice(loss, "loss", ("vi", "binder")), bool(figures))
    if reweight and not estimate_log_prob:
        raise ValueError("reweight=True needs the log-probability estimates; drop estimate_log_prob=False")
    if reweight and not has_collapsed_likelihood(model):
        raise ValueError(f"reweight=True needs a model with an exact log joint p(partition, x); "
                         f"{type(model).__name__} has none")
    log_prob_settings(2, reweight=reweight, num_anchors=num_anchors, num_z=num_z, num_orders=num_orders)  # checks
    entries, count = _entries(datasets, getattr(model, "data_kind", "vector"))
    ordered = bool(getattr(model, "ordered", False))
    guide = resolve_guide(model, guide, train=train, device=device, seed=seed, progress_bar=progress_bar)
    if ordered and not guide.orders_clusters:
        raise NotImplementedError(_UNORDERED_GUIDE.format(model=type(model).__name__, guide=type(guide).__name__))
    device = next(guide.parameters()).device
    budget = BATCH_POINTS.get(device.type, BATCH_POINTS["cpu"]) if batch_points is None else \
        check_positive_int(batch_points, "batch_points")
    folder = None if output is None else Path(output)
    if folder is None:
        root = resolve_seed(seed)
    else:
        settings = {"model": model.config(), "guide": _guide_identity(guide), "device": device.type, "seed": seed,
                    **dataclasses.asdict(options)}
        root = _open_output(folder, settings, overwrite)["seed"]
    results: dict[int, Any] = {}
    notes: dict[str, list[str]] = {}
    window = WINDOW if folder is not None else math.inf  # in memory: everything is checked before any work
    with tqdm(total=count, unit="data set", disable=not progress_bar, desc="infer_many") as bar:
        pending = []
        for entry in _chain_end(entries):
            if entry is not None:
                target = None if folder is None else folder / entry.name
                if target is not None and not overwrite and _finished(target, dataset_seed(root, entry.key)):
                    results[entry.index] = target
                    bar.update(1)
                else:
                    pending.append(entry)
                if len(pending) < window:
                    continue
            jobs = [_prepare(model, e, root, options, device) for e in pending]
            pending = []
            for chunk in _chunks(jobs, budget, options.num_samples):
                began = time.perf_counter()
                labels = _sample_chunk(guide, chunk, options, ordered)
                elapsed, points = time.perf_counter() - began, sum(job.num_points for job in chunk)
                for job, job_labels in zip(chunk, labels, strict=True):
                    posterior = _finish(model, guide, job, job_labels, options, ordered,
                                        elapsed * job.num_points / points)
                    results[job.entry.index] = posterior if folder is None else _write_result(
                        folder / job.entry.name, job, posterior, options)
                    for note in job.notes:
                        notes.setdefault(note.split(":", 1)[0], []).append(job.entry.name)
                    bar.update(1)
    _report(notes, len(results))
    return [results[i] for i in sorted(results)]


def _chain_end(entries: Iterator[_Entry]) -> Iterator[_Entry | None]:
    """The entries, then None (the signal to run what is pending)."""
    yield from entries
    yield None


def _report(notes: dict[str, list[str]], total: int) -> None:
    """One warning per kind of per-data-set warning, naming (up to 5 of) the data sets."""
    categories = {kind.__name__: kind for kind in (PriorPredictiveWarning, ImportanceWeightWarning)}
    for kind, names in notes.items():
        names = sorted(names)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        warnings.warn(f"{kind} for {len(names)} of {total} data sets ({shown}); each data set's warnings are in its "
                      "summary (summary.json 'warnings')", categories.get(kind, UserWarning), stacklevel=3)
