"""Content-addressed storage over a :class:`BlobStore`: files, bytes and trees by BLAKE3.

A tree is a manifest of ``FileEntry`` rows sorted by path, stored as a blob itself, so a
folder of a million files is one manifest plus its blobs.

Tree format 2 (written by this version) is a streaming text manifest::

    cairn-tree 2 00000000000000020000 00000000000204800000\\n     (header: files, bytes)
    <digest> <size> <x|-> <path>\\n                                (one line per file)

Lines are sorted by path (Python ``str`` order, which is UTF-8 byte order) with no
duplicates; ``x`` marks an executable file. In paths a backslash is written ``\\\\`` and
a newline ``\\n``; names that are not valid UTF-8 keep their bytes (``surrogateescape``).
The two header numbers have a fixed width so a streaming writer can fill them in at the
end. Format 1 (canonical JSON, ``{"cairn-tree": 1, "files": [...]}``) is still read.

Every path read from a tree is checked before it is handed out: an absolute path, a ``..``
or ``.`` segment, an empty segment or a NUL byte raises :class:`CorruptBlobError` naming
it, so materializing a tree can never write outside its destination.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cairn.entities import Digest, FileEntry
from cairn.errors import CorruptBlobError, InputError, StoreNotWritableError
from cairn.store._fileops import _mkstemp
from cairn.store.blobs import BlobStore, LocalBlobStore

_CHUNK = 1 << 20
_MMAP_THRESHOLD = 16 << 20

TREE_MAGIC = b"cairn-tree 2 "
_HEADER_LEN = len(TREE_MAGIC) + 20 + 1 + 20 + 1
_ROW = re.compile(r"([0-9a-f]{64}) (0|[1-9][0-9]{0,19}) ([x-]) (.+)", re.DOTALL)
_UNESCAPE = re.compile(r"\\(.?)", re.DOTALL)

#: A manifest row as the fast paths use it: (path, digest, size, executable).
Row = tuple[str, Digest, int, bool]


@dataclass(frozen=True)
class TreeInfo:
    """A stored tree: its digest, how many files it lists and their total size.

    ``skipped`` lists ``(path, reason)`` for what a folder walk left out (symlinks,
    sockets, files that vanished while it ran).
    """

    tree_digest: Digest
    file_count: int
    size: int
    skipped: tuple[tuple[str, str], ...] = ()


def hash_file(path: Path | str) -> tuple[Digest, int]:
    """BLAKE3 digest and size of a file; large files are hashed with several threads."""
    from blake3 import blake3

    size = os.stat(path).st_size
    if size >= _MMAP_THRESHOLD:
        hasher = blake3(max_threads=blake3.AUTO)
        hasher.update_mmap(str(path))
        return hasher.hexdigest(), size
    with open(path, "rb") as fh:
        return blake3(fh.read()).hexdigest(), size


def hash_bytes(data: bytes) -> Digest:
    from blake3 import blake3

    return blake3(data).hexdigest()


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a tree path (relative POSIX, no ``.``/``..``), or None."""
    if not path:
        return "it is empty"
    if path[0] == "/":
        return "it is absolute"
    if "\0" in path:
        return "it contains a NUL byte"
    if path[-1] == "/" or "//" in path:
        return "it has an empty segment"
    wrapped = f"/{path}/"
    if "/../" in wrapped:
        return "it has a '..' segment"
    if "/./" in wrapped:
        return "it has a '.' segment"
    return None


class PathOrder:
    """Checks that tree paths come strictly sorted and that no file is also a folder.

    Files whose name could still prefix a later path are kept on a short stack: the paths
    that start with ``name/`` sort in one block after ``name``, so the stack only ever
    holds a chain of prefixes (its depth is bounded by the nesting of names).
    """

    __slots__ = ("last", "_files")

    def __init__(self) -> None:
        self.last: str | None = None
        self._files: list[str] = []

    def problem(self, path: str) -> str | None:
        if self.last is not None and path <= self.last:
            return "it is out of order or listed twice"
        stack = self._files
        while stack:
            top = stack[-1]
            if path.startswith(top):
                after = path[len(top)]
                if after == "/":
                    return f"{top!r} is listed as a file and as a folder"
                if after < "/":
                    break  # still between `top` and `top/…`: keep it
            stack.pop()
        stack.append(path)
        self.last = path
        return None


