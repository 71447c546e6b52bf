"""The hand-written validator's toolbox: report a located problem, read typed values.

Every reader takes the mapping, the key and the mapping's path; it reports a problem
located at the offending key or value and returns ``None`` when the value is unusable,
so one pass over a file finds every problem instead of stopping at the first.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from cairn.errors import Problem
from cairn.project._yaml import Document, PathKey
from cairn.project.durations import parse_duration


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` for the closest of ``options`` to ``word``, or None."""
    options = [o for o in options if isinstance(o, str)]
    lowered = {o.lower(): o for o in options}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return f"did you mean '{lowered[word.lower()]}'?"
    import difflib

    matches = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not matches:
        folded = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
        matches = [lowered[m] for m in folded]
    return f"did you mean '{matches[0]}'?" if matches else None


def describe(value: Any, raw: str | None = None) -> str:
    """A short phrase for a value's YAML type, e.g. ``a boolean (yes)``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({raw or str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({raw or value})"
    if isinstance(value, float):
        return f"a number ({raw or value})"
    if isinstance(value, str):
        return f"a string ('{value}')"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def is_number(value: Any) -> bool:
    """True for ints and floats, but not for booleans."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_MISSING_HINTS = {
    "image": "add `image: python:3.11` (or the image your code needs), the container it "
             "runs in; without a container engine cairn runs it on this machine and says so",
    "command": "add `command: python train.py` (a string or a list of commands)",
}
"""Hints for required keys whose values a newcomer may not know to give."""


