"""Folders of millions of files as trees: version, check out, diff and derive, at disk speed.

Versioning (:func:`version_folder`)
    The folder is walked iteratively with ``os.scandir`` in the manifest's sort order, so
    the manifest streams to disk as files are done and memory stays flat. The walking
    thread stats each file and answers unchanged ones from the hash cache; the others are
    read, hashed (BLAKE3) and stored by a thread pool. Each file is *copied* into the store —
    by reflink (``FICLONE``) where the filesystem can, else by ``copy_file_range`` or by
    writing the bytes read for hashing — and never hardlinked: a user who later edits the
    file in place would silently corrupt the blob. What is stored is exactly what was
    hashed (small files are hashed from the bytes written; large files are copied first
    and the copy is hashed), so a file changing under the walk can never give a blob
    that does not match its name.

    Symlinks are **skipped**, as are sockets, FIFOs and devices: following them could
    leave the folder or loop, and a dataset is its regular files. They are listed in
    ``TreeInfo.skipped`` and logged. Empty folders are not recorded (a tree lists files).
    The content store's own folder is skipped when it lies inside the folder.

Durability without an fsync per file
    New blobs are written under temp names in ``<store>/tmp/ingest-*``; every few
    thousand files (or 128 MB) a background thread calls ``syncfs`` once for the batch and
    then renames its files into ``objects/ab/cdef…``. So a blob is never visible under its
    final name before its bytes are on disk, at the cost of one sync per batch instead of
    one ``fsync`` per file (large copies start their writeback as soon as they are hashed,
    so the sync mostly finds them written). ``syncfs`` flushes the whole filesystem: on
    one that other programs are writing heavily, a version also waits for their data.
    The tree manifest is stored last (fsynced and renamed), after every blob it names: an
    error or a crash leaves no tree, only complete blobs (garbage for ``gc``); an error
    leaves no temp files (a crash can leave ``tmp/ingest-*`` behind, for ``gc``).

Checking out (:func:`checkout`)
    Read-only checkouts hardlink the store's read-only blobs when the destination is on
    the store's filesystem (executable files are copied instead, since a link shares the
    blob's mode). Such files *are* the store's blobs: they are read-only (mode 0444), but
    ``chmod`` on one, or root writing to it, changes the blob. ``writable=True`` gives
    private copies: reflinks where supported, else
    copies verified against their digest. A destination that is absent is built in a
    hidden sibling folder and renamed into place at the end, so it appears complete or
    not at all; a destination that exists must be empty unless ``force``. Paths are
    validated when the manifest is read, and with ``force`` an existing symlink on the
    way is refused, so nothing is ever written outside the destination.

Globs (``checkout(glob=...)``)
    The globs of dataset inputs (:mod:`cairn.globs`), matched against the whole relative
    path: ``*``, ``?`` and ``[abc]`` stay within one folder, ``**`` crosses folders
    (``train/**/*.png``, ``**/labels.csv``). A pattern that matches a folder selects
    everything below it (``train`` is ``train/**``).

Progress
    ``progress(files_done, files_total, bytes_done, bytes_total)`` (totals may be None),
    called at most 20 times a second and once at the end.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from blake3 import blake3

from cairn.entities import Digest, FileEntry
from cairn.errors import CorruptBlobError, InputError, NotFoundError, StoreNotWritableError
from cairn.store.blobs import LocalBlobStore
from cairn.store.cas import ContentStore, Row, TreeInfo, path_problem
from cairn.store.hashcache import CacheScan, HashCache, StatKey

__all__ = [
    "CheckoutInfo",
    "Modified",
    "Progress",
    "TreeDiff",
    "TreeInfo",
    "checkout",
    "derive_tree",
    "diff_trees",
    "version_folder",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None", int, "int | None"], None]

#: Files up to this size are read whole, hashed from memory and written from the same
#: bytes; larger ones are copied in the kernel (or reflinked) and the copy is hashed.
SMALL_FILE = 2 << 20
_BATCH = 128  # files per task handed to a worker thread
_COMMIT_FILES = 4096  # staged blobs per sync + rename batch ...
_COMMIT_BYTES = 128 << 20  # ... or this many bytes, whichever comes first
_LIST_SHARD_BYTES = 64 << 10  # a shard folder up to ~800 blobs is listed once ...
_LIST_SHARD_NAMES = 1024  # ... and its listing dropped when it grows past this
_FICLONE = 0x40049409
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS,
               errno.EPERM, errno.EBADF}
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
# Reading a dataset should not dirty every inode with a new atime (a journal write each).
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class CheckoutInfo:
    """What a checkout wrote: files, bytes, and how (hardlink, reflink, copy or mixed)."""

    files: int
    bytes: int
    method: str


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


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 2
    return max(2, min(16, cpus))


class _Throttle:
    """Calls the progress callback at most every 50 ms (and always for the final call)."""

    def __init__(self, fn: Progress | None) -> None:
        self.fn = fn
        self.last = 0.0

    def __call__(self, files: int, files_total: int | None, done: int,
                 bytes_total: int | None, *, final: bool = False) -> None:
        if self.fn is None:
            return
        now = time.monotonic()
        if final or now - self.last >= 0.05:
            self.last = now
            self.fn(files, files_total, done, bytes_total)


# -- low-level file operations (module functions so tests can make them fail) -----------
def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # rare: a signal or a full pipe; finish it off
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]


def _copy_fd(src: int, dst: int) -> int:
    """Copy the rest of ``src`` to ``dst`` in the kernel when it can; returns bytes."""
    total = 0
    try:
        while n := os.copy_file_range(src, dst, 1 << 30):
            total += n
        return total
    except OSError as exc:
        if total or exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                      errno.EOPNOTSUPP, errno.EBADF):
            raise
    while chunk := os.read(src, 1 << 20):
        _write_all(dst, chunk)
        total += len(chunk)
    return total


def _reflink(src: int, dst: int) -> bool:
    """Clone ``src`` into ``dst`` (FICLONE); False where the filesystem cannot."""
    import fcntl

    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return True
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise


_libc: ctypes.CDLL | None = None


def _syncfs(fd: int) -> None:
    """Flush the filesystem holding ``fd`` (``syncfs``; ``sync`` where it is missing)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:  # pragma: no cover - no libc to load
            os.sync()
            return
    syncfs = getattr(_libc, "syncfs", None)
    if syncfs is None:  # pragma: no cover - not Linux
        os.sync()
        return
    if syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages out (without waiting)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        try:
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _hash_path(path: str) -> Digest:
    hasher = blake3(max_threads=blake3.AUTO)
    hasher.update_mmap(path)
    return hasher.hexdigest()


