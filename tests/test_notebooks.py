"""Execute every teaching notebook in notebooks/ top to bottom, in fast mode (CI=1), and fail on any cell error.

Each notebook is read into memory and executed there (the stored file, with its full-mode outputs, is never
rewritten); the executed copy is written to pytest's tmp_path so a failure can be inspected. Every claim in the
notebooks is an ``assert`` in a code cell, so executing them is the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def test_notebooks_are_found() -> None:
    """Guard against the glob silently matching nothing (the parametrized test would then not run at all)."""
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the notebook with CI=1 (fast mode), working directory notebooks/; any cell error fails the test."""
    monkeypatch.setenv("CI", "1")  # inherited by the kernel process
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
    finally:
        nbformat.write(notebook, tmp_path / path.name)
