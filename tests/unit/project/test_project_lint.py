"""Linting project files written by hand: every problem located, with a useful hint."""

from __future__ import annotations

import textwrap

import pytest

from cairn.errors import NotFoundError, Problem, ProjectError
from cairn.project import format_problems, lint, parse_project


def problems_of(text: str) -> list[Problem]:
    return lint(textwrap.dedent(text).lstrip("\n"), "cairn.yaml")


def errors_of(text: str) -> list[Problem]:
    return [p for p in problems_of(text) if p.severity == "error"]


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, format_problems(problems)
    return problems[0]


STEP = """
- step:
    name: train
    image: python:3.11
    command: python train.py {parameters}
    parameters:
      - name: epochs
        type: integer
        default: 3
    inputs:
      - name: data
"""


def test_unknown_key_is_located_at_the_key_with_did_you_mean() -> None:
    p = only(
        errors_of(
            """
            - step:
                name: train
                image: python:3.11
                command: python train.py
                parameters:
                  - name: epochs
                    type: integer
                    defualt: 3
            """
        )
    )
    assert (p.line, p.column) == (8, 9)
    assert p.message == "unknown key 'defualt' in parameter 'epochs' of step 'train'"
    assert p.hint == "did you mean 'default'?"
    assert str(p).startswith("cairn.yaml:8:9: error: unknown key 'defualt'")


def test_key_of_the_outer_mapping_gets_an_indentation_hint() -> None:
    p = only(
        errors_of(
            """
            - step:
                name: train
                image: python:3.11
                command: python train.py
                parameters:
                  - name: epochs
                    type: integer
                    inputs: []
            """
        )
    )
    assert p.hint and p.hint.startswith("check the indentation of 'inputs'")


def test_yaml_syntax_error_is_located() -> None:
    p = only(
        problems_of("- step:\n    name: train\n    command: [python, train.py\n    image: x\n")
    )
    assert p.message.startswith("invalid YAML:")
    assert p.line in (3, 4)
    assert p.column >= 1


def test_tab_indentation_gets_a_hint() -> None:
    p = only(problems_of("- step:\n\tname: train\n"))
    assert p.message.startswith("invalid YAML")
    assert p.line == 2
    assert p.hint == "YAML indentation must use spaces, not tabs"


def test_duplicate_key_is_an_error() -> None:
    errors = errors_of(
        """
        - step:
            name: a
            name: b
            image: x
            command: y
        """
    )
    p = only(errors)
    assert p.line == 3 and "duplicate key 'name'" in p.message and "line 2" in p.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("step:\n  name: a\n", "must be a list"),
        ("- just a string\n", "must be a mapping"),
        ("- stpe:\n    name: x\n", "unknown item kind 'stpe'"),
        ("- step:\n", "this step is empty"),
        ("- step: hello\n", "must be a mapping"),
        ("- step:\n    name: a\n  task:\n    name: b\n", "both 'step' and 'task'"),
    ],
)
def test_bad_file_shapes(text: str, words: str) -> None:
    errors = [p for p in lint(text, "cairn.yaml") if p.severity == "error"]
    assert errors and words in errors[0].message


def test_top_level_mapping_hint_says_to_add_dashes() -> None:
    p = only(problems_of("step:\n  name: a\n"))
    assert p.hint and "'- '" in p.hint


def test_unknown_item_kind_without_a_close_match_is_a_warning() -> None:
    p = only(problems_of("- frobnicator:\n    name: x\n"))
    assert p.severity == "warning" and "no parser for 'frobnicator'" in p.message


def test_boolean_where_text_is_expected_suggests_quotes() -> None:
    errors = errors_of(
        """
        - step:
            name: s
            image: busybox
            command: [echo, on]
        """
    )
    p = only(errors)
    assert "must be strings, got a boolean (on)" in p.message
    assert p.hint and '"on"' in p.hint and (p.line, p.column) == (4, 21)


