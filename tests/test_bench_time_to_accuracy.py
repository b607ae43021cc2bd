"""Smoke test of benchmarks/bench_time_to_accuracy.py: its core function on a tiny problem gives a complete,
finite table (the full benchmark takes ~20 minutes and is not part of the test run)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_time_to_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_time_to_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(bench):
    return bench.run_benchmark(sizes=(30,), reference_sweeps=20, gibbs_sweeps=6, acp_samples=(10, 100),
                               nuts_samples=(2,), nuts_max_n=30, reference_chains=4, gibbs_chains=2,
                               log=lambda _: None, data_seeds=(0, 5))


@pytest.mark.slow  # the shared `result` fixture runs the benchmark (3-5 s)
def test_table_has_every_method_and_finite_values(bench, result):
    rows = bench.table_rows(result, all_gibbs=True)
    assert {"N", "method", "setting", "time", "error"} == set(rows[0])
    assert list(result["sizes"]) == ["30", "30/seed 5"]  # one entry per data set
    assert [entry["data_seed"] for entry in result["sizes"].values()] == [0, 5]
    methods = [row["method"] for row in rows]
    assert methods.count("acp") == 4 and methods.count("nuts") == 2 and methods.count("reference split-half") == 2
    assert [row["setting"] for row in rows if row["method"] == "gibbs"] == [f"{t} sweeps" for t in range(1, 7)] * 2
    for row in rows:
        assert row["N"] == 30
        assert math.isfinite(row["time"]) and row["time"] > 0
        assert math.isfinite(row["error"]) and 0 <= row["error"] <= 1
    gibbs_times = [row["time"] for row in rows if row["method"] == "gibbs"]
    assert gibbs_times[:6] == sorted(gibbs_times[:6]) and gibbs_times[6:] == sorted(gibbs_times[6:])


@pytest.mark.slow
def test_summary_ratios_and_text(bench, result):
    summary = result["sizes"]["30"]["summary"]
    for name in ("target", "best"):
        assert summary[name]["ratio"] > 0 and math.isfinite(summary[name]["ratio_cold"])
    assert summary["target"]["acp_samples"] == 100
    assert result["machine"]["torch_threads"] >= 1
    text = bench.format_table(result)
    assert "N=30:" in text and "N=30/seed 5:" in text


def test_time_to_error_and_skipped_nuts(bench):
    curve = [{"time": 1.0, "error": 0.3}, {"time": 2.0, "error": 0.1}, {"time": 4.0, "error": 0.2}]
    assert bench.time_to_error(curve, 0.15) == 2.0
    assert bench.time_to_error(curve, 0.05) is None
    assert bench._checkpoints(30)[:10] == list(range(1, 11)) and bench._checkpoints(30)[-1] == 30
    assert bench._per_size([5, 6], (10, 20), {}, "x") == {10: 5, 20: 6}
