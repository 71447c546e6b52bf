"""Turning the parameter values a user supplies into the typed values a step runs with.

Rules (:func:`resolve_parameters`):

- A supplied value of ``None`` counts as not supplied.
- A parameter not supplied takes its ``default``. A flag without a default is ``False``:
  unlike Valohai, where an unset flag stays undefined, cairn always resolves a flag to a
  boolean, so the run record shows what the command saw.
- An optional parameter with neither value nor default resolves to ``None`` (kept in the
  result; command rendering leaves it out). A non-optional one is an error.
- Text from the command line is coerced to the declared type: ``"5"`` → ``5`` for
  integers, ``"0.1"`` → ``0.1`` for floats, ``true/false/1/0/yes/no/on/off`` for flags.
- ``multiple`` parameters resolve to a list; a single value becomes a one-item list.
- Values are checked against ``min``/``max`` (inclusive) and ``choices``.
- All problems are reported together in one :class:`~cairn.errors.ParameterError`, one
  line per problem, each naming the parameter and the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cairn.errors import ParameterError
from cairn.project.step import Parameter, Step

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def show(value: Any) -> str:
    """A value as a message shows it: strings quoted, booleans lowercase."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def coerce_value(param: Parameter, value: Any) -> Any:
    """One value converted to ``param``'s type; ``ValueError`` says why it cannot be."""
    if isinstance(value, (list, tuple, dict)):
        raise ValueError(f"expected a single {param.type} value, got a {type(value).__name__}")
    if param.type == "flag":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true or false (or yes/no, 1/0), got {show(value)}")
    if param.type == "integer":
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {show(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text, 10)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    number = None
                if number is not None and number.is_integer():
                    return int(number)
        raise ValueError(f"expected an integer, got {show(value)}")
    if param.type == "float":
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {show(value)}")
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a number, got {show(value)}") from None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _limits(param: Parameter) -> str:
    if param.min is not None and param.max is not None:
        return f"allowed range is {param.min} to {param.max}"
    if param.min is not None:
        return f"it must be at least {param.min}"
    return f"it must be at most {param.max}"


def check_value(param: Parameter, value: Any) -> str | None:
    """None if one ``value`` suits ``param`` (type, range, choices), else the reason."""
    try:
        coerced = coerce_value(param, value)
    except ValueError as exc:
        return str(exc)
    return _check_coerced(param, coerced)


def _check_coerced(param: Parameter, value: Any) -> str | None:
    if param.type in ("integer", "float"):
        if param.min is not None and value < param.min:
            return f"{show(value)} is below the minimum; {_limits(param)}"
        if param.max is not None and value > param.max:
            return f"{show(value)} is above the maximum; {_limits(param)}"
    if param.choices:
        allowed = []
        for choice in param.choices:
            try:
                allowed.append(coerce_value(param, choice))
            except ValueError:
                allowed.append(choice)
        if value not in allowed:
            listing = ", ".join(show(a) for a in allowed)
            text = f"{show(value)} is not one of the choices: {listing}"
            if isinstance(value, str):
                from cairn.project._check import did_you_mean

                guess = did_you_mean(value, [str(a) for a in allowed])
                if guess:
                    text += f" ({guess})"
            return text
    return None


def resolve_parameters(step: Step, supplied: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``step`` with its typed value, from ``supplied`` and defaults.

    The result has one key per declared parameter, in declaration order. Raises
    :class:`~cairn.errors.ParameterError` listing every unknown, missing, mistyped or
    out-of-range value (see the module docstring for the rules).
    """
    errors: list[str] = []
    hints: list[str] = []
    known = [p.name for p in step.parameters]
    for name in supplied:
        if name not in known:
            from cairn.project._check import did_you_mean

            guess = did_you_mean(name, known)
            errors.append(
                f"unknown parameter '{name}' for step '{step.name}'"
                + (f" ({guess})" if guess else "")
            )
            hints.append(
                f"step '{step.name}' has parameters: {', '.join(known)}"
                if known
                else f"step '{step.name}' declares no parameters"
            )

    resolved: dict[str, Any] = {}
    for param in step.parameters:
        label = f"parameter '{param.name}' of step '{step.name}'"
        value = supplied.get(param.name)
        if value is None:
            value = param.default
        if value is None:
            if param.type == "flag":
                resolved[param.name] = False
            elif param.optional:
                resolved[param.name] = None
            else:
                errors.append(f"{label} needs a value: it has no default and is not optional")
                hints.append(
                    "give every parameter listed above a value, or a default in the project file"
                )
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and not param.is_multiple and len(values) != 1:
            errors.append(
                f"{label} takes one value, got {len(values)}: " + ", ".join(show(v) for v in values)
            )
            hints.append(
                "declare `multiple: repeat` or `multiple: separate` to allow several values"
            )
            continue
        out = []
        for item in values:
            try:
                coerced = coerce_value(param, item)
            except ValueError as exc:
                errors.append(f"{label}: {exc}")
                break
            reason = _check_coerced(param, coerced)
            if reason:
                errors.append(f"{label}: {reason}")
                break
            out.append(coerced)
        else:
            resolved[param.name] = out if param.is_multiple else out[0]
    if errors:
        unique_hints = list(dict.fromkeys(hints))
        raise ParameterError("\n".join(errors), "; ".join(unique_hints) or None)
    return resolved
