"""The SDK façade: query executions, their metrics, parameters and outputs from Python."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.entities import Datum, Execution, MetricPoint, Status
from cairn.orchestration.context import Context


@dataclass(frozen=True)
class Run:
    """An execution as seen from Python: its record plus easy access to what it made."""

    record: Execution
    _client: Client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.record, name)

    def __repr__(self) -> str:
        return f"<Run #{self.record.counter} {self.record.step} {self.record.status}>"

    @property
    def parameters(self) -> dict[str, Any]:
        return self.record.parameters

    @property
    def metrics(self) -> dict[str, Any]:
        """Latest value of each metric."""
        return self.record.metrics

    def metric_points(self) -> list[MetricPoint]:
        return self._client.ctx.store.get_metrics(self.record.id)

    def metric(self, key: str) -> list[tuple[int | None, float]]:
        """The time series of one metric as (step, value) pairs in arrival order."""
        return [(p.step, p.value) for p in self.metric_points() if p.key == key]

    @property
    def outputs(self) -> list[Datum]:
        return self._client.ctx.store.list_datums(self.record.project_id,
                                                  execution_id=self.record.id)

    def download(self, dest: Path | str) -> list[Path]:
        """Copy every output under ``dest`` (keeping relative paths); returns the paths."""
        return self._client.download(self.outputs, dest)


class Client:
    """Read access to a project's executions and datums.

    ``Client()`` finds the project from the current folder; ``Client("path/to/project")``
    opens another.
    """

    def __init__(self, project_root: Path | str | None = None) -> None:
        self.ctx = Context.load(project_root)

    def close(self) -> None:
        self.ctx.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def executions(
        self,
        *,
        step: str | None = None,
        status: str | Sequence[str] | None = None,
        tag: str | None = None,
        sort: str | None = None,
        descending: bool = True,
        limit: int | None = None,
    ) -> list[Run]:
        """Executions, newest first unless ``sort`` says otherwise (e.g. ``metric:accuracy``)."""
        statuses = None
        if status is not None:
            statuses = [Status(s) for s in ([status] if isinstance(status, str) else status)]
        records = self.ctx.store.list_executions(
            self.ctx.project_id, step=step, statuses=statuses, tag=tag, sort=sort,
            descending=descending, limit=limit,
        )
        return [Run(r, self) for r in records]

    def execution(self, ref: str | int) -> Run:
        """One execution by counter (``12``, ``"#12"``) or id (prefix)."""
        return Run(self.ctx.store.get_execution(self.ctx.project_id, ref), self)

    def datum(self, ref: str) -> Datum:
        return self.ctx.store.get_datum(self.ctx.project_id, ref)

    def read_bytes(self, datum: Datum | str) -> bytes:
        """The verified bytes of a datum."""
        d = self.datum(datum) if isinstance(datum, str) else datum
        return self.ctx.content.read_bytes(d.digest)

    def download(self, datums: Sequence[Datum], dest: Path | str) -> list[Path]:
        dest = Path(dest)
        paths = []
        for d in datums:
            target = dest / d.name
            target.parent.mkdir(parents=True, exist_ok=True)
            self.ctx.content.materialize(d.digest, target, link=False)
            paths.append(target)
        return paths


__all__ = ["Client", "Run"]
