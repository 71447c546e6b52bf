"""S3BlobStore beyond the contract: resumable transfers, clear errors, configuration."""

from __future__ import annotations

import os
import pickle
import sys
import threading
from pathlib import Path

import pytest

from cairn.errors import ConfigError, CorruptBlobError, StoreError
from cairn.store.blobs import LocalBlobStore, open_blob_store
from cairn.store.cache import CachedBlobStore
from cairn.store.cas import hash_bytes, hash_file
from cairn.store.s3 import MIN_PART_SIZE, S3BlobStore, parse_size
from cairn.testing.s3server import Interrupted, S3Server, s3_calls

PART = MIN_PART_SIZE  # the smallest part S3 accepts keeps these tests quick


def _small_parts(url: str, **kwargs: object) -> S3BlobStore:
    """Parts and ranges of 5 MB from 5 MB up, one at a time (a predictable order)."""
    options: dict[str, object] = {"multipart_threshold": PART, "part_size": PART, "workers": 1}
    options.update(kwargs)
    return S3BlobStore(url, **options)  # type: ignore[arg-type]


def _file(path: Path, size: int) -> tuple[Path, str]:
    path.write_bytes(os.urandom(size))
    return path, hash_file(path)[0]


def test_blob_keys_are_sharded_under_the_prefix(s3_bucket_url: str) -> None:
    store = S3BlobStore(s3_bucket_url)
    digest = hash_bytes(b"x")
    assert store.key(digest) == f"store/objects/{digest[:2]}/{digest[2:]}"
    assert S3BlobStore("s3://bucket").key(digest) == f"objects/{digest[:2]}/{digest[2:]}"
    assert S3BlobStore("s3://bucket/a/b/").url == "s3://bucket/a/b"


