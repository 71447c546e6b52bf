"""Metrics from a running step: JSON-object lines on stdout, parsed and stored in batches.

The reader thread only parses and enqueues; a writer thread drains the queue into the
metadata store in large batches, so a step that prints fast is never slowed by the
database (the queue absorbs bursts).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from cairn.entities import MetricPoint

log = logging.getLogger(__name__)

_STEP_KEYS = ("step", "epoch", "iteration")
_BATCH = 2_000  # queue entries (each a chunk of lines) taken at once


try:  # orjson parses about 3× faster; the standard library is the fallback
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency, but stay usable
    _fast_loads = json.loads


def _loads(text: str) -> Any:
    try:
        return _fast_loads(text)
    except ValueError:  # e.g. NaN/Infinity, which Python's json.dumps writes by default
        return json.loads(text)


def parse_event(line: str | bytes) -> dict[str, Any] | None:
    """The JSON object a stdout line holds, or None if it is an ordinary log line."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    if line[:1] != "{":
        line = line.strip()
        if line[:1] != "{":
            return None
    try:
        value = _loads(line)
    except ValueError:
        return None
    if type(value) is not dict:
        return None
    inner = value.get("vh_metadata")  # valohai-utils' wrapper inside deployments
    if isinstance(inner, dict) and len(value) == 1:
        value = inner
    return value


def split_event(
    event: dict[str, Any], time_: float, seq: int
) -> tuple[list[MetricPoint], dict[str, Any]]:
    """Numeric values become points (with the event's step); the rest is metadata."""
    step = None
    for key in _STEP_KEYS:
        candidate = event.get(key)
        if type(candidate) is int:
            step = candidate
            break
    points: list[MetricPoint] = []
    other: dict[str, Any] = {}
    for key, value in event.items():
        kind = type(value)
        if kind is float:
            if value - value == 0.0:  # finite (inf - inf and nan - nan are nan)
                points.append(MetricPoint(key, value, step, time_, seq))
                seq += 1
            else:
                other[key] = str(value)
        elif kind is int:
            if key != "step" or step is None:
                points.append(MetricPoint(key, float(value), step, time_, seq))
                seq += 1
        elif kind is dict and value:
            nested_points, nested_other = split_event(
                {f"{key}.{k}": v for k, v in _flatten(value)}, time_, seq)
            for point in nested_points:  # nested keys never set the step
                points.append(point._replace(step=step))
            seq += len(nested_points)
            other.update(nested_other)
        else:
            other[key] = value
    return points, other


def _flatten(event: dict[str, Any], prefix: str = ""):
    for key, value in event.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, name + ".")
        else:
            yield name, value


class MetricSink:
    """Takes lines from the reader thread and stores their events, never blocking it.

    Two stages run on their own threads: a parser (JSON → points and metadata) and a
    writer (one transaction for everything parsed since its last write). While one
    batch is being written the next is parsed, and the database sees few, large writes
    however fast the step prints.
    """

    def __init__(
        self,
        write_points: Callable[[list[MetricPoint]], None],
        write_metadata: Callable[[dict[str, Any]], None],
    ) -> None:
        self._write_points = write_points
        self._write_metadata = write_metadata
        self._lines: queue.SimpleQueue[tuple[list[Any], float] | None] = queue.SimpleQueue()
        self._parsed: queue.SimpleQueue[
            tuple[list[MetricPoint], dict[str, Any]] | None] = queue.SimpleQueue()
        self._seq = 0
        self.count = 0
        self.errors: list[str] = []
        self._parser = threading.Thread(target=self._parse, name="cairn-metrics-parse",
                                        daemon=True)
        self._writer = threading.Thread(target=self._write, name="cairn-metrics-write",
                                        daemon=True)
        self._parser.start()
        self._writer.start()

    def put(self, event: dict[str, Any], time_: float) -> None:
        """Hand over one parsed event (never blocks)."""
        self._lines.put(([event], time_))

    def put_lines(self, lines: list[str], time_: float) -> None:
        """Hand over stdout lines that may be events (never blocks)."""
        self._lines.put((lines, time_))

    def close(self) -> None:
        """Store everything still queued and stop both threads."""
        self._lines.put(None)
        self._parser.join()
        self._writer.join()

    def _parse(self) -> None:
        while True:
            batch = _drain(self._lines, _BATCH)
            points: list[MetricPoint] = []
            metadata: dict[str, Any] = {}
            for entry in batch:
                if entry is None:
                    continue
                items, when = entry
                for item in items:
                    event = parse_event(item) if isinstance(item, str) else item
                    if event is None:
                        continue
                    new_points, other = split_event(event, when, self._seq)
                    self._seq += len(new_points)
                    points.extend(new_points)
                    if other:
                        metadata.update(other)
            if points or metadata:
                self._parsed.put((points, metadata))
            if batch[-1] is None:
                self._parsed.put(None)
                return

    def _write(self) -> None:
        while True:
            batch = _drain(self._parsed, _BATCH)
            points: list[MetricPoint] = []
            metadata: dict[str, Any] = {}
            for entry in batch:
                if entry is not None:
                    points.extend(entry[0])
                    metadata.update(entry[1])
            try:
                if points:
                    self._write_points(points)
                    self.count += len(points)
                if metadata:
                    self._write_metadata(metadata)
            except Exception as exc:  # keep the step running; report at the end
                log.exception("storing metrics failed")
                self.errors.append(str(exc))
            if batch[-1] is None:
                return


def _drain(source: queue.SimpleQueue[Any], limit: int) -> list[Any]:
    """Block for one item, then take whatever else is queued (up to ``limit``)."""
    items = [source.get()]
    while items[-1] is not None and len(items) < limit:
        try:
            items.append(source.get_nowait())
        except queue.Empty:
            break
    return items
