"""Low-level file operations shared by folder versioning and checkout.

Module functions (not methods) so that tests can make one fail: the modules using them
import them by name, so a test patches the name in the module it exercises.

The blob backends use a few of them too, so this module imports nothing heavy at its top
(BLAKE3, threads and ctypes are loaded by the functions that need them): opening a store
should cost little to a program that never hashes.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Any

from cairn.entities import Digest
from cairn.errors import StoreNotWritableError
from cairn.forking import usable_cpus
from cairn.forking import write_all as _write_all

Progress = Callable[[int, "int | None", int, "int | None"], None]

_FICLONE = 0x40049409
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS,
               errno.EPERM, errno.EBADF}
_HASH_CHUNK = 4 << 20
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _default_workers() -> int:
    return max(2, min(16, usable_cpus()))


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



def _copy_fd(src: int, dst: int, write_out: bool = False) -> int:
    """Copy the rest of ``src`` to ``dst`` in the kernel when it can; returns bytes.

    ``write_out`` starts writing each copied chunk to disk as soon as it is copied (the
    copy is meant to be synced soon: the disk works while the rest is copied and hashed).
    """
    total = 0
    chunk = _WRITE_OUT_CHUNK if write_out else 1 << 30
    try:
        while n := os.copy_file_range(src, dst, chunk):
            if write_out:
                _write_out(dst, total, n)
            total += n
        return total
    except OSError as exc:
        if total or exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                      errno.EOPNOTSUPP, errno.EBADF):
            raise
    written = 0
    while data := os.read(src, 1 << 20):
        _write_all(dst, data)
        total += len(data)
        if write_out and total - written >= _WRITE_OUT_CHUNK:
            _write_out(dst, written, total - written)
            written = total
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


# ctypes (about a tenth of the import time of the folder code) is loaded on first use:
# a re-add of an unchanged folder never syncs.
_libc: Any = None


def _syncfs(fd: int) -> None:
    """Flush the filesystem holding ``fd`` (``syncfs``; ``sync`` where it is missing)."""
    global _libc
    import ctypes

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


def _write_out(fd: int, offset: int, length: int) -> None:
    """Start writing a range of a file's dirty pages to disk, without waiting for it."""
    global _sync_file_range
    if _sync_file_range is None:
        import ctypes

        _sync_file_range = False
        try:
            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            _sync_file_range = fn
        except (OSError, AttributeError):  # pragma: no cover - not Linux
            pass
    if _sync_file_range:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a hint: no errors


_sync_file_range: Callable[..., int] | None | bool = None
_SYNC_FILE_RANGE_WRITE = 2
_WRITE_OUT_CHUNK = 32 << 20


def _hash_path(path: str) -> Digest:
    from blake3 import blake3

    hasher = blake3(max_threads=blake3.AUTO)
    hasher.update_mmap(path)
    return hasher.hexdigest()


def _hash_fd(fd: int) -> tuple[Digest, int]:
    """BLAKE3 and size of the rest of an open file (read, not mapped: a file truncated
    meanwhile must not kill the process with SIGBUS).

    A helper thread reads the next chunk while this one hashes the last (both release
    the GIL): about twice the speed of reading and hashing in turn.
    """
    from concurrent.futures import ThreadPoolExecutor

    from blake3 import blake3

    hasher = blake3()
    bufs = (bytearray(_HASH_CHUNK), bytearray(_HASH_CHUNK))
    total = 0
    with ThreadPoolExecutor(1, thread_name_prefix="cairn-read") as reader:
        i = 0
        n = os.readv(fd, [bufs[0]])
        while n:
            ahead = reader.submit(os.readv, fd, [bufs[1 - i]])
            try:
                hasher.update(memoryview(bufs[i])[:n])
            finally:
                n2 = ahead.result()
            total += n
            n, i = n2, 1 - i
    return hasher.hexdigest(), total


_MAP_WINDOW = 64 << 20
_leases: bool | None = None  # whether leases hold a writer off long enough (Linux)


def _leases_usable() -> bool:
    global _leases
    if _leases is None:
        try:
            with open("/proc/sys/fs/leases-enable") as fh:
                enabled = fh.read().strip() == "1"
            with open("/proc/sys/fs/lease-break-time") as fh:
                wait_s = int(fh.read())
            _leases = enabled and wait_s >= 10
        except (OSError, ValueError):  # not Linux
            _leases = False
    return _leases


def _hash_leased(fd: int, size: int) -> Digest | None:
    """BLAKE3 of the first ``size`` bytes of an open file, mapped and hashed by all cores.

    About twice the speed of :func:`_hash_fd` (no copy out of the page cache, several
    threads), but a mapped file truncated meanwhile would kill the process (SIGBUS). So it
    is mapped only under a read *lease*: the kernel grants one only while nobody has the
    file open for writing, and then makes anyone who opens it for writing or truncates
    it wait until the lease is given back (or ``lease-break-time``, at least 10 s, has
    passed: the file is mapped one window of 64 MB at a time and the lease checked before
    each, so a wait is noticed long before that). While leased the file cannot change.

    Returns None, having hashed nothing, where no lease can be had (a writer has the file
    open, it is another user's, the filesystem has no leases), where the file is no longer
    ``size`` bytes long, or where a writer started waiting meanwhile: then hash it by
    reading (:func:`_hash_fd`).
    """
    if not _leases_usable():
        return None
    import fcntl
    import mmap
    import signal

    from blake3 import blake3

    try:
        # A lease break is told by a signal sent to the lease's owner: make it one that
        # is ignored by default (SIGIO would end the process), then make the owner nobody.
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETOWN, 0)
        if os.fstat(fd).st_size != size:
            return None  # changed since it was seen: mapping past its end would be fatal
        hasher = blake3(max_threads=blake3.AUTO)
        offset = 0
        while offset < size:
            if fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK:
                return None  # a writer is waiting for the file: let it have it
            length = min(_MAP_WINDOW, size - offset)
            with mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=offset) as window:
                hasher.update(window)
            offset += length
        return hasher.hexdigest()
    finally:
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        except OSError:  # already taken back by the kernel: nothing to give back
            pass


def _mkstemp(folder: str | os.PathLike[str], prefix: str) -> tuple[int, str]:
    """A new private file in ``folder``: (descriptor open for writing, path), like
    ``tempfile.mkstemp``.

    Here so that the folder code need not import tempfile (and shutil with it) to start.
    """
    while True:
        path = f"{os.fspath(folder)}/{prefix}{os.urandom(8).hex()}"
        try:
            return os.open(path, _O_NEW, 0o600), path
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


def _mkdtemp(folder: str | os.PathLike[str], prefix: str) -> str:
    """A new private folder in ``folder``, like ``tempfile.mkdtemp``."""
    while True:
        path = f"{os.fspath(folder)}/{prefix}{os.urandom(8).hex()}"
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


def _rmtree(path: str | os.PathLike[str]) -> None:
    """Remove a folder and what it holds, whatever fails (shutil is loaded only here)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _store_error(exc: OSError, where: object) -> StoreNotWritableError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreNotWritableError(
            f"no space left writing {where}: {exc.strerror or exc}",
            "free some disk space (`cairn gc` removes unused blobs) and run it again",
        )
    return StoreNotWritableError(f"cannot write {where}: {exc.strerror or exc}",
                                 "check the folder's permissions and free space")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