def _escape(path: str) -> str:
    if "\\" in path or "\n" in path:
        return path.replace("\\", "\\\\").replace("\n", "\\n")
    return path


def _unescape_one(m: re.Match[str]) -> str:
    c = m.group(1)
    if c == "\\":
        return "\\"
    if c == "n":
        return "\n"
    raise ValueError(f"bad escape \\{c}")


def _corrupt(digest: Digest, what: str) -> CorruptBlobError:
    return CorruptBlobError(
        f"tree {digest[:12]} is corrupt: {what}",
        "the manifest was damaged or written by a broken tool; re-create the version "
        "from its source folder",
    )


class TreeWriter:
    """Writes a format-2 manifest row by row to a temp file; ``commit`` stores it.

    Rows must come sorted by path (checked). Nothing is visible in the store until
    :meth:`commit`; :meth:`abort` (or leaving a ``with`` block on an exception) removes
    the temp file. Memory stays flat whatever the number of rows.
    """

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        try:
            spool = _spool_dir(blobs)
            if spool is None:
                import tempfile

                spool = tempfile.gettempdir()
            fd, name = _mkstemp(spool, ".tree-")
        except OSError as exc:
            raise StoreNotWritableError(
                f"cannot write the blob store at {blobs.url}: {exc.strerror or exc}",
                "check the folder's permissions, or set CAIRN_DATA_DIR to a writable folder",
            ) from exc
        self._path = Path(name)
        self._fh: BinaryIO = os.fdopen(fd, "wb", buffering=1 << 20)
        self._fh.write(b"\0" * _HEADER_LEN)  # filled in by commit()
        self._order = PathOrder()
        self._pending: list[str] = []
        self.file_count = 0
        self.size = 0
        self._done = False

    def __enter__(self) -> TreeWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None or not self._done:
            self.abort()

    def add(self, path: str, digest: Digest, size: int, executable: bool = False) -> None:
        """Append one row; ``InputError`` if the path is unsafe or out of order."""
        problem = path_problem(path) or self._order.problem(path)
        if problem is not None:
            raise InputError(f"cannot store {path!r} in a tree: {problem}")
        if len(digest) != 64:
            raise InputError(f"cannot store {path!r} in a tree: {digest!r} is not a digest")
        pending = self._pending
        pending.append(f"{digest} {size} {'x' if executable else '-'} {_escape(path)}\n")
        self.file_count += 1
        self.size += size
        if len(pending) >= 4096:
            self._flush()

    def add_walked(self, path: str, digest: Digest, size: int, executable: bool) -> None:
        """Like :meth:`add` for paths from a sorted walk of a real folder.

        Names read from a directory are always valid segments and a folder cannot hold a
        file and a folder of the same name, so only the order is checked.
        """
        if self._order.last is not None and path <= self._order.last:
            raise InputError(f"cannot store {path!r} in a tree: it is out of order or "
                             "listed twice")
        self._order.last = path
        pending = self._pending
        pending.append(f"{digest} {size} {'x' if executable else '-'} {_escape(path)}\n")
        self.file_count += 1
        self.size += size
        if len(pending) >= 4096:
            self._flush()

    def add_entries(self, entries: Iterable[FileEntry]) -> None:
        for e in entries:
            self.add(e.path, e.digest, e.size, e.executable)

    def _flush(self) -> None:
        if self._pending:
            self._fh.write("".join(self._pending).encode("utf-8", "surrogateescape"))
            self._pending.clear()

    def commit(self) -> Digest:
        """Store the manifest (fsynced, renamed into place) and return its digest."""
        self._flush()
        self._fh.seek(0)
        self._fh.write(b"%s%020d %020d\n" % (TREE_MAGIC, self.file_count, self.size))
        self._fh.flush()
        self._fh.close()
        digest = _hash_stream(self._path)
        self._blobs.put_path(digest, self._path, move=True)
        self._path.unlink(missing_ok=True)  # a copying backend leaves it behind
        self._done = True
        return digest

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._path.unlink(missing_ok=True)
        self._done = True


