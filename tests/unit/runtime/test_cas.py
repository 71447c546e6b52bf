from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cairn.entities import FileEntry
from cairn.errors import ConfigError, CorruptBlobError, StoreNotWritableError
from cairn.store import ContentStore, open_blob_store
from cairn.store.cas import hash_bytes, hash_file


@pytest.fixture
def content(tmp_path: Path) -> ContentStore:
    return ContentStore(open_blob_store(str(tmp_path / "store")))


def test_put_and_read_back_verified(content: ContentStore, tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello" * 1000)
    digest, size = content.put_file(f)
    assert size == 5000
    assert digest == hash_bytes(b"hello" * 1000)
    assert content.read_bytes(digest) == b"hello" * 1000
    assert f.exists()  # copied, not taken


def test_identical_content_is_stored_once(content: ContentStore, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(b"same")
        content.put_file(tmp_path / name)
    assert len(list(content.blobs.iter_digests())) == 1


def test_move_takes_the_file(content: ContentStore, tmp_path: Path) -> None:
    f = tmp_path / "out.bin"
    f.write_bytes(b"x" * 10)
    digest, _ = content.put_file(f, move=True)
    assert not f.exists()
    assert content.read_bytes(digest) == b"x" * 10


def test_blobs_are_read_only_and_sharded(content: ContentStore) -> None:
    digest = content.put_bytes(b"data")
    path = content.blobs.local_path(digest)
    assert path is not None
    assert path.parent.name == digest[:2] and path.name == digest[2:]
    assert (path.stat().st_mode & 0o777) == 0o444


def test_corruption_is_detected_on_read(content: ContentStore) -> None:
    digest = content.put_bytes(b"precious")
    path = content.blobs.local_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(CorruptBlobError, match="corrupt"):
        content.read_bytes(digest)
    assert not content.verify(digest)


def test_tree_round_trip(content: ContentStore) -> None:
    d1 = content.put_bytes(b"one")
    entries = [FileEntry("b/x.py", d1, 3, True), FileEntry("a.txt", d1, 3, False)]
    tree = content.put_tree(entries)
    assert content.put_tree(reversed(entries)) == tree  # order-independent
    assert [e.path for e in content.get_tree(tree)] == ["a.txt", "b/x.py"]
    assert content.get_tree(tree)[1].executable


def test_materialize_links_when_possible_and_copies_otherwise(content: ContentStore,
                                                               tmp_path: Path) -> None:
    digest = content.put_bytes(b"model weights")
    dest = tmp_path / "ws" / "inputs" / "m.pt"
    assert content.materialize(digest, dest) == "link"
    assert dest.read_bytes() == b"model weights"
    copy = tmp_path / "ws" / "copy.pt"
    assert content.materialize(digest, copy, link=False) == "copy"
    copy.write_bytes(b"changed")  # a private copy: the blob is untouched
    assert content.read_bytes(digest) == b"model weights"


def test_large_file_hash_matches_streaming(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(20 << 20))
    assert hash_file(big)[0] == hash_bytes(big.read_bytes())


def test_concurrent_writers_of_the_same_blob(content: ContentStore, tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    errors: list[BaseException] = []

    def put() -> None:
        try:
            content.put_bytes(data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert content.read_bytes(hash_bytes(data)) == data
    assert not list((tmp_path / "store" / "tmp").iterdir())  # no temp files left behind


def test_unknown_scheme_fails_loudly() -> None:
    with pytest.raises(ConfigError, match="unknown blob store scheme 'gopher'"):
        open_blob_store("gopher://x/y")


def test_store_folder_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    content = ContentStore(open_blob_store(str(blocker / "store")))
    with pytest.raises(StoreNotWritableError, match="cannot write the blob store"):
        content.put_bytes(b"x")
