"""Cohort filter expressions: a small whitelisted grammar parsed with :mod:`ast`, never eval.

Grammar (Python syntax, nothing else accepted)::

    expr    := expr "and" expr | expr "or" expr | "not" expr | "(" expr ")" | compare
    compare := operand (op operand)+          op: == != < <= > >=
             | column ("in" | "not in") "(" number ("," number)* ")"
    operand := column | number | "-" number   (True/False count as 1/0)

A column is a bare name of the site's table. A comparison with a missing value (NaN) is false.
Anything else (calls, attributes, subscripts, lambdas, strings, arithmetic) is rejected with a
:class:`ConfigError` that names the offending piece.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from fedcare.errors import ConfigError

__all__ = ["filter_columns", "filter_mask", "parse_filter"]

MAX_LENGTH = 1000
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _number(node: ast.expr, text: str) -> float:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_number(node.operand, text)
    if isinstance(node, ast.Constant) and isinstance(node.value, bool | int | float):
        return float(node.value)
    raise ConfigError(
        f"filter {text!r}: only numbers may follow 'in' or be negated, got {ast.unparse(node)!r}"
    )


def _check(node: ast.AST, text: str) -> None:
    """Raise unless ``node`` is in the grammar."""
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, text)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _check(node.operand, text)
    elif isinstance(node, ast.Compare):
        _check_compare(node, text)
    else:
        raise ConfigError(
            f"filter {text!r}: {ast.unparse(node)!r} is not allowed; use comparisons of columns "
            "with numbers joined by and/or/not"
        )


def _check_compare(node: ast.Compare, text: str) -> None:
    for op, right in zip(node.ops, node.comparators, strict=True):
        if isinstance(op, ast.In | ast.NotIn):
            if not isinstance(right, ast.Tuple | ast.List | ast.Set) or not right.elts:
                raise ConfigError(f"filter {text!r}: 'in' needs a tuple of numbers")
            for elt in right.elts:
                _number(elt, text)
        elif type(op) not in _COMPARE:
            raise ConfigError(f"filter {text!r}: operator {type(op).__name__} is not allowed")
        else:
            _operand(right, text)
    _operand(node.left, text)


def _operand(node: ast.expr, text: str) -> None:
    if isinstance(node, ast.Name):
        return
    _number(node, text)


@lru_cache(maxsize=256)
def parse_filter(text: str) -> ast.Expression:
    """The checked syntax tree of ``text``.

    Raises
    ------
    ConfigError
        If ``text`` is not valid Python or uses anything outside the grammar.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("filter must be a non-empty string")
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"filter is {len(text)} characters long; at most {MAX_LENGTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"filter {text!r} is not a valid expression: {err.msg}") from None
    _check(tree.body, text)
    return tree


def filter_columns(text: str) -> set[str]:
    """The column names ``text`` refers to."""
    return {n.id for n in ast.walk(parse_filter(text)) if isinstance(n, ast.Name)}


def _column(frame: pd.DataFrame, name: str, text: str) -> np.ndarray:
    if name not in frame.columns:
        raise ConfigError(
            f"filter {text!r}: unknown column {name!r}; columns: {sorted(map(str, frame.columns))}"
        )
    return np.asarray(pd.to_numeric(frame[name], errors="coerce"), dtype=np.float64)


def _value(node: ast.expr, frame: pd.DataFrame, text: str) -> np.ndarray | float:
    if isinstance(node, ast.Name):
        return _column(frame, node.id, text)
    return _number(node, text)


def _evaluate(node: ast.expr, frame: pd.DataFrame, text: str) -> np.ndarray:
    n = len(frame)
    if isinstance(node, ast.BoolOp):
        parts = [_evaluate(v, frame, text) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = parts[0]
        for part in parts[1:]:
            out = combine(out, part)
        return out
    if isinstance(node, ast.UnaryOp):
        return ~_evaluate(node.operand, frame, text)
    assert isinstance(node, ast.Compare)  # guaranteed by parse_filter
    out = np.ones(n, dtype=bool)
    left = _value(node.left, frame, text)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        if isinstance(op, ast.In | ast.NotIn):
            assert isinstance(right_node, ast.Tuple | ast.List | ast.Set)
            values = [_number(e, text) for e in right_node.elts]
            hit = np.isin(np.broadcast_to(left, (n,)), values)
            out &= hit if isinstance(op, ast.In) else ~hit & ~np.isnan(np.broadcast_to(left, (n,)))
            continue
        right = _value(right_node, frame, text)
        with np.errstate(invalid="ignore"):
            out &= np.broadcast_to(np.asarray(_COMPARE[type(op)](left, right)), (n,))
        left = right
    return out


def filter_mask(text: str, frame: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows of ``frame`` that satisfy ``text`` (a new array).

    Raises
    ------
    ConfigError
        If ``text`` is outside the grammar or names a column ``frame`` lacks.
    """
    tree = parse_filter(text)
    return np.array(_evaluate(tree.body, frame, text), dtype=bool)
