"""Rows ⇄ entities. Every row read by the SQL store becomes an entity here."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row

from cairn.entities import (
    AliasEvent,
    CodeSnapshot,
    DatasetVersion,
    Datum,
    DatumAlias,
    Execution,
    Flow,
    FlowNode,
    FlowStatus,
    InputFile,
    MetricPoint,
    NodeStatus,
    Project,
    Resources,
    Status,
)
from cairn.store.sql.orm import URI_HEAD


def nan_to_null(value: float) -> float | None:
    """SQLite stores NaN as NULL anyway; doing it on every backend keeps them alike."""
    value = float(value)
    return None if math.isnan(value) else value


def null_to_nan(value: float | None) -> float:
    return math.nan if value is None else value


def project(row: Row[Any]) -> Project:
    return Project(id=row.id, name=row.name)


def code_to_json(code: CodeSnapshot | None) -> dict[str, Any] | None:
    return None if code is None else dataclasses.asdict(code)


def code_from_json(data: dict[str, Any] | None) -> CodeSnapshot | None:
    return None if data is None else CodeSnapshot(**data)


def input_file(row: Row[Any]) -> InputFile:
    return InputFile(
        input_name=row.input_name,
        name=row.name,
        uri=row.uri,
        digest=row.digest,
        size=row.size,
        datum_id=row.datum_id,
    )


def input_rows(execution_id: str, inputs: Iterable[InputFile]) -> list[dict[str, Any]]:
    return [
        {
            "execution_id": execution_id,
            "position": position,
            "input_name": item.input_name,
            "name": item.name,
            "uri": item.uri,
            "digest": item.digest,
            "size": item.size,
            "datum_id": item.datum_id,
            "uri_head": item.uri[:URI_HEAD],
        }
        for position, item in enumerate(inputs)
    ]


def execution(
    row: Row[Any],
    *,
    inputs: list[InputFile],
    tags: Iterable[str],
    metrics: dict[str, Any],
) -> Execution:
    return Execution(
        id=row.id,
        project_id=row.project_id,
        counter=row.counter,
        step=row.step,
        status=Status(row.status),
        parameters=row.parameters,
        command=row.command,
        inputs=inputs,
        code=code_from_json(row.code),
        environment=row.environment,
        step_config=row.step_config,
        resources=Resources.from_dict(row.resources),
        created_at=row.created_at,
        title=row.title,
        tags=tuple(sorted(tags)),
        rerun_of=row.rerun_of,
        exit_code=row.exit_code,
        status_detail=row.status_detail,
        queued_at=row.queued_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        time_limit=row.time_limit,
        no_output_timeout=row.no_output_timeout,
        host=row.host,
        pid=row.pid,
        gpu_ids=tuple(row.gpu_ids or ()),
        stop_requested=bool(row.stop_requested),
        log_digest=row.log_digest,
        fingerprint=row.fingerprint,
        code_reads=row.code_reads,
        node=row.node,
        priority=row.priority,
        restart_of=row.restart_of,
        metrics=metrics,
    )


def datum(row: Row[Any], tags: Iterable[str]) -> Datum:
    return Datum(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        digest=row.digest,
        size=row.size,
        execution_id=row.execution_id,
        created_at=row.created_at,
        metadata=row.metadata or {},
        tags=tuple(sorted(tags)),
    )


def datum_row(item: Datum) -> dict[str, Any]:
    return {
        "id": item.id,
        "project_id": item.project_id,
        "name": item.name,
        "digest": item.digest,
        "size": item.size,
        "execution_id": item.execution_id,
        "created_at": item.created_at,
        "metadata": dict(item.metadata),
    }


def alias(row: Row[Any]) -> DatumAlias:
    return DatumAlias(
        project_id=row.project_id,
        name=row.name,
        datum_id=row.datum_id,
        updated_at=row.updated_at,
        execution_id=row.execution_id,
    )


def alias_event(row: Row[Any]) -> AliasEvent:
    return AliasEvent(
        name=row.name,
        datum_id=row.datum_id,
        previous_datum_id=row.previous_datum_id,
        at=row.at,
        execution_id=row.execution_id,
    )


def dataset_version(row: Row[Any]) -> DatasetVersion:
    return DatasetVersion(
        id=row.id,
        project_id=row.project_id,
        dataset=row.dataset,
        version=row.version,
        tree_digest=row.tree_digest,
        file_count=row.file_count,
        size=row.size,
        created_at=row.created_at,
        source=row.source,
        execution_id=row.execution_id,
        from_version=row.from_version,
        metadata=row.metadata or {},
    )


def metric_point(row: Row[Any]) -> MetricPoint:
    return MetricPoint(
        key=row.key, value=null_to_nan(row.value), step=row.step, time=row.time, seq=row.seq
    )


def ensure_aware(name: str, value: Any) -> None:
    """Refuse naive datetimes early, with the field's name (they would be ambiguous)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (UTC), got {value!r}")


def flow_node(row: Row[Any]) -> FlowNode:
    return FlowNode(
        flow_id=row.flow_id,
        name=row.name,
        position=row.position,
        kind=row.kind,
        status=NodeStatus(row.status),
        execution_id=row.execution_id,
        child_flow_id=row.child_flow_id,
        attempts=row.attempts,
        parameters=row.parameters or {},
        value=row.value,
        detail=row.detail,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


def flow(row: Row[Any], nodes: Iterable[FlowNode]) -> Flow:
    return Flow(
        id=row.id,
        project_id=row.project_id,
        kind=row.kind,
        counter=row.counter,
        name=row.name,
        status=FlowStatus(row.status),
        definition=row.definition,
        parameters=row.parameters,
        options=row.options,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        status_detail=row.status_detail,
        host=row.host,
        pid=row.pid,
        stop_requested=bool(row.stop_requested),
        result=row.result or {},
        nodes=tuple(sorted(nodes, key=lambda n: n.position)),
    )