def _spool_dir(blobs: BlobStore) -> str | None:
    """A temp folder on the store's filesystem when it has one (so commit is a rename)."""
    if isinstance(blobs, LocalBlobStore):
        tmp = blobs.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return str(tmp)
    staging = getattr(blobs, "staging_dir", None)
    folder = staging() if callable(staging) else None
    return str(folder) if folder is not None else None


class ContentStore:
    """Put and get content by digest; verify on read; materialize by link or copy."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    # -- writing ----------------------------------------------------------------------
    def put_file(self, path: Path | str, *, move: bool = False) -> tuple[Digest, int]:
        """Store a file; returns (digest, size). ``move`` lets the store take the file."""
        path = Path(path)
        digest, size = hash_file(path)
        self.blobs.put_path(digest, path, move=move)
        return digest, size

    def put_bytes(self, data: bytes) -> Digest:
        digest = hash_bytes(data)
        self.blobs.put_bytes(digest, data)
        return digest

    def put_json(self, value: object) -> Digest:
        return self.put_bytes(_canonical(value))

    def put_tree(self, entries: Iterable[FileEntry], *, presorted: bool = False) -> Digest:
        """Store a manifest of files (already stored) and return the tree's digest.

        Entries may come in any order (they are sorted in memory) unless ``presorted``,
        in which case they are streamed straight to disk and their order is checked: use
        it with a generator for trees of millions of files. A path listed twice, unsafe,
        or both a file and a folder raises ``InputError``.
        """
        if not presorted:
            entries = sorted(entries, key=lambda e: e.path)
        with self.tree_writer() as writer:
            writer.add_entries(entries)
            return writer.commit()

    def tree_writer(self) -> TreeWriter:
        """A streaming :class:`TreeWriter` for rows that come sorted by path."""
        return TreeWriter(self.blobs)

    # -- reading ----------------------------------------------------------------------
    def has(self, digest: Digest) -> bool:
        return self.blobs.has(digest)

    def read_bytes(self, digest: Digest) -> bytes:
        """The blob's bytes, verified against the digest."""
        with self.blobs.open(digest) as fh:
            data = fh.read()
        if hash_bytes(data) != digest:
            raise CorruptBlobError(
                f"blob {digest[:12]} is corrupt: its bytes no longer match its digest",
                "restore it from a backup or re-run the execution that produced it",
            )
        return data

    def read_json(self, digest: Digest) -> object:
        return json.loads(self.read_bytes(digest))

    def get_tree(self, digest: Digest) -> list[FileEntry]:
        """All entries of a tree (either format), sorted by path."""
        return list(self.iter_tree(digest))

    def iter_tree(self, digest: Digest) -> Iterator[FileEntry]:
        """Stream a tree's entries sorted by path, in flat memory; paths are validated."""
        for path, d, size, x in self.iter_rows(digest):
            yield FileEntry(path, d, size, x)

    def tree_totals(self, digest: Digest) -> tuple[int, int]:
        """(file count, total size) of a tree; cheap for format 2 (read from the header)."""
        with self.blobs.open(digest) as fh:
            head = fh.read(_HEADER_LEN)
        if head.startswith(TREE_MAGIC):
            return _parse_header(digest, head)
        count = size = 0
        for row in self.iter_rows(digest):
            count += 1
            size += row[2]
        return count, size

    def iter_rows(self, digest: Digest) -> Iterator[Row]:
        """Like :meth:`iter_tree` but yields ``(path, digest, size, executable)`` tuples.

        The whole manifest is verified against its digest before the first row is
        handed out, so no caller ever acts on a damaged manifest.
        """
        if not getattr(self.blobs, "verifies_reads", False) and not self.verify(digest):
            raise _corrupt(digest, "its bytes no longer match its digest")
        with self.blobs.open(digest) as fh:
            head = fh.read(_HEADER_LEN)
            if head.startswith(TREE_MAGIC):
                _parse_header(digest, head)
                yield from _iter_v2(digest, fh)
                return
            rest = fh.read()
        yield from _iter_v1(digest, head + rest)

    def verify(self, digest: Digest) -> bool:
        """Whether the stored blob still hashes to its digest."""
        from blake3 import blake3

        local = self.blobs.local_path(digest)
        if local is not None:
            return _hash_stream(local) == digest
        hasher = blake3()
        with self.blobs.open(digest) as fh:
            while chunk := fh.read(_CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest() == digest

    # -- materializing ----------------------------------------------------------------
    def materialize(
        self,
        digest: Digest,
        dest: Path,
        *,
        link: bool = True,
        executable: bool = False,
    ) -> str:
        """Place the blob at ``dest``. Returns how: ``"link"`` or ``"copy"``.

        Links (hardlinks to the read-only blob) are used when ``link`` is true and the
        store is on the same filesystem; otherwise the bytes are copied and verified.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() or dest.is_symlink():
            dest.unlink()
        source = self.blobs.local_path(digest) if link else None
        if source is not None:
            try:
                os.link(source, dest)
                return "link"
            except OSError:
                pass
        if source is not None:
            import shutil

            shutil.copyfile(source, dest)
        else:
            self.blobs.fetch(digest, dest)
        if hash_file(dest)[0] != digest:
            dest.unlink()
            raise CorruptBlobError(
                f"blob {digest[:12]} is corrupt: its bytes no longer match its digest",
                "restore it from a backup or re-run the execution that produced it",
            )
        os.chmod(dest, 0o755 if executable else 0o644)
        return "copy"


def _hash_stream(path: Path) -> Digest:
    """BLAKE3 of a file read in chunks (not mapped: a big manifest must not swell RSS)."""
    from blake3 import blake3

    hasher = blake3()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            hasher.update(view[:n])
    return hasher.hexdigest()


def _parse_header(digest: Digest, head: bytes) -> tuple[int, int]:
    try:
        count, size = head[len(TREE_MAGIC):].split()
        return int(count), int(size)
    except ValueError:
        raise _corrupt(digest, "its header is unreadable") from None


def _iter_v2(digest: Digest, fh: BinaryIO) -> Iterator[Row]:
    order = PathOrder()
    match = _ROW.fullmatch
    rest = b""
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        cut = chunk.rfind(b"\n")
        if cut < 0:
            rest += chunk
            continue
        block = (rest + chunk[:cut]).decode("utf-8", "surrogateescape")
        rest = chunk[cut + 1:]
        for line in block.split("\n"):
            m = match(line)
            if m is None:
                raise _corrupt(digest, f"unreadable line {line[:120]!r}")
            d, size, x, path = m.groups()
            if "\\" in path:
                try:
                    path = _UNESCAPE.sub(_unescape_one, path)
                except ValueError as exc:
                    raise _corrupt(digest, f"path {path!r}: {exc}") from None
            problem = path_problem(path) or order.problem(path)
            if problem is not None:
                raise _corrupt(digest, f"refusing path {path!r}: {problem}")
            yield path, d, int(size), x == "x"
    if rest:
        raise _corrupt(digest, "its last line is cut short")


def _iter_v1(digest: Digest, data: bytes) -> Iterator[Row]:
    try:
        value = json.loads(data)
    except ValueError:
        raise _corrupt(digest, "it is not a tree manifest") from None
    if not isinstance(value, dict) or value.get("cairn-tree") != 1:
        raise CorruptBlobError(f"blob {digest[:12]} is not a tree manifest")
    order = PathOrder()
    for row in value.get("files", ()):
        try:
            path, d, size, x = row
        except (TypeError, ValueError):
            raise _corrupt(digest, f"unreadable row {row!r}") from None
        if not isinstance(path, str) or not isinstance(d, str) or not isinstance(size, int):
            raise _corrupt(digest, f"unreadable row {row!r}")
        problem = path_problem(path) or order.problem(path)
        if problem is not None:
            raise _corrupt(digest, f"refusing path {path!r}: {problem}")
        yield path, d, size, bool(x)


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
