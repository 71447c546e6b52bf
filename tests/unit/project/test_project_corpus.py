"""The public valohai-yaml example files: valid ones load clean, invalid ones explain why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cairn.errors import ProjectError, ProjectNotFoundError
from cairn.project import lint, load_project, parse_project

from .conftest import corpus_files

VALID = corpus_files("valid")
INVALID = corpus_files("invalid")

# file -> (words every error message set must contain, [(line, column)] of some errors)
EXPECTED = {
    "endpoint-names-invalid.yaml": (
        [
            "endpoint name 'Server-endpoint'",
            "'3-server-endpoint'",
            "'server@endpoint'",
            "'wsgi_endpoint'",
        ],
        [(2, 11), (8, 11), (14, 11), (20, 11)],
    ),
    "invalid-YAML-indentation.yaml": (["invalid YAML", "mapping values"], [(3, 10)]),
    "invalid-indentation-with-valid-YAML.yaml": (["not indented under `step:`"], [(2, 3)]),
    "invalid-pipeline-with-override-example.yaml": (
        ["input 'training-labels-error'", "parameter 'd'", "unknown step 'secon step'"],
        [(48, 21), (53, 21), (57, 15)],
    ),
    "invalid-task-blueprint-reference.yaml": (["unknown task 'my-non-existent-task'"], [(25, 15)]),
    "pipeline-with-preset-override-without-environment.yaml": (
        ["runtime-config-preset without environment"],
        [(16, 11)],
    ),
    "step-missing-required-properties.yaml": (
        [
            "required key 'name'",
            "required key 'command'",
            "'image'",
            "boolean (yes)",
            "'command' of step 'hiiii'",
        ],
        [(2, 12), (6, 14)],
    ),
    "step-stop-condition.yaml": (
        ["'stop-condition' of step 'no-stop'", "not a valid expression"],
        [(5, 21)],
    ),
    "task-stop-condition.yaml": (
        ["'stop-condition' of task 'no-stop'", "not a valid expression"],
        [(10, 21)],
    ),
}


def test_corpus_is_present(corpus: Path) -> None:
    assert VALID and INVALID


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_file_has_no_errors(path: Path) -> None:
    problems = lint(path.read_text(), path.name)
    assert [p for p in problems if p.severity == "error"] == []
    config = parse_project(path.read_text(), path.name)
    assert config.steps or config.pipelines


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_file_is_rejected_with_located_errors(path: Path) -> None:
    errors = [p for p in lint(path.read_text(), path.name) if p.severity == "error"]
    assert errors
    assert all(p.file == path.name and p.line >= 1 and p.column >= 1 for p in errors)
    with pytest.raises(ProjectError) as info:
        parse_project(path.read_text(), path.name)
    assert info.value.problems


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_file_messages_are_specific(corpus: Path, name: str) -> None:
    words, positions = EXPECTED[name]
    errors = [
        p for p in lint((corpus / "invalid" / name).read_text(), name) if p.severity == "error"
    ]
    text = "\n".join(str(p) for p in errors)
    for word in words:
        assert word in text
    located = {(p.line, p.column) for p in errors}
    for position in positions:
        assert position in located


def test_indentation_errors_say_so(corpus: Path) -> None:
    for name in ("invalid-YAML-indentation.yaml", "invalid-indentation-with-valid-YAML.yaml"):
        errors = lint((corpus / "invalid" / name).read_text(), name)
        assert any(p.hint and "check the indentation" in p.hint for p in errors)


def test_override_and_reference_errors_suggest_names(corpus: Path) -> None:
    name = "invalid-pipeline-with-override-example.yaml"
    errors = lint((corpus / "invalid" / name).read_text(), name)
    hints = [p.hint for p in errors]
    assert "did you mean 'second step'?" in hints
    assert "did you mean 'training-labels'?" in hints


def test_load_project_prefers_cairn_yaml(corpus: Path, tmp_path: Path) -> None:
    shutil.copy(corpus / "valid" / "task-example.yaml", tmp_path / "valohai.yaml")
    config = load_project(tmp_path)
    assert config.path == tmp_path / "valohai.yaml"
    assert "run training" in config.steps and len(config.tasks) == 6

    shutil.copy(corpus / "valid" / "flag-param-example.yaml", tmp_path / "cairn.yaml")
    config = load_project(str(tmp_path))
    assert config.path == tmp_path / "cairn.yaml"
    assert list(config.steps) == ["test"]


def test_load_project_reports_the_file_path(corpus: Path, tmp_path: Path) -> None:
    shutil.copy(corpus / "invalid" / "step-stop-condition.yaml", tmp_path / "cairn.yaml")
    with pytest.raises(ProjectError) as info:
        load_project(tmp_path)
    assert str(tmp_path / "cairn.yaml") + ":5:21: error:" in str(info.value)


def test_load_project_without_a_file(tmp_path: Path) -> None:
    with pytest.raises(ProjectNotFoundError) as info:
        load_project(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "cairn init" in str(info.value)


def test_load_project_with_explicit_filename(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text(
        "- step:\n    name: a\n    image: busybox\n    command: date\n"
    )
    assert list(load_project(tmp_path, "other.yaml").steps) == ["a"]
    with pytest.raises(ProjectNotFoundError):
        load_project(tmp_path, "missing.yaml")
