"""A cache of file digests so re-versioning an unchanged folder costs about a stat walk.

A record maps a file of a versioned folder to its ``(size, mtime_ns, inode, ctime_ns)``
when it was hashed and the digest it had then. A file whose stat still matches is taken
as unchanged: editing it changes its mtime and ctime, replacing it changes its inode and
ctime, and no process can set a ctime back.

*Racy* files are never cached: a file whose mtime or ctime lies within
``racy_window_ns`` (2 s) of the start of the walk could still change within the same
timestamp tick without its stat changing (what git calls "racily clean"). Such files are
hashed again next time, and cached once they are old enough.

Layout: the cache is a folder with one compact text file per versioned folder (named
by the BLAKE3 of its real path), its records sorted by relative path::

    cairn-hashcache 2 <store mark or -> /abs/path/of/the/folder
    <size> <mtime_ns> <inode> <ctime_ns> <digest> <path, escaped like tree manifests>

The store mark is the local blob store's removal mark when the walk began (see
``LocalBlobStore.removal_mark``): each recorded digest was stored then. While the store's
mark is unchanged nothing was removed since, so a walk may take a matching record's
blob as stored (:attr:`CacheScan.stored`) without asking the store file by file.

A walk in which every file was recorded ends the file with a trailer naming the tree it
stored, ``#tree <digest> <files> <size>``: the records are then exactly that tree's files,
in its order, and a later walk can compare the folder with them file by file before doing
anything else (see :func:`cairn.store.folders.rewalk`).

A walk yields paths in the same order, so lookups are a merge of two sorted streams:
no query per file and flat memory for millions of files. Each walk writes a new file
with the records of what it saw and renames it into place when the version is stored;
two walks of the same folder at once each leave a consistent file (the last one wins).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from cairn.entities import Digest
from cairn.errors import StoreNotWritableError
from cairn.store._fileops import _mkstemp

#: (size, mtime_ns, inode, ctime_ns): what must still match for a cached digest to hold.
StatKey = tuple[int, int, int, int]

RACY_WINDOW_NS = 2_000_000_000
_MAGIC = "cairn-hashcache 2 "
_TRAILER = "#tree "
_BLOCK = 1 << 20


class LastTree(NamedTuple):
    """What a folder's cache file says it was last versioned as (see the module doc)."""

    tree: Digest
    files: int
    size: int
    store_mark: str  # the store's removal mark when that walk began ("-": none)


def _escape(path: str) -> str:
    if "\\" in path or "\n" in path:
        return path.replace("\\", "\\\\").replace("\n", "\\n")
    return path


