"""The safe evaluator of action conditions and stop conditions."""

from __future__ import annotations

import pytest

from cairn.project.expressions import ExpressionError, MissingValue, evaluate

NAMES = {
    "metadata": {"accuracy": 0.91, "loss": 0.3, "val-loss": 0.4, "class": "cat", "epochs": [1, 2]},
    "parameter": {"lr": 0.01, "optimizer": "adam"},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metadata.accuracy < .8", False),
        ("metadata.accuracy > 0.9", True),
        ("metadata.accuracy > 0.9 and metadata.loss < 0.5", True),
        ("metadata.accuracy > 0.95 or parameter.lr <= 0.01", True),
        ("not metadata.accuracy > 0.9", False),
        ("0.5 < metadata.accuracy < 0.95", True),
        ('metadata["val-loss"] * 2 == 0.8', True),
        ("parameter.optimizer in ['adam', 'sgd']", True),
        ("metadata.class == 'cat'", True),
        ("metadata.epochs[1] - 1", 1),
        ("-metadata.loss + 1 >= 0.7", True),
        ("2 ** 3 % 5 // 1", 3),
    ],
)
def test_evaluates(text: str, expected: object) -> None:
    assert evaluate(text, NAMES) == pytest.approx(expected)


def test_missing_values_are_their_own_error() -> None:
    with pytest.raises(MissingValue, match="metadata.f1"):
        evaluate("metadata.f1 > 0.5", NAMES)
    with pytest.raises(MissingValue):
        evaluate("nothing > 1", NAMES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metadata.accuracy <", "cannot read"),
        ("__import__('os').system('true')", "function calls are not allowed"),
        ("[x for x in metadata]", "cannot read"),
        ("lambda: 1", "cannot read"),
        ("{1: 2}", "not allowed"),
        ("metadata.accuracy < 'a'", "cannot evaluate"),
        ("1 / 0", "cannot evaluate"),
    ],
)
def test_refuses_what_it_must(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        evaluate(text, NAMES)


def test_short_circuits_before_missing_values() -> None:
    assert evaluate("metadata.accuracy < 0.5 and metadata.f1 > 2", NAMES) is False
