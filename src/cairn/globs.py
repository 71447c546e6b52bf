"""Path globs for datasets and inputs: ``*`` and ``?`` stay within one folder, ``**``
crosses folders (``train/**/*.png``), ``[abc]`` is a character class."""

from __future__ import annotations

import re
from functools import lru_cache

_MAGIC = re.compile(r"[*?\[]")


def has_magic(pattern: str) -> bool:
    return bool(_MAGIC.search(pattern))


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression for ``pattern`` (matching whole POSIX paths)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern[i:i + 2] == "**":
                i += 2
                if pattern[i:i + 1] == "/":  # "**/" matches zero or more folders
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def match(pattern: str, path: str) -> bool:
    return compile_glob(pattern).match(path) is not None


def static_prefix(pattern: str) -> str:
    """The folder part before the first wildcard: ``train/**/*.png`` → ``train/``."""
    m = _MAGIC.search(pattern)
    head = pattern if m is None else pattern[: m.start()]
    return head[: head.rfind("/") + 1]