def test_parameter_type_alias_hint() -> None:
    p = only(errors_of(STEP.replace("type: integer", "type: int")))
    assert "'type' of parameter 'epochs'" in p.message
    assert p.hint == "did you mean 'integer'?"


def test_bad_default_is_a_warning_and_kept_on_config() -> None:
    text = textwrap.dedent(STEP).replace("default: 3", "default: lots")
    config = parse_project(text)
    warning = only(config.warnings)
    assert warning.severity == "warning" and "expected an integer" in warning.message


def test_min_above_max_and_out_of_range_default() -> None:
    problems = problems_of(
        STEP.replace("default: 3", "default: 30\n        min: 1\n        max: 10")
    )
    assert any("above the maximum" in p.message and p.severity == "warning" for p in problems)
    problems = problems_of(STEP.replace("default: 3", "min: 10\n        max: 1"))
    assert any(p.severity == "error" and "min 10 above max 1" in p.message for p in problems)


def test_runtime_config_preset_needs_environment() -> None:
    p = only(errors_of(STEP + "    runtime-config-preset: preset-1\n"))
    assert "runtime-config-preset without an environment" in p.message


def test_placeholder_for_unknown_parameter_warns() -> None:
    p = only(problems_of(STEP.replace("{parameters}", "{parameter:epoch}")))
    assert p.severity == "warning" and p.hint == "did you mean 'epochs'?"


def test_duplicate_step_names_warn_and_the_later_wins() -> None:
    text = textwrap.dedent(STEP) + textwrap.dedent(STEP).replace("python:3.11", "python:3.12")
    config = parse_project(text)
    assert config.steps["train"].image == "python:3.12"
    assert any("two steps called 'train'" in w.message for w in config.warnings)


def test_input_name_too_long() -> None:
    p = only(errors_of(STEP.replace("name: data", "name: " + "x" * 65)))
    assert "at most 64" in p.message


def test_time_limit_must_be_a_duration() -> None:
    p = only(errors_of(STEP + "    time-limit: soon\n"))
    assert "'time-limit' of step 'train' is not a duration" in p.message


def test_resources_need_min_or_max() -> None:
    p = only(errors_of(STEP + "    resources:\n      cpu: 2\n"))
    assert p.hint == "write `cpu: {min: 2}`"


PIPELINE = (
    STEP
    + """
- pipeline:
    name: flow
    nodes:
      - name: prep
        type: execution
        step: train
      - name: fit
        type: execution
        step: train
    edges:
"""
)


def test_edge_errors() -> None:
    text = PIPELINE + (
        "      - [prep.output.x*, fit.input.data]\n"  # fine
        "      - [prep.output.x*, fitt.input.data]\n"  # unknown node
        "      - [prep.output.x*, fit.input.dta]\n"  # unknown input
        "      - [prep.parameter.epochs, fit.outputs.x]\n"  # bad socket type
        "      - [prep.output.x, fit]\n"  # not node.type.key
        "      - [prep.output.x, prep.input.data]\n"  # self edge
    )
    errors = errors_of(text)
    messages = "\n".join(p.message for p in errors)
    assert "unknown node 'fitt'" in messages
    assert "has no input 'dta'" in messages
    assert "unknown socket type 'outputs'" in messages
    assert "is not of the form node.type.key" in messages
    assert "connects node 'prep' to itself" in messages
    assert len(errors) == 5
    hints = [p.hint for p in errors]
    assert "did you mean 'fit'?" in hints and "did you mean 'data'?" in hints


def test_edges_forming_a_cycle() -> None:
    text = PIPELINE + (
        "      - [prep.output.x*, fit.input.data]\n"
        "      - {source: fit.output.y*, target: prep.input.data}\n"
    )
    p = only(errors_of(text))
    assert "form a cycle" in p.message and "prep -> fit -> prep" in p.message


