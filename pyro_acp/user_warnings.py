"""Warnings attributed to the user's line, however deep in the library they are raised.

``warnings.warn(..., stacklevel=k)`` needs the depth of the call chain, which differs by route (``infer`` on
points, on a graph through ``infer_graph``, from ``infer_many`` or the CLI), so a fixed ``k`` points at library
code on some of them. :func:`warn_user` walks the stack instead and attributes the warning to the first frame
outside this package (Python 3.12's ``skip_file_prefixes`` does the same; 3.11 lacks it).
"""

from __future__ import annotations

import os
import sys
import warnings

#: files under this folder are the library's own frames, skipped when attributing a warning
PACKAGE_PREFIX = os.path.dirname(os.path.abspath(__file__)) + os.sep


def outside_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the caller of this function that points at the first frame
    outside the package above it (the outermost frame if every frame is inside, as in ``python -m``)."""
    frame = sys._getframe(2)  # the caller's caller: stacklevel 2 of the caller's warnings.warn
    level = 2
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(PACKAGE_PREFIX):
        frame = frame.f_back
        level += 1
    return level


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first frame outside the package."""
    warnings.warn(message, category, stacklevel=outside_stacklevel())
