"""Environments (machine types) from settings: choosing one, capacity, parallelism, cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cairn.client import Client

from .conftest import wait_for

CONFIG = """\
[environments.cheap]
backend = "local"
price-per-hour = 36.0
max-parallel = 1
description = "a slot at a price"

[environments.gpu]
backend = "local"
gpus = 1
gpu-kind = "A100"
price-per-hour = 2.5
"""


def configure(project: Path, text: str = CONFIG) -> None:
    data = project / ".cairn"
    data.mkdir(exist_ok=True)
    (data / "config.toml").write_text(text)


def test_run_in_an_environment_records_it_and_its_cost(project: Path, cli) -> None:  # noqa: ANN001
    configure(project)
    code, _, err = cli("run", "hello", "-q", "--environment", "cheap")
    assert code == 0, err
    assert cli("run", "hello", "-q")[0] == 0  # the default: local, no price
    with Client(project) as client:
        priced, free = client.execution(1), client.execution(2)
    assert priced.machine_environment == "cheap" and free.machine_environment == "local"
    assert priced.environment["machine_environment"]["price_per_hour"] == 36.0
    assert priced.cost is not None and abs(priced.cost - priced.duration * 0.01) < 1e-9
    assert free.cost is None
    code, out, err = cli("ls")
    assert "environment" in out and "cheap" in out and "$0.0" in out
    assert "total cost of these 2: $" in err and "(1 priced)" in err
    rows = json.loads(cli("ls", "--format", "json")[1])
    assert {r["environment"] for r in rows} == {"cheap", "local"}


def test_environments_lists_capacity_price_and_load(project: Path, cli) -> None:  # noqa: ANN001
    configure(project)
    code, out, err = cli("environments")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"cheap", "gpu", "local"}
    assert "$36.00" in lines["cheap"] and "local (default)" in out
    rows = {r["environment"]: r for r in json.loads(cli("environments", "--format", "json")[1])}
    assert rows["cheap"]["max parallel"] == 1 and rows["cheap"]["running"] == 0
    assert rows["gpu"]["gpus"] == 0  # never more than this machine has (no GPUs here)


def test_unknown_environment_and_misfits_are_refused_before_anything_is_stored(
    project: Path, cli  # noqa: ANN001
) -> None:
    configure(project)
    code, _, err = cli("run", "hello", "--environment", "cheep")
    assert code != 0 and "unknown environment 'cheep'" in err and "cheap" in err
    code, _, err = cli("run", "hello", "--environment", "gpu", "--gpus", "1")
    assert code != 0 and "1 GPU(s) but a machine of 'gpu' has 0" in err
    with Client(project) as client:
        assert client.executions() == []
    configure(project, "[environments.x]\nbackend = \"local\"\ngpuz = 1\n")
    code, _, err = cli("run", "hello")
    assert code != 0 and "unknown key 'gpuz'" in err and "gpus" in err
    assert "config.toml" in err
    configure(project, "[environments.x]\nbackend = \"slurm\"\n")
    code, _, err = cli("environments")
    assert code != 0 and "unknown backend 'slurm'" in err


def test_the_step_environment_and_the_default(project: Path, cli) -> None:  # noqa: ANN001
    configure(project, 'default-environment = "cheap"\n' + CONFIG)
    yaml = (project / "cairn.yaml").read_text()
    (project / "cairn.yaml").write_text(yaml.replace(
        "    name: fail\n    image: python:3.11\n",
        "    name: fail\n    image: python:3.11\n    environment: gpu\n"))
    assert cli("run", "hello", "-q")[0] == 0
    assert cli("run", "fail", "-q")[0] == 3
    with Client(project) as client:
        assert client.execution(1).machine_environment == "cheap"  # default-environment
        assert client.execution(2).machine_environment == "gpu"  # the step's environment:


def test_max_parallel_holds_the_others_in_the_queue(project: Path, cli) -> None:  # noqa: ANN001
    configure(project)

    def detach(seconds: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "cairn", "run", "sleep", "-d",
                               "--environment", "cheap", f"--seconds={seconds}"],
                              capture_output=True, text=True, env=dict(os.environ), timeout=60)
        assert proc.returncode == 0, proc.stderr

    def statuses() -> list[str]:
        with Client(project) as client:
            return [e.status.value for e in sorted(client.executions(), key=lambda e: e.counter)]

    detach("2")
    wait_for(lambda: statuses() == ["running"], what="first running")
    detach("0.1")
    wait_for(lambda: len(statuses()) == 2, what="second created")
    for _ in range(10):  # while the first runs, the second waits (max-parallel = 1)
        assert statuses()[1] == "queued"
        if statuses()[0] != "running":
            break
    rows = {r["environment"]: r for r in json.loads(cli("environments", "--format", "json")[1])}
    assert rows["cheap"]["queued"] + rows["cheap"]["running"] >= 1
    wait_for(lambda: statuses() == ["complete", "complete"], timeout=60, what="both done")
    with Client(project) as client:
        first, second = sorted(client.executions(), key=lambda e: e.counter)
    assert second.started_at >= first.ended_at