class Checker:
    """Collects located problems for one document."""

    def __init__(self, doc: Document, filename: str) -> None:
        self.doc = doc
        self.filename = filename
        self.problems: list[Problem] = []

    # -- reporting ---------------------------------------------------------------------

    def report(
        self,
        path: PathKey,
        message: str,
        hint: str | None = None,
        *,
        severity: str = "error",
        at_key: bool = False,
    ) -> None:
        """Record a problem at the value (or, with ``at_key``, the key) at ``path``."""
        line, column = self.doc.key_position(path) if at_key else self.doc.position(path)
        self.problems.append(Problem(self.filename, line, column, message, hint, severity))

    def error(
        self, path: PathKey, message: str, hint: str | None = None, *, at_key: bool = False
    ) -> None:
        """Record an error; see :meth:`report`."""
        self.report(path, message, hint, at_key=at_key)

    def warn(
        self, path: PathKey, message: str, hint: str | None = None, *, at_key: bool = False
    ) -> None:
        """Record a warning; see :meth:`report`."""
        self.report(path, message, hint, severity="warning", at_key=at_key)

    def quote_hint(self, path: PathKey, key: str | None, value: Any) -> str | None:
        """Hint for a scalar that YAML read as a bool/number where text was expected."""
        raw = self.doc.raw_text(path)
        if raw is None or isinstance(value, (list, dict)) or value is None:
            return None
        extra = (
            " (YAML reads yes/no/on/off/true/false as booleans)" if isinstance(value, bool) else ""
        )
        written = f'{key}: "{raw}"' if key else f'"{raw}"'
        return f"put the value in quotes: {written}{extra}"

    # -- structure ---------------------------------------------------------------------

    def check_keys(
        self,
        obj: dict[str, Any],
        path: PathKey,
        what: str,
        allowed: Collection[str],
        required: Iterable[str] = (),
        *,
        outer: Collection[str] = (),
        outer_what: str = "",
        severity: str = "error",
    ) -> None:
        """Report keys of ``obj`` that are not ``allowed`` and ``required`` keys missing.

        A key found in ``outer`` (the keys of the enclosing mapping, named ``outer_what``)
        gets an indentation hint instead of a did-you-mean; ``outer_what="item"`` means
        the enclosing level is the file's list of items.
        """
        for key in obj:
            if key in allowed:
                continue
            if key in outer and outer_what == "item":
                hint = (
                    f"check the indentation of '{key}': it starts a new item, so write it "
                    f"as `- {key}:` at the start of a line"
                )
            elif key in outer:
                hint = (
                    f"check the indentation of '{key}': it is a key of the {outer_what}, so it "
                    f"should line up with the {outer_what}'s other keys"
                )
            else:
                hint = (
                    did_you_mean(key, allowed) or f"allowed keys are: {', '.join(sorted(allowed))}"
                )
            self.report(
                (*path, key), f"unknown key '{key}' in {what}", hint, severity=severity, at_key=True
            )
        for key in required:
            if key not in obj:
                self.error(path, f"{what} is missing the required key '{key}'",
                           _MISSING_HINTS.get(key, f"add `{key}:` to {what}"))

    def mapping(self, value: Any, path: PathKey, what: str) -> dict[str, Any] | None:
        """``value`` if it is a mapping, else report and return None."""
        if isinstance(value, dict):
            return value
        if value is None:
            self.error(path, f"{what} is empty", f"give the {what} its keys, indented under it")
        else:
            self.error(path, f"{what} must be a mapping of keys, got {describe(value)}")
        return None

    def items(self, obj: dict[str, Any], key: str, path: PathKey, what: str) -> list[Any]:
        """The list under ``key`` (``[]`` if absent or null; reported if not a list)."""
        value = obj.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.error(
            (*path, key),
            f"'{key}' of {what} must be a list, got {describe(value)}",
            f"write each entry on its own line starting with '- ' under '{key}:'",
        )
        return []

    # -- scalars -----------------------------------------------------------------------

    def string(
        self,
        obj: dict[str, Any],
        key: str,
        path: PathKey,
        what: str,
        *,
        max_length: int | None = None,
    ) -> str | None:
        """The string under ``key``; None if absent (not reported) or not a string (reported)."""
        if key not in obj or obj[key] is None:
            if key in obj:
                self.error(
                    (*path, key),
                    f"'{key}' of {what} is empty",
                    f"give '{key}' a value or remove it",
                )
            return None
        value = obj[key]
        if not isinstance(value, str):
            self.error(
                (*path, key),
                f"'{key}' of {what} must be a string, got "
                f"{describe(value, self.doc.raw_text((*path, key)))}",
                self.quote_hint((*path, key), key, value),
            )
            return None
        if max_length is not None and len(value) > max_length:
            self.error(
                (*path, key),
                f"'{key}' of {what} is {len(value)} characters long; at most {max_length} are "
                "allowed",
            )
            return None
        return value

    def text(self, obj: dict[str, Any], key: str, path: PathKey) -> str | None:
        """A free-text value (description, category): any scalar is accepted as its text."""
        value = obj.get(key)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (list, dict)):
            self.error((*path, key), f"'{key}' must be text, got {describe(value)}")
            return None
        return self.doc.raw_text((*path, key)) or str(value)

    def boolean(self, obj: dict[str, Any], key: str, path: PathKey, what: str) -> bool | None:
        """The boolean under ``key``; None if absent or not a boolean (reported)."""
        value = obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        self.error((*path, key), f"'{key}' of {what} must be true or false, got {describe(value)}")
        return None

    def number(
        self, obj: dict[str, Any], key: str, path: PathKey, what: str, *, integer: bool = False
    ) -> int | float | None:
        """The number under ``key``; None if absent or not a number (reported)."""
        value = obj.get(key)
        if value is None:
            return None
        if is_number(value) and (not integer or isinstance(value, int)):
            return value  # type: ignore[no-any-return]
        kind = "an integer" if integer else "a number"
        self.error(
            (*path, key),
            f"'{key}' of {what} must be {kind}, got "
            f"{describe(value, self.doc.raw_text((*path, key)))}",
        )
        return None

    def choice(
        self, obj: dict[str, Any], key: str, path: PathKey, what: str, options: Collection[str]
    ) -> str | None:
        """The string under ``key`` if it is one of ``options``; else reported, None."""
        value = self.string(obj, key, path, what)
        if value is None:
            return None
        if value not in options:
            hint = did_you_mean(value, options) or ""
            allowed = ", ".join(options)
            self.error(
                (*path, key),
                f"'{key}' of {what} must be one of {allowed}; got '{value}'",
                hint or None,
            )
            return None
        return value

    def strings(
        self, obj: dict[str, Any], key: str, path: PathKey, what: str, *, single: bool = True
    ) -> list[str] | None:
        """A string or list of strings under ``key`` as a list; None if absent or bad."""
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, str) and single:
            return [value]
        if isinstance(value, list):
            out: list[str] = []
            ok = True
            for i, item in enumerate(value):
                if isinstance(item, str):
                    out.append(item)
                else:
                    ok = False
                    self.error(
                        (*path, key, i),
                        f"entries of '{key}' of {what} must be strings, "
                        f"got {describe(item, self.doc.raw_text((*path, key, i)))}",
                        self.quote_hint((*path, key, i), None, item),
                    )
            return out if ok else None
        expected = "a string or a list of strings" if single else "a list of strings"
        self.error(
            (*path, key),
            f"'{key}' of {what} must be {expected}, got "
            f"{describe(value, self.doc.raw_text((*path, key)))}",
            self.quote_hint((*path, key), key, value),
        )
        return None

    def duration(self, obj: dict[str, Any], key: str, path: PathKey, what: str) -> float | None:
        """A duration (seconds as a number, or text like ``1h 30m``) in seconds."""
        value = obj.get(key)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except (TypeError, ValueError) as exc:
            self.error(
                (*path, key),
                f"'{key}' of {what} is not a duration: {exc}",
                "give seconds as a number (3600) or text such as '1h 30m' (s, m, h, d, w)",
            )
            return None

    def expression(self, obj: dict[str, Any], key: str, path: PathKey, what: str) -> str | None:
        """A stop-condition style expression, checked for syntax and allowed constructs."""
        from cairn.project.expressions import check_expression

        value = self.string(obj, key, path, what)
        if value is None:
            return None
        reason = check_expression(value)
        if reason:
            self.error(
                (*path, key),
                f"'{key}' of {what} is not a valid expression: {reason}",
                "write a comparison over metadata such as `loss < 0.01` or "
                "`accuracy >= 0.95 and epoch > 3`",
            )
            return None
        return value
