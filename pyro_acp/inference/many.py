"""``pyro_acp.infer_many(model, datasets)``: posteriors of many data sets, batched on the device, streamed to disk.

Data sets of different sizes are sorted by size and cut into chunks that fill a budget of work (padded points
times sampler threads and encoded data rows, :func:`~pyro_acp.inference.many_batch.chunks`); each chunk is
sampled in one batched run of the guide (variable N with masks) and its log-probability estimates are computed
in one batched call per estimator setting (:mod:`pyro_acp.inference.many_batch`); every data set then gets what
:func:`pyro_acp.infer` gives it: the exact log joint, importance weights, the posterior
(:func:`~pyro_acp.inference.infer.posterior_of_samples`, shared with ``infer``).

**A data set's answer does not depend on its batch-mates.** Each data set has its own seed, derived from the
root ``seed`` and its key (its index in a list or iterator, its name in a folder or mapping:
:func:`dataset_seed`), and its own ``torch.Generator``; every random number drawn for a data set, by the guide
while sampling and by the estimator, comes from that generator, in the shapes ``infer`` would draw it in alone
(:mod:`pyro_acp.inference.streams`). So ``infer_many(model, xs, seed=s)[i]`` has the samples of
``infer(model, xs[i], seed=dataset_seed(s, i))`` (equal up to the float rounding of a padded batch, which
moves a join only when its uniform draw falls within ~1e-7 of its probability) and its log-probability
estimates within float rounding (a few 1e-6 nats: the same draws, summed in a batch of another shape).

**Guides.** With ``guide=None`` each data set gets the guide ``infer`` would find for its size (where several
serve the model, e.g. ``NIWGaussianMixture``'s small-table guides: :func:`~pyro_acp.pretrained.registry.
find_guide`); a chunk is cut where that guide changes, so each batched run uses one guide.

**Streaming** (``output=DIR``): each finished data set gets a folder ``DIR/<name>/`` with

- ``posterior.npz``: ``samples`` (S, N) canonical labels, and ``log_prob``, ``log_prob_error``,
  ``log_joint``, ``weights`` (S,) where known;
- ``labels.csv``: the MAP and the point estimate (``loss``; its search is most of a streamed run's cost on
  small data sets), one row a point;
- ``summary.json``: the posterior's summary, the data set's seed, source file and any warnings;
- ``posterior.png`` with ``figures=True``.

Every file is written atomically (a temporary file, then ``os.replace``) and ``summary.json`` last, so a data
set is finished exactly when its summary exists. ``DIR/infer_many.json`` records the run's settings: a rerun
with the same settings skips finished data sets; other settings are refused unless ``overwrite=True``. Chunks
are cut from the data sets' sizes alone, finished or not, so that a resumed run batches every data set with the
mates it had: a chunk whose data sets are all finished is skipped, one interrupted half way is run again whole
(its finished data sets computed, not rewritten), and the run ends with the files, bit for bit, of an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyro_acp.data.partitions import canonicalize
from pyro_acp.diagnostics.importance import ImportanceWeightWarning
from pyro_acp.diagnostics.prior_check import PriorPredictiveWarning, prior_predictive_check
from pyro_acp.diagnostics.stationarity import StationarityWarning, ZeroProbabilityWarning
from pyro_acp.guides import ClusterwiseGuide
from pyro_acp.guides.noc import ordered_log_prob_estimate
from pyro_acp.inference.frames import frames_for
from pyro_acp.inference.infer import (
    check_guide_orders,
    check_options,
    check_reweight,
    check_reweight_guide,
    estimates_orders,
    posterior_of_samples,
    resolve_guide,
)
from pyro_acp.inference.log_prob import AUTO, LogProbEstimate, log_prob_settings
from pyro_acp.inference.many_batch import (
    BATCH_POINTS,
    Job,
    chunks,
    estimate_chunk,
    estimator_settings,
    frame_count,
    sample_chunk,
)
from pyro_acp.inference.many_output import MANIFEST, RESULT_FILES, finished, guide_identity, open_output, write_result
from pyro_acp.inference.many_sources import DATA_SUFFIXES, Entry, describe, entries, read_points_file
from pyro_acp.inference.on_demand import on_demand_schedule
from pyro_acp.inference.reweighting import check_reweight_option
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.pretrained.checkpoint import load_guide
from pyro_acp.pretrained.registry import best_guide, serving_guides, warn_if_cut_short
from pyro_acp.protocols import ClusteringModel
from pyro_acp.seeding import SeedStream, make_generator, resolve_seed
from pyro_acp.user_warnings import warn_user
from pyro_acp.validation import check_choice, check_positive_int, data_warnings

__all__ = ["DATA_SUFFIXES", "MANIFEST", "RESULT_FILES", "dataset_seed", "infer_many", "read_points_file"]

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


@dataclass(frozen=True)
class _Options:
    """The options of a run that decide its results (recorded in the output folder's manifest)."""

    num_samples: int
    sample_z: bool
    sample_joins: bool
    num_anchors: Any
    num_z: Any
    num_orders: Any
    reweight: bool | str
    symmetrize: bool | None
    estimate_log_prob: bool
    check_prior: bool
    loss: str | None
    figures: bool


def _read(model: ClusteringModel, entry: Entry, reweight: bool | str) -> Any:
    """One data set, read and checked, for reweighting too (errors name it)."""
    try:
        raw = read_points_file(entry.path) if entry.path is not None else entry.data
        x = model.check_data(raw)
        if model.num_points_of(x) < 2:
            raise ValueError(f"data has {model.num_points_of(x)} point(s); clustering needs at least 2")
        if reweight:
            check_reweight(model, x, reweight)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{describe(entry)}: {err}") from None
    return x


def _prepare(model: ClusteringModel, entry: Entry, x: Any, root: int, options: _Options, device: torch.device,
             check_prior: bool) -> Job:
    """A read data set ready for sampling: the prior check (when asked), its generator seeded, its frames drawn
    (in ``infer``'s order: frames first, from the data set's own generator)."""
    notes = [f"{UserWarning.__name__}: {message}" for message in data_warnings(model, x)]
    if check_prior:
        check = prior_predictive_check(model, x)
        if check is not None and check.outside:
            notes.append(f"{PriorPredictiveWarning.__name__}: {check.message(model)}")
    seed = dataset_seed(root, entry.key)
    generator = make_generator(seed, device)
    x = x.to(device=device, dtype=torch.get_default_dtype())
    frames = frames_for(model, x.shape[0], options.num_samples, generator, device, options.symmetrize)
    return Job(entry, x, seed, generator, frames, notes)


def _finish(model: ClusteringModel, job: Job, labels: torch.Tensor, estimate: LogProbEstimate | None,
            options: _Options, ordered: bool, share: float, check_samples: bool = True) -> ClusteringPosterior:
    """The data set's posterior (:func:`~pyro_acp.inference.infer.posterior_of_samples`), with the warnings it
    raises kept as the data set's notes (reported once for the run, not once per data set)."""
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        posterior = posterior_of_samples(model, job.x, labels, estimate, ordered=ordered, reweight=options.reweight,
                                         wall_time=0.0, generator=job.generator, check_samples=check_samples)
    job.notes.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    posterior.wall_time = share + time.perf_counter() - began
    return posterior


class _Guides:
    """The guide of each data set: the one given, or, with ``guide=None``, the one ``infer`` would find for the
    data set's size (:func:`~pyro_acp.pretrained.registry.find_guide`: the cards are read once, here), each
    loaded once."""

    def __init__(self, model: ClusteringModel, default: ClusterwiseGuide, by_size: bool) -> None:
        self.model, self.default = model, default
        self.serving = serving_guides(model) if by_size else []
        self.default_path = best_guide(self.serving)
        self._loaded: dict[Path, ClusterwiseGuide] = {}

    def path_for(self, num_points: int) -> Path | None:
        """The registry's guide file for data sets of ``num_points`` (None: the default guide)."""
        path = best_guide(self.serving, num_points=num_points)
        return None if path == self.default_path else path

    def _load(self, path: Path) -> ClusterwiseGuide:
        """The guide at ``path``, loaded once, on the default guide's device."""
        if path not in self._loaded:
            guide, card = load_guide(path, map_location=next(self.default.parameters()).device)
            warn_if_cut_short(path, card, on_demand=on_demand_schedule(self.model, path))
            self._loaded[path] = guide.eval()
        return self._loaded[path]

    def for_size(self, num_points: int) -> ClusterwiseGuide:
        path = self.path_for(num_points)
        if path is None:
            return self.default
        guide = self._load(path)
        if check_guide_orders(self.model, guide) != check_guide_orders(self.model, self.default):
            raise ValueError(f"the guides for {self.model!r} disagree on ordering: {path}")
        return guide

    def identities(self) -> list[dict[str, Any]]:
        """What a streamed run records of its guides: the default's identity, then every other guide that the
        registry could pick for some size (so a resumed run refuses a changed set of guides)."""
        others = [found.path for found in self.serving if found.path != self.default_path]
        return [guide_identity(self.default)] + [{"file": path.name, **guide_identity(self._load(path))}
                                                  for path in others]


def _split_by_guide(chunk: list[int], sizes: list[tuple[int, int]], guides: _Guides) -> list[list[int]]:
    """``chunk`` (indices sorted by size) cut where the data sets' guide changes: one guide per batched run."""
    parts: list[list[int]] = []
    for i in chunk:
        if parts and guides.path_for(sizes[parts[-1][-1]][0]) == guides.path_for(sizes[i][0]):
            parts[-1].append(i)
        else:
            parts.append([i])
    return parts


@dataclass
class _Run:
    """What every window of a run shares: the model and guides, the options, where results go and what came of
    them (``results`` by input position, ``notes`` per warning kind: the data sets that raised it)."""

    model: ClusteringModel
    guides: _Guides
    options: _Options
    ordered: bool
    device: torch.device
    budget: int
    root: int
    folder: Path | None
    overwrite: bool
    bar: Any
    check_samples: bool = True
    results: dict[int, Any] = dataclasses.field(default_factory=dict)
    notes: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def done(self, entry: Entry) -> bool:
        return self.folder is not None and not self.overwrite and finished(
            self.folder / entry.name, dataset_seed(self.root, entry.key))

    def skip(self, entry: Entry) -> None:
        self.results[entry.index] = self.folder / entry.name
        self.bar.update(1)


def infer_many(
    model: ClusteringModel,
    datasets: Any,
    *,
    output: str | Path | None = None,
    num_samples: int = 100,
    guide: ClusterwiseGuide | str | Path | None = None,
    train: bool = True,
    train_minutes: float | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    sample_z: bool = True,
    sample_joins: bool = True,
    num_anchors: int | None | str = AUTO,
    num_z: int | str = AUTO,
    num_orders: int | str = AUTO,
    reweight: bool | str = False,
    symmetrize: bool | None = None,
    estimate_log_prob: bool = True,
    check_prior: bool = True,
    check_samples: bool = True,
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
        num_samples, guide, train, train_minutes, device, sample_z, sample_joins, num_anchors, num_z,
            num_orders, reweight, symmetrize, estimate_log_prob, check_prior: as in :func:`pyro_acp.infer`, for
            every data set, except that the log-probability estimates are made in the run (batched over data
            sets, and written to disk when streaming), never deferred: True and ``"now"`` are the same here.
        check_samples: as in :func:`pyro_acp.infer`, per data set (it adds warnings only, so a rerun into the
            same folder may change it).
        seed: the root seed; data set ``key`` (its index, or its name for folders and mappings) runs on
            :func:`dataset_seed` (seed, key), whichever data sets it is batched with. None draws a root seed (a
            streamed run records it, and a rerun into the same folder reuses it).
        figures: also write each data set's ``posterior.png`` (streamed runs).
        loss: the point estimate written to ``labels.csv`` ("vi" or "binder"; None: the MAP alone, which skips
            the point estimate's search, 0.1-0.2 s a data set at N < 50 on a CPU).
        batch_points: the most work per batched chunk, padded points x (sampler threads + ``ROW_COST`` x data
            rows); default by device (:data:`~pyro_acp.inference.many_batch.BATCH_POINTS`). It changes speed and
            memory, never the samples (log q: within float rounding).
        progress_bar: a tqdm bar over the data sets.

    Data sets are read and checked :data:`WINDOW` at a time (a window of finished data sets is not read), ahead of
    the work on them: a bad one (unreadable,
    NaN, the wrong width, fewer than 2 points) raises a ValueError naming it, before any work on its window;
    results streamed earlier stay on disk. Warnings about single data sets (the prior predictive check, weight
    collapse) are recorded in their summaries and reported in one warning per kind at the end.
    """
    from tqdm.auto import tqdm

    if getattr(model, "data_kind", "vector") == "graph":
        raise NotImplementedError("batch inference of graphs is not available yet: call pyro_acp.infer on each graph")
    options = _Options(
        check_positive_int(num_samples, "num_samples"), bool(sample_z), bool(sample_joins), num_anchors, num_z,
        num_orders, check_reweight_option(reweight), symmetrize, bool(estimate_log_prob), bool(check_prior),
        None if loss is None else check_choice(loss, "loss", ("vi", "binder")), bool(figures))
    check_options(model, reweight=reweight, estimate_log_prob=estimate_log_prob)
    log_prob_settings(2, reweight=reweight, num_anchors=num_anchors, num_z=num_z, num_orders=num_orders)  # checks
    sources, count = entries(datasets, getattr(model, "data_kind", "vector"))
    by_size = guide is None  # the registry's guide for each data set's size, as infer finds it
    guide = resolve_guide(model, guide, train=train, device=device, seed=seed, progress_bar=progress_bar,
                          train_minutes=train_minutes)
    guides = _Guides(model, guide, by_size)
    ordered = check_guide_orders(model, guide)
    if reweight:
        check_reweight_guide(guide, ordered)  # before any work
    device = next(guide.parameters()).device
    budget = BATCH_POINTS.get(device.type, BATCH_POINTS["cpu"]) if batch_points is None else \
        check_positive_int(batch_points, "batch_points")
    folder = None if output is None else Path(output)
    if folder is None:
        root = resolve_seed(seed)
    else:
        identities = guides.identities()
        settings = {"model": model.config(), "guide": identities[0], "device": device.type, "seed": seed,
                    **dataclasses.asdict(options)}
        if len(identities) > 1:  # recorded only then: the manifests of single-guide runs stay as they were
            settings["guides_by_size"] = identities[1:]
        root = open_output(folder, settings, overwrite)["seed"]
    window = WINDOW if folder is not None else math.inf  # in memory: everything is checked before any work
    with tqdm(total=count, unit="data set", disable=not progress_bar, desc="infer_many") as bar:
        run = _Run(model, guides, options, ordered, device, budget, root, folder, overwrite, bar,
                   check_samples=bool(check_samples))
        for entries_of_window in _windows(sources, window):
            _run_window(run, entries_of_window)
    _report(run.notes, len(run.results))
    return [run.results[i] for i in sorted(run.results)]


def _windows(sources: Iterator[Entry], size: float) -> Iterator[list[Entry]]:
    """The entries, ``size`` at a time (finished ones included: windows, hence chunks, do not move on resume)."""
    window: list[Entry] = []
    for entry in sources:
        window.append(entry)
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


def _run_window(run: _Run, window: list[Entry]) -> None:
    """Read and check a window's data sets, cut them into chunks by size, and run every chunk that holds an
    unfinished data set, whole; the unfinished ones' results are kept (in memory, or written)."""
    done = [run.done(entry) for entry in window]
    if all(done):  # nothing to do: not even read
        for entry in window:
            run.skip(entry)
        return
    data = [_read(run.model, entry, run.options.reweight) for entry in window]
    sizes = [(run.model.num_points_of(x), frame_count(run.model, run.model.num_points_of(x), run.options))
             for x in data]
    for chunk in (part for whole in chunks(sizes, run.budget, run.options.num_samples)
                  for part in _split_by_guide(whole, sizes, run.guides)):
        if all(done[i] for i in chunk):
            for i in chunk:
                run.skip(window[i])
            continue
        jobs = [_prepare(run.model, window[i], data[i], run.root, run.options, run.device,
                         run.options.check_prior and not done[i]) for i in chunk]
        began = time.perf_counter()
        guide = run.guides.for_size(jobs[0].num_points)
        labels = sample_chunk(guide, jobs, run.options, run.ordered)
        estimates: list[LogProbEstimate | None] = [None] * len(jobs)
        if run.options.estimate_log_prob and not run.ordered:  # the estimate is of the partition alone
            estimates = estimate_chunk(guide, jobs, [canonicalize(own) for own in labels], run.options, run.model)
        elif run.options.estimate_log_prob and estimates_orders(guide):  # ordered: per data set, as infer
            estimates = [ordered_log_prob_estimate(guide, job.x, own, job.frames,
                                                   estimator_settings(job, run.options), job.generator)
                         for job, own in zip(jobs, labels, strict=True)]
        elapsed, points = time.perf_counter() - began, sum(job.num_points for job in jobs)
        for i, job, own, estimate in zip(chunk, jobs, labels, estimates, strict=True):
            if done[i]:  # computed only so that its mates are batched as they were: not rewritten
                run.skip(job.entry)
                continue
            posterior = _finish(run.model, job, own, estimate, run.options, run.ordered,
                                elapsed * job.num_points / points, run.check_samples)
            run.results[job.entry.index] = posterior if run.folder is None else write_result(
                run.folder / job.entry.name, job, posterior, run.options)
            for note in job.notes:
                run.notes.setdefault(note.split(":", 1)[0], []).append(job.entry.name)
            run.bar.update(1)


def _report(notes: dict[str, list[str]], total: int) -> None:
    """One warning per kind of per-data-set warning, naming (up to 5 of) the data sets."""
    categories = {kind.__name__: kind for kind in (PriorPredictiveWarning, ImportanceWeightWarning,
                                                   StationarityWarning, ZeroProbabilityWarning)}
    for kind, names in notes.items():
        names = sorted(names)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        warn_user(f"{kind} for {len(names)} of {total} data sets ({shown}); each data set's warnings are in its "
                  "summary (summary.json 'warnings')", categories.get(kind, UserWarning))
