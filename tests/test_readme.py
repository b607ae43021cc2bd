"""The README is the front door: it opens with the two set-up commands, stays short, and every ```python block
in it runs as printed, in order, in one namespace (later blocks use names from earlier ones), on a CPU."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

SETUP_COMMANDS = (
    'pip install torch==2.13.0 -e . && pyro-acp demo          # the main job, on the shipped pretrained guide',
    'pip install torch==2.13.0 -e ".[test]" && pytest -q      # the tests',
)
MAX_WORDS = 1100


def code_blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced ```language blocks of a Markdown text, in order."""
    return re.findall(rf"^```{language}[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_opens_with_the_setup_commands_and_is_short():
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"^```(\w*)[ \t]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert first_block is not None, "README.md has no code block"
    # the title may come first, but no prose or other block before the commands
    assert text[: first_block.start()].strip().startswith("#")
    assert "\n" not in text[: first_block.start()].strip()
    assert first_block.group(1) == "bash"
    assert first_block.group(2).splitlines() == list(SETUP_COMMANDS)
    words = len(text.split())
    assert words < MAX_WORDS, f"README.md has {words} words (limit {MAX_WORDS}); move detail to docs/"


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)\)", text)
    assert targets, "README.md links nowhere"
    missing = [t for t in targets if "://" not in t and not (README.parent / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    assert "../shared" not in text, "README.md must not point at folders users do not have"


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg", force=True)
    blocks = code_blocks(README.read_text(encoding="utf-8"), "python")
    assert len(blocks) >= 3, "README.md should show an example, training and a check against exact answers"

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYRO_ACP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    namespace: dict = {"__name__": "__readme__"}
    for number, block in enumerate(blocks, start=1):
        code = compile(block, f"README.md python block {number}", "exec")
        exec(code, namespace)  # noqa: S102 - the README's own examples, run as printed

    # nothing was trained on demand: every guide the blocks use is shipped or trained by them
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert (tmp_path / "posterior.png").stat().st_size > 0
    # the check block really compares against the exact posterior
    table = next((v for v in namespace.values() if type(v).__name__ == "ComparisonTable"), None)
    assert table is not None, "the README's check block should build a pyro_acp.compare table"
    assert any(row.get("tv") is not None for row in table), "the comparison should be against an exact posterior"
