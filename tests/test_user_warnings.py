"""Warnings point at the user's line (pyro_acp/user_warnings.py), whatever depth inside the library raises them."""

from __future__ import annotations

import subprocess
import sys
import warnings

import torch

from pyro_acp.diagnostics.stationarity import ZeroProbabilityWarning, warn_if_impossible
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.user_warnings import warn_user


def _caught(call) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        call()
    return record


def test_a_warning_raised_in_the_library_is_attributed_to_the_calling_line_outside_it():
    record = _caught(lambda: warn_if_impossible(CRPGaussianMixture(), torch.tensor([0.0, -torch.inf])))
    assert [w.category for w in record] == [ZeroProbabilityWarning]
    assert record[0].filename == __file__ and "1 of 2 samples" in str(record[0].message)
    record = _caught(lambda: warn_user("said here"))
    assert [(w.filename, str(w.message)) for w in record] == [(__file__, "said here")]


def test_a_script_sees_its_own_line():
    script = ("import warnings, torch\nwarnings.simplefilter('always')\n"
              "from pyro_acp.diagnostics.stationarity import warn_if_impossible\n"
              "from pyro_acp.models import CRPGaussianMixture\n"
              "warn_if_impossible(CRPGaussianMixture(), torch.tensor([-float('inf')]))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stderr.startswith("<string>:5: ZeroProbabilityWarning: 1 of 1 samples"), result.stderr


def test_a_stack_wholly_inside_the_package_names_its_outermost_frame(monkeypatch):
    """Every frame counted as the library's (the CLI's entry point is): the outermost one is named, no error."""
    monkeypatch.setattr("pyro_acp.user_warnings.PACKAGE_PREFIX", "")
    record = _caught(lambda: warn_user("from the top"))
    outermost = sys._getframe()
    while outermost.f_back is not None:
        outermost = outermost.f_back
    assert [(w.filename, w.lineno) for w in record] == [(outermost.f_code.co_filename, outermost.f_lineno)]