def _store_error(exc: OSError, where: object) -> StoreNotWritableError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreNotWritableError(
            f"no space left writing {where}: {exc.strerror or exc}",
            "free some disk space (`cairn gc` removes unused blobs) and run it again",
        )
    return StoreNotWritableError(f"cannot write {where}: {exc.strerror or exc}",
                                 "check the folder's permissions and free space")


# -- staging blobs -------------------------------------------------------------------------
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
            self.run_dir = tempfile.mkdtemp(dir=root / "tmp", prefix="ingest-")
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
        # Staged by shard, like the store: threads creating files in one folder would
        # queue on its lock.
        shard = digest[:2]
        tmp = f"{self.run_dir}/{shard}/{digest[2:]}"
        if not self._claim(digest, tmp):
            return None
        if shard not in self._staging_shards:
            os.makedirs(f"{self.run_dir}/{shard}", exist_ok=True)
            self._staging_shards.add(shard)
        try:
            fd = os.open(tmp, _O_NEW, 0o444)
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
        tmp = f"{self.run_dir}/{next(self._names):x}"
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
                    size = _copy_fd(src, dst)
                digest = _hash_path(tmp)  # the copy, which nobody else can change
                if not cloned:
                    # Start writing the copy out now, so the batch's sync waits less.
                    _start_writeback(dst)
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
        if files < _COMMIT_FILES and size < _COMMIT_BYTES:
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
            names = self._listed.get(shard)
            if names is not None:
                if len(names) < _LIST_SHARD_NAMES:
                    names.add(digest[2:])
                else:  # bounded memory: ask the filesystem for this shard from now on
                    self._listed[shard] = None
            self._staged.pop(digest, None)  # after the name is known: never seen as absent

    def finish(self) -> None:
        self._submit()
        try:
            while self._commits:
                self._commits.popleft().result()
        finally:
            self._close()
        try:
            os.rmdir(self.run_dir)
        except OSError:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def abort(self) -> None:
        for pending in self._commits:
            pending.cancel()
        self._close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._staged.clear()

    def _close(self) -> None:
        self._committer.shutdown(wait=True)
        if self._sync_fd >= 0:
            os.close(self._sync_fd)
            self._sync_fd = -1


