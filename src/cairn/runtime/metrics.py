"""Metrics from a running step: JSON-object lines on stdout, parsed and stored in batches.

The reader thread only parses and enqueues; a writer thread drains the queue into the
metadata store in large batches, so a step that prints fast is never slowed by the
database (the queue absorbs bursts).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from cairn.entities import MetricPoint

log = logging.getLogger(__name__)

_STEP_KEYS = ("step", "epoch", "iteration")
_BATCH = 20_000
_FLUSH_SECONDS = 0.25


def parse_event(line: str | bytes) -> dict[str, Any] | None:
    """The JSON object a stdout line holds, or None if it is an ordinary log line."""
    stripped = line.strip()
    if not stripped or stripped[:1] not in ("{", b"{"):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(value, dict):
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
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            step = candidate
            break
    points: list[MetricPoint] = []
    other: dict[str, Any] = {}
    for key, value in _flatten(event):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            other[key] = value
        elif key == "step" and step is not None:
            continue
        elif isinstance(value, float) and not math.isfinite(value):
            other[key] = str(value)
        else:
            points.append(MetricPoint(key, float(value), step, time_, seq))
            seq += 1
    return points, other


def _flatten(event: dict[str, Any], prefix: str = ""):
    for key, value in event.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, name + ".")
        else:
            yield name, value


class MetricSink:
    """Collects events from the reader thread; a writer thread stores them in batches."""

    def __init__(
        self,
        write_points: Callable[[list[MetricPoint]], None],
        write_metadata: Callable[[dict[str, Any]], None],
    ) -> None:
        self._write_points = write_points
        self._write_metadata = write_metadata
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], float] | None] = queue.SimpleQueue()
        self._seq = 0
        self.count = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="cairn-metrics", daemon=True)
        self._thread.start()

    def put(self, event: dict[str, Any], time_: float) -> None:
        """Hand over one event (never blocks)."""
        self._queue.put((event, time_))

    def close(self) -> None:
        """Store everything still queued and stop the writer."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        done = False
        while not done:
            item = self._queue.get()
            batch = [item]
            deadline = time.monotonic() + _FLUSH_SECONDS
            while item is not None and len(batch) < _BATCH and batch[-1] is not None:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            points: list[MetricPoint] = []
            metadata: dict[str, Any] = {}
            for entry in batch:
                if entry is None:
                    done = True
                    continue
                new_points, other = split_event(entry[0], entry[1], self._seq)
                self._seq += len(new_points)
                points.extend(new_points)
                metadata.update(other)
            try:
                if points:
                    self._write_points(points)
                    self.count += len(points)
                if metadata:
                    self._write_metadata(metadata)
            except Exception as exc:  # keep the step running; report at the end
                log.exception("storing metrics failed")
                self.errors.append(str(exc))
