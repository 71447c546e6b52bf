"""Checks for the small expression language of ``stop-condition`` and action ``if``.

An expression is a Python expression restricted to names, attribute and item access,
literals, arithmetic, comparisons and ``and``/``or``/``not`` -- no calls, lambdas or
comprehensions -- nested at most :data:`MAX_DEPTH` deep. Metadata keys that happen to be
Python keywords (``class``, ``from``) are read as names by prefixing them with ``_``,
as Valohai's evaluator does.
"""

from __future__ import annotations

import ast
import io
import keyword
import re
import tokenize

MAX_DEPTH = 8

# Keywords that are operators or constants in an expression and keep their meaning.
_KEPT_KEYWORDS = {"and", "or", "not", "in", "is", "True", "False", "None"}

_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.Name,
    ast.Constant,
    ast.Attribute,
    ast.Subscript,
    ast.List,
    ast.Tuple,
    ast.Load,
    ast.boolop,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
)


def rewrite_keywords(text: str) -> str:
    """``text`` with keyword names prefixed with ``_`` (``class`` → ``_class``)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    out = []
    for tok in tokens:
        if (
            tok.type == tokenize.NAME
            and keyword.iskeyword(tok.string)
            and tok.string not in _KEPT_KEYWORDS
        ):
            tok = tok._replace(string="_" + tok.string)
        out.append((tok.type, tok.string))
    return tokenize.untokenize(out).strip()


def check_expression(text: str) -> str | None:
    """None if ``text`` is a valid expression, else a sentence saying what is wrong."""
    if not text.strip():
        return "it is empty"
    try:
        source = rewrite_keywords(text)
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        return _token_error(exc)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        where = f" (near character {exc.offset})" if exc.offset else ""
        message = re.sub(r"\s*\(detected at line \d+\)", "", exc.msg)
        return f"{message}{where}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            return "function calls are not allowed"
        if not isinstance(node, _ALLOWED):
            return f"{type(node).__name__} expressions are not allowed"
    depth = _depth(tree.body)
    if depth > MAX_DEPTH:
        return f"it is nested {depth} levels deep; at most {MAX_DEPTH} are allowed"
    return None


def _token_error(exc: Exception) -> str:
    message = exc.args[0] if exc.args else str(exc)
    if "string" in str(message).lower():
        return "a quote is not closed (a lone ' or \" starts a string)"
    return str(message)


def _depth(node: ast.AST) -> int:
    children = [
        c
        for c in ast.iter_child_nodes(node)
        if not isinstance(c, (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop))
    ]
    return 1 + max((_depth(c) for c in children), default=0)