def _exists(path: str, _access: Callable[[str, int], bool] = os.access) -> bool:
    return _access(path, os.F_OK)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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


def _read_small(path: str, size: int) -> bytes:
    try:
        fd = _open_source(path)
    except OSError as exc:
        raise _read_error(path, exc) from exc
    try:
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


# One file of the new tree: (rel, digest, size, executable, stat key to cache (or the
# hash cache's own line for an unchanged file), staged temp path or None). A file to
# hash is (rel, path, stat key, executable).
_Result = tuple[str, Digest, int, bool, "StatKey | str", "str | None"]
_ToHash = tuple[str, str, StatKey, bool]


def _hash_and_stage(batch: list[_Result | _ToHash], stager: _Stager) -> list[_Result]:
    """A worker's task: read, hash and stage the files to hash; pass the others through."""
    out: list[_Result] = []
    append = out.append
    for item in batch:
        if len(item) == 6:
            append(item)  # type: ignore[arg-type]
            continue
        rel, path, key, executable = item  # type: ignore[misc]
        if key[0] <= SMALL_FILE:
            data = _read_small(path, key[0])
            digest = blake3(data).hexdigest()
            tmp = stager.stage_bytes(digest, data)
            append((rel, digest, len(data), executable, key, tmp))
        else:
            digest, size, tmp = stager.stage_file(path)
            append((rel, digest, size, executable, key, tmp))
    return out


def _ready(item: Future[list[_Result]] | list[_Result]) -> bool:
    return not isinstance(item, Future) or item.done()


def _result(item: Future[list[_Result]] | list[_Result]) -> list[_Result]:
    return item.result() if isinstance(item, Future) else item


def version_folder(
    folder: Path | str,
    content: ContentStore,
    *,
    progress: Progress | None = None,
    hash_cache: HashCache | None = None,
    workers: int | None = None,
) -> TreeInfo:
    """Store every regular file under ``folder`` and a tree listing them; see the module doc.

    Returns the tree's digest, file count, total size and what was skipped. With a
    ``hash_cache``, files whose (size, mtime, inode, ctime) did not change since they
    were last versioned are not read again. Raises ``InputError`` for a folder that
    cannot be read and ``StoreNotWritableError`` when the store cannot be written (disk
    full included); either way no tree is stored and no temp file is left.
    """
    root_path = Path(folder)
    if not root_path.is_dir():
        raise InputError(f"{folder} is not a folder" if root_path.exists()
                         else f"{folder} does not exist",
                         "give the path of the folder to version")
    root = os.path.realpath(root_path)
    started = time.time_ns()
    blobs = content.blobs
    skip = _skip_dirs(root, content, hash_cache)
    stager: _Stager = (_LocalStager(content, blobs) if isinstance(blobs, LocalBlobStore)
                       else _Stager(content))
    scan: CacheScan | None = None
    tree = None
    skipped: list[tuple[str, str]] = []
    pool = ThreadPoolExecutor(workers or _default_workers(), thread_name_prefix="cairn-add")
    throttle = _Throttle(progress)
    files = done = 0
    ok = False
    try:
        scan = hash_cache.scan(root, started) if hash_cache is not None else None
        tree = content.tree_writer()
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
                    elif scan.cacheable(key[1], key[3]):
                        scan.record(rel, key, digest)
            files += len(results)
            throttle(files, None, done, None)

        # The walking thread stats each file and answers unchanged ones from the hash
        # cache itself; only files to read go to the workers. (Threads that make many
        # tiny system calls at once slow each other down on the GIL, so an unchanged
        # folder is best walked by one thread alone.)
        batch: list[_Result | _ToHash] = []
        to_hash = 0
        lookup = scan.lookup if scan is not None else None
        has = stager.has
        lstat, S_ISREG = os.lstat, stat.S_ISREG
        for rel, path in _walk(root, skipped, skip):
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
            cached = lookup(rel) if lookup is not None else None
            if cached is not None and cached[1] == key and has(cached[2]):
                batch.append((rel, cached[2], key[0], executable, cached[3], None))
            else:
                batch.append((rel, path, key, executable))
                to_hash += 1
            if len(batch) >= _BATCH:
                in_flight.append(pool.submit(_hash_and_stage, batch, stager) if to_hash
                                 else batch)
                batch, to_hash = [], 0
                while len(in_flight) > limit or (in_flight and _ready(in_flight[0])):
                    drain(_result(in_flight.popleft()))
        if batch:
            in_flight.append(pool.submit(_hash_and_stage, batch, stager) if to_hash
                             else batch)
        while in_flight:
            drain(_result(in_flight.popleft()))
        pool.shutdown(wait=True)
        stager.finish()
        digest = tree.commit()  # last: a tree is only ever stored after all its blobs
        ok = True
    except OSError as exc:
        raise _store_error(exc, f"the blob store ({exc.filename or blobs.url})") from exc
    finally:
        if not ok:
            pool.shutdown(wait=True, cancel_futures=True)
            stager.abort()
            if tree is not None:
                tree.abort()
            if scan is not None:
                scan.abort()
    if scan is not None:
        try:
            scan.commit()
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be saved is no failure
            log.warning("could not save the hash cache %s: %s", hash_cache.path, exc)
    throttle(files, files, done, done, final=True)
    if skipped:
        log.warning("skipped %d entries of %s (symlinks and special files are not "
                    "versioned), e.g. %s", len(skipped), folder,
                    ", ".join(f"{p} ({why})" for p, why in skipped[:3]))
    return TreeInfo(digest, files, done, tuple(skipped))


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


