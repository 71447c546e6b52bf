"""cairn's own background processes: an execution's supervisor, a pipeline's or sweep's
driver. Starting one, telling whether one still lives, and finding flows whose driver died."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cairn.entities import Flow
    from cairn.orchestration.context import Context

HOST = os.environ.get("CAIRN_HOST") or socket.gethostname()
"""This machine's name in the metadata store (``CAIRN_HOST`` overrides the host name): the
executions it runs, the processes it waits on, the capacity it offers are recorded under it."""


def start_background(ctx: Context, module: str, ref: str, log_name: str) -> int:
    """Run ``python -m MODULE PROJECT_ROOT REF`` detached from this terminal, its output
    appended to ``logs/LOG_NAME``; returns its pid."""
    log_dir = ctx.settings.logs_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / log_name, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, str(ctx.settings.project_root), ref],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            env=dict(os.environ), cwd=ctx.settings.project_root,
        )
    return proc.pid


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def dead_drivers(ctx: Context, kind: str) -> list[Flow]:
    """Running flows of this host whose driving process is gone (without their nodes:
    one query over the running flows, however long the project's history)."""
    from cairn.entities import FlowStatus

    return [
        flow for flow in ctx.store.list_flows(ctx.project_id, kind, status=FlowStatus.RUNNING,
                                              with_nodes=False)
        if flow.host == HOST and flow.pid and flow.pid != os.getpid()
        and not process_alive(flow.pid)
    ]
