import numpy as np
import pandas as pd
import pytest

from fedcare.data.cdm.expr import ExpressionError, columns_of, evaluate, parse


def _cols() -> dict[str, pd.Series]:
    return {
        "weight": pd.Series([70.0, 90.0, np.nan]),
        "height": pd.Series([175.0, 180.0, 160.0]),
        "num": pd.Series([0.0, 2.0, np.nan]),
        "a b": pd.Series([1.0, 2.0, 3.0]),
    }


def test_arithmetic_and_functions_over_columns() -> None:
    bmi = evaluate(parse("weight / (height / 100) ** 2"), _cols())
    np.testing.assert_allclose(bmi[:2], [70 / 1.75**2, 90 / 1.8**2])
    assert np.isnan(bmi[2])
    out = evaluate(parse("max(log(height), 5) + abs(-col('a b')) % 2"), _cols())
    np.testing.assert_allclose(out, np.fmax(np.log([175, 180, 160]), 5) + np.array([1, 0, 1]))


def test_comparisons_give_zero_one_and_keep_missing_missing() -> None:
    out = evaluate(parse("num > 0"), _cols())
    assert out[:2].tolist() == [0.0, 1.0] and np.isnan(out[2])
    both = evaluate(parse("num > 0 and weight < 80"), _cols())
    assert both[:2].tolist() == [0.0, 0.0] and np.isnan(both[2])
    chained = evaluate(parse("160 <= height < 178"), _cols())
    assert chained.tolist() == [1.0, 0.0, 1.0]
    assert evaluate(parse("not num"), _cols())[:2].tolist() == [1.0, 0.0]


def test_columns_of_lists_what_is_read() -> None:
    assert columns_of(parse("log(weight) + col('a b') * 2")) == {"weight", "a b"}


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('ls')",
        "weight.__class__",
        "open('x')",
        "[w for w in weight]",
        "weight if num else height",
        "'text'",
        "lambda: 1",
        "weight[0]",
        "col(weight)",
        "True + 1",
    ],
)
def test_anything_outside_the_whitelist_is_rejected(text: str) -> None:
    with pytest.raises(ExpressionError, match="not allowed"):
        parse(text)


def test_syntax_errors_are_reported() -> None:
    with pytest.raises(ExpressionError, match=r"'weight \+' is not valid"):
        parse("weight +")