# -- checking out --------------------------------------------------------------------------
def _compile_globs(glob: str | Sequence[str] | None) -> Callable[[str], bool] | None:
    if glob is None:
        return None
    patterns = [glob] if isinstance(glob, str) else list(glob)
    if not patterns:
        return None
    from cairn.globs import compile_glob  # the same globs as dataset inputs

    # A pattern matching a folder selects what is under it.
    bodies = [compile_glob(p.strip("/")).pattern.removesuffix(r"\Z") for p in patterns]
    regex = re.compile("(?:" + "|".join(bodies) + ")(?:/.*)?", re.DOTALL)
    full = regex.fullmatch
    return lambda path: full(path) is not None


class _Placer:
    """Places blobs at paths under a folder by hardlink, reflink or verified copy."""

    def __init__(self, content: ContentStore, work: str, *, writable: bool) -> None:
        self.content = content
        self.blobs = content.blobs
        self.work = work
        self.writable = writable
        self.objects: str | None = None
        same_fs = False
        if isinstance(self.blobs, LocalBlobStore):
            self.objects = str(self.blobs.root / "objects")
            try:
                same_fs = os.stat(self.objects).st_dev == os.stat(work).st_dev
            except FileNotFoundError:
                same_fs = False
        self.link = same_fs and not writable
        self.reflink: bool | None = None if (same_fs and writable) else False
        self.methods: set[str] = set()

    def _blob(self, digest: Digest) -> str | None:
        if self.objects is not None:
            return f"{self.objects}/{digest[:2]}/{digest[2:]}"
        local = self.blobs.local_path(digest)
        return None if local is None else str(local)

    def place(self, batch: list[Row]) -> None:
        for path, digest, size, executable in batch:
            dest = f"{self.work}/{path}"
            try:
                self.methods.add(self._place_one(dest, digest, size, executable))
            except FileNotFoundError:
                blob = self._blob(digest)
                if blob is not None and os.path.exists(blob):
                    raise
                raise NotFoundError(
                    f"blob {digest[:12]} of {path} is not in the store",
                    "the store may have been pruned; restore the blob or re-add the folder",
                ) from None

    def _mode(self, executable: bool) -> int:
        if self.writable:
            return 0o755 if executable else 0o644
        return 0o555 if executable else 0o444

    def _place_one(self, dest: str, digest: Digest, size: int, executable: bool) -> str:
        if self.link and not executable:
            if size == 0:  # no link: one empty blob could otherwise pass the link limit
                self._create(dest, b"", 0o444)
                return "hardlink"
            src = self._blob(digest)
            if src is not None:
                try:
                    _link(src, dest)
                    return "hardlink"
                except OSError as exc:
                    if exc.errno not in (errno.EMLINK, errno.EXDEV, errno.EPERM):
                        raise
        return self._copy(dest, digest, size, executable)

    def _create(self, dest: str, data: bytes, mode: int) -> None:
        fd = _open_new(dest, mode)
        try:
            _write_all(fd, data)
        except BaseException:
            os.close(fd)
            _unlink(dest)
            raise
        os.close(fd)

    def _copy(self, dest: str, digest: Digest, size: int, executable: bool) -> str:
        mode = self._mode(executable)
        src = self._blob(digest)
        if src is None:  # a remote store: fetch, then check
            _unlink(dest)
            self.blobs.fetch(digest, Path(dest))
            if not getattr(self.blobs, "verifies_reads", False):
                self._check(dest, digest, _hash_path(dest))
            os.chmod(dest, mode)
            return "copy"
        if size <= SMALL_FILE:
            fd = os.open(src, os.O_RDONLY)
            try:
                data = os.read(fd, size + 1)
            finally:
                os.close(fd)
            self._check(dest, digest, blake3(data).hexdigest(), written=False)
            self._create(dest, data, mode)
            return "copy"
        sfd = os.open(src, os.O_RDONLY)
        try:
            dfd = _open_new(dest, mode)
            try:
                cloned = self.reflink is not False and _reflink(sfd, dfd)
                if self.reflink is None:
                    self.reflink = cloned
                if not cloned:
                    _copy_fd(sfd, dfd)
            except BaseException:
                os.close(dfd)
                _unlink(dest)
                raise
            os.close(dfd)
        finally:
            os.close(sfd)
        if cloned:
            return "reflink"  # shares the blob's own extents: nothing to verify
        self._check(dest, digest, _hash_path(dest))
        return "copy"

    def _check(self, dest: str, digest: Digest, actual: Digest, *, written: bool = True) -> None:
        if actual != digest:
            if written:
                _unlink(dest)
            raise CorruptBlobError(
                f"blob {digest[:12]} is corrupt: its bytes no longer match its digest",
                "restore it from a backup or re-create the version from its source",
            )


