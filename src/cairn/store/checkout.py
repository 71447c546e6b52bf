"""Checking out trees: materialize a stored tree (or part of it) as a folder, at disk speed.

Checking out (:func:`checkout`)
    Read-only checkouts hardlink the store's read-only blobs when the destination is on
    the store's filesystem (executable files are copied instead, since a link shares the
    blob's mode). Such files *are* the store's blobs: they are read-only (mode 0444), but
    ``chmod`` on one, or root writing to it, changes the blob; so does editing an
    original versioned with ``link=True``. In a store that link mode has written to
    (marked by a ``linked`` file in the store's folder) each blob is ``lstat``-ed: a blob
    is written before any tree that names it and never again, so one whose mtime is
    newer than the tree manifest's has been modified, and it is verified (hashed) before
    it is linked; ``CorruptBlobError`` is raised rather than a changed blob handed out.
    ``writable=True`` gives private copies: reflinks where supported, else copies
    verified against their digest. A destination that is absent is built in a hidden
    sibling folder and renamed into place at the end, so it appears complete or not at
    all; a destination that exists must be empty unless ``force``. Paths are validated
    when the manifest is read, and with ``force`` an existing symlink on the way is
    refused, so nothing is ever written outside the destination.

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

import errno
import os
import re
import stat
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from blake3 import blake3

from cairn.entities import Digest
from cairn.errors import CorruptBlobError, InputError, NotFoundError
from cairn.store._fileops import (
    _O_NEW,
    Progress,
    _copy_fd,
    _default_workers,
    _hash_path,
    _reflink,
    _rmtree,
    _store_error,
    _Throttle,
    _unlink,
    _write_all,
)
from cairn.store.blobs import LocalBlobStore
from cairn.store.cas import ContentStore, Row

__all__ = ["CheckoutInfo", "checkout"]

#: Blobs up to this size are read whole, verified from memory and written from the bytes.
_READ_WHOLE = 2 << 20
_BATCH = 128  # files per task handed to a worker thread


@dataclass(frozen=True)
class CheckoutInfo:
    """What a checkout wrote: files, bytes, and how (hardlink, reflink, copy or mixed)."""

    files: int
    bytes: int
    method: str


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

    def __init__(self, content: ContentStore, work: str, *, writable: bool,
                 tree: Digest | None = None) -> None:
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
        # A blob is written before any tree naming it, and never again: in a store that
        # link mode wrote to, one modified since (an original versioned by link and then
        # edited) has a newer mtime than the tree's, and is verified before it is linked.
        # (-1: no such check; None: verify every blob, the tree's time being unknown.)
        self.written_by_ns: int | None = -1
        if self.link and tree is not None and self.objects is not None \
                and os.path.exists(linked_marker(self.blobs)):
            try:
                manifest = self._blob(tree)
                self.written_by_ns = os.stat(manifest).st_mtime_ns  # type: ignore[arg-type]
            except FileNotFoundError:
                self.written_by_ns = None

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
                except OSError as exc:
                    if exc.errno not in (errno.EMLINK, errno.EXDEV, errno.EPERM):
                        raise
                else:
                    written_by = self.written_by_ns
                    if written_by is None or (written_by >= 0 and
                                              os.lstat(dest).st_mtime_ns > written_by):
                        self._check(dest, digest, _hash_path(dest), hint=_EDITED)
                    return "hardlink"
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
        if size <= _READ_WHOLE:
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

    def _check(self, dest: str, digest: Digest, actual: Digest, *, written: bool = True,
               hint: str = "restore it from a backup or re-create the version from its "
                           "source") -> None:
        if actual != digest:
            if written:
                _unlink(dest)
            raise CorruptBlobError(
                f"blob {digest[:12]} is corrupt: its bytes no longer match its digest",
                hint)


_EDITED = ("it was modified in place after it was stored (a file versioned with --link "
           "and then edited?); restore it from a backup or re-create the version from "
           "its source")


def linked_marker(blobs: LocalBlobStore) -> str:
    """The file whose presence says that link mode has put originals into the store."""
    return str(blobs.root / "linked")


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
    placer = _Placer(content, work, writable=writable, tree=tree_digest)
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
        if match is not None and not files:
            shown = glob if isinstance(glob, str) else ", ".join(glob)  # type: ignore[arg-type]
            raise InputError(f"no file matches {shown!r}",
                             "globs match whole paths from the version's root, e.g. "
                             "'train/**/*.png'; `cairn dataset show NAME/VERSION --files 100` "
                             "lists paths")
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
                _rmtree(work)
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
                _rmtree(entry.path)
            else:
                _unlink(entry.path)