def test_an_interrupted_upload_resumes_sending_only_missing_parts(
    s3_bucket_url: str, tmp_path: Path
) -> None:
    store = _small_parts(s3_bucket_url)
    path, digest = _file(tmp_path / "big.bin", 4 * PART + 1000)  # 5 parts
    with s3_calls(store.client, "UploadPart", fail_from=3), pytest.raises(Interrupted):
        store.put_path(digest, path)
    assert not store.has(digest)

    again = _small_parts(s3_bucket_url)  # a new process, as after a crash
    with (
        s3_calls(again.client, "UploadPart") as parts,
        s3_calls(again.client, "CreateMultipartUpload") as created,
    ):
        again.put_path(digest, path)
    assert parts.count == 3 and created.count == 0
    assert sorted(p["PartNumber"] for p in parts.params) == [3, 4, 5]
    again.fetch(digest, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == path.read_bytes()


def test_a_resumed_upload_resends_parts_that_do_not_match_the_file(
    s3_bucket_url: str, tmp_path: Path
) -> None:
    store = _small_parts(s3_bucket_url)
    path, digest = _file(tmp_path / "big.bin", 3 * PART)
    with s3_calls(store.client, "UploadPart", fail_from=3), pytest.raises(Interrupted):
        store.put_path(digest, path)
    # The same name now holds other bytes of the same size (e.g. a corrupted copy).
    bad = tmp_path / "bad.bin"
    bad.write_bytes(os.urandom(3 * PART))
    with s3_calls(store.client, "UploadPart") as parts:
        store.put_path(digest, bad)
    assert parts.count == 3  # neither kept part matched


def test_concurrent_multipart_puts_of_one_blob(s3_bucket_url: str, tmp_path: Path) -> None:
    path, digest = _file(tmp_path / "big.bin", 2 * PART + 10)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def put() -> None:
        try:
            barrier.wait()
            _small_parts(s3_bucket_url, workers=2, max_attempts=2).put_path(digest, path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = S3BlobStore(s3_bucket_url)
    assert list(store.iter_digests()) == [digest]
    store.fetch(digest, tmp_path / "back.bin")
    assert hash_file(tmp_path / "back.bin")[0] == digest


def test_an_interrupted_ranged_download_resumes_from_the_partial_file(
    s3_bucket_url: str, tmp_path: Path
) -> None:
    store = _small_parts(s3_bucket_url)
    path, digest = _file(tmp_path / "big.bin", 4 * PART + 1000)
    store.put_path(digest, path)
    dest = tmp_path / "out.bin"
    with s3_calls(store.client, "GetObject", fail_from=3), pytest.raises(Interrupted):
        store.fetch(digest, dest)
    assert not dest.exists()
    assert [p.name for p in tmp_path.glob("out.bin.*.partial")]

    again = _small_parts(s3_bucket_url)
    with s3_calls(again.client, "GetObject") as gets:
        again.fetch(digest, dest)
    assert gets.count == 3
    assert dest.read_bytes() == path.read_bytes()
    assert list(tmp_path.glob("out.bin.*")) == []


def test_a_cut_off_small_download_resumes_by_range(s3_bucket_url: str, tmp_path: Path) -> None:
    store = S3BlobStore(s3_bucket_url)
    data = os.urandom(1 << 20)
    digest = hash_bytes(data)
    store.put_bytes(digest, data)
    dest = tmp_path / "out.bin"
    (tmp_path / f"out.bin.{digest[:12]}.partial").write_bytes(data[:300_000])
    with s3_calls(store.client, "GetObject") as gets:
        store.fetch(digest, dest)
    assert [p.get("Range") for p in gets.params] == [f"bytes=300000-{len(data) - 1}"]
    assert dest.read_bytes() == data


def test_a_corrupted_object_is_refused_and_nothing_is_left(
    s3_bucket_url: str, s3_env: S3Server, tmp_path: Path
) -> None:
    store = S3BlobStore(s3_bucket_url)
    digest = hash_bytes(b"the real bytes")
    s3_env.client().put_object(Bucket=store.bucket, Key=store.key(digest), Body=b"other bytes!")
    with pytest.raises(CorruptBlobError, match=digest):
        store.fetch(digest, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CorruptBlobError, match=digest):
        store.open(digest)


def test_wrong_credentials_say_access_denied(
    s3_bucket_url: str, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    store = S3BlobStore(s3_bucket_url, max_attempts=1)
    with s3_env.require_auth(), pytest.raises(StoreError) as caught:
        store.has(hash_bytes(b"x"))
    bucket = s3_bucket_url.removeprefix("s3://").split("/")[0]
    assert caught.value.message == (
        f"cannot access s3://{bucket}: access denied "
        "(check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the bucket policy)"
    )


def test_a_missing_bucket_names_bucket_and_endpoint(s3_env: S3Server) -> None:
    store = S3BlobStore("s3://no-such-bucket-here/store")
    with pytest.raises(StoreError) as caught:
        store.has(hash_bytes(b"x"))
    assert caught.value.message == f"bucket 'no-such-bucket-here' does not exist at {s3_env.url}"
    assert caught.value.hint == "create it or fix the store URL"


def test_an_unreachable_endpoint_names_it(s3_env: S3Server) -> None:
    from cairn.testing.s3server import _free_port

    endpoint = f"http://127.0.0.1:{_free_port()}"
    store = S3BlobStore("s3://bucket/store", endpoint_url=endpoint, max_attempts=1)
    with pytest.raises(StoreError, match="cannot reach the S3 endpoint") as caught:
        store.has(hash_bytes(b"x"))
    assert endpoint in caught.value.message


def test_without_boto3_the_error_names_the_extra(
    s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError) as caught:
        open_blob_store("s3://bucket/store").has(hash_bytes(b"x"))
    assert caught.value.hint == "pip install 'cairn[s3]'"


def test_open_blob_store_picks_s3_and_wraps_it_in_a_cache(
    s3_bucket_url: str, tmp_path: Path
) -> None:
    plain = open_blob_store(s3_bucket_url)
    assert isinstance(plain, S3BlobStore) and plain.url == s3_bucket_url
    cached = open_blob_store(s3_bucket_url, cache_dir=tmp_path / "c", cache_max_bytes=10_000)
    assert isinstance(cached, CachedBlobStore) and cached.max_bytes == 10_000
    assert isinstance(cached.remote, S3BlobStore)
    local = open_blob_store(str(tmp_path / "local"), cache_dir=tmp_path / "c")
    assert isinstance(local, LocalBlobStore)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CAIRN_S3_REGION", "eu-north-1")
    monkeypatch.setenv("CAIRN_S3_MULTIPART_THRESHOLD", "128M")
    monkeypatch.setenv("CAIRN_S3_PART_SIZE", "32MiB")
    monkeypatch.setenv("CAIRN_S3_WORKERS", "3")
    store = S3BlobStore("s3://b/p")
    assert (store.endpoint_url, store.region) == ("http://127.0.0.1:9", "eu-north-1")
    assert (store.multipart_threshold, store.part_size, store.workers) == (128 << 20, 32 << 20, 3)
    assert parse_size("1G") == 1 << 30 and parse_size("4096") == 4096
    with pytest.raises(ConfigError):
        parse_size("lots")


def test_the_store_survives_pickling(s3_bucket_url: str) -> None:
    store = S3BlobStore(s3_bucket_url)
    digest = hash_bytes(b"pickled")
    store.put_bytes(digest, b"pickled")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.has(digest)