def _open_new(dest: str, mode: int) -> int:
    try:
        return os.open(dest, _O_NEW, mode)
    except FileExistsError:  # --force: replace what is there (never through a symlink)
        _replaceable(dest)
        os.unlink(dest)
        return os.open(dest, _O_NEW, mode)


def _link(src: str, dest: str) -> None:
    try:
        os.link(src, dest)
    except FileExistsError:
        _replaceable(dest)
        os.unlink(dest)
        os.link(src, dest)


def _replaceable(dest: str) -> None:
    if stat.S_ISDIR(os.lstat(dest).st_mode):
        raise InputError(f"{dest} is a folder in the way of a file",
                         "remove it, or check out into an empty folder")


class _Folders:
    """Creates the folders of sorted paths under ``work``, each once (a stack, O(depth)).

    A name already there that is not a real folder (a symlink, with ``force``) is refused,
    so no file is ever written through a link to somewhere else.
    """

    def __init__(self, work: str) -> None:
        self.work = work
        self.stack: list[str] = []  # components of the last folder made

    def make(self, parent: str) -> None:
        parts = parent.split("/") if parent else []
        stack = self.stack
        common = 0
        while common < len(stack) and common < len(parts) and stack[common] == parts[common]:
            common += 1
        del stack[common:]
        for part in parts[common:]:
            stack.append(part)
            path = f"{self.work}/{'/'.join(stack)}"
            try:
                os.mkdir(path)
            except FileExistsError:
                st = os.lstat(path)
                if not stat.S_ISDIR(st.st_mode):
                    what = "a symlink" if stat.S_ISLNK(st.st_mode) else "a file"
                    raise InputError(
                        f"{path} is {what} where the tree has a folder",
                        "remove it, or check out into an empty folder") from None


