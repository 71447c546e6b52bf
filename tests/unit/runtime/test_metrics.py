from __future__ import annotations

import threading

from cairn.runtime.metrics import MetricSink, parse_event, split_event


def test_only_json_objects_are_events() -> None:
    assert parse_event('{"loss": 0.5}') == {"loss": 0.5}
    assert parse_event("  {\"a\": 1}  ") == {"a": 1}
    assert parse_event("[1, 2]") is None
    assert parse_event("loss: 0.5") is None
    assert parse_event("{not json") is None
    assert parse_event('"string"') is None


def test_valohai_deployment_wrapper_is_unwrapped() -> None:
    assert parse_event('{"vh_metadata": {"acc": 1}}') == {"acc": 1}


def test_split_numeric_points_step_and_metadata() -> None:
    points, other = split_event(
        {"step": 3, "loss": 0.25, "acc": 1, "phase": "train", "ok": True,
         "nested": {"a": 2.0}, "bad": float("nan")}, 100.0, 0)
    assert {p.key: p.value for p in points} == {"loss": 0.25, "acc": 1.0, "nested.a": 2.0}
    assert all(p.step == 3 for p in points)
    assert [p.seq for p in points] == [0, 1, 2]
    assert other == {"phase": "train", "ok": True, "bad": "nan"}


def test_epoch_is_the_step_when_no_step_key() -> None:
    points, _ = split_event({"epoch": 2, "loss": 1.0}, 0.0, 0)
    assert {p.key: p.step for p in points} == {"epoch": 2, "loss": 2}


def test_sink_stores_everything_in_batches() -> None:
    stored: list = []
    meta: dict = {}
    lock = threading.Lock()

    def write(points):  # noqa: ANN001
        with lock:
            stored.append(len(points))

    sink = MetricSink(write, meta.update)
    for i in range(50_000):
        sink.put({"step": i, "loss": 1.0 / (i + 1)}, float(i))
    sink.put({"note": "done"}, 1.0)
    sink.close()
    assert sum(stored) == 50_000 == sink.count
    assert len(stored) < 50  # batched, not one write per point
    assert meta == {"note": "done"}


def test_sink_survives_a_failing_store() -> None:
    def fail(points):  # noqa: ANN001
        raise RuntimeError("database is locked")

    sink = MetricSink(fail, lambda m: None)
    sink.put({"loss": 1.0}, 0.0)
    sink.close()
    assert sink.errors == ["database is locked"]
