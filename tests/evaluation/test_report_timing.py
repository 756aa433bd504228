"""The report's "Site timing" section, from the rounds' ``fit["site_timing"]``."""

from __future__ import annotations

from datetime import datetime, timezone

from fedcare.evaluation.report import render_report
from fedcare.evaluation.report_timing import site_timing_table

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _round(r: int, timing: dict) -> dict:
    return {"round": r, "duration_s": 1.0, "fit": {"num_contributions": 2, "site_timing": timing}}


HISTORY = [
    {"round": 1, "duration_s": 1.0, "fit": {"num_contributions": 2}},  # before site timing
    _round(
        2,
        {
            "a": {"reply_s": 0.25, "outcome": "taken"},
            "b": {"reply_s": None, "outcome": "late"},
            "c": {"reply_s": 0.5, "outcome": "failed"},
        },
    ),
    _round(
        3, {"a": {"reply_s": 1.0, "outcome": "taken"}, "b": {"reply_s": 2.125, "outcome": "taken"}}
    ),
]


def test_one_row_per_timed_round_with_late_and_failed_marked() -> None:
    table = site_timing_table(HISTORY)
    assert table == {
        "sites": ["a", "b", "c"],
        "rows": [(2, ["0.25 s", "late", "0.50 s (failed)"]), (3, ["1.00 s", "2.12 s", ""])],
        "late": 1,
    }
    assert site_timing_table(HISTORY[:1]) is None and site_timing_table([]) is None


def test_the_html_report_shows_the_section_only_with_timing() -> None:
    html = render_report({"history": HISTORY}, generated_at=WHEN)
    section = html[html.index('<section id="site-timing">') :]
    section = section[: section.index("</section>")]
    assert "<td>late</td>" in section and "<td>0.50 s (failed)</td>" in section
    assert "(1 in all)" in section
    assert 'id="site-timing"' not in render_report({"history": HISTORY[:1]}, generated_at=WHEN)
