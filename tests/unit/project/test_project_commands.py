"""Rendering commands from parameters, and the script that runs them."""

from __future__ import annotations

import shlex
import subprocess
import sys
from typing import Any

import pytest

from cairn.project import Parameter, Step, build_script, parameter_args, render_command


def step_with(*params: Parameter, command: str = "run {parameters}", **kw: Any) -> Step:
    return Step(name="s", image="busybox", command=[command], parameters=list(params), **kw)


def render(
    params: list[Parameter], values: dict[str, Any], command: str = "run {parameters}"
) -> str:
    return render_command(step_with(*params, command=command), values)[0]


def test_default_pass_as() -> None:
    params = [Parameter("epochs", type="integer"), Parameter("lr", type="float")]
    assert render(params, {"epochs": 3, "lr": 0.5}) == "run --epochs=3 --lr=0.5"


def test_params_alias_and_none_values_are_left_out() -> None:
    params = [Parameter("a"), Parameter("b", optional=True)]
    assert render(params, {"a": "x", "b": None}, "run {params}") == "run --a=x"
    assert render(params, {"a": "x"}) == "run --a=x"


def test_values_are_shell_quoted() -> None:
    params = [Parameter("title")]
    rendered = render(params, {"title": 'it\'s a "test" $HOME'})
    assert rendered == "run '--title=it'\"'\"'s a \"test\" $HOME'"
    assert shlex.split(rendered) == ["run", '--title=it\'s a "test" $HOME']


def test_pass_as_template_is_split_before_the_value_goes_in() -> None:
    params = [Parameter("name", pass_as="-n {v}")]
    rendered = render(params, {"name": "two words"})
    assert rendered == "run -n 'two words'"
    assert shlex.split(rendered) == ["run", "-n", "two words"]


def test_pass_as_value_and_name_placeholders() -> None:
    params = [Parameter("depth", type="integer", pass_as="--set {name}:{value}")]
    assert render(params, {"depth": 4}) == "run --set depth:4"


def test_flags() -> None:
    flag = Parameter("verbose", type="flag")
    assert render([flag], {"verbose": True}) == "run --verbose"
    assert render([flag], {"verbose": False}) == "run "
    custom = Parameter("verbose", type="flag", pass_as="-v")
    assert render([custom], {"verbose": True}) == "run -v"
    both = Parameter(
        "fp16", type="flag", pass_as="ignored", pass_true_as="--fp16=yes", pass_false_as="--fp16=no"
    )
    assert render([both], {"fp16": True}) == "run --fp16=yes"
    assert render([both], {"fp16": False}) == "run --fp16=no"
    only_false = Parameter("cache", type="flag", pass_false_as="--no-cache")
    assert render([only_false], {"cache": True}) == "run "
    assert render([only_false], {"cache": False}) == "run --no-cache"
    with_value = Parameter("x", type="flag", pass_true_as="--x={v}")
    assert render([with_value], {"x": True}) == "run --x=true"


def test_multiple_repeat_and_separate() -> None:
    repeat = Parameter("tag", multiple="repeat")
    assert render([repeat], {"tag": ["a", "b c"]}) == "run --tag=a '--tag=b c'"
    separate = Parameter("ids", type="integer", multiple="separate")
    assert render([separate], {"ids": [1, 2, 3]}) == "run --ids=1,2,3"
    custom = Parameter("ids", multiple="separate", multiple_separator=" ", pass_as="--ids {v}")
    assert render([custom], {"ids": ["x", "y"]}) == "run --ids 'x y'"
    assert render([repeat], {"tag": []}) == "run "
    assert parameter_args(repeat, "single") == ["--tag=single"]


def test_single_parameter_and_value_placeholders() -> None:
    params = [Parameter("lr", type="float"), Parameter("out"), Parameter("on", type="flag")]
    values = {"lr": 0.1, "out": "my dir", "on": False}
    assert render(params, values, "train {parameter:lr} > {parameter-value:out}") == (
        "train --lr=0.1 > 'my dir'"
    )
    assert render(params, values, "echo {parameter-value:on}") == "echo false"
    multi = Parameter("xs", multiple="separate", multiple_separator=";")
    assert render([multi], {"xs": ["a", "b"]}, "echo {parameter-value:xs}") == "echo 'a;b'"


def test_unknown_placeholders_are_left_alone() -> None:
    command = "echo ${HOME} {unknown} {parameter:nope} {source-path}"
    assert render([], {}, command) == command


def test_source_path_placeholder() -> None:
    step = step_with(command="python {source-path}", source_path="src/my train.py")
    assert render_command(step, {}) == ["python 'src/my train.py'"]


def test_every_command_is_rendered() -> None:
    step = Step(
        name="s", command=["pip install x", "python t.py {parameters}"], parameters=[Parameter("a")]
    )
    assert render_command(step, {"a": "1"}) == ["pip install x", "python t.py --a=1"]


def test_build_script_uses_sh_with_set_e() -> None:
    argv, script = build_script(["echo one", "", "cd /tmp"])
    assert argv == ["/bin/sh", "-c"]
    assert script == "set -e\necho one\ncd /tmp\n"


def test_build_script_with_shebang() -> None:
    argv, script = build_script(["#!/bin/bash", "echo $BASH_VERSION"])
    assert argv == ["/bin/bash", "-c"]
    assert script == "#!/bin/bash\nset -e\necho $BASH_VERSION\n"
    argv, script = build_script(["#!/usr/bin/env python3", "print('hi')"])
    assert argv == ["/usr/bin/env", "python3", "-c"]
    assert script == "#!/usr/bin/env python3\nprint('hi')\n"


@pytest.mark.skipif(sys.platform == "win32", reason="needs /bin/sh")
def test_script_stops_at_the_first_failing_command() -> None:
    argv, script = build_script(["echo first", "export X=carried", "false", "echo never"])
    script = script.replace("false", 'echo "$X"; false')
    result = subprocess.run([*argv, script], capture_output=True, text=True, timeout=10)
    assert result.returncode != 0
    assert result.stdout.split() == ["first", "carried"]