def checkout(
    tree_digest: Digest,
    dest: Path | str,
    content: ContentStore,
    *,
    glob: str | Sequence[str] | None = None,
    writable: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> CheckoutInfo:
    """Materialize a tree (or the paths matching ``glob``) under ``dest``; see the module doc.

    ``dest`` must be absent or empty unless ``force`` (then files at the tree's paths are
    replaced and others left alone). Read-only checkouts are hardlinks to the store where
    possible; ``writable`` checkouts are private copies. Returns the file and byte counts
    and the method used (``"hardlink"``, ``"reflink"``, ``"copy"`` or ``"mixed"``).
    """
    dest = Path(dest)
    match = _compile_globs(glob)
    exists = dest.exists()
    nonempty = False
    if exists:
        if not dest.is_dir():
            raise InputError(f"{dest} is not a folder", "give a new or empty folder")
        with os.scandir(dest) as it:
            nonempty = next(it, None) is not None
        if nonempty and not force:
            raise InputError(f"{dest} is not empty", hint="use --force to write into it")
    elif dest.is_symlink():
        raise InputError(f"{dest} is a dangling symlink", "give a new or empty folder")
    try:
        if exists:
            work = os.path.realpath(dest)
        else:
            parent = dest.absolute().parent
            parent.mkdir(parents=True, exist_ok=True)
            work = _new_folder(parent, f".{dest.name}.checkout-")
    except OSError as exc:
        raise _store_error(exc, dest) from exc
    totals = content.tree_totals(tree_digest) if match is None else None
    files_total, bytes_total = totals if totals is not None else (None, None)
    placer = _Placer(content, work, writable=writable)
    folders = _Folders(work)
    throttle = _Throttle(progress)
    n = workers or _default_workers()
    pool = ThreadPoolExecutor(n, thread_name_prefix="cairn-checkout")
    files = done = 0
    ok = False
    try:
        in_flight: deque[tuple[Future[None], int, int]] = deque()
        batch: list[Row] = []
        batch_bytes = 0
        last_parent: str | None = None
        for row in content.iter_rows(tree_digest):
            path = row[0]
            if match is not None and not match(path):
                continue
            parent = path.rpartition("/")[0]
            if parent != last_parent:
                folders.make(parent)
                last_parent = parent
            batch.append(row)
            batch_bytes += row[2]
            if len(batch) >= _BATCH:
                in_flight.append((pool.submit(placer.place, batch), len(batch), batch_bytes))
                batch, batch_bytes = [], 0
                while len(in_flight) > 4 * n or (in_flight and in_flight[0][0].done()):
                    future, count, size = in_flight.popleft()
                    future.result()
                    files += count
                    done += size
                    throttle(files, files_total, done, bytes_total)
        if batch:
            in_flight.append((pool.submit(placer.place, batch), len(batch), batch_bytes))
        while in_flight:
            future, count, size = in_flight.popleft()
            future.result()
            files += count
            done += size
            throttle(files, files_total, done, bytes_total)
        pool.shutdown(wait=True)
        if not exists:
            try:
                os.rename(work, dest)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise InputError(f"{dest} appeared while checking out into it",
                                     "check out again into a new folder") from None
                raise
        ok = True
    except OSError as exc:
        raise _store_error(exc, exc.filename or dest) from exc
    finally:
        if not ok:
            pool.shutdown(wait=True, cancel_futures=True)
            if not exists:
                shutil.rmtree(work, ignore_errors=True)
            elif not nonempty:
                _empty(work)
    throttle(files, files if match is not None else files_total, done,
             done if match is not None else bytes_total, final=True)
    methods = placer.methods or {"hardlink" if placer.link else "copy"}
    return CheckoutInfo(files, done, methods.pop() if len(methods) == 1 else "mixed")


def _new_folder(parent: Path, prefix: str) -> str:
    """A new uniquely named folder with the usual mode (``mkdtemp`` would make it 0700)."""
    while True:
        path = f"{parent}/{prefix}{os.urandom(6).hex()}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


def _empty(folder: str) -> None:
    """Remove what a failed checkout wrote into a folder that was empty before."""
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                _unlink(entry.path)


# -- comparing and deriving ----------------------------------------------------------------
def diff_trees(a: Digest, b: Digest, content: ContentStore) -> TreeDiff:
    """What changed from tree ``a`` to tree ``b``: one streaming pass over both manifests.

    A path in both with another digest or executable bit is ``modified``.
    """
    if a == b:
        return TreeDiff(unchanged_count=content.tree_totals(a)[0])
    diff = TreeDiff()
    unchanged = 0
    left, right = content.iter_rows(a), content.iter_rows(b)
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
