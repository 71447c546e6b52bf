"""Step commands with their placeholders filled in, and the script that runs them.

Placeholders (anything else in braces, such as shell ``${HOME}``, is left as written):

- ``{parameters}`` / ``{params}``: every parameter with a value, each through its
  ``pass-as``, every argv token shell-quoted, joined by spaces;
- ``{parameter:NAME}``: the same for one parameter;
- ``{parameter-value:NAME}``: only the value, shell-quoted (lists joined with the
  parameter's ``multiple-separator``, flags as ``true``/``false``);
- ``{source-path}``: the step's ``source-path``, shell-quoted.

``pass-as`` defaults to ``--{name}={v}``; it is split on whitespace into argv tokens
*before* the value is put in, so a value with spaces stays one token. A flag that is true
passes ``--{name}`` (or ``pass-true-as``); a false flag passes nothing (or
``pass-false-as``). When a flag has ``pass-true-as`` or ``pass-false-as``, its ``pass-as``
is ignored. ``multiple: repeat`` passes the template once per value; ``multiple:
separate`` joins the values with ``multiple-separator`` into one value. ``None`` values
are left out.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from cairn.project.step import Parameter, Step

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_TEMPLATE_FIELD = re.compile(r"\{(v|value|name)\}")
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"}


def format_value(value: Any) -> str:
    """One parameter value as command-line text (``true``/``false`` for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _expand(template: str, name: str, value: str | None) -> list[str]:
    def fill(match: re.Match[str]) -> str:
        return name if match.group(1) == "name" else (value or "")

    return [_TEMPLATE_FIELD.sub(fill, token) for token in template.split()]


def parameter_args(param: Parameter, value: Any) -> list[str]:
    """The argv tokens (not yet quoted) that pass ``value`` for ``param``."""
    if value is None:
        return []
    if param.type == "flag":
        if param.pass_true_as is not None or param.pass_false_as is not None:
            template = param.pass_true_as if value else param.pass_false_as
            return _expand(template, param.name, format_value(bool(value))) if template else []
        if not value:
            return []
        return _expand(param.pass_as or "--{name}", param.name, "true")
    template = param.pass_as or "--{name}={v}"
    if param.is_multiple:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values:
            return []
        if param.multiple == "separate":
            joined = param.multiple_separator.join(format_value(v) for v in values)
            return _expand(template, param.name, joined)
        return [token for v in values for token in _expand(template, param.name, format_value(v))]
    return _expand(template, param.name, format_value(value))


def _quoted(tokens: Sequence[str]) -> str:
    return " ".join(shlex.quote(t) for t in tokens)


def render_command(step: Step, params: Mapping[str, Any]) -> list[str]:
    """``step.command`` with placeholders filled from ``params``.

    ``params`` should be the output of
    :func:`~cairn.project.parameters.resolve_parameters`; a parameter missing from it is
    treated as having no value. Returns one string per command.
    """
    by_name = {p.name: p for p in step.parameters}

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in ("parameters", "params"):
            tokens = [t for p in step.parameters for t in parameter_args(p, params.get(p.name))]
            return _quoted(tokens)
        kind, sep, ref = key.partition(":")
        if sep and kind == "parameter" and ref in by_name:
            return _quoted(parameter_args(by_name[ref], params.get(ref)))
        if sep and kind == "parameter-value" and ref in by_name:
            value = params.get(ref)
            if value is None:
                return shlex.quote("")
            if isinstance(value, (list, tuple)):
                text = by_name[ref].multiple_separator.join(format_value(v) for v in value)
            else:
                text = format_value(value)
            return shlex.quote(text)
        if key == "source-path" and step.source_path is not None:
            return shlex.quote(step.source_path)
        return match.group(0)

    return [_PLACEHOLDER.sub(replace, command) for command in step.command]


def build_script(commands: Sequence[str]) -> tuple[list[str], str]:
    """How to run ``commands`` as one script: ``(argv, script)``; run ``[*argv, script]``.

    The commands become the lines of one script, so ``cd`` and ``export`` carry over from
    one command to the next, and the script stops at the first failing command: it is
    run by ``/bin/sh -c`` and starts with ``set -e``. (``set -e`` does not stop on a
    failure inside an ``if`` test, before ``&&``/``||``, or in a pipeline's non-last
    command, as in any shell.) Empty commands are dropped.

    If the first command is a ``#!`` line, its interpreter runs the script instead
    (``#!/usr/bin/env python3`` → ``["/usr/bin/env", "python3", "-c"]``); the ``#!``
    line stays as the script's first line, where it is a comment. ``set -e`` is added
    only when that interpreter is a shell. The script text also works when written to a
    file and run directly, or by passing the file to ``argv[:-1]``.
    """
    lines = [c for c in commands if c.strip()]
    if lines and lines[0].lstrip().startswith("#!"):
        shebang = lines[0].lstrip()
        interpreter = shlex.split(shebang[2:].strip()) or ["/bin/sh"]
        program = (
            interpreter[-1].rsplit("/", 1)[-1]
            if interpreter[0].endswith("env")
            else interpreter[0].rsplit("/", 1)[-1]
        )
        body = lines[1:]
        if program in _SHELLS:
            body = ["set -e", *body]
        return [*interpreter, "-c"], "\n".join([shebang, *body]) + "\n"
    return ["/bin/sh", "-c"], "\n".join(["set -e", *lines]) + "\n"
