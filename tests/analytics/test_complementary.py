"""No withheld cell can be derived from what one answer releases: an attacker tries.

The attacker sees a site's released answer and knows what each cell counts. It tries
(1) every subtraction: a partition's known total (the row count, a cohort's count, a variable's
released non-missing count) minus the released cells of the partition (bins + outside), and
a cohort on a histogram's variable against the bins it covers; (2) every linear combination:
each withheld cell and each sum of up to three withheld cells of one query (and all of them)
against the span of the released cells and sums, solved by least squares, with the solution
checked against the true value. No withheld small cell, and no sum of withheld cells below
``min_cell``, may come out. On the same answer without complementary suppression the attacker
does find Hungary's withheld age bin (261 - 258 = 3), so it is strong enough to fail.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcare.analytics.answer import _answer, answer_plan
from fedcare.analytics.cells import answer_cells
from fedcare.analytics.disclosure import SUPPRESSED, AnalyticsPolicy, Releaser
from fedcare.analytics.frame import site_frame
from fedcare.analytics.spec import AnalyticsSpec
from fedcare.data.base import FederatedDataset

AGE_EDGES = [25, 35, 45, 55, 65, 75, 85]  # Hungary: 15, 72, 122, 49, 3, 0
HEART_SPEC: dict[str, Any] = {
    "queries": [
        {"type": "count"},
        {"type": "histogram", "variable": "age", "edges": AGE_EDGES},
        {"type": "moments", "variables": ["age", "chol", "sex"]},
        {"type": "histogram", "variable": "sex", "edges": [0, 0.5, 1]},
        {
            "type": "cohort",
            "filter": "age >= 60",
            "queries": [
                {"type": "histogram", "variable": "chol", "edges": [0, 200, 250, 300, 700]},
                {"type": "moments", "variables": ["chol"]},
            ],
        },
        {"type": "cohort", "filter": "age >= 70 and sex == 0", "queries": [{"type": "count"}]},
    ]
}


# The attacker's model of the answer: what each cell counts, built row by row ---------------
def _rows(frame: pd.DataFrame, query: dict[str, Any], scope: np.ndarray) -> dict[str, list]:
    """Cell name -> list of (membership vector, [value vectors])."""
    kind = query["type"]
    if kind == "count":
        return {"count": [(scope.astype(float), [])]}
    if kind == "moments":
        cells = []
        for var in query["variables"]:
            x = frame[var].to_numpy(float)
            ok = scope & ~np.isnan(x)
            x0 = np.where(ok, x, 0.0)
            cells.append((ok.astype(float), [x0, x0**2]))
        return {"count": cells}
    if kind == "histogram":
        x = frame[query["variable"]].to_numpy(float)
        edges = query["edges"]
        ok = scope & ~np.isnan(x)
        bins = []
        covered = np.zeros(len(x), dtype=bool)
        for k in range(len(edges) - 1):
            last = k == len(edges) - 2
            upper = (x <= edges[k + 1]) if last else (x < edges[k + 1])
            member = ok & (x >= edges[k]) & upper
            covered |= member
            bins.append((member.astype(float), []))
        return {"count": bins, "count_outside": [((ok & ~covered).astype(float), [])]}
    raise AssertionError(kind)


def _model(frame: pd.DataFrame, spec: dict[str, Any]) -> dict[str, list]:
    """``"<path>/<name>"`` -> cells, for the queries this attacker models."""
    everyone = np.ones(len(frame), dtype=bool)
    out: dict[str, list] = {}
    for i, q in enumerate(spec["queries"]):
        if q["type"] == "cohort":
            scope = frame.eval(q["filter"]).to_numpy(bool)
            out[f"q{i}/count"] = [(scope.astype(float), [])]
            for j, sub in enumerate(q["queries"]):
                out.update({f"q{i}.{j}/{k}": v for k, v in _rows(frame, sub, scope).items()})
        else:
            out.update({f"q{i}/{k}": v for k, v in _rows(frame, q, everyone).items()})
    return out


def _solve(target: np.ndarray, known: list[np.ndarray], values: list[float]) -> float | None:
    """The value of ``target`` if it is a linear combination of ``known``, else ``None``."""
    if not known:
        return None
    norms = np.array([np.linalg.norm(k) or 1.0 for k in known])
    A = np.column_stack(known) / norms
    coef, *_ = np.linalg.lstsq(A, target, rcond=None)
    if np.linalg.norm(A @ coef - target) > 1e-6 * max(1.0, float(np.linalg.norm(target))):
        return None
    return float(coef @ (np.asarray(values) / norms))


def attack(
    frame: pd.DataFrame,
    spec: dict[str, Any],
    arrays: Mapping[str, np.ndarray],
    min_cell: int,
    model: dict[str, list] | None = None,
) -> list[str]:
    """Every withheld cell below ``min_cell`` (a small cell; cells withheld as complements may
    be larger, and their value is no secret), or sum of withheld cells below ``min_cell``, the
    attacker derives. ``model``: what each cell counts (default: built here, row by row)."""
    model = _model(frame, spec) if model is None else model
    known: list[np.ndarray] = []
    values: list[float] = []
    hidden: list[tuple[str, int, np.ndarray]] = []
    if len(frame) >= min_cell:  # the site's row count is public (its Hello says it)
        known.append(np.ones(len(frame)))
        values.append(float(len(frame)))
    for key, cells in model.items():
        mask = np.asarray(arrays[key + SUPPRESSED]).astype(bool)
        path = key.rsplit("/", 1)[0]
        for i, (member, extra) in enumerate(cells):
            if mask[i]:
                hidden.append((key, i, member))
                continue
            n = float(arrays[key][i])
            known.append(member)
            values.append(n)
            if extra and f"{path}/m2" not in arrays:  # correlation: known sums, values unused
                known += extra
                values += [float("nan")] * len(extra)
            elif extra:  # moments: the sum, and the sum of squares = m2 + sum^2 / n
                total = float(arrays[f"{path}/sum"][i])
                m2 = float(arrays[f"{path}/m2"][i])
                known += extra
                values += [total, m2 + (total * total / n if n else 0.0)]
    found = []
    for key, i, member in hidden:
        derived = _solve(member, known, values)
        if derived is not None and 0 < member.sum() < min_cell:
            found.append(f"{key}[{i}] = {derived:g} (true {member.sum():g})")
    by_query: dict[str, list[tuple[str, int, np.ndarray]]] = {}
    for cell in hidden:
        by_query.setdefault(cell[0].rsplit("/", 1)[0], []).append(cell)
    groups = [
        c for cells in by_query.values() for r in (2, 3) for c in itertools.combinations(cells, r)
    ]
    groups += [tuple(cells) for cells in by_query.values()] + [tuple(hidden)]
    unique = {tuple((k, i) for k, i, _ in g): g for g in groups if len(g) > 1}
    for group in unique.values():
        total = sum(m for _, _, m in group)
        if 0 < total.sum() < min_cell and _solve(total, known, values) is not None:
            found.append("sum of " + ", ".join(f"{k}[{i}]" for k, i, _ in group))
    return found


def subtractions(
    frame: pd.DataFrame, spec: dict[str, Any], arrays: Mapping[str, Any], m: int
) -> list[str]:
    """Plain subtractions: a histogram's known total minus its released cells, when what is
    left is small (a withheld complement of ``min_cell`` or more may come out: it is no small
    cell, and the row count it may equal is public anyway)."""
    found = []
    totals = {"q": float(len(frame)) if len(frame) >= m else None}
    for i, q in enumerate(spec["queries"]):
        if q["type"] == "cohort" and not arrays[f"q{i}/count{SUPPRESSED}"][0]:
            totals[f"q{i}."] = float(arrays[f"q{i}/count"][0])
    for key in [k for k in arrays if k.endswith("/count_outside")]:
        path = key.rsplit("/", 1)[0]
        bins, hide = arrays[f"{path}/count"], arrays[f"{path}/count{SUPPRESSED}"].astype(bool)
        outside, out_hidden = arrays[key][0], bool(arrays[key + SUPPRESSED][0])
        total = totals.get(path.split(".")[0] + ".") if "." in path else totals["q"]
        variable = _query(spec, path)["variable"]
        if total is None or frame[variable].isna().any():
            continue  # missing values are not released: no known total for this partition
        rest = total - bins[~hide].sum() - (0 if out_hidden else outside)
        n_hidden = int(hide.sum()) + int(out_hidden)
        if n_hidden and 0 < rest < m:  # one small cell, or a small sum of several
            found.append(f"{path}: {n_hidden} withheld cell(s) sum to {rest:g}")
    return found


def _query(spec: dict[str, Any], path: str) -> dict[str, Any]:
    parts = [int(p) for p in path[1:].split(".")]
    q = spec["queries"][parts[0]]
    return q["queries"][parts[1]] if len(parts) > 1 else q


# Tests ---------------------------------------------------------------------------------------
def _answer_of(frame: pd.DataFrame, spec: dict[str, Any], min_cell: int) -> dict[str, Any]:
    arrays, _ = answer_plan(
        frame, {"analytics": spec}, AnalyticsPolicy(min_cell=min_cell), np.random.default_rng(0)
    )
    return {k: np.asarray(v) for k, v in arrays.items()}


def test_the_attacker_derives_hungarys_withheld_bin_without_complementary_suppression(
    heart: FederatedDataset,
) -> None:
    frame = site_frame(heart.site("hungary"), heart.feature_names)
    spec = {"queries": HEART_SPEC["queries"][:2]}
    plain = _answer(frame, AnalyticsSpec.from_dict(spec), {}, Releaser(5))
    assert plain["q0/count"][0] == 261 and plain["q1/count"].sum() == 258
    assert plain["q1/count_outside"][0] == 0
    assert attack(frame, spec, plain, 5) == ["q1/count[4] = 3 (true 3)"]
    assert subtractions(frame, spec, plain, 5) == ["q1: 1 withheld cell(s) sum to 3"]
    released = _answer_of(frame, spec, 5)
    assert attack(frame, spec, released, 5) == [] and subtractions(frame, spec, released, 5) == []
    assert released["q1/count:suppressed"].sum() == 2  # the bin of 3 and its complement


def test_cohort_count_next_to_a_bin_gives_nothing_away() -> None:
    # the second case: a cohort of 8 (age >= 60) next to a released bin of 5 ([60, 70))
    frame = pd.DataFrame({"age": [65.0] * 5 + [75.0] * 3 + [40.0] * 30})
    spec = {
        "queries": [
            {"type": "histogram", "variable": "age", "edges": [30, 60, 70, 80]},
            {"type": "cohort", "filter": "age >= 60", "queries": [{"type": "count"}]},
        ]
    }
    plain = _answer(frame, AnalyticsSpec.from_dict(spec), {}, Releaser(5))
    assert attack(frame, spec, plain, 5)  # 8 - 5 = 3
    released = _answer_of(frame, spec, 5)
    assert attack(frame, spec, released, 5) == []


def test_no_withheld_cell_of_a_heart_disease_job_can_be_derived(heart: FederatedDataset) -> None:
    withheld_somewhere = 0
    for site in heart.sites:
        frame = site_frame(site, heart.feature_names)
        for min_cell in (5, 11):
            released = _answer_of(frame, HEART_SPEC, min_cell)
            assert attack(frame, HEART_SPEC, released, min_cell) == [], (site.site_id, min_cell)
            assert subtractions(frame, HEART_SPEC, released, min_cell) == []
            withheld_somewhere += sum(
                int(v.sum()) for k, v in released.items() if k.endswith(SUPPRESSED)
            )
    assert withheld_somewhere > 0


def test_no_withheld_count_of_a_survival_job_can_be_derived(tcga: FederatedDataset) -> None:
    # Kaplan-Meier at-risk and event counts, quantile counts, correlation, cohorts: the
    # attacker's model of these cells is answer_cells' (checked in test_cells.py)
    from tests.analytics.test_cells import TCGA_SPEC, _thresholds

    plan = {"analytics": TCGA_SPEC, "thresholds": _thresholds()}
    spec = AnalyticsSpec.from_dict(TCGA_SPEC)
    for site in tcga.sites[:3]:
        frame = site_frame(site)
        found = answer_cells(frame, spec, None, plan["thresholds"])
        model = {k: list(zip(c.members, c.values, strict=True)) for k, c in found.items()}
        arrays, _ = answer_plan(frame, plan, AnalyticsPolicy(min_cell=5), np.random.default_rng(0))
        released = {k: np.asarray(v).ravel() for k, v in arrays.items()}
        assert attack(frame, TCGA_SPEC, released, 5, model) == [], site.site_id
        plain = _answer(frame, spec, plan, Releaser(5))
        plain = {k: np.asarray(v).ravel() for k, v in plain.items()}
        assert attack(frame, TCGA_SPEC, plain, 5, model), site.site_id  # it leaked before


@st.composite
def _adversarial(draw: st.DrawFn) -> tuple[pd.DataFrame, dict[str, Any], int]:
    n = draw(st.integers(3, 40))
    a = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    b = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    s = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    frame = pd.DataFrame({"a": a, "b": b, "s": s}, dtype=float)
    cut = draw(st.integers(1, 9))
    queries: list[dict[str, Any]] = [
        {"type": "count"},
        {"type": "histogram", "variable": "a", "edges": [0, 3, 6, 10]},
        {"type": "histogram", "variable": "a", "edges": [0, 2, 4, 6, 8, 9]},
        {"type": "moments", "variables": ["s", "b"]},
        {"type": "histogram", "variable": "s", "edges": [0, 0.5, 1]},
        {
            "type": "cohort",
            "filter": f"a >= {cut}",
            "queries": [
                {"type": "histogram", "variable": "b", "edges": [0, 1, 2, 3]},
                {"type": "moments", "variables": ["s"]},
            ],
        },
        {"type": "cohort", "filter": f"a < {cut} and s == 1", "queries": [{"type": "count"}]},
    ]
    chosen = draw(st.lists(st.sampled_from(queries), min_size=2, max_size=5, unique_by=str))
    return frame, {"queries": chosen}, draw(st.integers(2, 6))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_adversarial())
def test_no_withheld_cell_of_adversarial_data_can_be_derived(
    case: tuple[pd.DataFrame, dict[str, Any], int],
) -> None:
    frame, spec, min_cell = case
    released = _answer_of(frame, spec, min_cell)
    assert attack(frame, spec, released, min_cell) == []
    assert subtractions(frame, spec, released, min_cell) == []
    for key, values in released.items():  # and small-cell suppression still holds
        if key.rpartition("/")[2].startswith("count") and not key.endswith(SUPPRESSED):
            assert not ((values > 0) & (values < min_cell)).any(), (key, values)
