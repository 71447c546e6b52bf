"""Blob backends: where the bytes of content-addressed objects live.

A :class:`BlobStore` maps a digest to bytes and nothing else; hashing, trees and
verification are the job of :class:`cairn.store.cas.ContentStore` on top of it. Backends
are chosen by URL scheme from ``BLOB_BACKENDS``; an unknown scheme fails loudly:

- a plain path or ``file://`` → :class:`LocalBlobStore`;
- ``s3://bucket/prefix`` → :class:`cairn.store.s3.S3BlobStore` (extra ``cairn[s3]``).

A remote store opened with a ``cache_dir`` comes wrapped in
:class:`cairn.store.cache.CachedBlobStore`, a size-bounded local copy of what was read or
written lately. :mod:`cairn.store.transfer` copies the blobs one store lacks from another.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, ClassVar

from cairn.entities import Digest
from cairn.errors import ConfigError, NotFoundError, StoreNotWritableError
from cairn.store._fileops import _mkstemp, _rmtree


class BlobStore(abc.ABC):
    """Bytes by digest. Writes are atomic: a blob is never visible half-written.

    Every method may raise :class:`~cairn.errors.StoreError` (or a subclass) when the
    backend cannot be reached or written; backends translate their own exceptions.
    """

    url: str

    #: The bytes live on another machine: reads cost a transfer, so ``open_blob_store``
    #: wraps such a store in a local cache when given a ``cache_dir``.
    is_remote: ClassVar[bool] = False
    #: ``open`` and ``fetch`` already check the bytes against the digest (and raise
    #: ``CorruptBlobError``), so callers need not hash them again.
    verifies_reads: ClassVar[bool] = False

    @abc.abstractmethod
    def has(self, digest: Digest) -> bool:
        """Whether a blob with this digest is stored."""

    @abc.abstractmethod
    def put_path(self, digest: Digest, path: Path, *, move: bool = False) -> None:
        """Store the file at ``path`` under ``digest`` (computed by the caller).

        With ``move=True`` the backend may take the file away (rename) instead of copying.
        Storing a digest that already exists is a no-op.
        """

    @abc.abstractmethod
    def put_bytes(self, digest: Digest, data: bytes) -> None:
        """Store ``data`` under ``digest``."""

    @abc.abstractmethod
    def open(self, digest: Digest) -> BinaryIO:
        """Open the blob for reading; ``NotFoundError`` if absent."""

    @abc.abstractmethod
    def fetch(self, digest: Digest, dest: Path) -> None:
        """Write the blob's bytes to ``dest`` (a new file)."""

    def local_path(self, digest: Digest) -> Path | None:
        """A path on this machine holding the blob, if the backend keeps one (for links).

        The file is read-only and must not be changed; ``None`` when the backend keeps no
        local file or the blob is absent.
        """
        return None

    @abc.abstractmethod
    def iter_digests(self) -> Iterator[Digest]:
        """Every stored digest (for verification and garbage collection)."""

    def iter_blobs(self) -> Iterator[tuple[Digest, int, float]]:
        """Every stored blob as (digest, size, modification time in epoch seconds)."""
        for digest in self.iter_digests():
            path = self.local_path(digest)
            if path is None:
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            yield digest, st.st_size, st.st_mtime

    @abc.abstractmethod
    def delete(self, digest: Digest) -> None:
        """Remove a blob (garbage collection only); a missing blob is not an error."""

    def size(self, digest: Digest) -> int:
        """The blob's size in bytes; ``NotFoundError`` if absent."""
        with self.open(digest) as fh:
            return fh.seek(0, os.SEEK_END)

    def has_many(self, digests: Iterable[Digest]) -> set[Digest]:
        """The subset of ``digests`` that is stored (remote backends ask in parallel)."""
        return {d for d in set(digests) if self.has(d)}

    def staging_dir(self) -> Path | None:
        """A folder on the filesystem of the store's local files, or ``None``.

        A file written there and handed to ``put_path(..., move=True)`` is taken by a
        rename instead of a copy. Callers name their files uniquely and remove leftovers.
        """
        return None

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """A block whose puts the backend may finish together, in parallel, at its end.

        Inside the block a put may return before the blob reaches its final place (a
        remote bucket behind a local cache); the block's exit waits for all of them and
        raises the first failure. Without the block every put is complete on return. The
        default does nothing special.
        """
        return contextlib.nullcontext()


