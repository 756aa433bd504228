"""The cohort filter grammar: what it accepts, what it rejects and why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcare.analytics.filters import filter_columns, filter_mask
from fedcare.analytics.spec import AnalyticsSpec
from fedcare.errors import ConfigError

FRAME = pd.DataFrame({"age": [30.0, 65.0, 70.0, np.nan], "sex": [1.0, 1.0, 0.0, 1.0]})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("age >= 60 and sex == 1", [False, True, False, False]),
        ("age < 60 or sex == 0", [True, False, True, False]),
        ("not age > 60", [True, False, False, True]),  # NaN > 60 is false
        ("60 <= age < 68", [False, True, False, False]),
        ("sex in (0, 2)", [False, False, True, False]),
        ("age not in (30, 65)", [False, False, True, False]),
        ("age > -1 and (sex == True)", [True, True, False, False]),
    ],
)
def test_filters_select_rows(text: str, expected: list[bool]) -> None:
    assert filter_mask(text, FRAME).tolist() == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("__import__('os')", "is not allowed"),
        ("__import__('os').system('ls') == 0", "only numbers"),
        ("age.__class__ == 1", "only numbers"),
        ("(lambda: 1)() == 1", "only numbers"),
        ("age == 'x'", "only numbers"),
        ("age + 1 > 2", "only numbers"),
        ("age", "is not allowed"),
        ("age is None", "operator Is is not allowed"),
        ("sex in [x for x in (1,)]", "needs a tuple of numbers"),
        ("age >=", "not a valid expression"),
        ("[c for c in ().__class__.__bases__]", "is not allowed"),
    ],
)
def test_filters_outside_the_grammar_are_rejected(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        filter_mask(text, FRAME)


def test_unknown_column_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown column 'weight'"):
        filter_mask("weight > 3", FRAME)


def test_columns_of_a_filter() -> None:
    assert filter_columns("age > 3 and (sex == 1 or bmi < 30)") == {"age", "sex", "bmi"}


def test_spec_rejects_a_bad_filter_naming_the_field() -> None:
    bad = {"queries": [{"type": "count"}, {"type": "cohort", "filter": "__import__('os')"}]}
    with pytest.raises(ConfigError, match=r"queries\.1\.cohort\.filter: .*is not allowed"):
        AnalyticsSpec.from_dict(bad)
