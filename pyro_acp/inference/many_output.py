"""``infer_many``'s output folder: each finished data set's files, written atomically, and the run's manifest.

``DIR/<name>/`` holds ``posterior.npz`` (samples and, where known, ``log_prob``, ``log_prob_error``,
``log_joint``, ``weights``), ``labels.csv`` (the MAP and the point estimate), ``posterior.png`` on request and
``summary.json``, written last: a data set is finished exactly when its summary exists and records its seed.
``DIR/infer_many.json`` records the run's settings (the model, the guide's architecture and weights' hash,
the options, the root seed): a rerun with other settings is refused unless it overwrites.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from pyro_acp.guides import ClusterwiseGuide
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.pretrained.checkpoint import _atomic_write as atomic_write
from pyro_acp.pretrained.checkpoint import _jsonable as jsonable
from pyro_acp.seeding import resolve_seed

#: what each data set's folder holds when finished (``summary.json``, written last, marks it finished)
RESULT_FILES = ("posterior.npz", "labels.csv", "summary.json")
FIGURE_FILE = "posterior.png"
#: the run's settings, in the output folder
MANIFEST = "infer_many.json"


def write_result(folder: Path, job: Any, posterior: ClusteringPosterior, options: Any) -> Path:
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

    atomic_write(folder / RESULT_FILES[0], write_arrays)
    columns, header = [posterior.map.numpy()], "map"
    if options.loss is not None:
        columns.append(posterior.point_estimate(loss=options.loss).numpy())
        header += f",point_estimate_{options.loss}"
    atomic_write(folder / RESULT_FILES[1], lambda tmp: np.savetxt(
        tmp, np.stack(columns, 1), fmt="%d", delimiter=",", header=header, comments=""))
    if options.figures:
        import matplotlib.pyplot as plt

        def write_figure(tmp: str) -> None:
            figure = posterior.plot(loss=options.loss or "vi")
            figure.savefig(tmp, format="png")
            plt.close(figure)

        atomic_write(folder / FIGURE_FILE, write_figure)
    record = {"name": job.entry.name, "index": job.entry.index, "source": None if job.entry.path is None else
              str(job.entry.path), "seed": job.seed, "num_points": job.num_points, "warnings": job.notes,
              "summary": dataclasses.asdict(posterior.summary())}
    atomic_write(folder / RESULT_FILES[2], lambda tmp: Path(tmp).write_text(
        json.dumps(record, indent=2, default=_json_value)))
    return folder


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return jsonable(value) if isinstance(value, (tuple, set, Tensor)) else str(value)


def guide_identity(guide: ClusterwiseGuide) -> dict[str, Any]:
    """The guide's architecture and a hash of its weights: a resumed run must use the same guide."""
    digest = hashlib.sha256()
    for name, tensor in sorted(guide.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"config": guide.config, "weights_sha256": digest.hexdigest()}


def open_output(output: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any]:
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
    atomic_write(manifest, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=2, default=_json_value)))
    return settings


def finished(folder: Path, seed: int) -> bool:
    """Whether a data set's results are complete: its summary exists and records its seed."""
    try:
        return json.loads((folder / RESULT_FILES[2]).read_text()).get("seed") == seed
    except (OSError, json.JSONDecodeError):
        return False
