"""Human-readable quantities."""

from __future__ import annotations

from cairn.units import count, format_size


def test_count_says_one_file_and_many_files() -> None:
    assert count(1, "file") == "1 file"
    assert count(0, "file") == "0 files"
    assert count(20_000, "blob") == "20,000 blobs"
    assert count(2, "entry", "entries") == "2 entries"


def test_format_size() -> None:
    assert [format_size(n) for n in (None, 0, 1023, 1536, 5 * 1024**3)] == [
        "-", "0 B", "1023 B", "1.5 KB", "5.0 GB"]
