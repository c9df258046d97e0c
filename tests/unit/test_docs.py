"""Every document the code and the docs cite is in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# A cited document: a path ending in .md, bare (``docs/design.md``) or as a Markdown link target.
_CITED = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def tracked_sources() -> list[Path]:
    """The Python and Markdown files git tracks (and new ones it does not ignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py", "*.md"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO_ROOT / name for name in listed if (REPO_ROOT / name).is_file()]


def resolves(citing: Path, cited: str) -> bool:
    """A citation resolves relative to the citing file, to the repository root, or to docs/."""
    return any((base / cited).is_file() for base in (citing.parent, REPO_ROOT, REPO_ROOT / "docs"))


def test_every_cited_document_is_in_the_repository() -> None:
    sources = tracked_sources()
    assert any(path.name == "architecture.md" for path in sources)
    unresolved = [
        f"{path.relative_to(REPO_ROOT)}: {cited}"
        for path in sources
        if path != Path(__file__).resolve()  # the test below cites missing documents on purpose
        for cited in _CITED.findall(path.read_text(encoding="utf-8"))
        if not resolves(path, cited)
    ]
    assert unresolved == []


def test_a_missing_document_would_be_found(tmp_path: Path) -> None:
    citing = tmp_path / "module.py"
    citing.write_text('"""Rules from DESIGN.md and docs/nowhere.md."""\n')
    assert _CITED.findall(citing.read_text()) == ["DESIGN.md", "docs/nowhere.md"]
    assert not resolves(citing, "DESIGN.md")
    assert resolves(REPO_ROOT / "README.md", "docs/architecture.md")
