"""The schema revisions this cairn knows (kept free of SQLAlchemy: :mod:`.quick` reads them)."""

from __future__ import annotations

KNOWN_REVISIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004")
"""Every revision of the migration history, oldest first (a test checks it)."""

HEAD_REVISION: str = KNOWN_REVISIONS[-1]
"""The revision this version of cairn reads and writes."""
