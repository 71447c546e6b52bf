"""Step records round-trip exactly; resources, durations and the starter file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cairn.project import (
    Edge,
    InputSpec,
    Mount,
    NodeOverride,
    Parameter,
    Pipeline,
    Step,
    Task,
    lint,
    parse_duration,
    parse_project,
    starter_yaml,
)

from .conftest import corpus_files

FULL_STEP = """
- step:
    name: train
    image: python:3.11
    command:
      - pip install -r requirements.txt
      - python train.py {parameters}
    description: Train it
    category: ml
    icon: https://example.com/i.png
    environment: gpu-box
    runtime-config-preset: fast
    parameters:
      - name: epochs
        type: integer
        default: 3
        min: 1
        max: 9
        pass-as: -e {v}
        description: how long
        category: training
      - name: tags
        multiple: separate
        multiple-separator: ";"
        default: [a, b]
      - name: fp16
        type: flag
        pass-true-as: --fp16
        pass-false-as: --no-fp16
      - name: opt
        choices: [adam, sgd]
        default: adam
        widget: {type: dropdown}
    inputs:
      - name: data
        default: s3://bucket/data.csv
        keep-directories: true
        download: on-demand
        filename: data.csv
      - name: extra
        optional: true
    outputs:
      - name: model
        description: weights
    environment-variables:
      - name: SEED
        default: 0012
        optional: false
      - name: TOKEN
    environment-variable-groups: [g1]
    mounts:
      - /host:/container
      - source: nfs.local:/share
        destination: /share
        readonly: true
        type: nfs
        options: {vers: 4}
    cache-volumes: [pvc-1]
    resources:
      cpu: {min: 0.5, max: 2}
      memory: {max: 2048}
      devices: {nvidia.com/gpu: 2}
    time-limit: 1h 30m
    no-output-timeout: 600
    upload-store: store-1
    source-path: train.py
    stop-condition: loss < 0.1
"""


def full_step() -> Step:
    return parse_project(textwrap.dedent(FULL_STEP)).get_step("train")


def test_full_step_is_parsed_and_normalized() -> None:
    step = full_step()
    assert step.command == ["pip install -r requirements.txt", "python train.py {parameters}"]
    assert step.parameters[0] == Parameter(
        "epochs",
        "integer",
        3,
        min=1,
        max=9,
        pass_as="-e {v}",
        description="how long",
        category="training",
    )
    assert step.parameters[1].default == ["a", "b"] and step.parameters[1].multiple_separator == ";"
    assert step.inputs[0] == InputSpec(
        "data",
        ["s3://bucket/data.csv"],
        filename="data.csv",
        keep_directories="full",
        download="on-demand",
    )
    assert step.environment_variables[0].default == "0012"  # as written, not the number 12
    assert step.environment_variables[0].optional is False
    assert step.environment_variables[1].optional is True
    assert step.mounts[0] == Mount("/host", "/container")
    assert step.resources == {"cpus": 0.5, "memory_mb": 2048, "gpus": 2}
    assert step.time_limit == 5400.0 and step.no_output_timeout == 600.0
    assert step.stop_condition == "loss < 0.1"


def test_to_dict_uses_yaml_spelling_and_is_json() -> None:
    data = full_step().to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["time-limit"] == 5400
    assert data["resources"] == {
        "cpu": {"min": 0.5, "max": 2},
        "memory": {"max": 2048},
        "devices": {"nvidia.com/gpu": 2},
    }
    assert data["parameters"][0]["pass-as"] == "-e {v}"
    assert data["inputs"][0]["keep-directories"] == "full"
    assert "resources_spec" not in data and "pass_as" not in str(data)


def test_step_round_trips_through_json() -> None:
    step = full_step()
    again = Step.from_dict(json.loads(json.dumps(step.to_dict())))
    assert again == step
    # and the dict is itself a valid step definition
    yaml_text = "- step:\n" + textwrap.indent(json.dumps(again.to_dict()), "    ")
    assert [p for p in lint(yaml_text) if p.severity == "error"] == []


@pytest.mark.parametrize("path", corpus_files("valid"), ids=lambda p: p.name)
def test_corpus_models_round_trip(path: Path) -> None:
    config = parse_project(path.read_text(), path.name)
    for step in config.steps.values():
        assert Step.from_dict(json.loads(json.dumps(step.to_dict()))) == step
    for pipeline in config.pipelines.values():
        assert Pipeline.from_dict(json.loads(json.dumps(pipeline.to_dict()))) == pipeline
    for task in config.tasks.values():
        assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task


def test_minimal_step_and_unknown_keys() -> None:
    step = Step(name="x", image="busybox", command=["date"])
    assert step.to_dict() == {"name": "x", "image": "busybox", "command": ["date"]}
    assert step.resources == {"cpus": None, "memory_mb": None, "gpus": 0}
    with pytest.raises(ValueError, match="no key 'imagee'"):
        Step.from_dict({"name": "x", "imagee": "y"})


def test_resources_given_normalized() -> None:
    step = Step(name="x", resources={"cpus": 2.0, "gpus": 1})
    assert step.resources == {"cpus": 2.0, "memory_mb": None, "gpus": 1}
    assert Step.from_dict(step.to_dict()) == step


def test_override_apply_merges_by_name() -> None:
    step = full_step()
    override = NodeOverride(
        image="python:3.12",
        parameters=[{"name": "epochs", "default": 7}],
        inputs=[{"name": "data"}],
    )
    changed = override.apply(step)
    assert changed.image == "python:3.12"
    assert changed.get_parameter("epochs") is not None
    assert changed.get_parameter("epochs").default == 7  # type: ignore[union-attr]
    assert changed.get_parameter("epochs").pass_as == "-e {v}"  # type: ignore[union-attr]
    assert changed.get_input("data").default == []  # type: ignore[union-attr]
    assert changed.command == step.command


def test_edge_unpacks_to_source_target_configuration() -> None:
    edge = Edge.from_dict({"source": "a.output.*.csv", "target": "b.input.data"})
    source, target, configuration = edge
    assert (source.node, source.type, source.key) == ("a", "output", "*.csv")
    assert (target.node, target.key, configuration) == ("b", "data", {})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        ("90", 90.0),
        ("1h 30m 5s", 5405.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("1.5h", 5400.0),
        ("10min", 600.0),
        ("1h30m", 5400.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "soon", "5 parsecs", 0, -3, "0s", True, [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_duration(value)


def test_starter_yaml_lints_clean_and_is_commented() -> None:
    text = starter_yaml()
    assert lint(text, "cairn.yaml") == []
    step = parse_project(text).get_step("train")
    assert [p.type for p in step.parameters] == ["integer", "float", "string", "flag"]
    assert step.inputs and "{parameters}" in step.command[-1]
    comments = [line for line in text.splitlines() if line.strip().startswith("#")]
    assert len(comments) > 15
