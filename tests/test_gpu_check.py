"""benchmarks/gpu_check.py (issue 19 item 3): without CUDA it runs nothing and says so; its CPU-only dry run
goes through every check; a check that breaks is reported as FAIL with exit status 1."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_nothing_runs_and_it_exits_0(gpu_check, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "CHECKS", {"anything": lambda *a: pytest.fail("a check ran")})
    assert gpu_check.main(["--output", str(tmp_path / "out.json")]) == 0
    assert "finds no CUDA device: nothing was run" in capsys.readouterr().out
    assert not (tmp_path / "out.json").exists()


def test_a_failing_check_is_reported_and_the_others_still_run(gpu_check, monkeypatch, capsys, tmp_path):
    def broken(device, sizes):
        raise RuntimeError("device-side assert")

    monkeypatch.setattr(gpu_check, "CHECKS", {"broken": broken, "fine": lambda d, s: {"passed": True,
                                                                                      "details": "ok"}})
    assert gpu_check.main(["--dry-run", "--output", str(tmp_path / "out.json")]) == 1
    out = capsys.readouterr().out
    assert "FAIL  broken" in out and "RuntimeError: device-side assert" in out and "PASS  fine" in out
    assert "1 of 2 checks passed; failed: broken" in out
    assert json.loads((tmp_path / "out.json").read_text())["checks"]["broken"]["passed"] is False


@pytest.mark.slow
def test_the_dry_run_goes_through_every_check(gpu_check, tmp_path, capsys):
    """~25 s on this 2-core machine: the shipped guide's sampling and infer, Gibbs, a few training steps."""
    assert gpu_check.main(["--dry-run", "--output", str(tmp_path / "out.json")]) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["dry_run"] and set(result["checks"]) == set(gpu_check.CHECKS)
    assert all(check["passed"] for check in result["checks"].values()), result
    assert "6 of 6 checks passed" in capsys.readouterr().out