#: The local store's removal mark (see ``LocalBlobStore.removal_mark``).
_REMOVALS = "removals"


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root/objects/ab/cdef…``, read-only, written by rename."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.url = str(self.root)
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        self._ready = False

    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            self._objects.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(parents=True, exist_ok=True)
            if not os.access(self._tmp, os.W_OK):
                raise PermissionError(errno.EACCES, "permission denied", str(self._tmp))
        except OSError as exc:
            raise StoreNotWritableError(
                f"cannot write the blob store at {self.root}: {exc.strerror or exc}",
                "check the folder's permissions, or set CAIRN_DATA_DIR to a writable folder",
            ) from exc
        self._ready = True

    def _path(self, digest: Digest) -> Path:
        return self._objects / digest[:2] / digest[2:]

    def has(self, digest: Digest) -> bool:
        return self._path(digest).exists()

    def size(self, digest: Digest) -> int:
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            raise self._not_found(digest) from None

    def has_many(self, digests: Iterable[Digest]) -> set[Digest]:
        return {d for d in set(digests) if self._path(d).exists()}

    def staging_dir(self) -> Path | None:
        self._ensure()
        return self._tmp

    def local_path(self, digest: Digest) -> Path | None:
        path = self._path(digest)
        return path if path.exists() else None

    def _install(self, tmp: Path, digest: Digest) -> None:
        final = self._path(digest)
        final.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)

    def put_path(self, digest: Digest, path: Path, *, move: bool = False) -> None:
        self._ensure()
        if self.has(digest):
            if move:
                path.unlink(missing_ok=True)
            return
        if move:
            try:
                # Same filesystem: take the file itself. fsync first so the rename
                # never exposes a blob whose bytes are not yet on disk.
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
                self._install(path, digest)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        with self._tempfile() as (tmp, out):
            with open(path, "rb") as src:
                _copy_stream(src, out)
            out.flush()
            os.fsync(out.fileno())
        self._install(tmp, digest)

    def put_bytes(self, digest: Digest, data: bytes) -> None:
        self._ensure()
        if self.has(digest):
            return
        with self._tempfile() as (tmp, out):
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        self._install(tmp, digest)

    def _tempfile(self) -> _TempFile:
        return _TempFile(self._tmp)

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return open(self._path(digest), "rb")
        except FileNotFoundError:
            raise self._not_found(digest) from None

    def _not_found(self, digest: Digest) -> NotFoundError:
        return NotFoundError(
            f"blob {digest[:12]} is not in the store at {self.root}",
            "the store may have been pruned or belongs to another project",
        )

    def fetch(self, digest: Digest, dest: Path) -> None:
        with self.open(digest) as src, open(dest, "wb") as out:
            _copy_stream(src, out)

    def delete(self, digest: Digest) -> None:
        # The mark moves before the blob goes: a walk that trusts its hash cache (see
        # removal_mark) never misses a removal that happened after it read the mark.
        self._mark_removal()
        try:
            self._path(digest).unlink()
        except FileNotFoundError:
            pass

    def removal_mark(self) -> str:
        """A token that changes whenever a blob may have been removed through this class.

        A hash cache that recorded the token along with digests it saw stored may take
        those digests as still stored while the token is unchanged, instead of asking the
        store file by file. Blobs deleted by hand, not through :meth:`delete`, are not
        noticed: a version made then names a blob the store lacks, which checking it out
        reports (naming the file), and the next removal through cairn resets the trust.
        """
        self._ensure()
        marker = self.root / _REMOVALS
        try:
            st = os.stat(marker)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            st = os.stat(marker)
        return f"{st.st_dev:x}.{st.st_ino:x}.{st.st_mtime_ns:x}"

    def _mark_removal(self) -> None:
        marker = self.root / _REMOVALS
        try:
            before = os.stat(marker).st_mtime_ns
        except FileNotFoundError:
            return  # no mark was ever handed out: nobody trusts one
        # Set explicitly, never to the value it had: the filesystem's own clock may be
        # too coarse to tell two removals apart.
        now = max(time.time_ns(), before + 1)
        os.utime(marker, ns=(now, now))

    def sweep_temporary(self, older_than: float) -> int:
        """Remove temp files and folders (left by crashed writers) last changed before
        ``older_than`` (epoch seconds); returns how many entries went."""
        removed = 0
        if not self._tmp.is_dir():
            return 0
        for entry in os.scandir(self._tmp):
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= older_than:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    _rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                continue
        return removed

    def iter_digests(self) -> Iterator[Digest]:
        if not self._objects.exists():
            return
        for shard in sorted(self._objects.iterdir()):
            for blob in sorted(shard.iterdir()):
                yield shard.name + blob.name


def _copy_stream(src: BinaryIO, out: BinaryIO) -> None:
    while chunk := src.read(1 << 20):
        out.write(chunk)


class _TempFile:
    """A temp file in the store's tmp folder, removed if the block fails."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> tuple[Path, BinaryIO]:
        fd, name = _mkstemp(self.folder, ".blob-")
        self.path = Path(name)
        self.fh = os.fdopen(fd, "wb")
        return self.path, self.fh

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.fh.close()
        if exc_type is not None:
            self.path.unlink(missing_ok=True)


def _open_s3(url: str) -> BlobStore:
    from cairn.store.s3 import S3BlobStore  # boto3 only when an s3:// store is used

    return S3BlobStore(url)


BLOB_BACKENDS: dict[str, Callable[[str], BlobStore]] = {
    "file": lambda url: LocalBlobStore(url.removeprefix("file://")),
    "s3": _open_s3,
}


def open_blob_store(
    url: str,
    *,
    cache_dir: Path | str | None = None,
    cache_max_bytes: int | None = None,
) -> BlobStore:
    """Open the blob store at ``url``: a plain path or ``file://`` (local); others by scheme.

    For a remote store (``s3://``) and a ``cache_dir``, the store comes wrapped in a
    :class:`~cairn.store.cache.CachedBlobStore` keeping at most ``cache_max_bytes`` there
    (``None``: no bound). Local stores are returned as they are: they need no cache.
    """
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    try:
        factory = BLOB_BACKENDS[scheme]
    except KeyError:
        raise ConfigError(
            f"unknown blob store scheme {scheme!r} in {url!r}",
            f"use one of: {', '.join(sorted(BLOB_BACKENDS))}",
        ) from None
    store = factory(url)
    if cache_dir is not None and store.is_remote:
        from cairn.store.cache import CachedBlobStore

        return CachedBlobStore(store, cache_dir, cache_max_bytes)
    return store
