"""Store maintenance: garbage collection and integrity checks.

Garbage collection removes blobs that nothing references: no datum, execution (code tree,
inputs, log, package list), alias or dataset version. Blobs that an execution still being
set up or running may be about to reference are always kept: anything written since the
oldest active execution was created, and anything written within the grace period.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cairn.errors import CorruptBlobError

if TYPE_CHECKING:
    from cairn.orchestration.context import Context
    from cairn.store.cas import ContentStore

Progress = Callable[[int, int | None, int, int | None], None]

DEFAULT_GRACE_SECONDS = 3600.0


@dataclass
class GcReport:
    blobs_seen: int = 0
    referenced: int = 0
    removed: int = 0
    removed_bytes: int = 0
    kept_recent: int = 0
    temporary_removed: int = 0
    dry_run: bool = False


@dataclass
class VerifyReport:
    checked: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def referenced_digests(ctx: Context) -> set[str]:
    """Every digest reachable from the metadata store, with tree members expanded."""
    content = ctx.content
    seen: set[str] = set()
    for digest in ctx.store.referenced_digests():
        if digest in seen:
            continue
        seen.add(digest)
        if _is_tree(content, digest):
            seen.update(entry_digest for entry_digest in _tree_digests(content, digest))
    return seen


def collect_garbage(
    ctx: Context,
    *,
    dry_run: bool = False,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    progress: Progress | None = None,
) -> GcReport:
    """Remove unreferenced blobs (or, with ``dry_run``, count what would go)."""
    report = GcReport(dry_run=dry_run)
    keep = referenced_digests(ctx)
    report.referenced = len(keep)
    oldest = ctx.store.oldest_active_start()
    cutoff = time.time() - grace_seconds
    if oldest is not None:
        cutoff = min(cutoff, oldest.timestamp())
    blobs = ctx.content.blobs
    for digest, size, modified in blobs.iter_blobs():
        report.blobs_seen += 1
        if digest in keep:
            continue
        if modified >= cutoff:
            report.kept_recent += 1
            continue
        if not dry_run:
            blobs.delete(digest)
        report.removed += 1
        report.removed_bytes += size
        if progress is not None:
            progress(report.blobs_seen, None, report.removed_bytes, None)
    sweep = getattr(blobs, "sweep_temporary", None)
    if sweep is not None and not dry_run:  # leftovers of writers that crashed
        report.temporary_removed = sweep(cutoff)
    return report


def verify_store(ctx: Context, *, progress: Progress | None = None) -> VerifyReport:
    """Rehash every blob; report those whose bytes no longer match their digest."""
    report = VerifyReport()
    content = ctx.content
    digests = list(content.blobs.iter_digests())
    for digest in digests:
        try:
            ok = content.verify(digest)
        except FileNotFoundError:
            report.missing.append(digest)
            continue
        report.checked += 1
        path = content.blobs.local_path(digest)
        report.bytes += path.stat().st_size if path is not None else 0
        if not ok:
            report.corrupt.append(digest)
        if progress is not None:
            progress(report.checked, len(digests), report.bytes, None)
    return report


def _is_tree(content: ContentStore, digest: str) -> bool:
    """Whether a blob is a tree manifest (cheap: looks at its first bytes)."""
    try:
        with content.blobs.open(digest) as fh:
            head = fh.read(64)
    except Exception:  # noqa: BLE001 - a missing blob is simply not a tree
        return False
    return head.startswith((b'{"cairn-tree"', b"cairn-tree"))


def _tree_digests(content: ContentStore, digest: str) -> Iterator[str]:
    try:
        entries: Iterable = content.iter_tree(digest) if hasattr(content, "iter_tree") \
            else content.get_tree(digest)
        for entry in entries:
            yield entry.digest
    except CorruptBlobError:
        return


