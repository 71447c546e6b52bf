"""Pipeline runs and sweeps ("flows") and their nodes in the SQL store.

A flow's counter is the next one of its project and kind, taken as ``max + 1`` inside the
write transaction: SQLite's write lock serializes creators; on PostgreSQL the project's row
is locked (``FOR UPDATE``) first, and the unique ``(project_id, kind, counter)`` constraint
backs both up.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Row

from cairn.entities import Flow, FlowNode, FlowStatus, NodeStatus
from cairn.errors import ConflictError, NotFoundError
from cairn.store.base import FLOW_FIELDS, NODE_FIELDS, NewFlow, NewFlowNode
from cairn.store.sql import convert, queries
from cairn.store.sql.core import MIN_PREFIX, SqlStoreCore, chunks, now, translated
from cairn.store.sql.orm import flow_nodes, flows, projects

_KIND_WORD = {"pipeline": "pipeline", "task": "task"}
_LIST_HINT = {"pipeline": "`cairn pipeline ls` lists them", "task": "`cairn task ls` lists them"}


def _check_fields(fields: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = set(fields) - allowed
    if unknown:
        raise TypeError(
            f"{what} cannot set {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}"
        )
    for name, value in fields.items():
        convert.ensure_aware(name, value)


class FlowParts(SqlStoreCore):
    """Flows (pipeline runs, sweeps) and their nodes."""

    @translated
    def create_flow(self, new: NewFlow) -> Flow:
        names = [n.name for n in new.nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConflictError(f"node name {dupes[0]!r} is used twice in this {new.kind}")
        flow_id = str(uuid.uuid4())
        created_at = now()
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(
                    select(projects.c.id).where(projects.c.id == new.project_id).with_for_update()
                )
            counter = 1 + (
                conn.execute(
                    select(func.max(flows.c.counter)).where(
                        flows.c.project_id == new.project_id, flows.c.kind == new.kind
                    )
                ).scalar()
                or 0
            )
            conn.execute(
                insert(flows).values(
                    id=flow_id,
                    project_id=new.project_id,
                    kind=new.kind,
                    counter=counter,
                    name=new.name,
                    status=FlowStatus.CREATED.value,
                    definition=new.definition,
                    parameters=new.parameters,
                    options=new.options,
                    result={},
                    created_at=created_at,
                    stop_requested=False,
                )
            )
            self._insert_nodes(conn, flow_id, new.nodes, start=0)
        return self.get_flow(new.project_id, new.kind, flow_id)

    def _insert_nodes(
        self, conn: Connection, flow_id: str, nodes: Sequence[NewFlowNode], *, start: int
    ) -> None:
        if not nodes:
            return
        conn.execute(
            insert(flow_nodes),
            [
                {
                    "flow_id": flow_id,
                    "name": n.name,
                    "position": start + i,
                    "kind": n.kind,
                    "status": NodeStatus.PENDING.value,
                    "attempts": 0,
                    "parameters": dict(n.parameters),
                }
                for i, n in enumerate(nodes)
            ],
        )

    @translated
    def get_flow(
        self, project_id: str, kind: str, ref: str | int, *, with_nodes: bool = True
    ) -> Flow:
        with self._read() as conn:
            row = self._find_flow(conn, project_id, kind, ref)
            if not with_nodes:
                return convert.flow(row, ())
            return self._flows_with_nodes(conn, [row])[0]

    def _find_flow(self, conn: Connection, project_id: str, kind: str, ref: str | int) -> Row[Any]:
        word = _KIND_WORD.get(kind, kind)
        scope = (flows.c.project_id == project_id, flows.c.kind == kind)
        text_ref = str(ref).strip()
        digits = text_ref[1:] if text_ref.startswith("#") else text_ref
        if isinstance(ref, int) or digits.isdigit():
            row = conn.execute(
                select(flows).where(*scope, flows.c.counter == int(digits))
            ).first()
            if row is not None:
                return row
            if isinstance(ref, int) or text_ref.startswith("#") or len(text_ref) < MIN_PREFIX:
                raise NotFoundError(
                    f"no {word} #{int(digits)} in this project", hint=_LIST_HINT.get(kind)
                )
        if len(text_ref) < MIN_PREFIX:
            raise NotFoundError(
                f"no {word} {text_ref!r}: use its #number or at least {MIN_PREFIX} characters "
                "of its id",
                hint=_LIST_HINT.get(kind),
            )
        rows = [
            r
            for r in queries.rows_by_id_prefix(conn, flows, project_id, text_ref.lower(), at_most=11)
            if r.kind == kind
        ]
        if not rows:
            raise NotFoundError(f"no {word} {text_ref!r} in this project", hint=_LIST_HINT.get(kind))
        if len(rows) > 1:
            raise NotFoundError(
                f"{word} id prefix {text_ref!r} is ambiguous ({len(rows)} match)",
                hint="use more characters of the id, or its #number",
            )
        return rows[0]

    def _flows_with_nodes(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[Flow]:
        nodes: dict[str, list[FlowNode]] = defaultdict(list)
        for chunk in chunks([r.id for r in rows]):
            for r in conn.execute(select(flow_nodes).where(flow_nodes.c.flow_id.in_(chunk))):
                nodes[r.flow_id].append(convert.flow_node(r))
        return [convert.flow(r, nodes[r.id]) for r in rows]

    @translated
    def list_flows(
        self, project_id: str, kind: str, *, limit: int | None = None,
        status: FlowStatus | None = None, with_nodes: bool = True,
    ) -> list[Flow]:
        query = (
            select(flows)
            .where(flows.c.project_id == project_id, flows.c.kind == kind)
            .order_by(flows.c.counter.desc())
        )
        if status is not None:
            query = query.where(flows.c.status == FlowStatus(status).value)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            rows = conn.execute(query).all()
            if not with_nodes:
                return [convert.flow(r, ()) for r in rows]
            return self._flows_with_nodes(conn, rows)

    @translated
    def update_flow(
        self, flow_id: str, *, expect: Iterable[FlowStatus] | None = None, **fields: Any
    ) -> bool:
        _check_fields(fields, FLOW_FIELDS, "update_flow()")
        values = dict(fields)
        if "status" in values:
            values["status"] = FlowStatus(values["status"]).value
        conditions = [flows.c.id == flow_id]
        if expect is not None:
            conditions.append(flows.c.status.in_([FlowStatus(s).value for s in expect]))
        with self._write() as conn:
            changed = conn.execute(update(flows).where(*conditions).values(values)).rowcount
            if changed == 0:
                self._require_flow(conn, flow_id)
        return changed == 1

    def _require_flow(self, conn: Connection, flow_id: str) -> None:
        if conn.execute(select(flows.c.id).where(flows.c.id == flow_id)).first() is None:
            raise NotFoundError(f"no pipeline or task with id {flow_id!r}")

    @translated
    def flow_stop_requested(self, flow_id: str) -> bool:
        with self._read() as conn:
            row = conn.execute(
                select(flows.c.stop_requested).where(flows.c.id == flow_id)
            ).first()
        if row is None:
            raise NotFoundError(f"no pipeline or task with id {flow_id!r}")
        return bool(row.stop_requested)

    @translated
    def request_flow_stop(self, flow_id: str) -> None:
        with self._write() as conn:
            changed = conn.execute(
                update(flows).where(flows.c.id == flow_id).values(stop_requested=True)
            ).rowcount
            if changed == 0:
                self._require_flow(conn, flow_id)

    @translated
    def add_flow_nodes(self, flow_id: str, nodes: Sequence[NewFlowNode]) -> list[FlowNode]:
        with self._write() as conn:
            self._require_flow(conn, flow_id)
            existing = set(
                conn.execute(
                    select(flow_nodes.c.name).where(flow_nodes.c.flow_id == flow_id)
                ).scalars()
            )
            clash = [n.name for n in nodes if n.name in existing]
            if clash:
                raise ConflictError(f"node name {clash[0]!r} is already used in this flow")
            start = 1 + (
                conn.execute(
                    select(func.max(flow_nodes.c.position)).where(flow_nodes.c.flow_id == flow_id)
                ).scalar()
                if existing
                else -1
            )
            self._insert_nodes(conn, flow_id, nodes, start=start)
            rows = conn.execute(
                select(flow_nodes)
                .where(flow_nodes.c.flow_id == flow_id, flow_nodes.c.position >= start)
                .order_by(flow_nodes.c.position)
            ).all()
        return [convert.flow_node(r) for r in rows]

    @translated
    def update_flow_node(
        self,
        flow_id: str,
        name: str,
        *,
        expect: Iterable[NodeStatus] | None = None,
        **fields: Any,
    ) -> bool:
        _check_fields(fields, NODE_FIELDS, "update_flow_node()")
        values = dict(fields)
        if "status" in values:
            values["status"] = NodeStatus(values["status"]).value
        conditions = [flow_nodes.c.flow_id == flow_id, flow_nodes.c.name == name]
        if expect is not None:
            conditions.append(flow_nodes.c.status.in_([NodeStatus(s).value for s in expect]))
        with self._write() as conn:
            changed = conn.execute(update(flow_nodes).where(*conditions).values(values)).rowcount
            if changed == 0:
                self._require_flow(conn, flow_id)
                if conn.execute(
                    select(flow_nodes.c.name).where(
                        flow_nodes.c.flow_id == flow_id, flow_nodes.c.name == name
                    )
                ).first() is None:
                    raise NotFoundError(f"no node {name!r} in this flow")
        return changed == 1

    @translated
    def flows_of_execution(self, execution_id: str) -> list[tuple[Flow, str]]:
        with self._read() as conn:
            pairs = conn.execute(
                select(flow_nodes.c.flow_id, flow_nodes.c.name).where(
                    flow_nodes.c.execution_id == execution_id
                )
            ).all()
            if not pairs:
                return []
            rows = conn.execute(
                select(flows).where(flows.c.id.in_({p.flow_id for p in pairs}))
            ).all()
            by_id = {f.id: f for f in self._flows_with_nodes(conn, rows)}
        return [(by_id[p.flow_id], p.name) for p in pairs if p.flow_id in by_id]
