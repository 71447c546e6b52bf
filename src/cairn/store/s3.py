"""Blobs in an S3-compatible bucket: ``s3://bucket/prefix`` → ``prefix/objects/ab/cdef…``.

Needs the ``s3`` extra (``pip install 'cairn[s3]'``, i.e. boto3), imported on first use.

Configuration: an argument to :class:`S3BlobStore` wins over the environment.

=============================  ==============================================================
``CAIRN_S3_ENDPOINT_URL``      a non-AWS endpoint (MinIO, Ceph, moto); else
                               ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``; else AWS itself
``CAIRN_S3_REGION``            else ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the AWS config file
``CAIRN_S3_MULTIPART_THRESHOLD``  files from this size up are sent in parts and fetched in
                               ranges (default ``64M``)
``CAIRN_S3_PART_SIZE``         size of one part or range (default ``16M``; at least 5M)
``CAIRN_S3_WORKERS``           parts or ranges in flight for one blob (default 8)
``CAIRN_S3_MAX_ATTEMPTS``      attempts per request, botocore's "standard" retries (default 5)
=============================  ==============================================================

Credentials come from boto3's usual chain: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
(/ ``AWS_SESSION_TOKEN``), ``AWS_PROFILE`` and ``~/.aws``, then instance or pod roles.

Transfers survive interruptions:

- an upload in parts that stops half-way leaves its parts in the bucket as an unfinished
  multipart upload (never a visible object); the next put of the same blob finds that upload
  by key, lists its parts and sends only the missing ones. Uploads that are never retried
  stay until a bucket lifecycle rule (``AbortIncompleteMultipartUpload``) removes them;
- a download goes to ``<dest>.<digest[:12]>.partial`` (locked while written) and is renamed
  to ``dest`` only after its BLAKE3 digest matches; one that stops half-way is resumed by
  range from that file the next time the same blob is fetched to the same place.

botocore's exceptions are translated into :class:`~cairn.errors.StoreError` in one place,
:meth:`S3BlobStore._translate`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cairn.entities import Digest
from cairn.errors import CairnError, ConfigError, CorruptBlobError, NotFoundError, StoreError
from cairn.store.blobs import BlobStore

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

MiB = 1 << 20
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's own floor for every part but the last
MAX_PARTS = 10_000  # S3's ceiling
DEFAULT_WORKERS = 8
DEFAULT_MAX_ATTEMPTS = 5
_IN_MEMORY_READ = 8 * MiB  # open() keeps smaller blobs in memory, larger in a temp file
_STREAM_CHUNK = 1 * MiB
_DIGEST_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]+$")
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')
_ACCESS_CODES = {
    "403",
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
}
_MISSING_KEY_CODES = {"404", "NoSuchKey", "NotFound"}


class _UploadGone(StoreError):
    """A multipart upload finished or aborted by another writer of the same blob."""


def parse_size(text: str | int) -> int:
    """``"64M"`` / ``"64MiB"`` / ``"1G"`` / ``"1048576"`` → bytes (binary multiples)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise ConfigError(f"bad size {text!r}", "write a byte count or e.g. 64M, 1G")
    return int(match[1]) << (10 * " kmgt".index(match[2] or " "))


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class S3BlobStore(BlobStore):
    """Blobs as objects ``<prefix>/objects/<2 hex>/<rest>`` in one bucket.

    Safe to share between threads; picklable (the boto3 client is rebuilt on the other
    side), so it can travel to worker processes.
    """

    is_remote = True
    verifies_reads = True

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int | str | None = None,
        part_size: int | str | None = None,
        workers: int | None = None,
        max_attempts: int | None = None,
    ) -> None:
        if not url.startswith("s3://"):
            raise ConfigError(f"not an S3 URL: {url!r}", "write it as s3://bucket/prefix")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"no bucket in {url!r}", "write it as s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._objects = f"{self.prefix}/objects/" if self.prefix else "objects/"
        self.endpoint_url = endpoint_url or _env(
            "CAIRN_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
        )
        self.region = region or _env("CAIRN_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
        self.multipart_threshold = parse_size(
            multipart_threshold
            or _env("CAIRN_S3_MULTIPART_THRESHOLD")
            or DEFAULT_MULTIPART_THRESHOLD
        )
        self.part_size = max(
            MIN_PART_SIZE, parse_size(part_size or _env("CAIRN_S3_PART_SIZE") or DEFAULT_PART_SIZE)
        )
        try:
            self.workers = max(1, int(workers or _env("CAIRN_S3_WORKERS") or DEFAULT_WORKERS))
            self.max_attempts = max(
                1, int(max_attempts or _env("CAIRN_S3_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
            )
        except ValueError as exc:
            raise ConfigError(f"bad S3 setting: {exc}", "check CAIRN_S3_* variables") from exc
        self._client_obj: Any = None
        self._client_lock = threading.Lock()
        self._bucket_checked = False

    # -- the client and its errors -----------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client_obj"] = None
        del state["_client_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 S3 client (made on first use)."""
        if self._client_obj is None:
            with self._client_lock:
                if self._client_obj is None:
                    self._client_obj = self._make_client()
        return self._client_obj

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ConfigError(
                f"the blob store {self.url} needs boto3, which is not installed",
                "pip install 'cairn[s3]'",
            ) from None
        config = Config(
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            max_pool_connections=max(10, self.workers * 4),
            connect_timeout=10,
            read_timeout=120,
            # Custom endpoints (MinIO, Ceph, moto) rarely resolve bucket subdomains.
            s3={"addressing_style": "path"} if self.endpoint_url else {},
        )
        session = boto3.session.Session()
        return session.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
        )

    @property
    def _endpoint(self) -> str:
        if self.endpoint_url:
            return self.endpoint_url
        try:
            return str(self.client.meta.endpoint_url)
        except Exception:  # noqa: BLE001 - only used to word an error
            return "AWS S3"

    @contextlib.contextmanager
    def _translate(self, digest: Digest | None = None) -> Iterator[None]:
        """Turn botocore's exceptions raised inside the block into cairn's errors."""
        from botocore import exceptions as bx

        try:
            yield
        except bx.ClientError as exc:
            raise self._client_error(exc, digest) from exc
        except (bx.NoCredentialsError, bx.PartialCredentialsError) as exc:
            raise StoreError(
                f"cannot access s3://{self.bucket}: no usable AWS credentials ({exc})",
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            ) from exc
        except (bx.HTTPClientError, bx.ConnectionError) as exc:
            raise StoreError(
                f"cannot reach the S3 endpoint {self._endpoint} for s3://{self.bucket}: {exc}",
                "check CAIRN_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL) and the network",
            ) from exc
        except bx.BotoCoreError as exc:
            raise StoreError(f"S3 request to {self._endpoint} failed: {exc}") from exc

    def _client_error(self, exc: ClientError, digest: Digest | None) -> CairnError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchUpload", "InvalidPart"):
            # InvalidPart: another writer of the same blob completed (or is completing)
            # the upload the parts were sent to.
            return _UploadGone(f"multipart upload gone: {error.get('Message', '')}")
        if code in _ACCESS_CODES or status == 403:
            return StoreError(
                f"cannot access s3://{self.bucket}: access denied "
                "(check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the bucket policy)"
            )
        if code == "NoSuchBucket":
            return self._no_bucket()
        if digest is not None and (code in _MISSING_KEY_CODES or status == 404):
            return NotFoundError(
                f"blob {digest[:12]} is not in the store at {self.url}",
                "the store may have been pruned or belongs to another project",
            )
        message = error.get("Message") or str(exc)
        return StoreError(f"S3 request to {self._endpoint} failed: {code}: {message}")

    def _no_bucket(self) -> StoreError:
        return StoreError(
            f"bucket {self.bucket!r} does not exist at {self._endpoint}",
            hint="create it or fix the store URL",
        )

    def _check_bucket(self) -> None:
        """Once per store: a missing bucket is an error here, not "no such blob" later.

        A 403 is let through: a policy may allow object reads and writes but not
        ``ListBucket``; object requests then say whether access is really denied.
        """
        if self._bucket_checked:
            return
        from botocore.exceptions import ClientError

        with self._translate():
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                response = exc.response
                status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                code = str(response.get("Error", {}).get("Code", ""))
                if status == 404 or code in ("404", "NoSuchBucket", "NotFound"):
                    raise self._no_bucket() from None
                if status == 301:
                    region = (
                        response.get("ResponseMetadata", {})
                        .get("HTTPHeaders", {})
                        .get("x-amz-bucket-region", "another region")
                    )
                    raise StoreError(
                        f"bucket {self.bucket!r} is in {region}, not {self.region}",
                        f"set CAIRN_S3_REGION={region}",
                    ) from None
                if status != 403 and code not in _ACCESS_CODES:
                    raise
        self._bucket_checked = True

    def key(self, digest: Digest) -> str:
        """The object key of a blob."""
        return f"{self._objects}{digest[:2]}/{digest[2:]}"

    # -- reading -----------------------------------------------------------------------
    def _head(self, digest: Digest) -> int | None:
        """The blob's size, or None when absent."""
        self._check_bucket()
        from botocore.exceptions import ClientError

        with self._translate(digest):
            try:
                response = self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 404:
                    return None
                raise
        return int(response["ContentLength"])

    def has(self, digest: Digest) -> bool:
        return self._head(digest) is not None

    def size(self, digest: Digest) -> int:
        size = self._head(digest)
        if size is None:
            raise NotFoundError(
                f"blob {digest[:12]} is not in the store at {self.url}",
                "the store may have been pruned or belongs to another project",
            )
        return size

    def has_many(self, digests: Iterable[Digest]) -> set[Digest]:
        wanted = list(dict.fromkeys(digests))
        if len(wanted) <= 1:
            return {d for d in wanted if self.has(d)}
        self._check_bucket()
        with ThreadPoolExecutor(min(len(wanted), self.workers * 2)) as pool:
            found = pool.map(self.has, wanted)
            return {d for d, ok in zip(wanted, found, strict=True) if ok}

    def delete(self, digest: Digest) -> None:
        self._check_bucket()
        with self._translate(digest):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def iter_blobs(self) -> Iterator[tuple[Digest, int, float]]:
        self._check_bucket()
        with self._translate():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._objects
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    rest = item["Key"][len(self._objects) :]
                    if _DIGEST_RE.match(rest):
                        yield (rest.replace("/", "", 1), int(item["Size"]),
                               item["LastModified"].timestamp())

    def iter_digests(self) -> Iterator[Digest]:
        for digest, _, _ in self.iter_blobs():
            yield digest

    def open(self, digest: Digest) -> BinaryIO:
        size = self.size(digest)
        if size <= _IN_MEMORY_READ:
            with self._translate(digest):
                body = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"]
                data = body.read()
            if _blake3(data) != digest:
                raise self._corrupt(digest)
            return io.BytesIO(data)
        fd, name = tempfile.mkstemp(prefix="cairn-s3-")
        os.close(fd)
        tmp = Path(name)
        try:
            self._download(digest, tmp, size, tmp.with_name(tmp.name + ".partial"))
            fh = open(tmp, "rb")  # noqa: SIM115 - handed to the caller
        finally:
            tmp.unlink(missing_ok=True)  # the open handle keeps the bytes until closed
        return fh

    def fetch(self, digest: Digest, dest: Path) -> None:
        """Download to ``dest``: ranged and parallel for large blobs, resumable, verified.

        Bytes go to ``<dest>.<digest[:12]>.partial`` first; ``dest`` appears only once they
        hash to ``digest`` (else ``CorruptBlobError`` and the partial file is removed).
        """
        dest = Path(dest)
        partial = dest.with_name(f"{dest.name}.{digest[:12]}.partial")
        self._download(digest, dest, self.size(digest), partial)

    def _corrupt(self, digest: Digest) -> CorruptBlobError:
        return CorruptBlobError(
            f"blob {digest} at s3://{self.bucket}/{self.key(digest)} is corrupt: "
            "its bytes do not match its digest",
            "delete that object and push the blob again from a store that holds it intact",
        )

    def _download(self, digest: Digest, dest: Path, size: int, partial: Path) -> None:
        with _locked(partial) as fd:
            resumed = os.fstat(fd).st_size > 0
            try:
                self._download_into(digest, fd, size, partial)
                ok = _blake3_file(partial) == digest
                if not ok and resumed:
                    # The kept bytes may be what went wrong (a crash before they reached
                    # the disk): try once more from nothing before blaming the bucket.
                    os.ftruncate(fd, 0)
                    _parts_file(partial).unlink(missing_ok=True)
                    self._download_into(digest, fd, size, partial)
                    ok = _blake3_file(partial) == digest
                if not ok:
                    raise self._corrupt(digest)
            except CorruptBlobError:
                partial.unlink(missing_ok=True)
                _parts_file(partial).unlink(missing_ok=True)
                raise
            os.replace(partial, dest)
            _parts_file(partial).unlink(missing_ok=True)

    def _download_into(self, digest: Digest, fd: int, size: int, partial: Path) -> None:
        if size < self.multipart_threshold:
            have = os.fstat(fd).st_size
            if have > size:
                os.ftruncate(fd, 0)
                have = 0
            if have < size or size == 0:
                self._get_range(digest, fd, have, size, size)
            return
        self._download_ranges(digest, fd, size, partial)

    def _download_ranges(self, digest: Digest, fd: int, size: int, partial: Path) -> None:
        """Fetch ``size`` bytes in ranges of ``part_size``, in parallel, noting each done.

        ``<partial>.parts`` holds a header (size and range length) and the index of each
        range once written, so a later call fetches only the others.
        """
        chunk = self.part_size
        count = -(-size // chunk)
        parts = _parts_file(partial)
        header = f"cairn-ranges 1 {size} {chunk}"
        done: set[int] = set()
        if parts.exists():
            lines = parts.read_text().splitlines()
            if lines and lines[0] == header:
                done = {int(x) for x in lines[1:] if x.isdigit() and int(x) < count}
        if not done:
            os.ftruncate(fd, 0)
            parts.write_text(header + "\n")
        os.ftruncate(fd, size)
        lock = threading.Lock()

        def one(index: int) -> None:
            start = index * chunk
            self._get_range(digest, fd, start, min(size, start + chunk), size)
            with lock, open(parts, "a") as log:
                log.write(f"{index}\n")

        todo = [i for i in range(count) if i not in done]
        _run_all(one, todo, self.workers)

    def _get_range(self, digest: Digest, fd: int, start: int, end: int, size: int) -> None:
        """Write bytes ``[start, end)`` of the blob (``size`` bytes) at the same offsets.

        A stream cut off mid-way is picked up where it stopped, up to ``max_attempts``.
        """
        from botocore.exceptions import HTTPClientError

        offset = start
        for attempt in range(self.max_attempts):
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(digest)}
            if offset > 0 or end < size:
                kwargs["Range"] = f"bytes={offset}-{end - 1}"
            try:
                with self._translate(digest):
                    body = self.client.get_object(**kwargs)["Body"]
                    try:
                        while offset < end and (data := body.read(_STREAM_CHUNK)):
                            os.pwrite(fd, data, offset)
                            offset += len(data)
                    finally:
                        body.close()
            except StoreError as exc:
                cut_off = isinstance(exc.__cause__, HTTPClientError)
                if not cut_off or attempt + 1 >= self.max_attempts:
                    raise
            if offset >= end:
                return
        raise StoreError(
            f"download of blob {digest[:12]} from {self.url} kept stopping short",
            "check the network; fetching again resumes where it stopped",
        )

    # -- writing -----------------------------------------------------------------------
    def put_bytes(self, digest: Digest, data: bytes) -> None:
        self._check_bucket()
        if len(data) > MIN_PART_SIZE and self.has(digest):
            return
        with self._translate(digest):
            self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data)

    def put_path(self, digest: Digest, path: Path, *, move: bool = False) -> None:
        """Upload ``path`` unless the blob is there; in parallel parts from the threshold up.

        ``move`` is accepted and ignored: the local file is left where it is.
        """
        path = Path(path)
        if self.has(digest):
            return
        size = path.stat().st_size
        if size < self.multipart_threshold:
            with self._translate(digest), open(path, "rb") as fh:
                self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=fh)
            return
        try:
            self._upload_parts(digest, path, size)
        except StoreError as exc:
            # Writers of the same blob share its unfinished upload: when one completes it,
            # the others' requests fail (NoSuchUpload; some servers answer 500) and the
            # blob is there. An upload dropped by someone else is started again.
            for _ in range(20):  # the other writer's completion may land a moment later
                if self.has(digest):
                    return
                if not isinstance(exc, _UploadGone):
                    raise
                time.sleep(0.05)
            self._upload_parts(digest, path, size)

    def _part_size_for(self, size: int) -> int:
        return max(self.part_size, -(-size // MAX_PARTS))

    def _upload_parts(self, digest: Digest, path: Path, size: int) -> None:
        key = self.key(digest)
        part_size = self._part_size_for(size)
        count = -(-size // part_size)
        with open(path, "rb") as fh:
            fd = fh.fileno()

            def read(number: int) -> bytes:
                start = (number - 1) * part_size
                return os.pread(fd, min(part_size, size - start), start)

            upload_id, etags = self._resume_upload(key, part_size, size, count, read)
            lock = threading.Lock()

            def send(number: int) -> None:
                with self._translate(digest):
                    response = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=read(number),
                    )
                with lock:
                    etags[number] = response["ETag"]

            todo = [n for n in range(1, count + 1) if n not in etags]
            _run_all(send, todo, self.workers)
        parts = [{"PartNumber": n, "ETag": etags[n]} for n in range(1, count + 1)]
        with self._translate(digest):
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )

    def _resume_upload(
        self, key: str, part_size: int, size: int, count: int, read: Any
    ) -> tuple[str, dict[int, str]]:
        """An unfinished upload of ``key`` and its parts that match the file, or a new one.

        A part is kept when its size is the one this file's layout gives that number and,
        where its ETag is a plain MD5 (no KMS encryption), when that MD5 matches the file.
        """
        with self._translate():
            listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        uploads = sorted(
            (u for u in listing.get("Uploads", ()) if u["Key"] == key),
            key=lambda u: u["Initiated"],
            reverse=True,
        )
        if not uploads:
            with self._translate():
                created = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
            return created["UploadId"], {}
        upload_id = uploads[0]["UploadId"]
        kept: dict[int, str] = {}
        with self._translate():
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
            listed = [part for page in pages for part in page.get("Parts", ())]
        for part in listed:
            number = int(part["PartNumber"])
            if not 1 <= number <= count:
                continue
            expected = min(part_size, size - (number - 1) * part_size)
            if int(part["Size"]) != expected:
                continue
            md5 = _MD5_ETAG.match(part["ETag"])
            if md5 and hashlib.md5(read(number), usedforsecurity=False).hexdigest() != md5[1]:
                continue
            kept[number] = part["ETag"]
        return upload_id, kept


def _run_all(fn: Any, items: list[int], workers: int) -> None:
    """``fn(item)`` for each item on up to ``workers`` threads; the first error stops it."""
    if not items:
        return
    if len(items) == 1 or workers == 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in finished:
            if future.exception() is not None:
                for other in futures:
                    other.cancel()
                raise future.exception()  # type: ignore[misc]


def _parts_file(partial: Path) -> Path:
    return partial.with_name(partial.name + ".parts")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """Open (creating) ``path`` for writing under an exclusive lock; yields the fd.

    Re-opens when the file was renamed away while waiting for the lock (another process
    finished the same download), so the fd always refers to the file at ``path``.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _blake3(data: bytes) -> str:
    from cairn.store.cas import hash_bytes

    return hash_bytes(data)


def _blake3_file(path: Path) -> str:
    from cairn.store.cas import hash_file

    return hash_file(path)[0]
