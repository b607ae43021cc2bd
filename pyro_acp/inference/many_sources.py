"""Where ``infer_many``'s data sets come from: a list, an iterator, a mapping {name: data set}, a folder of
``.csv`` / ``.npy`` files of points, or one such file. Each becomes an :class:`Entry` (its position, its name,
which names its output folder, and the key its seed is derived from); folder and file names are checked
before any work, the data themselves when read (:func:`read_points_file`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from pyro_acp.inference.many_output import MANIFEST

#: files of point data a folder may hold (other files are refused, hidden ones ignored)
DATA_SUFFIXES = (".csv", ".npy")


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


@dataclass
class Entry:
    """One data set: its position, name, seed key, and its data (or the file to read it from)."""

    index: int
    name: str
    key: int | str
    data: Any = None
    path: Path | None = None


def entries(datasets: Any, data_kind: str) -> tuple[Iterator[Entry], int | None]:
    """The data sets of a folder, a file, a mapping {name: data}, a sequence or an iterator, with their count
    when known. Folder and file names are checked here, before any work."""
    if isinstance(datasets, (str, os.PathLike)):
        return _folder_entries(Path(datasets), data_kind)
    if isinstance(datasets, Mapping):
        named = [(_check_name(name), data) for name, data in datasets.items()]
        return (Entry(i, name, name, data) for i, (name, data) in enumerate(named)), len(named)
    if isinstance(datasets, (Tensor, np.ndarray)):
        raise TypeError("datasets must be a list (or iterator) of data sets, a mapping {name: data set} or a "
                        "folder; for one data set call pyro_acp.infer")
    if not isinstance(datasets, Iterable):
        raise TypeError(f"datasets must be a list, an iterator, a mapping or a folder, got {type(datasets).__name__}")
    count = len(datasets) if hasattr(datasets, "__len__") else None
    return (Entry(i, f"{i:05d}", i, data) for i, data in enumerate(datasets)), count


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name \
            or name == MANIFEST:
        raise ValueError(f"data set name {name!r} cannot name an output folder: use a non-empty name without "
                         f"slashes, not starting with '.', other than {MANIFEST!r}")
    return name


def _folder_entries(path: Path, data_kind: str) -> tuple[Iterator[Entry], int]:
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
    return (Entry(i, f.stem, f.stem, path=f) for i, f in enumerate(files)), len(files)


def describe(entry: Entry) -> str:
    return str(entry.path) if entry.path is not None else f"data set {entry.name!r}"