def test_edges_are_normalized() -> None:
    text = PIPELINE + (
        "      - [prep.output.x*, fit.input.data]\n"
        "      - source: prep.metadata.loss\n"
        "        target: fit.parameter.epochs\n"
        "        configuration: {reuse: true}\n"
    )
    pipeline = parse_project(textwrap.dedent(text)).pipelines["flow"]
    first, second = pipeline.edges
    source, target, configuration = first
    assert (source.node, source.type, source.key) == ("prep", "output", "x*")
    assert str(target) == "fit.input.data" and configuration == {}
    assert second.configuration == {"reuse": True}


def test_override_key_that_is_a_parameter_name_suggests_nesting() -> None:
    text = PIPELINE.replace(
        "        step: train\n      - name: fit",
        "        step: train\n        override:\n          epochs: 3\n      - name: fit",
    )
    p = only(errors_of(text))
    assert "unknown key 'epochs' in override of node 'prep'" in p.message
    assert p.hint and "nested under `parameters:`" in p.hint


def test_node_without_type_and_with_unknown_step() -> None:
    text = PIPELINE.replace(
        "        type: execution\n        step: train\n      - name: fit",
        "        step: trian\n      - name: fit",
    )
    errors = errors_of(text + "      []\n")
    messages = [p.message for p in errors]
    assert any("missing the required key 'type'" in m for m in messages)
    assert any("unknown step 'trian'" in m for m in messages)


def test_task_node_needs_exactly_one_of_step_or_task() -> None:
    text = PIPELINE.replace(
        "type: execution\n        step: train\n      - name: fit", "type: task\n      - name: fit"
    )
    p = only(errors_of(text + "      []\n"))
    assert "exactly one of 'step' or 'task'" in p.message


def test_pipeline_parameter_targets_are_checked() -> None:
    text = PIPELINE + (
        "      []\n"
        "    parameters:\n"
        "      - name: n\n"
        "        targets: [fit.parameter.epochs, nope.parameter.x]\n"
        "      - name: m\n"
    )
    problems = problems_of(text)
    assert any(p.severity == "error" and "unknown node 'nope'" in p.message for p in problems)
    assert any(p.severity == "warning" and "has no targets" in p.message for p in problems)


def test_task_checks() -> None:
    text = STEP + textwrap.dedent(
        """
        - task:
            name: sweep
            step: train
            type: grid-search
            on-child-error: STOP_ALL_AND_ERROR
            parameters:
              - name: epochs
                style: multiple
                rules: {items: [1, 2, 3]}
        """
    )
    config = parse_project(textwrap.dedent(text))
    task = config.tasks["sweep"]
    assert task.type == "grid_search" and task.on_child_error == "stop-all-and-error"
    assert task.parameters[0].rules == {"items": [1, 2, 3]}

    bad = text.replace("- name: epochs\n        style", "- name: epoch\n        style").replace(
        "type: grid-search", "type: grid"
    )
    errors = errors_of(bad)
    messages = "\n".join(p.message for p in errors)
    assert "varies parameter 'epoch'" in messages
    assert "'type' of task 'sweep' must be one of" in messages
    assert "did you mean 'epochs'?" in [p.hint for p in errors]


def test_task_prune_key() -> None:
    text = STEP + textwrap.dedent(
        """
        - task:
            name: sweep
            step: train
            optimization-target-metric: loss
            prune: successive_halving
            parameters:
              - {name: epochs, style: multiple, rules: {items: [1, 2, 3]}}
        """
    )
    assert parse_project(textwrap.dedent(text)).tasks["sweep"].prune == "halving"
    problem = only(errors_of(text.replace("prune: successive_halving", "prune: medain")))
    assert "'prune' of task 'sweep' must be one of none, median, halving; got 'medain'" \
        in problem.message
    assert problem.hint == "did you mean 'median'?"
    lines = textwrap.dedent(text).lstrip("\n").splitlines()
    assert problem.line == next(i for i, line in enumerate(lines, 1) if "prune:" in line)
    untargeted = text.replace("    optimization-target-metric: loss\n", "")
    problem = only(errors_of(untargeted))
    assert "prunes trials (halving) by its target metric" in problem.message
    assert "optimization-target-metric" in (problem.hint or "")


