"""Warnings attributed to the user's line, however deep in the library they are raised.

``warnings.warn(..., stacklevel=k)`` needs the depth of the call chain, which differs by route (``infer`` on
points, on a graph through ``infer_graph``, from ``infer_many`` or the CLI, a Gibbs kernel run by
``pyro.infer.MCMC``), so a fixed ``k`` points at library code on some of them. :func:`warn_user` walks the
stack instead and attributes the warning to the first frame that is neither the library's (the ``pyro_acp``
package and its ``models`` and ``guides`` subpackages, wherever the install puts them) nor the Python
installation's (the standard library, site-packages, ``<frozen ...>``: Pyro, PyTorch, pytest, runpy), falling
back to the outermost frame. Python 3.12's ``skip_file_prefixes`` does the first half; 3.11 lacks it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
import warnings
from functools import lru_cache

_HERE = os.path.dirname(os.path.abspath(__file__))


@lru_cache(maxsize=1)
def library_prefixes() -> tuple[str, ...]:
    """Folders of the library's own files: the package and the subpackages an editable install maps elsewhere."""
    folders = {_HERE}
    for name in ("pyro_acp.models", "pyro_acp.guides"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folders.update(spec.submodule_search_locations)
    return tuple(os.path.abspath(folder) + os.sep for folder in folders)


@lru_cache(maxsize=1)
def installation_prefixes() -> tuple[str, ...]:
    """Folders of the Python installation: the standard library and the site-packages folders."""
    paths = sysconfig.get_paths()
    folders = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    return tuple(os.path.abspath(folder) + os.sep for folder in folders)


def _skipped(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return True
    path = os.path.abspath(filename)
    return path.startswith(library_prefixes()) or path.startswith(installation_prefixes())


def outside_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the caller of this function that points at the user's
    frame above it (the first one :func:`_skipped` does not skip; the outermost one if every frame is)."""
    frame = sys._getframe(2)  # the caller's caller: stacklevel 2 of the caller's warnings.warn
    level = 2
    while frame.f_back is not None and _skipped(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the user's frame (module docstring)."""
    warnings.warn(message, category, stacklevel=outside_stacklevel())
