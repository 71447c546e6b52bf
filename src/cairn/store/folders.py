"""Folders of millions of files as trees: version, diff and derive, at disk speed.

Checking out lives in :mod:`cairn.store.checkout` (re-exported here).

Versioning (:func:`version_folder`)
    The folder is walked iteratively with ``os.scandir`` in the manifest's sort order, so
    the manifest streams to disk as files are done and memory stays flat. The walking
    thread stats each file and answers unchanged ones from the hash cache; it also reads,
    hashes (BLAKE3) and stores the small files whose bytes are in the page cache (read
    with ``RWF_NOWAIT``, it never waits for the disk). The others, small files still on
    the disk and large files (one task each), go to a thread pool. By default each file
    is *copied* into the store — by reflink (``FICLONE``) where the filesystem can, else by
    ``copy_file_range`` or by writing the bytes read for hashing. What is stored is
    exactly what was hashed (small files are hashed from the bytes written; large files
    are copied first and the copy is hashed), so a file changing under the walk can never
    give a blob that does not match its name.

    On a local store, a walk past its first batch of files forks helper processes (one
    fewer than the CPUs): from then on each batch of files to hash goes whole to an idle
    helper, else the walking thread does it as before. Threads would not help here: small
    files cost a few system calls each, and threads spend more time handing the GIL to
    each other than they gain. Helpers stage blobs under names of their own in the same
    temp folder and send back what they did; the walking process names the blobs, in one
    place, as before. An error in a helper fails the walk as one in the walker does, and
    the helpers are stopped before the temp folder is removed. A process that runs other
    threads never forks (see :mod:`cairn.forking`).

    Re-versioning a folder first compares it with the tree it was last versioned as,
    file by file, from the stats its hash cache recorded (:func:`rewalk`): a folder that
    did not change costs a stat walk and nothing else (no manifest written, no cache
    rewritten); at the first change, the walk goes on as usual from that file, taking the
    files before it from the last tree.

    Symlinks are **skipped**, as are sockets, FIFOs and devices: following them could
    leave the folder or loop, and a dataset is its regular files. They are listed in
    ``TreeInfo.skipped`` and logged. Empty folders are not recorded (a tree lists files).
    The content store's own folder is skipped when it lies inside the folder.

Durability without an fsync per file
    New blobs are written under temp names in ``<store>/tmp/ingest-*``; every few
    thousand files (or 128 MB; a thousand when it is idle) a background thread calls
    ``syncfs`` once for the batch and then renames its files into ``objects/ab/cdef…``.
    So a blob is never visible under its
    final name before its bytes are on disk, at the cost of one sync per batch instead of
    one ``fsync`` per file (large copies start their writeback chunk by chunk as they are
    copied, so the sync mostly finds them written). ``syncfs`` flushes the whole filesystem: on
    one that other programs are writing heavily, a version also waits for their data.
    The tree manifest is stored last (fsynced and renamed), after every blob it names: an
    error or a crash leaves no tree, only complete blobs (garbage for ``gc``); an error
    leaves no temp files (a crash can leave ``tmp/ingest-*`` behind, for ``gc``).

Link mode (``version_folder(link=True)``, ``cairn dataset add --link``)
    Copying is most of the cost of versioning many small files (a file created and
    written per file). With ``link=True`` the files are *hardlinked* into the store
    instead, like DVC's ``hardlink`` cache type with protected files: **each original is
    made read-only** (its write bits are dropped) and from then on *is* the store's blob,
    sharing its inode. Editing an original in place (after a ``chmod``; root can write
    anyway) would change the blob: such a change is caught when the blob is read —
    checkouts verify a blob whose mtime is newer than its tree's, copies and step inputs
    are always verified — and raises ``CorruptBlobError``, never handing the edited bytes
    out as the version. Editors that save by writing a new file and renaming it over the
    old one leave the blob alone. Files that cannot be shared safely are copied as usual:
    executables, files of other users that are still writable, files on another
    filesystem than the store, and files modified within the racy window (2 s) before the
    walk. See :class:`_Linker` for how durability holds without a sync per file.

Comparing a folder with a tree (:func:`folder_diff`, ``cairn dataset status``)
    The walk of a version, storing nothing: files whose stat matches their hash cache
    record take its digest, the others are hashed, and the rows are merged with the
    tree's manifest as :func:`diff_trees` merges two manifests.

Progress
    ``progress(files_done, files_total, bytes_done, bytes_total)`` (totals may be None),
    called at most 20 times a second and once at the end.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import signal
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from blake3 import blake3

from cairn import forking
from cairn.entities import Digest, FileEntry
from cairn.errors import InputError, NotFoundError, StoreError, StoreNotWritableError
from cairn.store._fileops import (
    _O_NEW,
    Progress,
    _copy_fd,
    _default_workers,
    _hash_fd,
    _hash_leased,
    _hash_path,
    _mkdtemp,
    _reflink,
    _rmtree,
    _store_error,
    _syncfs,
    _Throttle,
    _unlink,
    _write_all,
)
from cairn.store.blobs import LocalBlobStore
from cairn.store.cas import ContentStore, Row, TreeInfo, path_problem
from cairn.store.checkout import CheckoutInfo, checkout, linked_marker
from cairn.store.hashcache import RACY_WINDOW_NS, CacheScan, HashCache, StatKey, _escape

__all__ = [
    "CheckoutInfo",
    "Modified",
    "Progress",
    "Rewalk",
    "TreeDiff",
    "TreeInfo",
    "checkout",
    "derive_tree",
    "diff_trees",
    "folder_diff",
    "rewalk",
    "version_folder",
]

log = logging.getLogger(__name__)

#: Files up to this size are read whole, hashed from memory and written from the same
#: bytes; larger ones are copied in the kernel (or reflinked) and the copy is hashed.
SMALL_FILE = 2 << 20
_BATCH = 128  # files per task handed to a worker thread
_COMMIT_FILES = 4096  # staged blobs per sync + rename batch ...
_COMMIT_BYTES = 128 << 20  # ... or this many bytes, whichever comes first
# ... or this many when the committer is idle: it then keeps pace with the walk and the
# last batch (synced and renamed after the walk, on its own) stays short.
_COMMIT_FILES_IDLE = 1024
_LIST_SHARD_BYTES = 64 << 10  # a shard folder up to ~800 blobs is listed once ...
_LIST_SHARD_NAMES = 1024  # ... and its listing dropped when it grows past this
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
# Reading a dataset should not dirty every inode with a new atime (a journal write each).
_O_NOATIME = getattr(os, "O_NOATIME", 0)
# Small files whose bytes are in the page cache are read on the walking thread, which
# never waits for the disk for them (RWF_NOWAIT); the others go to the worker threads.
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_preadv = getattr(os, "preadv", None)
_NOT_NOW = {errno.EAGAIN, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}


@dataclass(frozen=True)
class Modified:
    """A path present in both trees with different content or executable bit."""

    path: str
    old: FileEntry
    new: FileEntry


@dataclass(frozen=True)
class TreeDiff:
    """What changed from tree A to tree B (each list sorted by path)."""

    added: list[FileEntry] = field(default_factory=list)
    removed: list[FileEntry] = field(default_factory=list)
    modified: list[Modified] = field(default_factory=list)
    unchanged_count: int = 0


class _Stager:
    """Puts blobs into the store for a folder walk (generic: one put per blob)."""

    def __init__(self, content: ContentStore) -> None:
        self.content = content
        self.blobs = content.blobs

    def has(self, digest: Digest) -> bool:
        return self.blobs.has(digest)

    def stage_bytes(self, digest: Digest, data: bytes) -> str | None:
        if not self.blobs.has(digest):
            self.blobs.put_bytes(digest, data)
        return None

    def stage_file(self, path: str) -> tuple[Digest, int, str | None]:
        # Copy, hash the copy, hand the copy over: what is stored is what was hashed.
        try:
            src = _open_source(path)
        except OSError as exc:
            raise _read_error(path, exc) from exc
        import tempfile  # a remote store: no folder of its own to stage in

        fd, tmp = tempfile.mkstemp(prefix=".cairn-put-")
        try:
            try:
                size = _copy_fd(src, fd)
            finally:
                os.close(fd)
                os.close(src)
            digest = _hash_path(tmp)
            if not self.blobs.has(digest):
                self.blobs.put_path(digest, Path(tmp), move=True)
        finally:
            _unlink(tmp)
        return digest, size, None

    def ready(self, tmp: str, digest: Digest, size: int) -> None:  # pragma: no cover
        raise AssertionError("the generic stager stages nothing")

    def linker(self, racy_before_ns: int) -> _Linker | None:
        """What links files into the store (``link=True``), or None where it cannot."""
        return None

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _LocalStager(_Stager):
    """Stages blobs as temp files, then syncs and renames them into place in batches."""

    def __init__(self, content: ContentStore, blobs: LocalBlobStore) -> None:
        super().__init__(content)
        root = blobs.root
        self.objects = str(root / "objects")
        try:
            os.makedirs(self.objects, exist_ok=True)
            os.makedirs(root / "tmp", exist_ok=True)
            self.run_dir = _mkdtemp(root / "tmp", "ingest-")
        except OSError as exc:
            raise StoreNotWritableError(
                f"cannot write the blob store at {root}: {exc.strerror or exc}",
                "check the folder's permissions, or set CAIRN_DATA_DIR to a writable folder",
            ) from exc
        self._shards = set(os.listdir(self.objects))
        # Shard listings answer "is this blob stored?" without a lookup per file; a shard
        # too big to list (a store of millions of blobs) is asked file by file instead.
        self._listed: dict[str, set[str] | None] = {}
        self._staged: dict[Digest, str] = {}  # staged, not yet renamed into place
        self._names = itertools.count()
        self._name_prefix = ""  # a helper process's own (see _Helpers)
        self._staging_shards: set[str] = set()
        self._pending: list[tuple[str, Digest]] = []
        self._pending_bytes = 0
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="cairn-commit")
        self._commits: deque[Future[None]] = deque()
        self._sync_fd = os.open(self.objects, os.O_RDONLY)
        self.reflink: bool | None = None  # unknown until tried

    def _final(self, digest: Digest) -> str:
        return f"{self.objects}/{digest[:2]}/{digest[2:]}"

    def _stored(self, digest: Digest) -> bool:
        shard = digest[:2]
        try:
            names = self._listed[shard]
        except KeyError:
            names = self._listed[shard] = self._list(shard)
        if names is None:
            return _exists(self._final(digest))
        return digest[2:] in names

    def _list(self, shard: str) -> set[str] | None:
        path = f"{self.objects}/{shard}"
        try:
            if os.stat(path).st_size > _LIST_SHARD_BYTES:
                return None
            return set(os.listdir(path))
        except FileNotFoundError:
            return set()

    def has(self, digest: Digest) -> bool:
        return digest in self._staged or self._stored(digest)

    def _claim(self, digest: Digest, tmp: str) -> bool:
        """Whether this caller is the one to stage ``digest`` (atomic under the GIL)."""
        if digest in self._staged or self._stored(digest):
            return False
        return self._staged.setdefault(digest, tmp) is tmp

    def stage_bytes(self, digest: Digest, data: bytes) -> str | None:
        # Staged in 16 folders: threads creating files in one folder would queue on its
        # lock (and 256, like the store, cost a folder made and removed per 100 files).
        shard = digest[0]
        tmp = f"{self.run_dir}/{shard}/{digest}"
        if not self._claim(digest, tmp):
            return None
        if shard not in self._staging_shards:
            os.makedirs(f"{self.run_dir}/{shard}", exist_ok=True)
            self._staging_shards.add(shard)
        try:
            fd = os.open(tmp, _O_NEW, 0o444)
        except FileExistsError:  # another process of this walk (a helper) staged it
            self._staged.pop(digest, None)
            return None
        except BaseException:
            self._staged.pop(digest, None)
            raise
        try:
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        except BaseException:
            self._staged.pop(digest, None)
            _unlink(tmp)
            raise
        return tmp

    def stage_file(self, path: str) -> tuple[Digest, int, str | None]:
        # Named apart from the one-letter shard folders of stage_bytes.
        tmp = f"{self.run_dir}/{self._name_prefix}file-{next(self._names):x}"
        try:
            src = _open_source(path)
        except OSError as exc:
            raise _read_error(path, exc) from exc
        try:
            dst = os.open(tmp, _O_NEW, 0o444)
            try:
                cloned = self.reflink is not False and _reflink(src, dst)
                if cloned:
                    self.reflink = True
                    size = os.fstat(dst).st_size
                else:
                    self.reflink = False
                    # Each chunk starts its way to disk as soon as it is copied, so the
                    # batch's sync waits less and the disk works while the copy is hashed.
                    size = _copy_fd(src, dst, True)
                digest = _hash_path(tmp)  # the copy, which nobody else can change
            finally:
                os.close(dst)
        except BaseException:
            _unlink(tmp)
            raise
        finally:
            os.close(src)
        if not self._claim(digest, tmp):
            _unlink(tmp)
            return digest, size, None
        return digest, size, tmp

    def ready(self, tmp: str, digest: Digest, size: int) -> None:
        """A staged blob is fully written: queue it for the next sync + rename batch."""
        self._pending.append((tmp, digest))
        self._pending_bytes += size
        while self._commits and self._commits[0].done():
            self._commits.popleft().result()  # raise a failed batch's error now
        files, size = len(self._pending), self._pending_bytes
        if files < _COMMIT_FILES and size < _COMMIT_BYTES and (
                self._commits or files < _COMMIT_FILES_IDLE):
            return
        if self._commits:
            # The committer is still syncing: let this batch grow (fewer, larger syncs)
            # up to a bound, then wait for it, so memory and staged bytes stay bounded.
            if files < 8 * _COMMIT_FILES and size < 4 * _COMMIT_BYTES:
                return
            while self._commits:
                self._commits.popleft().result()
        self._submit()

    def _submit(self) -> None:
        if self._pending:
            self._commits.append(self._committer.submit(self._commit, self._pending))
            self._pending = []
            self._pending_bytes = 0

    def _commit(self, batch: list[tuple[str, Digest]]) -> None:
        _syncfs(self._sync_fd)  # the batch's bytes are on disk before any of its names
        for tmp, digest in batch:
            shard = digest[:2]
            if shard not in self._shards:
                os.makedirs(f"{self.objects}/{shard}", exist_ok=True)
                self._shards.add(shard)
            os.replace(tmp, self._final(digest))
            self._stored_now(digest)
            self._staged.pop(digest, None)  # after the name is known: never seen as absent

    def _stored_now(self, digest: Digest) -> None:
        """Note that ``digest`` now has its final name (in a listed shard's names)."""
        shard = digest[:2]
        names = self._listed.get(shard)
        if names is not None:
            if len(names) < _LIST_SHARD_NAMES:
                names.add(digest[2:])
            else:  # bounded memory: ask the filesystem for this shard from now on
                self._listed[shard] = None

    def finish(self) -> None:
        self._submit()
        try:
            while self._commits:
                self._commits.popleft().result()
        finally:
            self._close()
        try:
            for shard in self._staging_shards:
                os.rmdir(f"{self.run_dir}/{shard}")
            os.rmdir(self.run_dir)
        except OSError:
            _rmtree(self.run_dir)

    def abort(self) -> None:
        for pending in self._commits:
            pending.cancel()
        self._close()
        _rmtree(self.run_dir)
        self._staged.clear()

    def linker(self, racy_before_ns: int) -> _Linker | None:
        return _Linker(self, racy_before_ns)

    def _close(self) -> None:
        self._committer.shutdown(wait=True)
        if self._sync_fd >= 0:
            os.close(self._sync_fd)
            self._sync_fd = -1


class _LinkedKey(tuple):  # type: ignore[type-arg]
    """The stat key of a file the linker stored: its mtime is old (not racy), its ctime
    may be the linker's own (the chmod, the link), just now."""


class _Linker:
    """Versions files by hardlinking them into the store (``version_folder(link=True)``).

    A file is made read-only (its write bits dropped, through the open descriptor), read
    and hashed (a large one mapped and hashed by all cores while a read lease holds
    writers off, see :func:`~cairn.store._fileops._hash_leased`; read where no lease can
    be had), then hardlinked to its final name; the link is checked to be the same
    inode with the same size and mtime as the walk saw, else the name is removed and
    ``InputError`` raised (no version is stored).

    Durability needs no sync per file: only files last modified before
    ``racy_before_ns`` (the walk's start less the racy window) are linked, and one
    ``syncfs`` when the linker starts puts every such file's bytes on disk. A file
    written after that sync has a newer mtime, which the check after linking sees. So a
    name in the store never points at bytes that were not on disk, or that did not hash
    to it, when it appeared.

    Only files that can safely share their inode with the store are linked: regular,
    non-executable (a link shares the mode, and checkouts copy executables anyway),
    owned by the user (or already read-only), on the store's filesystem, and not
    modified within the racy window (a write in the same timestamp tick as the hash
    could go unseen). The others are copied as usual.
    """

    def __init__(self, stager: _LocalStager, racy_before_ns: int) -> None:
        self.stager = stager
        self.dev = os.stat(stager.objects).st_dev
        self.racy_before_ns = racy_before_ns
        # Checkouts from this store now check blobs' mtimes (see cairn.store.checkout).
        marker = linked_marker(stager.blobs)  # type: ignore[arg-type]
        if not os.path.exists(marker):
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o444))
        _syncfs(stager._sync_fd)  # after the walk started, and the marker: see above

    def may_link(self, st: os.stat_result) -> bool:
        """Whether a file (as the walk's ``lstat`` saw it) may be stored by link."""
        return (st.st_mtime_ns < self.racy_before_ns and not st.st_mode & 0o111
                and st.st_dev == self.dev)

    def store(self, path: str, key: StatKey, mode: int, view: memoryview | None = None
              ) -> tuple[Digest, int, StatKey] | None | bool:
        """Store ``path`` (``key`` and ``mode`` from the walk's ``lstat``) by link.

        Returns (digest, size, its stat key now), or None where it must be copied instead.
        With a ``view`` (a small file, read on the walking thread) it returns False,
        storing nothing, when the file's bytes are not all in the page cache.
        """
        try:
            fd = _open_source(path)
        except OSError as exc:
            raise _read_error(path, exc) from exc
        try:
            if mode & 0o222:
                try:
                    os.fchmod(fd, stat.S_IMODE(mode) & ~0o222)
                except PermissionError:  # not the owner: it cannot be protected
                    return None
            size = key[0]
            if view is not None:
                data = _read_cached(fd, size, view)
                if data is None:
                    return False
                read = size
                digest = blake3(data).hexdigest()
            elif size <= SMALL_FILE:
                data = os.read(fd, size + 1)
                read = len(data)
                digest = blake3(data).hexdigest()
            else:
                digest, read = _hash_leased(fd, size), size
                if digest is None:
                    digest, read = _hash_fd(fd)
        except OSError as exc:
            raise _read_error(path, exc) from exc
        finally:
            os.close(fd)
        if read != size:
            return None  # changing under the walk: the copy path stores what it reads
        return self._link(path, digest, key)

    def _link(self, path: str, digest: Digest, key: StatKey
              ) -> tuple[Digest, int, StatKey] | None:
        stager = self.stager
        final = stager._final(digest)
        shard = digest[:2]
        if shard not in stager._shards:
            os.makedirs(f"{stager.objects}/{shard}", exist_ok=True)
            stager._shards.add(shard)
        try:
            os.link(path, final, follow_symlinks=False)
        except FileExistsError:
            # Stored already (a final name is always complete): this file stays unlinked,
            # its ctime the one our chmod gave it.
            st = os.lstat(path)
            return digest, key[0], _LinkedKey(
                (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES, errno.EMLINK, errno.EXDEV):
                return None  # not ours to link (protected hardlinks), too many links
            raise
        now = os.lstat(final)
        if (now.st_size, now.st_mtime_ns, now.st_ino) != key[:3]:
            # Not the file, or not the bytes, that the walk saw and hashed: remove the name.
            _unlink(final)
            raise _changed(path)
        stager._stored_now(digest)
        return digest, key[0], _LinkedKey(
            (now.st_size, now.st_mtime_ns, now.st_ino, now.st_ctime_ns))


def _changed(path: str) -> InputError:
    return InputError(f"{path} changed while it was being versioned",
                      "run it again once nothing is writing to the folder")


def _exists(path: str, _access: Callable[[str, int], bool] = os.access) -> bool:
    return _access(path, os.F_OK)


def _read_error(path: str, exc: OSError) -> InputError:
    return InputError(f"cannot read {path}: {exc.strerror or exc}",
                      "check the file's permissions, or move it out of the folder")


def _open_source(path: str) -> int:
    """Open a file to version: without an atime update when allowed, never via a symlink."""
    global _O_NOATIME
    try:
        return os.open(path, _O_READ | _O_NOATIME)
    except PermissionError:
        if not _O_NOATIME:
            raise
        _O_NOATIME = 0  # not the files' owner: O_NOATIME is refused; do without
        return os.open(path, _O_READ)


def _read_cached(fd: int, size: int, view: memoryview) -> memoryview | None:
    """``size`` bytes of an open file read into ``view`` without waiting for the disk.

    None when they are not all in the page cache (or the read cannot promise not to
    wait), or when the file is no longer ``size`` bytes long.
    """
    try:
        n = _preadv(fd, [view[:size + 1]], 0, _RWF_NOWAIT)
    except OSError as exc:
        if exc.errno in _NOT_NOW:
            return None
        raise
    return view[:n] if n == size else None


def _read_small(path: str, size: int, view: memoryview | None = None
                ) -> bytes | memoryview | None:
    """A small file's bytes (all of them, should it have grown since its ``size`` was seen).

    With a ``view`` (a buffer of at least ``size + 1`` bytes) the bytes are read into it
    only if they are all in the page cache: the read never waits for the disk, and None
    means "not cached, or not ``size`` bytes long now" (read it the usual way, elsewhere).
    """
    try:
        fd = _open_source(path)
    except OSError as exc:
        raise _read_error(path, exc) from exc
    try:
        if view is not None:
            return _read_cached(fd, size, view)
        data = os.read(fd, size + 1)
        if len(data) > size:  # it grew since the stat: take all of it
            parts = [data]
            while chunk := os.read(fd, 1 << 20):
                parts.append(chunk)
            data = b"".join(parts)
        return data
    except OSError as exc:
        raise _read_error(path, exc) from exc
    finally:
        os.close(fd)


# -- walking -------------------------------------------------------------------------------
def _listdir(path: str, skipped: list[tuple[str, str]], rel: str,
             skip: frozenset[str]) -> list[tuple[str, str, bool]]:
    """Children to visit as (sort key, name, is_dir), sorted like manifest paths."""
    out: list[tuple[str, str, bool]] = []
    try:
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                if entry.is_dir(follow_symlinks=False):
                    if entry.path not in skip:
                        out.append((name + "/", name, True))
                elif entry.is_file(follow_symlinks=False):
                    out.append((name, name, False))
                elif entry.is_symlink():
                    skipped.append((rel + name, "symlink"))
                else:
                    skipped.append((rel + name, "not a regular file"))
    except OSError as exc:
        raise InputError(f"cannot list {path}: {exc.strerror or exc}",
                         "check the folder's permissions") from exc
    out.sort()
    return out


def _walk(root: str, skipped: list[tuple[str, str]],
          skip: frozenset[str]) -> Iterator[tuple[str, str]]:
    """(relative path, absolute path) of every regular file, sorted by relative path.

    Children are sorted with folders keyed as ``name/``, which makes a depth-first walk
    yield paths in plain string order: the order of the manifest.
    """
    stack: list[tuple[str, str, Iterator[tuple[str, str, bool]]]] = [
        (root, "", iter(_listdir(root, skipped, "", skip)))]
    while stack:
        folder, rel, children = stack[-1]
        for _key, name, is_dir in children:
            if is_dir:
                sub = f"{folder}/{name}"
                stack.append((sub, f"{rel}{name}/",
                              iter(_listdir(sub, skipped, f"{rel}{name}/", skip))))
                break
            yield rel + name, f"{folder}/{name}"
        else:
            stack.pop()


@dataclass
class Rewalk:
    """A folder compared with the tree it was last versioned as, up to its first change.

    The first ``same`` files (``same_size`` bytes) of the walk are the first files of
    ``tree``, unchanged; ``unchanged`` says that they are all of it. ``rest`` walks on
    from the first file that changed (included); :func:`version_folder` goes on from it.
    """

    root: str
    tree: Digest
    same: int
    same_size: int
    unchanged: bool
    rest: Iterator[tuple[str, str]]
    skipped: list[tuple[str, str]]
    skip: frozenset[str]


def rewalk(folder: Path | str, content: ContentStore, hash_cache: HashCache,
           progress: Progress | None = None) -> Rewalk | None:
    """Compare a folder with the tree it was last versioned as (see the module doc).

    None when there is nothing to compare with: the folder's hash cache does not name a
    tree whose files it all recorded, or the local store removed blobs since (so that
    tree's files may be gone), or the store is not local. Costs a ``stat`` per file up
    to the first change, and reads nothing but the cache.
    """
    blobs = content.blobs
    if not isinstance(blobs, LocalBlobStore) or not os.path.isdir(folder):
        return None
    root = os.path.realpath(folder)
    read = hash_cache.read_last(root)
    if read is None:
        return None
    last, records = read
    if last.store_mark != blobs.removal_mark() or not blobs.has(last.tree):
        records.close()
        return None
    skipped: list[tuple[str, str]] = []
    skip = _skip_dirs(root, content, hash_cache)
    walk = _walk(root, skipped, skip)
    throttle = _Throttle(progress)
    lstat, S_ISREG, escape = os.lstat, stat.S_ISREG, _escape
    same = same_size = 0
    rest: Iterator[tuple[str, str]] | None = None
    try:
        for rel, path in walk:
            line = next(records, None)
            try:
                st = lstat(path)
            except OSError:
                line = None
            if line is not None and S_ISREG(st.st_mode):
                prefix = "%d %d %d %d " % (st.st_size, st.st_mtime_ns, st.st_ino,
                                           st.st_ctime_ns)
                # The record is exactly prefix, a 64-digit digest, " path": this file as
                # it was when that tree was stored.
                if line.startswith(prefix) and line[len(prefix) + 64:] == (
                        f" {rel}" if "\\" not in rel and "\n" not in rel
                        else f" {escape(rel)}"):
                    same += 1
                    same_size += st.st_size
                    if not same & 1023:
                        throttle(same, last.files, same_size, last.size)
                    continue
            rest = itertools.chain(((rel, path),), walk)
            break
        unchanged = rest is None and same == last.files and next(records, None) is None
    finally:
        records.close()
    if rest is None:
        rest = iter(())
    return Rewalk(root, last.tree, same, same_size, unchanged, rest, skipped, skip)


# One file of the new tree: (rel, digest, size, executable, stat key to cache (or the
# hash cache's own line for an unchanged file), staged temp path or None). A file to
# hash is (rel, path, stat key, executable, its mode if it may be linked else -1).
_Result = tuple[str, Digest, int, bool, "StatKey | str", "str | None"]
_ToHash = tuple[str, str, StatKey, bool, int]


def _hash_and_stage(batch: list[_Result | _ToHash], stager: _Stager,
                    linker: _Linker | None = None) -> list[_Result]:
    """A worker's task: read, hash and stage the files to hash; pass the others through.

    With a ``linker``, the files it may link are stored by link; the others are copied.
    """
    out: list[_Result] = []
    append = out.append
    for item in batch:
        if len(item) == 6:
            append(item)  # type: ignore[arg-type]
            continue
        rel, path, key, executable, link_mode = item  # type: ignore[misc]
        if link_mode >= 0:
            linked = linker.store(path, key, link_mode)  # type: ignore[union-attr]
            if linked is not None:
                append((rel, linked[0], linked[1], executable, linked[2], None))
                continue
        if key[0] <= SMALL_FILE:
            data = _read_small(path, key[0])
            digest = blake3(data).hexdigest()
            tmp = stager.stage_bytes(digest, data)
            append((rel, digest, len(data), executable, key, tmp))
        else:
            digest, size, tmp = stager.stage_file(path)
            append((rel, digest, size, executable, key, tmp))
    return out


_Pending = "Future[list[_Result]] | _HelperTask | list[_Result]"


def _ready(item: _Pending) -> bool:
    return type(item) is list or item.done()  # type: ignore[union-attr]


def _result(item: _Pending) -> list[_Result]:
    return item if type(item) is list else item.result()  # type: ignore[return-value,union-attr]


def _dispatch(batch: list[_Result | _ToHash], to_hash: int, helper: _Helper | None,
              pool: ThreadPoolExecutor, stager: _Stager, linker: _Linker | None) -> _Pending:
    """Hand a finished batch on: to its helper process or a worker thread when it has
    files to hash, else it is done already."""
    if not to_hash:
        return batch
    if helper is not None:
        return helper.send(batch)
    return pool.submit(_hash_and_stage, batch, stager, linker)


# -- helper processes ----------------------------------------------------------------------
_HELPERS_MAX = 7
"""At most this many helper processes (one fewer than the CPUs) share a walk's files."""


def _helpers_wanted() -> int:
    """How many helper processes a walk may fork here: one fewer than the CPUs it may
    use, and none where this process may not fork (see :mod:`cairn.forking`)."""
    if not forking.can_fork():
        return 0
    return max(0, min(forking.usable_cpus() - 1, _HELPERS_MAX))


class _HelperTask:
    """A batch handed to a helper process; its result is read back in walk order."""

    __slots__ = ("helper",)

    def __init__(self, helper: _Helper) -> None:
        self.helper = helper

    def done(self) -> bool:
        return bool(select.select([self.helper.results], [], [], 0)[0])

    def result(self) -> list[_Result]:
        return self.helper.receive()


class _Helper:
    """One forked process that runs :func:`_hash_and_stage` on the batches it is sent.

    It shares the stager's store and staging folder (files it stages are named apart
    from the parent's) and hands back the results; the parent readies the staged blobs.
    At most one batch is outstanding per helper, so neither side can block the other on
    a full pipe.
    """

    def __init__(self, pid: int, requests: int, results: int) -> None:
        self.pid = pid
        self.requests = requests
        self.results = results
        self.busy = False

    def send(self, batch: list[_Result | _ToHash]) -> _HelperTask:
        forking.send(self.requests, True, batch)
        self.busy = True
        return _HelperTask(self)

    def receive(self) -> list[_Result]:
        message = forking.receive(self.results)
        if message is None:
            raise StoreError(f"a helper process ({self.pid}) versioning the folder ended "
                             "without its results (killed, or out of memory)",
                             forking.LOST_HINT)
        self.busy = False
        ok, value = message
        if not ok:
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]


