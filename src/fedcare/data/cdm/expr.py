"""Derived variables: a small whitelisted arithmetic over columns, parsed with ``ast``.

Allowed: numbers, column names (or ``col("name with spaces")``), ``+ - * / ** %``, unary
minus, comparisons (``> >= < <= == !=``, giving 1.0 / 0.0), ``and``/``or``/``not`` on such
0/1 values, and the functions ``log``, ``exp``, ``sqrt``, ``abs``, ``min``, ``max``. Nothing
is ever passed to ``eval``; anything else is rejected when the mapping is read.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ExpressionError", "columns_of", "evaluate", "parse"]

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "log": np.log,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "min": np.fmin,
    "max": np.fmax,
}


class ExpressionError(ValueError):
    """The expression uses something outside the whitelist (the caller adds file/variable)."""


def parse(text: str) -> ast.expr:
    """The checked syntax tree of ``text``."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise ExpressionError(f"derived expression {text!r} is not valid: {err.msg}") from None
    _check(tree.body, text)
    return tree.body


def _check(node: ast.AST, text: str) -> None:
    ok = isinstance(
        node, (ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Name, ast.Constant, ast.Call)
    )
    if isinstance(node, ast.BinOp):
        ok = type(node.op) in _BINARY
    elif isinstance(node, ast.UnaryOp):
        ok = isinstance(node.op, (ast.USub, ast.UAdd, ast.Not))
    elif isinstance(node, ast.Compare):
        ok = all(type(op) in _COMPARE for op in node.ops)
    elif isinstance(node, ast.Constant):
        ok = isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    elif isinstance(node, ast.Call):
        ok = _call_ok(node)
    if not ok:
        raise ExpressionError(
            f"derived expression {text!r}: {ast.unparse(node)!r} is not allowed (only numbers, "
            f"columns, + - * / ** %, comparisons, and/or/not, {', '.join(_FUNCTIONS)}, col())"
        )
    if isinstance(node, ast.Call) and _is_col(node):
        return
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.operator, ast.cmpop, ast.unaryop, ast.boolop, ast.Load)):
            _check(child, text)


def _is_col(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Name) and node.func.id == "col"


def _call_ok(node: ast.Call) -> bool:
    if not isinstance(node.func, ast.Name) or node.keywords:
        return False
    if _is_col(node):
        return (
            len(node.args) == 1
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        )
    return node.func.id in _FUNCTIONS


def columns_of(tree: ast.expr) -> set[str]:
    """The source columns an expression reads."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_col(node):
            names.add(str(node.args[0].value))  # type: ignore[attr-defined]
        elif isinstance(node, ast.Name) and node.id not in _FUNCTIONS and node.id != "col":
            names.add(node.id)
    return names


def evaluate(tree: ast.expr, columns: Mapping[str, pd.Series]) -> pd.Series:
    """The expression over float columns; NaN in, NaN out (also for comparisons)."""
    value = _eval(tree, columns)
    index = next(iter(columns.values())).index if columns else None
    if not isinstance(value, pd.Series):
        return pd.Series(float(value), index=index)
    return value.astype(float)


def _truth(value: Any, missing: Any) -> Any:
    out = value.astype(float) if isinstance(value, pd.Series) else float(value)
    if isinstance(out, pd.Series):
        return out.mask(missing)
    return out


def _missing(*values: Any) -> Any:
    flags = [v.isna() for v in values if isinstance(v, pd.Series)]
    if not flags:
        return False
    out = flags[0]
    for f in flags[1:]:
        out = out | f
    return out


def _eval(node: ast.expr, columns: Mapping[str, pd.Series]) -> Any:
    if isinstance(node, ast.Constant):
        return float(node.value)  # type: ignore[arg-type]  # numbers only, checked by parse
    if isinstance(node, ast.Name):
        return columns[node.id]
    if isinstance(node, ast.Call):
        if _is_col(node):
            return columns[str(node.args[0].value)]  # type: ignore[attr-defined]
        return _FUNCTIONS[node.func.id](*(_eval(a, columns) for a in node.args))  # type: ignore[attr-defined]
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, columns), _eval(node.right, columns))
    if isinstance(node, ast.UnaryOp):
        inner = _eval(node.operand, columns)
        if isinstance(node.op, ast.Not):
            return _truth(inner == 0, _missing(inner))
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Compare):
        left = _eval(node.left, columns)
        result: Any = True
        missing: Any = _missing(left)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, columns)
            result = result & _COMPARE[type(op)](left, right)
            missing = missing | _missing(right)
            left = right
        return _truth(result, missing)
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, columns) for v in node.values]
        flags = [v != 0 for v in values]
        combined = flags[0]
        for f in flags[1:]:
            combined = (combined & f) if isinstance(node.op, ast.And) else (combined | f)
        return _truth(combined, _missing(*values))
    raise ExpressionError(f"{ast.unparse(node)!r} is not allowed")  # unreachable after parse
