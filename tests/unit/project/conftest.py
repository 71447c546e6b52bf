"""Fixtures for the project-file tests; makes ``src/`` importable when cairn is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO / ".." / "shared" / "corpus" / "valohai-yaml"

try:
    import cairn.project  # noqa: F401
except ImportError:  # pragma: no cover - only when the package is not installed
    sys.path.insert(0, str(REPO / "src"))


def corpus_files(kind: str) -> list[Path]:
    """The corpus files of ``kind`` (valid/invalid), or [] when the corpus is absent."""
    folder = CORPUS / kind
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip("the shared valohai-yaml corpus is not next to the repository")
    return CORPUS
