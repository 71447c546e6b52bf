"""A cache of file digests so re-versioning an unchanged folder costs about a stat walk.

A row maps ``(folder, relative path)`` to the file's ``(size, mtime_ns, inode,
ctime_ns)`` when it was hashed and the digest it had. A file whose stat still matches is
taken as unchanged: editing it changes its mtime/ctime, replacing it changes its inode
and ctime (and a process cannot set ctime back).

*Racy* files are never cached: one whose mtime or ctime is within ``racy_window_ns``
(2 s) of the start of the walk could still change within the same timestamp tick
without its stat changing (the problem git calls "racily clean"); such files are hashed
again next time, and cached once they are old enough.

The cache is one SQLite file (WAL mode; several processes may share it). A walk reads
the folder's rows in path order with one query and merges them with its own sorted walk,
so a lookup costs no query and memory stays flat for millions of files; only rows that
changed are written, in short transactions of a few thousand rows.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from cairn.entities import Digest
from cairn.errors import StoreNotWritableError

#: (size, mtime_ns, inode, ctime_ns): what must still match for a cached digest to hold.
StatKey = tuple[int, int, int, int]

RACY_WINDOW_NS = 2_000_000_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    root TEXT NOT NULL,
    rel TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (root, rel)
) WITHOUT ROWID
"""
_WRITE_BATCH = 5000


def _ino(value: int) -> int:
    """Inode numbers are unsigned 64-bit; SQLite integers are signed."""
    return value - (1 << 64) if value >= 1 << 63 else value


class HashCache:
    """Digests of files seen before, keyed by (path, size, mtime_ns, inode, ctime_ns).

    Use as a context manager (or call :meth:`close`); pass it to
    :func:`cairn.store.folders.version_folder`.
    """

    def __init__(self, path: Path | str, *, racy_window_ns: int = RACY_WINDOW_NS) -> None:
        self.path = Path(path)
        self.racy_window_ns = racy_window_ns
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreNotWritableError(
                f"cannot open the hash cache {self.path}: {exc}",
                "check the folder's permissions, or delete the file (it is only a cache)",
            ) from exc
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._connect()
        return self._db

    def scan(self, root: Path | str, started_ns: int | None = None) -> CacheScan:
        """A pass over folder ``root``: sorted lookups now, changed rows saved on commit."""
        started = time.time_ns() if started_ns is None else started_ns
        return CacheScan(self._conn(), self._connect(), str(root),
                         started - self.racy_window_ns)

    def get(self, root: Path | str, rel: str) -> tuple[StatKey, Digest] | None:
        """One row, for inspection and tests."""
        row = self._conn().execute(
            "SELECT size, mtime_ns, ino, ctime_ns, digest FROM files WHERE root=? AND rel=?",
            (str(root), rel)).fetchone()
        return None if row is None else ((row[0], row[1], row[2], row[3]), row[4])


class CacheScan:
    """Merges the cached rows of one folder with a walk that asks in path order.

    :meth:`lookup` must be called with strictly increasing paths; the rows it steps over
    belong to files that are gone and are deleted on :meth:`commit`.
    """

    def __init__(self, reader: sqlite3.Connection, writer: sqlite3.Connection, root: str,
                 racy_before_ns: int) -> None:
        self.root = root
        self.racy_before_ns = racy_before_ns
        self._writer = writer
        self._rows = self._read(reader, root)
        self._head = next(self._rows, None)
        self._upserts: list[tuple[object, ...]] = []
        self._deletes: list[tuple[str, str]] = []

    @staticmethod
    def _read(db: sqlite3.Connection, root: str) -> Iterator[tuple[str, StatKey, Digest]]:
        cur = db.execute(
            "SELECT rel, size, mtime_ns, ino, ctime_ns, digest FROM files WHERE root=? "
            "ORDER BY rel", (root,))
        for rel, size, mtime, ino, ctime, digest in cur:
            yield rel, (size, mtime, ino, ctime), digest

    def lookup(self, rel: str) -> tuple[StatKey, Digest] | None:
        head = self._head
        while head is not None and head[0] < rel:
            self._delete(head[0])
            head = next(self._rows, None)
        self._head = head
        if head is not None and head[0] == rel:
            self._head = next(self._rows, None)
            return head[1], head[2]
        return None

    def cacheable(self, mtime_ns: int, ctime_ns: int) -> bool:
        """Whether a file with these timestamps may be cached (it is not racy)."""
        return mtime_ns < self.racy_before_ns and ctime_ns < self.racy_before_ns

    def record(self, rel: str, key: StatKey, digest: Digest) -> None:
        """Remember ``rel``'s digest (call only for what changed since the lookup)."""
        size, mtime, ino, ctime = key
        self._upserts.append((self.root, rel, size, mtime, _ino(ino), ctime, digest))
        if len(self._upserts) >= _WRITE_BATCH:
            self._flush()

    def forget(self, rel: str) -> None:
        """Drop ``rel``'s row (it was looked up but can no longer be trusted)."""
        self._delete(rel)

    def _delete(self, rel: str) -> None:
        self._deletes.append((self.root, rel))
        if len(self._deletes) >= _WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        # Each batch is its own short transaction: a row only says "a file with this stat
        # had this digest", which holds whether or not the version is stored, and short
        # transactions never make another process's walk wait for this one.
        if not self._upserts and not self._deletes:
            return
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._deletes:
                db.executemany("DELETE FROM files WHERE root=? AND rel=?", self._deletes)
            if self._upserts:
                db.executemany(
                    "INSERT OR REPLACE INTO files"
                    " (root, rel, size, mtime_ns, ino, ctime_ns, digest)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", self._upserts)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._deletes.clear()
        self._upserts.clear()

    def commit(self) -> None:
        """Save what is left: rows never looked up belong to files that are gone."""
        try:
            while self._head is not None:
                self._delete(self._head[0])
                self._head = next(self._rows, None)
            self._flush()
        finally:
            self._close()

    def abort(self) -> None:
        """Stop without saving what is still pending (what was saved stays true)."""
        self._upserts.clear()
        self._deletes.clear()
        self._close()

    def _close(self) -> None:
        self._rows.close()
        self._writer.close()
