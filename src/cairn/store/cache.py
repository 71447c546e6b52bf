"""A remote blob store behind a size-bounded local copy: :class:`CachedBlobStore`.

Reads are served from the cache folder (a :class:`~cairn.store.blobs.LocalBlobStore`
layout: ``objects/ab/cdef…``, read-only files that workspaces hardlink), fetching only the
blobs it lacks. Writes go to the cache first, then to the remote. Eviction is least
recently used: every read or write stamps the blob's mtime, and when the cache holds more
than ``max_bytes`` the oldest blobs go until it holds at most 90% of it.

The bound is soft: a blob is never evicted while this process uses it (being fetched,
returned for linking, waiting for upload) or while another process may (stamped within
the last ``grace_s`` seconds). Several processes may share one cache folder; each keeps its
own running total and recounts the folder before it evicts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cairn.entities import Digest
from cairn.errors import NotFoundError
from cairn.store.blobs import BlobStore, LocalBlobStore
from cairn.store.transfer import Progress, TransferResult, copy_blob, pull, push

LOW_WATER = 0.9  # evict down to this share of max_bytes, so eviction is not per write


class CachedBlobStore(BlobStore):
    """``remote`` (the store of record) behind a local cache folder of ``max_bytes``.

    ``max_bytes=None`` keeps everything. ``workers`` bounds parallel uploads of a
    :meth:`batch` and of :meth:`prefetch`. ``grace_s`` is how long after its last use a
    blob is safe from eviction (another process may be linking it).
    """

    def __init__(
        self,
        remote: BlobStore,
        cache_dir: Path | str,
        max_bytes: int | None = None,
        *,
        workers: int = 8,
        grace_s: float = 60.0,
    ) -> None:
        self.remote = remote
        self.cache = LocalBlobStore(cache_dir)
        self.url = remote.url
        self.max_bytes = max_bytes
        self.workers = workers
        self.grace_s = grace_s
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._pins: Counter[Digest] = Counter()
        self._total: int | None = None  # bytes in the cache, as far as this process knows
        self._rescan_after_ns = 0  # after an eviction that could not get under the bound
        self._batch = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_pins", "_total", "_rescan_after_ns", "_batch"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    # -- reading -----------------------------------------------------------------------
    def has(self, digest: Digest) -> bool:
        return self.cache.has(digest) or self.remote.has(digest)

    def has_many(self, digests: Iterable[Digest]) -> set[Digest]:
        wanted = set(digests)
        local = self.cache.has_many(wanted)
        return local | self.remote.has_many(wanted - local)

    def size(self, digest: Digest) -> int:
        path = self.cache.local_path(digest)
        return path.stat().st_size if path is not None else self.remote.size(digest)

    def local_path(self, digest: Digest) -> Path | None:
        """The cached file, fetched from the remote first if missing; None if absent there."""
        with self._pinned([digest]):
            path = self.cache.local_path(digest)
            if path is None:
                try:
                    copy_blob(digest, self.remote, self.cache)
                except NotFoundError:
                    return None
                path = self.cache.local_path(digest)
                if path is None:  # evicted by another process at once: cannot happen in grace
                    return None
                self._stamp(path)
                self._account(path.stat().st_size)
            else:
                self._stamp(path)
            self._evict()  # while pinned: never the blob handed back
        return path

    def open(self, digest: Digest) -> BinaryIO:
        path = self.local_path(digest)
        if path is None:
            raise self._not_found(digest)
        # An open file keeps its bytes even if evicted meanwhile (POSIX unlink semantics).
        return open(path, "rb")

    def fetch(self, digest: Digest, dest: Path) -> None:
        path = self.local_path(digest)
        if path is None:
            raise self._not_found(digest)
        shutil.copyfile(path, dest)

    def iter_digests(self) -> Iterator[Digest]:
        """The remote's digests: it is the store of record."""
        return self.remote.iter_digests()

    def iter_blobs(self) -> Iterator[tuple[Digest, int, float]]:
        return self.remote.iter_blobs()

    def delete(self, digest: Digest) -> None:
        """Remove from the remote (the store of record) and from this machine's cache."""
        self.remote.delete(digest)
        self.cache.delete(digest)

    def staging_dir(self) -> Path | None:
        return self.cache.staging_dir()

    def prefetch(
        self, digests: Iterable[Digest], *, progress: Progress | None = None
    ) -> TransferResult:
        """Fetch into the cache, in parallel, those of ``digests`` it lacks."""
        wanted = list(dict.fromkeys(digests))
        with self._pinned(wanted):
            result = pull(wanted, self.remote, self.cache, workers=self.workers, progress=progress)
            now = time.time_ns()
            for digest in wanted:
                path = self.cache.local_path(digest)
                if path is not None:
                    self._stamp(path, now)
            self._account(result.bytes)
            self._evict()
        return result

    def _not_found(self, digest: Digest) -> NotFoundError:
        return NotFoundError(
            f"blob {digest[:12]} is not in the store at {self.remote.url}",
            "the store may have been pruned or belongs to another project",
        )

    # -- writing -----------------------------------------------------------------------
    def put_path(self, digest: Digest, path: Path, *, move: bool = False) -> None:
        """Store in the cache (taking the file when ``move``), then upload to the remote."""
        with self._pinned([digest]):
            had = self.cache.has(digest)
            self.cache.put_path(digest, path, move=move)
            self._after_local_write(digest, had)
            self._evict()

    def put_bytes(self, digest: Digest, data: bytes) -> None:
        with self._pinned([digest]):
            had = self.cache.has(digest)
            self.cache.put_bytes(digest, data)
            self._after_local_write(digest, had)
            self._evict()

    def _after_local_write(self, digest: Digest, had: bool) -> None:
        cached = self.cache.local_path(digest)
        assert cached is not None  # just written, and pinned
        self._stamp(cached)
        if not had:
            self._account(cached.stat().st_size)
        pending: list[Digest] | None = getattr(self._batch, "pending", None)
        if pending is not None:
            self._pin(digest)  # until the batch has uploaded it
            pending.append(digest)
        else:
            self.remote.put_path(digest, cached)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Puts in this thread reach the cache at once and the remote at the block's end.

        The uploads then run in parallel (``workers``), skipping blobs the remote has, each
        verified against its digest; the first failure is raised. Nested blocks join the
        outermost one.
        """
        return self._batch_block()

    @contextlib.contextmanager
    def _batch_block(self) -> Iterator[None]:
        if getattr(self._batch, "pending", None) is not None:
            yield
            return
        self._batch.pending = []
        try:
            yield
        finally:
            pending: list[Digest] = self._batch.pending
            self._batch.pending = None
            try:
                if pending:
                    push(pending, self.cache, self.remote, workers=self.workers)
            finally:
                for digest in pending:
                    self._unpin(digest)
                self._evict()

    # -- accounting and eviction -------------------------------------------------------
    def _pin(self, digest: Digest) -> None:
        with self._lock:
            self._pins[digest] += 1

    def _unpin(self, digest: Digest) -> None:
        with self._lock:
            self._pins[digest] -= 1
            if self._pins[digest] <= 0:
                del self._pins[digest]

    @contextlib.contextmanager
    def _pinned(self, digests: list[Digest]) -> Iterator[None]:
        for digest in digests:
            self._pin(digest)
        try:
            yield
        finally:
            for digest in digests:
                self._unpin(digest)

    @staticmethod
    def _stamp(path: Path, now_ns: int | None = None) -> None:
        """Mark the blob as used now (explicit nanoseconds: the kernel's clock is coarse)."""
        now_ns = now_ns or time.time_ns()
        with contextlib.suppress(OSError):  # a blob another user owns: it just ages
            os.utime(path, ns=(now_ns, now_ns))

    def _account(self, added: int) -> None:
        if self.max_bytes is None:
            return
        with self._lock:
            if self._total is None:
                self._total = sum(size for _, size, _, _ in self._scan())
            else:
                self._total += added

    def _scan(self) -> list[tuple[int, int, Digest, str]]:
        """(mtime ns, size, digest, path) of every cached blob."""
        rows: list[tuple[int, int, Digest, str]] = []
        objects = self.cache.root / "objects"
        if not objects.is_dir():
            return rows
        for shard in os.scandir(objects):
            if not shard.is_dir():
                continue
            for blob in os.scandir(shard.path):
                try:
                    st = blob.stat()
                except FileNotFoundError:
                    continue
                rows.append((st.st_mtime_ns, st.st_size, shard.name + blob.name, blob.path))
        return rows

    def _evict(self) -> None:
        """Drop least recently used blobs while the cache holds more than ``max_bytes``."""
        if self.max_bytes is None:
            return
        with self._lock:
            if self._total is not None and self._total <= self.max_bytes:
                return
            if time.time_ns() < self._rescan_after_ns:
                return  # everything left is in use; recounting on every call would not help
            rows = self._scan()
            total = sum(size for _, size, _, _ in rows)
            if total > self.max_bytes:
                target = int(self.max_bytes * LOW_WATER)
                safe_after = time.time_ns() - int(self.grace_s * 1e9)
                for mtime, size, digest, path in sorted(rows):
                    if total <= target:
                        break
                    if digest in self._pins or mtime > safe_after:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    total -= size
            self._total = total
            if total > self.max_bytes:
                self._rescan_after_ns = time.time_ns() + int(min(self.grace_s, 1.0) * 1e9)
