"""Warnings point at the user's line (pyro_acp/user_warnings.py), whatever depth inside the library raises them,
and past the Python installation's frames (Pyro, the standard library, runpy) that call into it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import warnings
from pathlib import Path

import pyro
import torch

import pyro_acp.user_warnings as user_warnings
from pyro_acp.diagnostics.stationarity import ZeroProbabilityWarning, warn_if_impossible
from pyro_acp.models import CRPGaussianMixture, mixtures
from pyro_acp.posteriors import ClusteringPosterior
from pyro_acp.user_warnings import warn_user

HALF_IMPOSSIBLE = ClusteringPosterior(torch.tensor([[0, 0], [0, 1]]), log_joint=torch.tensor([0.0, -torch.inf]),
                                      x=torch.zeros(2, 2), model=CRPGaussianMixture())


def _caught(call) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        call()
    return record


def test_a_warning_raised_in_the_library_is_attributed_to_the_calling_line_outside_it():
    record = _caught(lambda: warn_if_impossible(HALF_IMPOSSIBLE))
    assert [w.category for w in record] == [ZeroProbabilityWarning]
    assert record[0].filename == __file__ and "1 of 2 samples" in str(record[0].message)
    record = _caught(lambda: warn_user("said here"))
    assert [(w.filename, str(w.message)) for w in record] == [(__file__, "said here")]


def test_library_and_installation_frames_are_skipped_and_user_files_are_not():
    skipped = user_warnings._skipped
    assert skipped(user_warnings.__file__) and skipped(mixtures.__file__)  # models/ may sit outside
    assert skipped(contextlib.__file__) and skipped(pyro.__file__) and skipped("<frozen runpy>")
    assert not skipped(__file__)


def test_a_script_and_a_module_run_with_python_m_see_their_own_line(tmp_path: Path):
    code = ("import warnings, torch\nwarnings.simplefilter('always')\n"
            "from pyro_acp.diagnostics.stationarity import warn_if_impossible\n"
            "from pyro_acp.models import CRPGaussianMixture\nfrom pyro_acp.posteriors import ClusteringPosterior\n"
            "warn_if_impossible(ClusteringPosterior(torch.tensor([[0]]), log_joint=torch.tensor([-float('inf')]),\n"
            "                                       x=torch.zeros(1, 2), model=CRPGaussianMixture()))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.startswith("<string>:6: ZeroProbabilityWarning: 1 of 1 samples"), result.stderr
    (tmp_path / "caller.py").write_text(code)
    result = subprocess.run([sys.executable, "-m", "caller"], capture_output=True, text=True, check=True,
                            cwd=tmp_path)
    assert result.stderr.startswith(f"{tmp_path / 'caller.py'}:6: ZeroProbabilityWarning"), result.stderr


def test_a_stack_with_no_user_frame_names_its_outermost_frame(monkeypatch):
    monkeypatch.setattr(user_warnings, "_skipped", lambda filename: True)
    record = _caught(lambda: warn_user("from the top"))
    outermost = sys._getframe()
    while outermost.f_back is not None:
        outermost = outermost.f_back
    assert [(w.filename, w.lineno) for w in record] == [(outermost.f_code.co_filename, outermost.f_lineno)]
