"""Durations as valohai.yaml writes them: seconds, or text such as ``"1h 30m 5s"``."""

from __future__ import annotations

import re
from typing import Any

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number of seconds, or parts like ``1h 30m 5s`` summed.

    A part's unit is judged by its first letter (s, m, h, d, w; ``90min`` is 90
    minutes, a bare number is seconds). The total must be above zero. Raises
    ``ValueError`` (or ``TypeError`` for a value that is neither number nor text) saying
    what is wrong.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"expected seconds or text like '1h 30m', got {type(value).__name__}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        if not text:
            raise ValueError("the text is empty")
        seconds = 0.0
        pos = 0
        while pos < len(text):
            match = _PART.match(text, pos)
            if not match:
                raise ValueError(f"cannot read '{text[pos:]}' in '{value}'")
            number, unit = match.groups()
            factor = _UNITS.get(unit[:1].lower()) if unit else 1.0
            if factor is None:
                raise ValueError(f"unknown unit '{unit}' in '{value}' (use s, m, h, d or w)")
            seconds += float(number) * factor
            pos = match.end()
    if not seconds > 0:
        raise ValueError(f"a duration must be above zero, got {value!r}")
    return seconds
