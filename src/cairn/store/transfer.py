"""Copy the blobs one store lacks from another, in parallel, each checked by its digest.

:func:`push` (local → remote) and :func:`pull` (remote → local) are the same copy named
for the direction a caller thinks in. Only blobs missing at the destination move; a blob
whose bytes do not hash to its digest raises :class:`~cairn.errors.CorruptBlobError` naming
it, and never reaches the destination.

``progress(files_done, files_total, bytes_done, bytes_total)`` is called from the calling
thread: once before the first copy and after each blob copied (totals count only the
blobs that were missing).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from cairn.entities import Digest
from cairn.errors import CorruptBlobError
from cairn.store.blobs import BlobStore

Progress = Callable[[int, int, int, int], None]

__all__ = ["Progress", "TransferResult", "copy_blob", "pull", "push"]


@dataclass(frozen=True)
class TransferResult:
    """What a push or pull did."""

    copied: int  # blobs copied
    present: int  # blobs the destination already had
    bytes: int  # bytes copied
    digests: tuple[Digest, ...]  # the blobs copied


def push(
    digests: Iterable[Digest],
    src: BlobStore,
    dst: BlobStore,
    *,
    workers: int = 8,
    progress: Progress | None = None,
    sizes: Mapping[Digest, int] | None = None,
) -> TransferResult:
    """Copy to ``dst`` (typically remote) those of ``digests`` it lacks, from ``src``.

    ``sizes`` (digest → bytes, e.g. from a tree manifest) spares asking ``src`` for them.
    Raises ``NotFoundError`` before copying anything when ``src`` lacks a blob, and the
    first copy's error (``CorruptBlobError``, ``StoreError``) once the copies in flight end;
    blobs copied until then stay copied, so running it again finishes the job.
    """
    return _copy(digests, src, dst, workers=workers, progress=progress, sizes=sizes)


def pull(
    digests: Iterable[Digest],
    src: BlobStore,
    dst: BlobStore,
    *,
    workers: int = 8,
    progress: Progress | None = None,
    sizes: Mapping[Digest, int] | None = None,
) -> TransferResult:
    """Copy to ``dst`` (typically local) those of ``digests`` it lacks, from ``src``.

    The same contract as :func:`push`.
    """
    return _copy(digests, src, dst, workers=workers, progress=progress, sizes=sizes)


def copy_blob(
    digest: Digest, src: BlobStore, dst: BlobStore, *, staging: Path | None = None
) -> None:
    """Copy one blob from ``src`` to ``dst``, verified, whether or not ``dst`` has it.

    A blob ``src`` keeps as a local file is hashed there and handed over by path; any
    other is fetched into ``dst``'s staging folder (else ``staging``, else the system's
    temp folder) under a name fixed by the digest, so an interrupted download resumes,
    checked (unless ``src`` checks its own reads), and moved in.
    """
    from cairn.store.cas import hash_file

    source = src.local_path(digest)
    if source is not None:
        if hash_file(source)[0] != digest:
            raise _corrupt(digest, src)
        dst.put_path(digest, source)
        return
    folder = dst.staging_dir() or staging or Path(tempfile.gettempdir())
    tmp = folder / f".transfer-{digest}"
    try:
        src.fetch(digest, tmp)
        if not src.verifies_reads and hash_file(tmp)[0] != digest:
            raise _corrupt(digest, src)
        dst.put_path(digest, tmp, move=True)
    finally:
        tmp.unlink(missing_ok=True)


def _corrupt(digest: Digest, store: BlobStore) -> CorruptBlobError:
    return CorruptBlobError(
        f"blob {digest} in {store.url} is corrupt: its bytes do not match its digest",
        "restore it from another store that holds it intact, or re-run what produced it",
    )


def _copy(
    digests: Iterable[Digest],
    src: BlobStore,
    dst: BlobStore,
    *,
    workers: int,
    progress: Progress | None,
    sizes: Mapping[Digest, int] | None,
) -> TransferResult:
    wanted = list(dict.fromkeys(digests))
    present = dst.has_many(wanted)
    missing = [d for d in wanted if d not in present]
    if not missing:
        if progress:
            progress(0, 0, 0, 0)
        return TransferResult(0, len(present), 0, ())
    workers = max(1, min(workers, len(missing)))
    known = dict(sizes or {})
    own_staging: Path | None = None
    if dst.staging_dir() is None:
        own_staging = Path(tempfile.mkdtemp(prefix=f"cairn-transfer-{uuid.uuid4().hex[:8]}-"))
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="cairn-transfer") as pool:
            unknown = [d for d in missing if d not in known]
            known.update(zip(unknown, pool.map(src.size, unknown), strict=True))
            bytes_total = sum(known[d] for d in missing)
            if progress:
                progress(0, len(missing), 0, bytes_total)
            futures: dict[Future[None], Digest] = {
                pool.submit(copy_blob, d, src, dst, staging=own_staging): d for d in missing
            }
            copied: list[Digest] = []
            bytes_done = 0
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    for future in pending:
                        future.cancel()
                    raise failed[0].exception()  # type: ignore[misc]
                for future in done:
                    digest = futures[future]
                    copied.append(digest)
                    bytes_done += known[digest]
                    if progress:
                        progress(len(copied), len(missing), bytes_done, bytes_total)
    finally:
        if own_staging is not None:
            shutil.rmtree(own_staging, ignore_errors=True)
    return TransferResult(len(copied), len(present), bytes_done, tuple(copied))
