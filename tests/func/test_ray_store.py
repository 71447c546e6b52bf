"""A Ray worker node that cannot reach the shared blob store.

The store is an S3 server (moto) that every machine reaches as ``localhost:PORT``. Worker B
is started with HTTP(S)_PROXY pointing at a dead loopback port and NO_PROXY=127.0.0.1:
Ray's own connections (all to 127.0.0.1) go direct, but the node's S3 requests to
``localhost`` go to the dead proxy -- as on a cluster node without a route to the bucket.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray  # noqa: F401 - the ray extra is part of `make test`: missing means failing, not skipping

from cairn.client import Client
from cairn.testing.raycluster import RayCluster, free_port, ray_cluster, ray_env
from cairn.testing.s3server import TEST_CREDENTIALS, TEST_REGION, S3Server

pytestmark = pytest.mark.slow

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                   "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(scope="module")
def s3_setup(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What every machine needs to use the store: the endpoint as ``localhost``, test
    credentials, no AWS files of the developer's, and no proxy for ``localhost``."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    return {
        **TEST_CREDENTIALS, "AWS_DEFAULT_REGION": TEST_REGION,
        "AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        "CAIRN_S3_ENDPOINT_URL": f"http://localhost:{s3_server.port}",
        "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1",
    }


@pytest.fixture(scope="module")
def cluster(s3_setup: dict[str, str]) -> Iterator[RayCluster]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cut_off = {**s3_setup, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead,
               "https_proxy": dead, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with ray_cluster(worker_env=[s3_setup, cut_off]) as running:
        yield running


@pytest.fixture
def team(project: Path, cluster: RayCluster, s3_server: S3Server,
         s3_setup: dict[str, str]) -> dict[str, Any]:
    """The project on the cluster, its blobs in a new bucket; the environment `cairn` runs
    with on this (the submitting) machine."""
    (project / ".cairn").mkdir(exist_ok=True)
    (project / ".cairn" / "config.toml").write_text(f"""\
[environments.node-a]
backend = "ray"
address = "{cluster.address}"
resources = {{ nodeA = 1 }}

[environments.node-b]
backend = "ray"
address = "{cluster.address}"
resources = {{ nodeB = 1 }}
""")
    bucket = s3_server.create_bucket()
    env = {k: v for k, v in ray_env().items() if k not in PROXY_VARIABLES}
    env.update(s3_setup, CAIRN_STORE_URL=f"s3://{bucket}/store")
    return {"env": env, "bucket": bucket, "root": project}


def cairn(team: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cairn", *args], capture_output=True,
                          text=True, env=team["env"], cwd=team["root"], timeout=180)


def bucket_state(server: S3Server, bucket: str) -> tuple[dict[str, str], list[str]]:
    """Every object (key → ETag) and every unfinished multipart upload in the bucket."""
    client = server.client()
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return objects, [u["Key"] for u in uploads]


def test_a_node_that_cannot_reach_the_blob_store_fails_the_execution_cleanly(
        team: dict[str, Any], s3_server: S3Server, cluster: RayCluster,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A node that reaches the store runs it, and the store holds its code and outputs.
    ok = cairn(team, "run", "hello", "--environment", "node-a")
    assert ok.returncode == 0, ok.stderr
    before = bucket_state(s3_server, team["bucket"])
    assert before[0] and not before[1]

    # The same step on the node cut off from the store: an error, soon, said plainly.
    t0 = time.monotonic()
    cut = cairn(team, "run", "hello", "--environment", "node-b")
    took = time.monotonic() - t0
    assert cut.returncode == 1, cut.stderr
    assert "Traceback" not in cut.stderr
    assert took < 60, f"it took {took:.0f} s to give up"
    monkeypatch.setenv("CAIRN_STORE_URL", team["env"]["CAIRN_STORE_URL"])
    with Client(team["root"]) as client:
        execution = client.execution(2)
        outputs = execution.outputs
    assert execution.status.value == "error", execution.status_detail
    detail = execution.status_detail or ""
    assert detail.startswith("node ")
    assert cluster.node_ids["nodeB"][:12] in detail  # which node
    assert f"cannot reach the blob store s3://{team['bucket']}/store" in detail  # which store
    assert f"localhost:{s3_server.port}" in detail  # at which endpoint
    assert "give the node access to it" in detail  # what to do
    assert execution.node is None and execution.started_at is None  # the step never ran
    logs = cairn(team, "logs", "2")
    assert "cannot start: node " in logs.stdout + logs.stderr

    # Nothing half-written: no outputs recorded, the bucket exactly as it was.
    assert outputs == []
    assert bucket_state(s3_server, team["bucket"]) == before


def test_the_cut_off_node_still_runs_work_that_needs_no_store(cluster: RayCluster) -> None:
    """The proxy settings cut the node off from the store only: Ray itself works there."""
    code = f"""
import ray
ray.init(address={cluster.address!r}, logging_level="ERROR", log_to_driver=False)
@ray.remote(num_cpus=1, resources={{"nodeB": 1}})
def where():
    return ray.get_runtime_context().get_node_id()
print(ray.get(where.remote(), timeout=120))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=ray_env(), timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == cluster.node_ids["nodeB"]
    assert os.environ.get("HTTP_PROXY") is None  # the test process itself was not changed
