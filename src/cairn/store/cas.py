"""Content-addressed storage over a :class:`BlobStore`: files, bytes and trees by BLAKE3.

A tree is a manifest (canonical JSON of ``FileEntry`` rows sorted by path) stored as a
blob itself, so a folder of a million files is one manifest plus its blobs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from cairn.entities import Digest, FileEntry
from cairn.errors import CorruptBlobError
from cairn.store.blobs import BlobStore

_CHUNK = 1 << 20
_MMAP_THRESHOLD = 16 << 20


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

    def put_tree(self, entries: Iterable[FileEntry]) -> Digest:
        """Store a manifest of files (already stored) and return the tree's digest."""
        rows = sorted(
            ([e.path, e.digest, e.size, int(e.executable)] for e in entries),
            key=lambda r: r[0],
        )
        return self.put_bytes(_canonical({"cairn-tree": 1, "files": rows}))

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
        data = self.read_json(digest)
        if not isinstance(data, dict) or data.get("cairn-tree") != 1:
            raise CorruptBlobError(f"blob {digest[:12]} is not a tree manifest")
        return [FileEntry(p, d, s, bool(x)) for p, d, s, x in data["files"]]

    def verify(self, digest: Digest) -> bool:
        """Whether the stored blob still hashes to its digest."""
        from blake3 import blake3

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


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