def test_task_rules_for_style() -> None:
    text = STEP + (
        "- task:\n    name: t\n    step: train\n    parameters:\n"
        "      - name: epochs\n        style: linear\n        rules: {start: 1, end: x}\n"
    )
    messages = [p.message for p in errors_of(text)]
    assert any("need 'step' for style linear" in m for m in messages)
    assert any("rule 'end'" in m and "must be a number" in m for m in messages)


def test_endpoint_checks() -> None:
    text = """
    - endpoint:
        name: serve
        image: python:3.11
        server-command: python serve.py
        wsgi: app:app
        port: 80
    """
    messages = [p.message for p in errors_of(text)]
    assert any("exactly one of 'server-command' or 'wsgi'" in m for m in messages)
    assert any("port 80" in m for m in messages)
    good = text.replace("        wsgi: app:app\n", "").replace("port: 80", "port: 8080")
    endpoint = parse_project(textwrap.dedent(good)).endpoints["serve"]
    assert endpoint.server_command == ["python serve.py"] and endpoint.port == 8080


def test_deployment_without_target_warns() -> None:
    p = only(problems_of("- deployment:\n    name: prod\n"))
    assert p.severity == "warning" and "defaults.target" in p.message
    config = parse_project("- deployment:\n    name: prod\n    defaults: {target: k8s}\n")
    assert config.deployments["prod"].defaults == {"target": "k8s"}


def test_anchors_and_merge_keys_are_supported() -> None:
    text = """
    - step: &base
        name: one
        image: python:3.11
        command: python one.py
    - step:
        <<: *base
        name: two
        bogus: 1
    """
    problems = problems_of(text)
    p = only(problems)
    assert "unknown key 'bogus' in step 'two'" in p.message and p.line == 8
    config = parse_project(textwrap.dedent(text).replace("    bogus: 1\n", ""))
    assert config.steps["two"].image == "python:3.11" and config.steps["two"].command == [
        "python one.py"
    ]


def test_parse_project_raises_with_every_error() -> None:
    with pytest.raises(ProjectError) as info:
        parse_project("- step:\n    name: a\n", "my.yaml")
    assert len(info.value.problems) == 2
    text = str(info.value)
    assert "my.yaml:2:5: error: step 'a' is missing the required key 'image'" in text
    assert "required key 'command'" in text
    assert [p.hint.split(":")[0] for p in info.value.problems] == [
        "add `image", "add `command"]


def test_blueprint_is_an_alias_of_pipeline() -> None:
    config = parse_project(
        textwrap.dedent(STEP) + "- blueprint:\n    name: b\n    nodes: []\n    edges: []\n"
    )
    assert list(config.pipelines) == ["b"]


def test_format_problems_sorts_and_counts() -> None:
    problems = [
        Problem("f.yaml", 5, 1, "later", severity="warning"),
        Problem("f.yaml", 2, 3, "first", hint="do this"),
    ]
    text = format_problems(problems)
    assert text.splitlines() == [
        "f.yaml:2:3: error: first",
        "  hint: do this",
        "f.yaml:5:1: warning: later",
        "1 error, 1 warning",
    ]
    assert format_problems([]) == "no problems found"


def test_get_step_matching_and_errors() -> None:
    text = textwrap.dedent(STEP) + textwrap.dedent(STEP).replace("name: train", "name: test")
    config = parse_project(text)
    assert config.get_step("train").name == "train"
    assert config.get_step("TRAIN").name == "train"
    assert config.get_step("tr").name == "train"
    with pytest.raises(NotFoundError) as info:
        config.get_step("t")
    assert "matches several steps" in str(info.value)
    with pytest.raises(NotFoundError) as info:
        config.get_step("trian")
    assert info.value.message == "unknown step 'trian' in cairn.yaml"
    assert info.value.hint == "known steps: train, test; did you mean 'train'?"