def _unescape(path: str) -> str:
    if "\\" not in path:
        return path
    out, i = [], 0
    while i < len(path):
        c = path[i]
        if c == "\\" and i + 1 < len(path):
            out.append("\n" if path[i + 1] == "n" else path[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class HashCache:
    """Digests of files seen before, keyed by (path, size, mtime_ns, inode, ctime_ns).

    ``path`` is the cache's folder (created on first use). Use as a context manager or
    call :meth:`close` (kept for symmetry: nothing stays open between walks); pass it to
    :func:`cairn.store.folders.version_folder`.
    """

    def __init__(self, path: Path | str, *, racy_window_ns: int = RACY_WINDOW_NS) -> None:
        self.path = Path(path)
        self.racy_window_ns = racy_window_ns

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def file_for(self, root: Path | str) -> Path:
        from blake3 import blake3

        name = blake3(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return self.path / f"{name}.txt"

    def scan(self, root: Path | str, started_ns: int | None = None,
             store_mark: str | None = None) -> CacheScan:
        """A pass over folder ``root`` (a real path): lookups in path order, then commit.

        ``store_mark`` is the blob store's removal mark, read before the walk (None for a
        store without one).
        """
        started = time.time_ns() if started_ns is None else started_ns
        return CacheScan(self, str(root), started - self.racy_window_ns, store_mark)

    def last_tree(self, root: Path | str) -> LastTree | None:
        """The tree folder ``root`` was last versioned as, if its records are all of it."""
        try:
            with open(self.file_for(root), "rb") as fh:
                return _last_tree(fh, str(root))
        except OSError:
            return None

    def read_last(self, root: Path | str) -> tuple[LastTree, Iterator[str]] | None:
        """:meth:`last_tree` and that tree's records (lines in path order, without their
        newlines; see the module doc), read from one file. Close the iterator when done."""
        try:
            fh = open(self.file_for(root), "rb")
        except OSError:
            return None
        try:
            last = _last_tree(fh, str(root))
        except OSError:
            last = None
        if last is None:
            fh.close()
            return None
        fh.seek(0)
        fh.readline()
        return last, _records(fh)

    def records(self, root: Path | str) -> Iterator[str]:
        """The record lines of folder ``root``'s cache file (see :meth:`read_last`)."""
        read = self.read_last(root)
        return read[1] if read is not None else iter(())

    def lines(self, root: Path | str) -> Iterator[tuple[str, str]]:
        """(path, record line) of each record of folder ``root``, sorted by path; a line
        starts ``"<size> <mtime_ns> <inode> <ctime_ns> <digest> "``."""
        return _read(self.file_for(root), str(root))

    def digests(self, root: Path | str) -> Iterator[tuple[str, StatKey, Digest]]:
        """(path, stat key, digest) of each record of folder ``root``, sorted by path."""
        for path, line in self.lines(root):
            size, mtime, ino, ctime, digest, _ = line.split(" ", 5)
            yield path, (int(size), int(mtime), int(ino), int(ctime)), digest

    def get(self, root: Path | str, rel: str) -> tuple[StatKey, Digest] | None:
        """One record, for inspection and tests."""
        for path, key, digest in self.digests(root):
            if path == rel:
                return key, digest
        return None


def _last_tree(fh: BinaryIO, root: str) -> LastTree | None:
    head = fh.readline(1 << 16).decode("utf-8", "surrogateescape")
    mark, _, named = head.removeprefix(_MAGIC).partition(" ")
    if not head.startswith(_MAGIC) or named != f"{_escape(root)}\n":
        return None
    end = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, end - 256))
    tail = fh.read().decode("utf-8", "surrogateescape")
    last = tail[tail.rfind("\n", 0, len(tail) - 1) + 1:]
    if not last.startswith(_TRAILER) or not last.endswith("\n"):
        return None
    parts = last[len(_TRAILER):].split()
    if len(parts) != 3 or len(parts[0]) != 64:
        return None
    try:
        return LastTree(parts[0], int(parts[1]), int(parts[2]), mark)
    except ValueError:
        return None


def _lines(fh: BinaryIO) -> Iterator[str]:
    """The whole lines from here on, without their newlines, read in large blocks (a last
    line without its newline was cut short: it is left out)."""
    rest = b""
    while block := fh.read(_BLOCK):
        block = rest + block
        cut = block.rfind(b"\n") + 1
        rest = block[cut:]
        yield from block[:cut].decode("utf-8", "surrogateescape").split("\n")[:-1]


def _records(fh: BinaryIO) -> Iterator[str]:
    """The record lines from here on, up to the trailer; closes ``fh`` at the end."""
    with fh:
        for line in _lines(fh):
            if line.startswith("#"):
                return
            yield line


def _header(mark: str | None, root: str) -> str:
    return f"{_MAGIC}{mark or '-'} {_escape(root)}\n"


def _read(file: Path, root: str, marks: list[str] | None = None
          ) -> Iterator[tuple[str, str]]:
    """(path, line) of each record, read in large blocks; a damaged tail ends it.

    The store mark of the file's header is appended to ``marks`` before the first record.
    """
    try:
        fh = open(file, "rb")
    except OSError:
        return
    with fh:
        head = fh.readline().decode("utf-8", "surrogateescape")
        mark, _, named = head.removeprefix(_MAGIC).partition(" ")
        if not head.startswith(_MAGIC) or named != f"{_escape(root)}\n":
            return  # another format or (by a 128-bit chance) another folder: start afresh
        if marks is not None:
            marks.append(mark)
        for line in _lines(fh):
            parts = line.split(" ", 5)
            if len(parts) != 6 or len(parts[4]) != 64:
                return  # a damaged tail (or the trailer): what is left is not cached
            path = parts[5]
            yield (_unescape(path) if "\\" in path else path), line + "\n"


class CacheScan:
    """Merges the cached records of one folder with a walk that asks in path order.

    :meth:`match` must be called with strictly increasing paths; :meth:`record` (or
    :meth:`keep`, for a record that still holds) is called for every file the new version
    holds, in the same order, whose stat may be trusted next time; a path not recorded is
    dropped. :meth:`commit` makes the new records the cache's.
    """

    def __init__(self, cache: HashCache, root: str, racy_before_ns: int,
                 store_mark: str | None = None) -> None:
        self.root = root
        self.racy_before_ns = racy_before_ns
        self._file = cache.file_for(root)
        marks: list[str] = []
        self._rows = _read(self._file, root, marks)
        self._head = next(self._rows, None)
        #: Whether a matching record's blob may be taken as stored without asking: the
        #: store's removal mark is the one the records were written under.
        self.stored = store_mark is not None and marks == [store_mark]
        self._out: BinaryIO | None = None
        self._tmp: str | None = None
        self._lines: list[str] = []
        #: How many records this walk has kept or recorded.
        self.count = 0
        try:
            cache.path.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = _mkstemp(cache.path, ".scan-")
            self._out = os.fdopen(fd, "wb", buffering=1 << 20)
            self._lines.append(_header(store_mark, root))
        except OSError as exc:
            self._rows.close()
            raise StoreNotWritableError(
                f"cannot write the hash cache in {cache.path}: {exc.strerror or exc}",
                "check the folder's permissions, or delete it (it is only a cache)",
            ) from exc

    def match(self, rel: str, key: StatKey) -> tuple[Digest, str] | None:
        """``rel``'s cached ``(digest, line)`` if its record holds ``key``; else None.

        ``line`` goes to :meth:`keep`.
        """
        head = self._head
        while head is not None and head[0] < rel:
            head = next(self._rows, None)
        if head is None or head[0] != rel:
            self._head = head
            return None
        self._head = next(self._rows, None)
        line = head[1]
        prefix = "%d %d %d %d " % key  # compared as text: no number parsed per record
        if not line.startswith(prefix):
            return None
        cut = len(prefix)
        return line[cut:cut + 64], line

    def cacheable(self, mtime_ns: int, ctime_ns: int) -> bool:
        """Whether a file with these timestamps may be cached (it is not racy)."""
        return mtime_ns < self.racy_before_ns and ctime_ns < self.racy_before_ns

    def record(self, rel: str, key: StatKey, digest: Digest) -> None:
        """Keep ``rel``'s record in the new cache (paths must come in increasing order)."""
        size, mtime, ino, ctime = key
        self._lines.append(f"{size} {mtime} {ino} {ctime} {digest} {_escape(rel)}\n")
        self.count += 1
        if len(self._lines) >= 8192:
            self._flush()

    def keep(self, line: str) -> None:
        """Keep a record found by :meth:`match` that still holds (in path order too)."""
        self._lines.append(line)
        self.count += 1
        if len(self._lines) >= 8192:
            self._flush()

    def keep_path(self, rel: str) -> None:
        """Keep ``rel``'s record as it is, if there is one: a file known unchanged."""
        head = self._head
        while head is not None and head[0] < rel:
            head = next(self._rows, None)
        if head is not None and head[0] == rel:
            self.keep(head[1])
            head = next(self._rows, None)
        self._head = head

    def _flush(self) -> None:
        if self._out is not None and self._lines:
            self._out.write("".join(self._lines).encode("utf-8", "surrogateescape"))
            self._lines.clear()

    def commit(self, tree: Digest | None = None, files: int = 0, size: int = 0) -> None:
        """Replace the folder's cache file with what this walk recorded.

        ``tree`` (of ``files`` files, ``size`` bytes) is what the walk stored: named in
        the trailer when every one of its files was recorded.
        """
        try:
            if tree is not None and self.count == files:
                self._lines.append(f"{_TRAILER}{tree} {files} {size}\n")
            self._flush()
            if self._out is not None:
                self._out.close()
                os.replace(self._tmp, self._file)  # type: ignore[arg-type]
                self._tmp = None
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop what this walk recorded; the previous cache file stays as it was."""
        self._rows.close()
        self._lines.clear()
        if self._out is not None and not self._out.closed:
            self._out.close()
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            self._tmp = None