class _Helpers:
    """The helper processes of one walk (see :class:`_Helper`)."""

    def __init__(self, count: int, stager: _LocalStager, linker: _Linker | None) -> None:
        self.helpers: list[_Helper] = []
        ours: list[int] = []  # the parent's ends, closed in every later child
        try:
            for index in range(count):
                req_r, req_w = os.pipe()
                res_r, res_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    for fd in (*ours, req_w, res_r):
                        os.close(fd)
                    _helper_main(index, req_r, res_w, stager, linker)
                os.close(req_r)
                os.close(res_w)
                ours += (req_w, res_r)
                self.helpers.append(_Helper(pid, req_w, res_r))
        except BaseException:
            self.stop()
            raise

    def idle(self) -> _Helper | None:
        for helper in self.helpers:
            if not helper.busy:
                return helper
        return None

    def close(self) -> None:
        """End the helpers once their work is done (they exit on end of input)."""
        for helper in self.helpers:
            os.close(helper.requests)
        for helper in self.helpers:
            forking.reap(helper.pid)
            os.close(helper.results)
        self.helpers = []

    def stop(self) -> None:
        """Kill the helpers now (the walk failed) and wait for them, so that nothing
        writes into the staging folder once it is removed."""
        for helper in self.helpers:
            try:
                os.kill(helper.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for helper in self.helpers:
            forking.reap(helper.pid)
            os.close(helper.requests)
            os.close(helper.results)
        self.helpers = []


def _helper_main(index: int, requests: int, results: int, stager: _LocalStager,
                 linker: _Linker | None) -> None:
    """A helper process's life: batches in, results out, until the input ends."""
    code = 0
    try:
        stager._name_prefix = f"h{index}-"
        while (message := forking.receive(requests)) is not None:
            try:
                outcome: tuple[bool, object] = (
                    True, _hash_and_stage(message[1], stager, linker))  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - the walker raises it
                outcome = (False, exc)
            forking.send(results, *outcome)
            if not outcome[0]:
                break
            # The walker names what this batch staged: forget the claims, so memory stays
            # flat (a digest staged again later is only renamed over its twin).
            stager._staged.clear()
    except BaseException:  # noqa: BLE001 - Ctrl-C, or the parent gone: it reports the walk
        code = 1
    finally:
        os._exit(code)


def version_folder(
    folder: Path | str,
    content: ContentStore,
    *,
    progress: Progress | None = None,
    hash_cache: HashCache | None = None,
    workers: int | None = None,
    link: bool = False,
    walked: Rewalk | None = None,
) -> TreeInfo:
    """Store every regular file under ``folder`` and a tree listing them; see the module doc.

    Returns the tree's digest, file count, total size and what was skipped. With a
    ``hash_cache``, files whose (size, mtime, inode, ctime) did not change since they
    were last versioned are not read again. Raises ``InputError`` for a folder that
    cannot be read and ``StoreNotWritableError`` when the store cannot be written (disk
    full included); either way no tree is stored and no temp file is left.

    ``link=True`` stores files by hardlink instead of copying them (a local store on the
    same filesystem only): **the folder's files are made read-only** and become the
    store's blobs; see "Link mode" in the module doc.

    ``walked`` is this folder's :func:`rewalk`, if the caller made it already (else it
    is made here, when there is a ``hash_cache``).
    """
    root_path = Path(folder)
    if not root_path.is_dir():
        raise InputError(f"{folder} is not a folder" if root_path.exists()
                         else f"{folder} does not exist",
                         "give the path of the folder to version")
    if walked is None and hash_cache is not None:
        walked = rewalk(root_path, content, hash_cache, progress)
    if walked is not None and walked.unchanged:
        _Throttle(progress)(walked.same, walked.same, walked.same_size, walked.same_size,
                            final=True)
        _log_skipped(folder, walked.skipped)
        return TreeInfo(walked.tree, walked.same, walked.same_size, tuple(walked.skipped))
    root = os.path.realpath(root_path)
    started = time.time_ns()
    blobs = content.blobs
    skip = _skip_dirs(root, content, hash_cache) if walked is None else walked.skip
    stager: _Stager = (_LocalStager(content, blobs) if isinstance(blobs, LocalBlobStore)
                       else _Stager(content))
    scan: CacheScan | None = None
    racy_window = hash_cache.racy_window_ns if hash_cache is not None else RACY_WINDOW_NS
    linker = stager.linker(started - racy_window) if link else None
    if link and linker is None:
        log.info("the store at %s cannot take links: copying instead", blobs.url)
    tree = None
    skipped: list[tuple[str, str]] = walked.skipped if walked is not None else []
    pool = ThreadPoolExecutor(workers or _default_workers(), thread_name_prefix="cairn-add")
    helpers: _Helpers | None = None
    throttle = _Throttle(progress)
    files = done = 0
    ok = False
    try:
        if hash_cache is not None:
            mark = blobs.removal_mark() if isinstance(blobs, LocalBlobStore) else None
            scan = hash_cache.scan(root, started, mark)
        tree = content.tree_writer()
        if walked is not None and walked.same:
            # The files before the first change are the last tree's first files.
            add = tree.add_walked
            rows = content.iter_rows(walked.tree)
            for row in itertools.islice(rows, walked.same):
                add(*row)
                if scan is not None:
                    scan.keep_path(row[0])
            rows.close()
            files, done = walked.same, walked.same_size
        in_flight: deque[Future[list[_Result]] | list[_Result]] = deque()
        limit = 4 * (workers or _default_workers())

        def drain(results: list[_Result]) -> None:
            nonlocal files, done
            add = tree.add_walked
            for rel, digest, size, executable, key, tmp in results:
                add(rel, digest, size, executable)
                done += size
                if tmp is not None:
                    stager.ready(tmp, digest, size)
                if scan is not None:
                    if type(key) is str:  # an unchanged file: its cache line as it was
                        scan.keep(key)
                    elif type(key) is _LinkedKey:
                        # Its ctime may be the linker's own, just now: only a write can
                        # change its bytes from here, and a write moves its old mtime.
                        if scan.cacheable(key[1], key[1]):
                            scan.record(rel, key, digest)  # type: ignore[arg-type]
                    elif scan.cacheable(key[1], key[3]):
                        scan.record(rel, key, digest)
            files += len(results)
            throttle(files, None, done, None)

        # The walking thread stats each file and answers unchanged ones from the hash
        # cache itself; only files to read go to the workers. (Threads that make many
        # tiny system calls at once slow each other down on the GIL, so an unchanged
        # folder is best walked by one thread alone.)
        #
        # Small files whose bytes are in the page cache are read, hashed and stored on the
        # walking thread too: threads that each make a few quick system calls per file
        # spend more time handing the GIL to each other than they gain. From the first
        # file of a batch that would wait for the disk, the rest of the batch goes to the
        # workers, which read in parallel (and so do large files). Only a local store
        # writes what it is handed at once, as the reused read buffer requires.
        batch: list[_Result | _ToHash] = []
        to_hash = 0
        large = False
        match = scan.match if scan is not None else None
        # A cached digest's blob is known stored while nothing was removed from the store
        # since the cache was written (its removal mark); else the store is asked.
        has = (lambda _digest: True) if scan is not None and scan.stored else stager.has
        may_link = linker.may_link if linker is not None else None
        store_linked = linker.store if linker is not None else None
        lstat, S_ISREG = os.lstat, stat.S_ISREG
        view = (memoryview(bytearray(SMALL_FILE + 1))
                if _preadv is not None and _RWF_NOWAIT and type(stager) is _LocalStager
                else None)
        here = view is not None  # files of this batch may still be done here
        # Helper processes share the hashing and storing of a big walk on a local store
        # (threads would spend more time handing the GIL to each other than they gain).
        share = workers is None and type(stager) is _LocalStager
        helpers_tried = False
        helper: _Helper | None = None
        small = SMALL_FILE
        stage_bytes = stager.stage_bytes
        for rel, path in walked.rest if walked is not None else _walk(root, skipped, skip):
            try:
                st = lstat(path)
            except FileNotFoundError:
                skipped.append((rel, "vanished while versioning"))
                continue
            except OSError as exc:
                raise _read_error(path, exc) from exc
            mode = st.st_mode
            if not S_ISREG(mode):
                skipped.append((rel, "not a regular file"))
                continue
            key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
            executable = bool(mode & 0o100)
            cached = match(rel, key) if match is not None else None
            if cached is not None and has(cached[0]):
                batch.append((rel, cached[0], key[0], executable, cached[1], None))
            else:
                link_mode = mode if may_link is not None and may_link(st) else -1
                size = key[0]
                if here and size <= small:
                    if link_mode >= 0:
                        linked = store_linked(path, key, link_mode, view)  # type: ignore[misc]
                        if type(linked) is tuple:
                            batch.append((rel, linked[0], linked[1], executable, linked[2],
                                          None))
                        elif linked is None:
                            link_mode = -1  # to be copied (now, if it is cached)
                        else:
                            here = False  # not cached
                    if link_mode < 0 and here:
                        data = _read_small(path, size, view)
                        if data is not None:
                            digest = blake3(data).hexdigest()
                            batch.append((rel, digest, size, executable, key,
                                          stage_bytes(digest, data)))
                        else:
                            here = False
                if not here or size > small:
                    batch.append((rel, path, key, executable, link_mode))
                    to_hash += 1
                    large = large or size > small
            if len(batch) >= _BATCH or large:  # a large file ends its batch: each has a worker
                if helpers is None and not helpers_tried:
                    # Past the first batch, a walk worth sharing: fork the helpers now,
                    # before any thread of this walk has started.
                    helpers_tried = True
                    wanted = _helpers_wanted() if share else 0
                    helpers = _Helpers(wanted, stager, linker) if wanted else None
                in_flight.append(_dispatch(batch, to_hash, helper, pool, stager, linker))
                batch, to_hash, large = [], 0, False
                while len(in_flight) > limit or (in_flight and _ready(in_flight[0])):
                    drain(_result(in_flight.popleft()))
                # The next batch goes whole to an idle helper, if there is one; else this
                # thread does it as it walks (the helper is then busy with the last one).
                helper = helpers.idle() if helpers is not None else None
                here = view is not None and helper is None
        if batch:
            in_flight.append(_dispatch(batch, to_hash, helper, pool, stager, linker))
        while in_flight:
            drain(_result(in_flight.popleft()))
        if helpers is not None:
            helpers.close()
        pool.shutdown(wait=True)
        stager.finish()
        digest = tree.commit()  # last: a tree is only ever stored after all its blobs
        ok = True
    except OSError as exc:
        raise _store_error(exc, f"the blob store ({exc.filename or blobs.url})") from exc
    finally:
        if not ok:
            if helpers is not None:
                helpers.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            stager.abort()
            if tree is not None:
                tree.abort()
            if scan is not None:
                scan.abort()
    if scan is not None:
        try:
            scan.commit(digest, files, done)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be saved is no failure
            log.warning("could not save the hash cache %s: %s", hash_cache.path, exc)
    throttle(files, files, done, done, final=True)
    _log_skipped(folder, skipped)
    return TreeInfo(digest, files, done, tuple(skipped))


def _log_skipped(folder: Path | str, skipped: list[tuple[str, str]]) -> None:
    if skipped:
        log.warning("skipped %d entries of %s (symlinks and special files are not "
                    "versioned), e.g. %s", len(skipped), folder,
                    ", ".join(f"{p} ({why})" for p, why in skipped[:3]))


def _skip_dirs(root: str, content: ContentStore, hash_cache: HashCache | None) -> frozenset[str]:
    """cairn's own folders that lie inside the folder being versioned."""
    out = set()
    candidates = []
    if isinstance(content.blobs, LocalBlobStore):
        candidates.append(content.blobs.root)
    if hash_cache is not None:
        candidates.append(hash_cache.path.parent)
    for c in candidates:
        real = os.path.realpath(c)
        if real != root and real.startswith(root + os.sep):
            out.add(real)
    return frozenset(out)




# -- comparing and deriving ----------------------------------------------------------------
def diff_trees(a: Digest, b: Digest, content: ContentStore) -> TreeDiff:
    """What changed from tree ``a`` to tree ``b``: one streaming pass over both manifests.

    A path in both with another digest or executable bit is ``modified``.
    """
    if a == b:
        return TreeDiff(unchanged_count=content.tree_totals(a)[0])
    return _diff_rows(content.iter_rows(a), content.iter_rows(b))


def _diff_rows(left: Iterator[Row], right: Iterator[Row]) -> TreeDiff:
    """The changes from rows ``left`` to rows ``right`` (each sorted by path), streamed."""
    diff = TreeDiff()
    unchanged = 0
    x, y = next(left, None), next(right, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            diff.removed.append(FileEntry(*x))  # type: ignore[misc]
            x = next(left, None)
        elif x is None or y[0] < x[0]:
            diff.added.append(FileEntry(*y))
            y = next(right, None)
        else:
            if x[1] != y[1] or x[3] != y[3]:
                diff.modified.append(Modified(x[0], FileEntry(*x), FileEntry(*y)))
            else:
                unchanged += 1
            x, y = next(left, None), next(right, None)
    return TreeDiff(diff.added, diff.removed, diff.modified, unchanged)


def folder_diff(tree: Digest, folder: Path | str, content: ContentStore,
                hash_cache: HashCache | None = None,
                progress: Progress | None = None) -> TreeDiff:
    """What changed from tree ``tree`` to ``folder`` as it is now; stores nothing.

    A file whose stat still matches its hash cache record (see :mod:`cairn.store.hashcache`)
    is taken at the recorded digest; any other file is read and hashed. Folders, the
    entries skipped and the executable bit are seen as :func:`version_folder` sees them,
    so an empty diff means an add would make the same tree.
    """
    root = os.path.realpath(folder)
    if not os.path.isdir(root):
        raise InputError(f"{folder} is not a folder", "give the folder to compare")
    if hash_cache is not None:
        last = hash_cache.last_tree(root)
        if last is not None and last.tree == tree:  # what it was last versioned as
            walked = rewalk(root, content, hash_cache, progress)
            if walked is not None and walked.unchanged:  # a stat walk, no manifest read
                _log_skipped(folder, walked.skipped)
                return TreeDiff(unchanged_count=walked.same)
    skipped: list[tuple[str, str]] = []
    skip = _skip_dirs(root, content, hash_cache)
    records = hash_cache.lines(root) if hash_cache is not None else iter(())
    throttle = _Throttle(progress)

    def rows() -> Iterator[Row]:
        record = next(records, None)
        files = done = 0
        for rel, path in _walk(root, skipped, skip):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _read_error(path, exc) from exc
            if not stat.S_ISREG(st.st_mode):
                continue
            while record is not None and record[0] < rel:
                record = next(records, None)
            size = st.st_size
            prefix = "%d %d %d %d " % (size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
            if record is not None and record[0] == rel and record[1].startswith(prefix):
                digest = record[1][len(prefix):len(prefix) + 64]  # as the record says
            else:
                digest, size = _digest_of(path, size)
            files += 1
            done += size
            throttle(files, None, done, None)
            yield rel, digest, size, bool(st.st_mode & 0o100)
        throttle(files, files, done, done, final=True)

    try:
        return _diff_rows(content.iter_rows(tree), rows())
    finally:
        _log_skipped(folder, skipped)


def _digest_of(path: str, size: int) -> tuple[Digest, int]:
    """BLAKE3 and size of a file as it is now (a big one mapped only under a read lease,
    else read: see :func:`~cairn.store._fileops._hash_leased`)."""
    if size <= SMALL_FILE:
        data = _read_small(path, size)
        return blake3(data).hexdigest(), len(data)  # type: ignore[arg-type]
    try:
        fd = _open_source(path)
    except OSError as exc:
        raise _read_error(path, exc) from exc
    try:
        digest = _hash_leased(fd, size)  # writers kept off while it is mapped
        return (digest, size) if digest is not None else _hash_fd(fd)
    except OSError as exc:
        raise _read_error(path, exc) from exc
    finally:
        os.close(fd)


def derive_tree(
    base_digest: Digest | None,
    content: ContentStore,
    *,
    add: Mapping[str, FileEntry] | Iterable[FileEntry] | None = None,
    exclude: Iterable[str] | None = None,
) -> Digest:
    """A new tree: ``base_digest``'s files (none if None) plus changes, streamed.

    ``exclude`` drops paths, and whole folders when a folder's path is given. ``add``
    (path → entry, or entries) adds files or replaces those at the same path, after the
    exclusion; their blobs must already be in the store (``NotFoundError`` otherwise).
    """
    if add is None:
        added: list[FileEntry] = []
    elif isinstance(add, Mapping):
        added = []
        for path, entry in add.items():
            if entry.path != path:
                entry = FileEntry(path, entry.digest, entry.size, entry.executable)
            added.append(entry)
    else:
        added = list(add)
    added.sort(key=lambda e: e.path)
    for entry in added:
        problem = path_problem(entry.path)
        if problem is not None:
            raise InputError(f"cannot add {entry.path!r} to a tree: {problem}")
        if not content.has(entry.digest):
            raise NotFoundError(f"blob {entry.digest[:12]} of {entry.path} is not in the store",
                                "store the file's content before adding it to a tree")
    excluded = {p.strip("/") for p in exclude or ()}

    def kept(path: str) -> bool:
        if not excluded:
            return True
        if path in excluded:
            return False
        cut = path.rfind("/")
        while cut > 0:
            if path[:cut] in excluded:
                return False
            cut = path.rfind("/", 0, cut)
        return True

    base = content.iter_rows(base_digest) if base_digest is not None else iter(())
    with content.tree_writer() as writer:
        new = iter(added)
        row, entry = next(base, None), next(new, None)
        while row is not None or entry is not None:
            if entry is None or (row is not None and row[0] < entry.path):
                if kept(row[0]):  # type: ignore[index]
                    writer.add(*row)  # type: ignore[misc]
                row = next(base, None)
            else:
                if row is not None and row[0] == entry.path:
                    row = next(base, None)  # replaced
                writer.add(entry.path, entry.digest, entry.size, entry.executable)
                entry = next(new, None)
        return writer.commit()
