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


class ExpressionError(ValueError):
    """An expression that cannot be evaluated: bad syntax, or a type error while evaluating."""


class MissingValue(ExpressionError):
    """An expression named a value that does not exist (yet), such as an unlogged metric."""


_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: a**b,
}
_UNARY = {ast.Not: lambda a: not a, ast.USub: lambda a: -a, ast.UAdd: lambda a: +a}
_COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}


def compile_expression(text: str) -> ast.expr:
    """The checked syntax tree of ``text``; ``ExpressionError`` saying what is wrong."""
    problem = check_expression(text)
    if problem is not None:
        raise ExpressionError(f"cannot read the expression {text!r}: {problem}")
    return ast.parse(rewrite_keywords(text), mode="eval").body


def evaluate(text: str | ast.expr, names: dict[str, object]) -> object:
    """The value of an expression over ``names`` -- no ``eval``, nothing but what it names.

    ``metadata.accuracy`` reads ``names["metadata"]["accuracy"]`` (attribute access on a
    mapping is a key lookup; keys with dashes can be read as ``metadata["val-loss"]``).
    Raises :class:`MissingValue` when a name or key is absent and
    :class:`ExpressionError` for any other failure (``1 < "a"``, division by zero).
    """
    node = compile_expression(text) if isinstance(text, str) else text
    try:
        return _eval(node, names)
    except ExpressionError:
        raise
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise ExpressionError(f"cannot evaluate {ast.unparse(node)!r}: {exc}") from exc


def _lookup(container: object, key: object, where: ast.expr) -> object:
    if isinstance(container, dict):
        if key in container:
            return container[key]
        # Valohai's rewrite of keywords: ``metadata._class`` is the key "class".
        if isinstance(key, str) and key.startswith("_") and key[1:] in container:
            return container[key[1:]]
        raise MissingValue(f"{ast.unparse(where)} has no value (yet)")
    if isinstance(container, (list, tuple, str)) and isinstance(key, int):
        try:
            return container[key]
        except IndexError:
            raise MissingValue(f"{ast.unparse(where)} has no value") from None
    raise ExpressionError(f"{ast.unparse(where)}: cannot look up {key!r} in {container!r}")


def _eval(node: ast.expr, names: dict[str, object]) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return _lookup(names, node.id, node)
    if isinstance(node, ast.Attribute):
        return _lookup(_eval(node.value, names), node.attr, node)
    if isinstance(node, ast.Subscript):
        return _lookup(_eval(node.value, names), _eval(node.slice, names), node)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, names) for e in node.elts]
    if isinstance(node, ast.BoolOp):
        is_and = isinstance(node.op, ast.And)
        value: object = is_and
        for part in node.values:
            value = _eval(part, names)
            if bool(value) != is_and:
                return value
        return value
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, names))
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"the operator in {ast.unparse(node)!r} is not supported")
        return op(_eval(node.left, names), _eval(node.right, names))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, names)
        for op_node, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, names)
            if not _COMPARE[type(op_node)](left, right):
                return False
            left = right
        return True
    raise ExpressionError(f"{type(node).__name__} expressions are not allowed")
