"""A real S3-protocol server for tests: moto's server mode on loopback, on a free port.

Use the fixtures from a ``conftest.py``::

    from cairn.testing.s3server import s3_bucket_url, s3_env, s3_server  # noqa: F401

- ``s3_server`` (session): the running :class:`S3Server`; stopped (by its pid) at the end;
- ``s3_env``: the environment a test needs to reach it (``CAIRN_S3_ENDPOINT_URL``, dummy
  ``AWS_*`` credentials, no profile or config files of the developer's);
- ``s3_bucket_url``: ``s3://<new bucket>/<prefix>`` in that environment, empty.

:func:`s3_calls` counts (and can fail) the requests one boto3 client makes, to test what
a transfer sends and how it survives an interruption.

Or by hand: ``server = S3Server().start()`` … ``server.stop()``. Nothing here reaches
outside the machine. The ``moto[server]`` package comes with the ``test`` extra.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
TEST_REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """``python -m moto.server`` on 127.0.0.1: :meth:`start`, use :attr:`url`, :meth:`stop`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 60.0) -> S3Server:
        """Start the server and return once it answers HTTP (or raise with its log)."""
        self._log = tempfile.TemporaryFile()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited early:\n{self._read_log()}")
            if self._answers():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not answer in {timeout:.0f}s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _read_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return str(self._log.read().decode(errors="replace"))[-4000:]

    def stop(self) -> None:
        """Stop the server process (by its pid): SIGTERM, then SIGKILL after 10 s."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _post(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(
            f"{self.url}{path}", data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    @contextlib.contextmanager
    def require_auth(self) -> Iterator[None]:
        """Inside the block the server checks credentials (unknown keys are refused)."""
        self._post("/moto-api/reset-auth", b"0")
        try:
            yield
        finally:
            self._post("/moto-api/reset-auth", b"inf")

    def client(self) -> Any:
        """A boto3 S3 client for this server with the test credentials."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=TEST_REGION,
        ).client("s3", endpoint_url=self.url)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        name = name or f"cairn-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


class Interrupted(Exception):
    """Raised by :func:`s3_calls` in place of a request, as a crash would stop it."""


class CallCounter:
    """How many requests of one operation a client made; see :func:`s3_calls`."""

    def __init__(self, fail_from: int | None) -> None:
        self.count = 0
        self.params: list[dict[str, Any]] = []
        self.fail_from = fail_from
        self._lock = threading.Lock()

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.count += 1
            self.params.append({k: v for k, v in params.items() if k != "Body"})
            number = self.count
        if self.fail_from is not None and number >= self.fail_from:
            raise Interrupted(f"request {number} interrupted by the test")


@contextlib.contextmanager
def s3_calls(client: Any, operation: str, *, fail_from: int | None = None) -> Iterator[CallCounter]:
    """Count ``operation`` requests (e.g. ``"UploadPart"``) of ``client`` in the block.

    With ``fail_from=n`` the n-th request and every later one raise :class:`Interrupted`
    before being sent. ``counter.params`` holds each request's API parameters.
    """
    counter = CallCounter(fail_from)
    event = f"before-parameter-build.s3.{operation}"
    client.meta.events.register(event, counter)
    try:
        yield counter
    finally:
        client.meta.events.unregister(event, counter)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server for the whole test session (skips if moto is not installed)."""
    pytest.importorskip("moto.server", reason="install the test extra: pip install -e '.[test]'")
    pytest.importorskip("boto3", reason="install the s3 extra: pip install -e '.[s3]'")
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> S3Server:
    """Point boto3 and cairn at the test server with dummy credentials, for one test."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    empty = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for key, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    monkeypatch.setenv("CAIRN_S3_ENDPOINT_URL", s3_server.url)
    return s3_server


@pytest.fixture
def s3_bucket_url(s3_env: S3Server) -> str:
    """``s3://<a new, empty bucket>/store`` reachable in this test's environment."""
    return f"s3://{s3_env.create_bucket()}/store"
